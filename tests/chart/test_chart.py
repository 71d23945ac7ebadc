"""Deployment artefacts: Helm chart, docker-compose.yml, Dockerfile and the CI entry point.

The chart is rendered and linted by real Helm (the Helm v4 Go SDK, see ``tests/chart/helm.py``)
with the defaults and every scenario file in ``charts/conveyor/ci/``; every rendered object is
validated strictly against the Kubernetes schemas of the oldest and newest supported versions,
and then checked structurally here.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml

from conveyor.cli import app
from engine.adapters.celery_config import queue_keys
from engine.settings import Settings
from tests.chart.helm import KUBE_VERSIONS, HelmError, lint, render, validate
from tests.chart.settings_schema import SCHEMA, settings_schema

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "conveyor"
COMPOSE = ROOT / "docker-compose.yml"


def _conveyor_subcommands() -> frozenset[str]:
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup), "the conveyor CLI is a command group"
    return frozenset(command.commands)


#: The ``conveyor`` CLI's subcommands, read from the Typer app itself (conveyor/cli.py), so a compose
#: service or chart Deployment can only run a command that exists.
CONVEYOR_SUBCOMMANDS = _conveyor_subcommands()
#: Environment variables that are not Conveyor settings but are read by libraries we use.
LIBRARY_ENV = {"FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "FLOWER_BASIC_AUTH"}
#: Set by the chart from the downward API, for logs; not settings.
POD_ENV = {"POD_NAME", "POD_NAMESPACE"}

SETTINGS_ENV = {f"CONVEYOR_{name.upper()}" for name in Settings.model_fields}

SCENARIOS = {path.name.removesuffix("-values.yaml"): path for path in sorted((CHART / "ci").glob("*-values.yaml"))}


def scenario(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(SCENARIOS[name].read_text())
    return values


FULL_VALUES = scenario("full")
DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def assert_settings_env(env: dict[str, str], where: str, allowed: frozenset[str] | set[str] = frozenset()) -> None:
    """CONVEYOR_* names are Settings fields; other names are known library variables (or ``allowed``)."""
    unknown = sorted(k for k in env if k.startswith("CONVEYOR_") and k not in SETTINGS_ENV)
    assert not unknown, f"{where}: not Settings fields: {unknown}"
    foreign = sorted(k for k in env if not k.startswith("CONVEYOR_") and k not in LIBRARY_ENV | POD_ENV | allowed)
    assert not foreign, f"{where}: unexpected environment variables {foreign}"


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("CONVEYOR_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("CONVEYOR_"):
            monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


# ------------------------------------------------------------------------------- chart: static


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "conveyor"
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[-+].+)?", chart["version"])
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert chart["appVersion"] == pyproject["project"]["version"], "appVersion follows the package version"


def _values_paths(template_text: str) -> set[tuple[str, ...]]:
    pattern = r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)"
    return {tuple(m.group(1).split(".")[1:]) for m in re.finditer(pattern, template_text)}


def test_every_values_path_in_templates_exists_in_values_yaml() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []
    for path in sorted(p for p in (CHART / "templates").rglob("*") if p.is_file()):
        for ref in sorted(_values_paths(path.read_text())):
            node: Any = values
            for i, key in enumerate(ref):
                if not isinstance(node, dict) or key not in node:
                    missing.append(f"{path.name}: .Values.{'.'.join(ref)} (no {'.'.join(ref[: i + 1])})")
                    break
                node = node[key]
    assert not missing, "\n".join(missing)


def test_values_settings_are_settings_fields() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    unknown = sorted(set(values["settings"]) - set(Settings.model_fields))
    assert not unknown, f"values.yaml settings that are not Settings fields: {unknown}"
    named = set(re.findall(r"\bCONVEYOR_[A-Z0-9_]+\b", "".join(p.read_text() for p in CHART.rglob("*") if p.is_file())))
    assert not sorted(named - SETTINGS_ENV), (
        f"CONVEYOR_ variables in the chart that are not Settings fields: {named - SETTINGS_ENV}"
    )


def test_security_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    assert values["securityContext"]["readOnlyRootFilesystem"] is True
    assert values["securityContext"]["allowPrivilegeEscalation"] is False
    assert values["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert values["serviceAccount"]["automountServiceAccountToken"] is False
    assert values["auth"]["enabled"] is True
    assert values["settings"]["profile"] == "production"


# ----------------------------------------------------------------------------- chart: rendered


def check_manifests(docs: list[dict[str, Any]], values: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Structural checks every rendering must pass."""
    seen = set()
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        meta = doc["metadata"]
        key = (doc["kind"], meta["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        assert len(meta["name"]) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]), meta["name"]
        assert meta["labels"]["app.kubernetes.io/instance"] == "demo"

    configmaps = objects(docs, "ConfigMap")
    assert len(configmaps) == 1
    (configmap,) = configmaps.values()
    data = configmap["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    assert_settings_env(data, "ConfigMap")
    settings = settings_from(data, monkeypatch)
    assert settings.store == "firestore"
    assert settings.api_host == "0.0.0.0"

    deployments = objects(docs, "Deployment")
    pod_labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        selector = spec["selector"]["matchLabels"]
        assert selector.items() <= pod_labels[name].items(), f"{name}: selector does not match its pods"
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"]
        volumes = {v["name"] for v in pod["volumes"]}
        for container in containers(deployment):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in volumes, f"{name}: /tmp must be writable"
            requests = container["resources"].get("requests", {})
            assert requests.get("memory") and requests.get("cpu"), f"{name}: every container requests CPU and memory"
            assert container["envFrom"][0]["configMapRef"]["name"] == configmap["metadata"]["name"]
            env_names = {e["name"] for e in container.get("env", [])}
            user_env = {e["name"] for e in values.get("env", [])}
            assert_settings_env(dict.fromkeys(env_names, ""), f"{name} env", user_env)
            command = container["command"]
            if command[0] == "conveyor":
                assert command[1] in CONVEYOR_SUBCOMMANDS, f"{name}: unknown subcommand {command[1]}"
            else:
                raise AssertionError(f"{name}: every container runs the conveyor CLI, not {command}")
        # no other selector may select these pods (one owner per pod)
        for other, labels in pod_labels.items():
            if other != name:
                assert not selector.items() <= labels.items(), f"{name}'s selector also matches {other}"

    component = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in deployments.values()}
    enabled = {
        name
        for name in ("api", "worker", "beat", "flower", "bridge")
        if values.get(name, {}).get("enabled", DEFAULTS[name]["enabled"])
    }
    assert set(component) == enabled

    beat = [d for d in deployments.values() if d["metadata"]["labels"]["app.kubernetes.io/component"] == "beat"]
    assert len(beat) == 1
    assert beat[0]["spec"]["replicas"] == 1
    assert beat[0]["spec"]["strategy"] == {"type": "Recreate"}
    assert containers(beat[0])[0]["command"] == ["conveyor", "beat"]

    if "api" in component:
        (api_container,) = containers(component["api"])
        assert api_container["command"] == ["conveyor", "api"]
        assert api_container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert api_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        (http_port,) = api_container["ports"]
        assert http_port["name"] == "http"
        assert str(http_port["containerPort"]) == data["CONVEYOR_API_PORT"]

    pools = values.get("worker", {}).get("pools") or DEFAULTS["worker"]["pools"]
    pool_defaults = {**DEFAULTS["worker"]["poolDefaults"], **values.get("worker", {}).get("poolDefaults", {})}
    workers = {
        d["metadata"]["labels"]["conveyor.io/worker-pool"]: d
        for d in deployments.values()
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    }
    assert set(workers) == {p["name"] for p in pools}
    for pool in pools:
        command = containers(workers[pool["name"]])[0]["command"]
        assert command[:2] == ["conveyor", "worker"]
        assert command[command.index("--queues") + 1] == ",".join(pool["queues"])
        concurrency = pool.get("concurrency", pool_defaults["concurrency"])
        assert command[command.index("--concurrency") + 1] == str(concurrency)

    for service in objects(docs, "Service").values():
        selected = [n for n, labels in pod_labels.items() if service["spec"]["selector"].items() <= labels.items()]
        assert len(selected) == 1, f"service {service['metadata']['name']} selects {selected}"
        ports = {p["name"] for c in containers(deployments[selected[0]]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports

    for hpa in objects(docs, "HorizontalPodAutoscaler").values():
        target = hpa["spec"]["scaleTargetRef"]["name"]
        assert target in deployments
        assert "replicas" not in deployments[target]["spec"], (
            f"{target} is autoscaled: replicas must be left to the HPA"
        )
        assert hpa["spec"]["metrics"]
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    for pdb in objects(docs, "PodDisruptionBudget").values():
        selected = [
            n for n, labels in pod_labels.items() if pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(selected) == 1, f"PDB {pdb['metadata']['name']} selects {selected}"
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])

    for ingress in objects(docs, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in objects(docs, "Service")


@pytest.mark.parametrize("name", ["defaults", *SCENARIOS])
def test_scenarios_lint_render_and_validate(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {} if name == "defaults" else scenario(name)
    rendered = render(copy.deepcopy(values))
    for kube_version in KUBE_VERSIONS:
        report = lint(values, kube_version=kube_version)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, f"helm lint --strict (Kubernetes {kube_version}): {problems}"
        validate(rendered.docs + rendered.hooks, kube_version)
    check_manifests(rendered.docs, values, monkeypatch)


def test_default_values_render(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render().docs
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
    configmap = next(iter(objects(docs, "ConfigMap").values()))
    assert configmap["data"]["CONVEYOR_BROKER_URL"].startswith("redis://")


def test_full_values_render(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(copy.deepcopy(FULL_VALUES)).docs
    kinds = {d["kind"] for d in docs}
    assert {"HorizontalPodAutoscaler", "Ingress", "NetworkPolicy", "PodDisruptionBudget"} <= kinds

    data = next(iter(objects(docs, "ConfigMap").values()))["data"]
    assert data["CONVEYOR_IMPORTS"] == '["acme.steps","acme.more_steps"]'
    assert data["CONVEYOR_MAX_PAYLOAD_BYTES"] == "8388608", "large integers must not render as 8.388608e+06"
    assert data["CONVEYOR_LEASE_SECONDS"] == "12.5"
    assert "CONVEYOR_GRAPHQL_INTROSPECTION" not in data, "null settings are left to the code's default"
    assert "CONVEYOR_BROKER_URL" not in data, "with redis.existingSecret the URLs come from the Secret"
    assert data["GOOGLE_CLOUD_PROJECT"] == "acme-events"
    assert json.loads(data["CONVEYOR_OIDC_ALGORITHMS"]) == ["RS256"]
    settings = settings_from(data, monkeypatch)
    assert settings.imports == ["acme.steps", "acme.more_steps"]
    assert settings.oidc_audience == "conveyor"

    deployments = objects(docs, "Deployment")
    api = deployments["demo-conveyor-api"]
    assert "replicas" not in api["spec"]
    (container,) = containers(api)
    assert container["image"].endswith("@sha256:" + "a" * 64)
    env = {e["name"]: e for e in container["env"]}
    assert env["CONVEYOR_BROKER_URL"]["valueFrom"]["secretKeyRef"] == {"name": "conveyor-redis", "key": "broker-url"}
    assert {"secretRef": {"name": "conveyor-secrets"}} in container["envFrom"]
    assert {"secretRef": {"name": "llm-keys"}} in container["envFrom"]
    pod = api["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "general"}
    assert pod["priorityClassName"] == "conveyor"
    assert pod["topologySpreadConstraints"] == FULL_VALUES["topologySpreadConstraints"], "explicit constraints win"

    gpu = deployments["demo-conveyor-worker-gpu"]
    assert gpu["spec"]["template"]["spec"]["nodeSelector"] == {"accelerator": "nvidia-l4"}, (
        "a pool's own nodeSelector wins"
    )
    assert "replicas" not in gpu["spec"]
    assert deployments["demo-conveyor-worker-default"]["spec"]["replicas"] == 3
    probe = containers(gpu)[0]["livenessProbe"]["exec"]["command"]
    assert probe[:2] == ["sh", "-c"] and probe[2].endswith("-lt 90"), probe

    flower_env = {e["name"]: e for e in containers(deployments["demo-conveyor-flower"])[0]["env"]}
    assert flower_env["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"] == {"name": "flower-auth", "key": "basic-auth"}

    sa = objects(docs, "ServiceAccount")["demo-conveyor"]
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith("iam.gserviceaccount.com")

    policies = objects(docs, "NetworkPolicy")
    assert policies["demo-conveyor-no-ingress"]["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in policies["demo-conveyor-no-ingress"]["spec"]
    egress = policies["demo-conveyor-egress"]["spec"]["egress"]
    assert egress[0]["ports"][0]["port"] == 53 and len(egress) == 2

    ingress = objects(docs, "Ingress")["demo-conveyor-api"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"][0]["secretName"] == "conveyor-tls"


def test_pools_inherit_the_pool_defaults() -> None:
    values = scenario("multipool")
    docs = render(copy.deepcopy(values)).docs
    deployments = objects(docs, "Deployment")
    defaults = values["worker"]["poolDefaults"]
    io = deployments["demo-conveyor-worker-io"]
    (container,) = containers(io)
    assert container["resources"] == defaults["resources"], "a pool that names no resources keeps the defaults'"
    assert container["command"][container["command"].index("--concurrency") + 1] == "32"
    assert io["spec"]["replicas"] == 4
    default = deployments["demo-conveyor-worker-default"]
    assert default["spec"]["replicas"] == DEFAULTS["worker"]["poolDefaults"]["replicas"], "chart default kept"
    hpas = objects(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"demo-conveyor-worker-batch"}
    assert hpas["demo-conveyor-worker-batch"]["spec"]["maxReplicas"] == 8
    assert hpas["demo-conveyor-worker-batch"]["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert "replicas" not in deployments["demo-conveyor-worker-batch"]["spec"]
    pdbs = objects(docs, "PodDisruptionBudget")
    assert "demo-conveyor-worker-batch" not in pdbs and "demo-conveyor-worker-io" in pdbs


def test_keda_scales_pools_on_their_queue_lengths() -> None:
    docs = render(scenario("keda")).docs
    scaled = objects(docs, "ScaledObject")
    assert set(scaled) == {"demo-conveyor-worker-default", "demo-conveyor-worker-ai"}
    ai = scaled["demo-conveyor-worker-ai"]["spec"]
    assert ai["scaleTargetRef"] == {"name": "demo-conveyor-worker-ai"}
    assert ai["maxReplicaCount"] == 5 and ai["minReplicaCount"] == 1
    # Each queue's urgent list (recovered steps) and normal list (every other step message).
    assert [t["metadata"]["listName"] for t in ai["triggers"]] == [
        *queue_keys("ai"),
        *queue_keys("ai-batch"),
    ]
    trigger = ai["triggers"][0]
    assert trigger["type"] == "redis"
    assert trigger["metadata"] == {
        "address": "redis-master.data:6379",
        "databaseIndex": "0",
        "listName": "ai",
        "listLength": "4",
        "enableTLS": "false",
        "passwordFromEnv": "REDIS_PASSWORD",
    }, "KEDA's trigger metadata values are strings"
    deployments = objects(docs, "Deployment")
    assert all("replicas" not in deployments[name]["spec"] for name in scaled), "KEDA owns the replica count"
    assert not objects(docs, "HorizontalPodAutoscaler")
    assert not objects(render().docs, "ScaledObject"), "no KEDA objects (nor CRDs needed) by default"


def test_probes_fit_celery() -> None:
    deployments = objects(render().docs, "Deployment")
    worker = deployments["demo-conveyor-worker-default"]
    (container,) = containers(worker)
    env = {e["name"]: e.get("value") for e in container["env"]}
    liveness = DEFAULTS["worker"]["liveness"]
    assert env["CONVEYOR_LIVENESS_FILE"] == liveness["file"]
    command = container["livenessProbe"]["exec"]["command"]
    assert "celery" not in " ".join(command), "no celery inspect in a probe"
    assert command == ["sh", "-c", f"test $(( $(date +%s) - $(stat -c %Y {liveness['file']}) )) -lt 60"]
    assert container["startupProbe"]["exec"]["command"] == command
    assert container["lifecycle"]["preStop"]["exec"]["command"]
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 300
    beat = deployments["demo-conveyor-beat"]
    (beat_container,) = containers(beat)
    assert beat_container["livenessProbe"]["exec"]["command"] == command
    for deployment in deployments.values():
        (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"api": {"replica": 3}}, "at '/api': additional properties 'replica' not allowed"),
        ({"worker": {"poolDefaults": {"concurrency": "four"}}}, "at '/worker/poolDefaults/concurrency': got string"),
        ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy': value must be one of"),
        ({"settings": {"lease_secnds": 3}}, "at '/settings': additional properties 'lease_secnds' not allowed"),
        ({"settings": {"lease_seconds": "soon"}}, "at '/settings/lease_seconds': got string, want number"),
        ({"worker": {"pools": [{"name": "x", "queue": ["q"]}]}}, "additional properties 'queue' not allowed"),
        ({"worker": {"pools": []}}, "at '/worker/pools': minItems"),
    ],
)
def test_schema_refuses_typos_and_wrong_types(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError, match=re.escape(message)):
        render(values)
    report = lint(values, kube_version=KUBE_VERSIONS[-1])
    assert any(message in error for error in report["errors"]), report


def test_schema_settings_follow_the_settings_model() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["definitions"]["settings"] == settings_schema(), (
        "values.schema.json is stale: run python -m tests.chart.settings_schema"
    )


def test_components_can_be_disabled() -> None:
    docs = render(
        {
            "api": {"enabled": False},
            "flower": {"enabled": False},
            "ingress": {"enabled": True},
            "networkPolicy": {"enabled": True},
        }
    ).docs
    names = {d["metadata"]["name"] for d in docs}
    assert not any(n.endswith(("-api", "-flower")) for n in names), names
    assert "demo-conveyor-beat" in names


def test_config_change_rolls_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        beat = objects(render(values).docs, "Deployment")["demo-conveyor-beat"]
        return str(beat["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({}) != checksum({"settings": {"log_level": "DEBUG"}})


def test_release_name_containing_chart_name() -> None:
    docs = render(release="conveyor-prod").docs
    assert "conveyor-prod-api" in objects(docs, "Deployment")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"settings": {"broker_url": "redis://x"}}, "additional properties 'broker_url' not allowed"),
        ({"settings": {"store": "sqlite"}}, "additional properties 'store' not allowed"),
        ({"settings": {"approval_link_secret": "s3cret"}}, "additional properties 'approval_link_secret' not allowed"),
        ({"firestore": {"project": ""}}, "at '/firestore/project': minLength"),
        ({"redis": {"brokerUrl": ""}}, "redis.brokerUrl"),
        ({"worker": {"pools": [{"name": "x", "queues": []}]}}, "at '/worker/pools/0/queues': minItems"),
        ({"worker": {"pools": [{"queues": ["q"]}]}}, "missing property 'name'"),
        ({"auth": {"oidc": {"jwksUrl": "https://issuer/jwks"}}}, "auth.oidc.issuer is required"),
        (
            {"api": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}},
            "autoscaling needs targetCPUUtilizationPercentage",
        ),
        (
            {"worker": {"poolDefaults": {"resources": {"requests": None}, "autoscaling": {"enabled": True}}}},
            "worker.pools[0] (default): a CPU autoscaler needs resources.requests.cpu",
        ),
        (
            {"worker": {"poolDefaults": {"autoscaling": {"enabled": True}, "keda": {"enabled": True}}}},
            "autoscaling and keda are exclusive",
        ),
    ],
)
def test_invalid_values_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError, match=re.escape(message)):
        render(values)


def test_notes_render() -> None:
    notes = render().notes
    assert "port-forward svc/demo-conveyor-api" in notes
    assert "worker   demo-conveyor-worker-default (queues: conveyor, concurrency 4)" in notes
    assert "flower" not in notes, "Flower is off by default"
    full = render(copy.deepcopy(FULL_VALUES)).notes
    assert "https://conveyor.acme.dev/" in full
    assert "port-forward svc/demo-conveyor-flower" in full
    assert "WARNING" not in full


def test_flower_requires_authentication() -> None:
    with pytest.raises(HelmError, match=re.escape("flower needs authentication")):
        render({"flower": {"enabled": True}})
    docs = render({"flower": {"enabled": True, "basicAuth": {"existingSecret": "flower-auth"}}}).docs
    (container,) = containers(objects(docs, "Deployment")["demo-conveyor-flower"])
    assert container["command"] == ["conveyor", "flower", "--address", "0.0.0.0", "--port", "5555"]
    oauth = {"provider": "flower.views.auth.GoogleAuth2LoginHandler", "auth": ".*@acme\\.dev", "existingSecret": "oauth"}
    docs = render({"flower": {"enabled": True, "oauth": oauth}}).docs
    (container,) = containers(objects(docs, "Deployment")["demo-conveyor-flower"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLOWER_AUTH_PROVIDER"] == oauth["provider"] and env["FLOWER_AUTH"] == oauth["auth"]
    assert {"secretRef": {"name": "oauth"}} in container["envFrom"]
    docs = render({"flower": {"enabled": True, "noAuth": True}}).docs
    (container,) = containers(objects(docs, "Deployment")["demo-conveyor-flower"])
    assert container["command"][-1] == "--no-auth"


# ------------------------------------------------------------------------------ docker-compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


APP_SERVICES = {"api": "api", "worker": "worker", "beat": "beat"}


def test_compose_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    """Validated against the Compose Specification's JSON Schema (tests/chart/compose-spec.json,
    vendored from compose-spec/compose-spec, Apache-2.0)."""
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors
    assert list(validator.iter_errors({"services": {"api": {"imag": "x"}}})), "the schema refuses unknown keys"


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "firestore", "pubsub", "pubsub-init", "api", "worker", "beat", "bridge", "flower"}
    emulator_image = "gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators"
    assert services["firestore"]["image"] == emulator_image
    assert services["firestore"]["command"][:4] == ["gcloud", "emulators", "firestore", "start"]
    assert services["pubsub"]["image"] == emulator_image
    assert services["pubsub"]["command"][:5] == ["gcloud", "beta", "emulators", "pubsub", "start"]
    for name, subcommand in {**APP_SERVICES, "flower": "flower", "bridge": "bridge"}.items():
        command = services[name]["command"]
        assert command[0] == "conveyor" and command[1] == subcommand, f"{name}: {command}"
    assert services["api"]["command"][2:] == ["--host", "0.0.0.0"]
    assert "--no-auth" not in services["flower"]["command"]
    auth = services["flower"]["environment"]["CONVEYOR_FLOWER_BASIC_AUTH"]
    assert "${FLOWER_PASSWORD:?" in auth, "compose refuses to start Flower without a password"


def test_compose_redis_keeps_queued_steps(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    flag = lambda name: command[command.index(name) + 1]  # noqa: E731
    assert flag("--appendonly") == "yes"
    assert flag("--maxmemory-policy") == "noeviction"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "redis-data" in compose["volumes"]


def test_compose_commands_name_existing_subcommands(compose: dict[str, Any]) -> None:
    assert {"api", "worker", "beat"} <= CONVEYOR_SUBCOMMANDS, CONVEYOR_SUBCOMMANDS
    for name, service in compose["services"].items():
        command = service.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        if command and command[0] == "conveyor":
            assert command[1] in CONVEYOR_SUBCOMMANDS, f"{name}: unknown subcommand {command[1]}"


def test_compose_environment(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*APP_SERVICES, "flower"]:
        env = compose["services"][name]["environment"]
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        env = {k: str(v) for k, v in env.items()}
        assert_settings_env(env, f"compose service {name}")
        settings = settings_from(env, monkeypatch)
        assert settings.store == "firestore"
        assert settings.firestore_project == env["CONVEYOR_FIRESTORE_PROJECT"]
        assert settings.broker_url == "redis://redis:6379/0"
        assert settings.redis_url == "redis://redis:6379/1"
        assert env["FIRESTORE_EMULATOR_HOST"].startswith("firestore:")
        assert env["PUBSUB_EMULATOR_HOST"].startswith("pubsub:")


def test_compose_dependencies_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        if service.get("restart") == "no":  # a one-shot job: compose waits for it to complete
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in ("worker", "beat"):
        assert "conveyor-liveness" in " ".join(services[name]["healthcheck"]["test"]), name
        assert services[name]["environment"]["CONVEYOR_LIVENESS_FILE"] == "/tmp/conveyor-liveness"
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert spec["condition"] in {"service_started", "service_healthy", "service_completed_successfully"}
            if spec["condition"] == "service_healthy":
                assert services[dependency].get("healthcheck"), (
                    f"{name} waits for {dependency}'s health, which has none"
                )
    for name in APP_SERVICES:
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["firestore"]["condition"] == "service_healthy"
    api_port = str(services["api"]["environment"]["CONVEYOR_API_PORT"])
    assert any(p.endswith(f":{api_port}") for p in services["api"]["ports"])
    assert api_port in " ".join(services["api"]["healthcheck"]["test"])


# -------------------------------------------------------------------------------- Dockerfile


def _packages() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must run as a non-root user"
    assert re.search(r'^CMD \["conveyor", "api"\]$', text, re.M)
    for package in _packages():
        assert re.search(rf"^COPY {package} \./{package}$", text, re.M), f"Dockerfile does not copy {package}/"
    assert "CONVEYOR_API_HOST=0.0.0.0" in text
    env_names = set(re.findall(r"\b(CONVEYOR_[A-Z0-9_]+)=", text))
    assert env_names <= SETTINGS_ENV, env_names - SETTINGS_ENV


def _distribution(requirement: str) -> str:
    """The normalized distribution name of a requirement string (PEP 503)."""
    name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_image_installs_locked_dependencies() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in text
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    lock = (ROOT / "requirements.lock").read_text()
    locked = {_distribution(line) for line in lock.splitlines() if re.match(r"^[A-Za-z0-9]", line)}
    assert lock.count("--hash=sha256:") >= len(locked), "every locked distribution carries its hashes"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_distribution(r) for r in project["dependencies"] + project["optional-dependencies"]["ai"]}
    missing = sorted(wanted - locked)
    assert not missing, f"requirements.lock is stale (missing {missing}); regenerate it with the command at its top"


def test_dockerignore_lets_the_build_context_through() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    for needed in ["pyproject.toml", "README.md", "requirements.lock", *(f"{p}/" for p in _packages())]:
        assert f"!{needed}" in lines, f".dockerignore must re-include {needed}"


# ------------------------------------------------------------------------------------ .ci/run


def test_ci_scripts_parse() -> None:
    for script in (".ci/run", ".ci/lib.sh", ".ci/start-services.sh"):
        result = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_readme_documents_the_ci_test_command() -> None:
    result = subprocess.run(
        ["bash", "-c", "source .ci/lib.sh && readme_test_command README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    command = result.stdout.strip()
    assert command.startswith("python -m pytest"), f"README's test command is {command!r}"


def test_readme_command_extraction_rejects_malformed_blocks(tmp_path: Path) -> None:
    cases = {
        "ok.md": ("text\n<!-- test-command -->\n\n```sh\n  python -m pytest -q  \n```\n", "python -m pytest -q"),
        "no-marker.md": ("```sh\npython -m pytest\n```\n", None),
        "prose.md": ("<!-- test-command -->\nRun this:\n```sh\npython -m pytest\n```\n", None),
        "empty.md": ("<!-- test-command -->\n```sh\n```\n", None),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        result = subprocess.run(
            ["bash", "-c", f'source "{ROOT}/.ci/lib.sh" && readme_test_command {name}'],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        if expected is None:
            assert result.returncode != 0, name
        else:
            assert result.returncode == 0 and result.stdout.strip() == expected, (name, result.stderr)


def test_migrations_run_as_a_hook_before_install_and_upgrade() -> None:
    rendered = render()
    hooks = {(d["kind"], d["metadata"]["name"]): d for d in rendered.hooks}
    job = hooks[("Job", "demo-conveyor-migrate")]
    config = hooks[("ConfigMap", "demo-conveyor-migrate")]
    for hook in (job, config):
        assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    weight = lambda d: int(d["metadata"]["annotations"]["helm.sh/hook-weight"])  # noqa: E731
    assert weight(config) < weight(job), "the settings exist before the Job that reads them"
    release_config = objects(rendered.docs, "ConfigMap")["demo-conveyor"]
    assert config["data"] == release_config["data"], "the hook runs with the release's settings"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["conveyor", "migrate"]
    assert container["envFrom"][0] == {"configMapRef": {"name": "demo-conveyor-migrate"}}
    assert {"configMapRef": {"name": "demo-conveyor"}} not in container["envFrom"], "not created yet at pre-install"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert not [d for d in render({"migrations": {"enabled": False}}).hooks if d["kind"] == "Job"]


def test_helm_test_checks_readyz() -> None:
    (pod,) = [d for d in render().hooks if d["metadata"]["annotations"]["helm.sh/hook"] == "test"]
    command = pod["spec"]["containers"][0]["command"]
    assert "http://demo-conveyor-api:80/readyz" in command[-1]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_service_monitor_is_optional() -> None:
    assert not objects(render().docs, "ServiceMonitor")
    monitor = objects(render({"metrics": {"serviceMonitor": {"enabled": True}}}).docs, "ServiceMonitor")
    (endpoint,) = monitor["demo-conveyor-api"]["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics", "interval": "30s"}


def test_grafana_dashboard_queries_metrics_that_exist() -> None:
    from api.metrics import Metrics
    from engine.adapters import metrics_prometheus

    families = {m.name for m in Metrics().registry.collect()}
    families |= {
        family.name
        for value in vars(metrics_prometheus).values()
        if hasattr(value, "collect") and hasattr(value, "_name")
        for family in value.collect()
    }
    dashboard = json.loads((ROOT / "docs" / "grafana" / "conveyor-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = set(re.findall(r"\b(conveyor_[a-z_]+?)(?:_bucket|_total|_count|_sum)?\b", target["expr"]))
            assert names, panel["title"]
            unknown = {n for n in names if n not in families and n.removesuffix("_total") not in families}
            assert not unknown, f"{panel['title']}: {unknown} are not metrics Conveyor exports"


def test_workers_serve_metrics() -> None:
    worker = objects(render().docs, "Deployment")["demo-conveyor-worker-default"]
    (container,) = containers(worker)
    command = container["command"]
    assert command[command.index("--metrics-port") + 1] == "9808"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9808, "protocol": "TCP"}]
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9808" and annotations["prometheus.io/scrape"] == "true"


def test_bridge_deployment() -> None:
    assert "demo-conveyor-bridge" not in objects(render().docs, "Deployment"), "off by default"
    with pytest.raises(HelmError, match=re.escape("bridge.enabled needs settings.bridge_subscriptions")):
        render({"bridge": {"enabled": True}})
    rendered = render(copy.deepcopy(FULL_VALUES))
    bridge = objects(rendered.docs, "Deployment")["demo-conveyor-bridge"]
    (container,) = containers(bridge)
    assert container["command"] == ["conveyor", "bridge"]
    assert bridge["spec"]["replicas"] == 3
    assert bridge["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30, "time to ack in-flight messages"
    data = objects(rendered.docs, "ConfigMap")["demo-conveyor"]["data"]
    assert json.loads(data["CONVEYOR_BRIDGE_SUBSCRIPTIONS"])[0] == {"subscription": "orders-conveyor", "tenant": "acme"}
    assert "demo-conveyor-bridge" in objects(rendered.docs, "PodDisruptionBudget")
    assert "bridge   demo-conveyor-bridge (3 replicas, 2 subscriptions)" in rendered.notes
    no_ingress = objects(rendered.docs, "NetworkPolicy")["demo-conveyor-no-ingress"]
    assert "bridge" in no_ingress["spec"]["podSelector"]["matchExpressions"][0]["values"]
    metrics = objects(rendered.docs, "NetworkPolicy")["demo-conveyor-worker-metrics"]
    assert metrics["spec"]["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]


@pytest.mark.backend
def test_compose_pubsub_init_creates_the_bridge_topics(compose: dict[str, Any], pubsub_emulator: str) -> None:
    """The one-shot topic job runs against the real Pub/Sub emulator; the bridge's configuration
    names a subscription on one of its topics and a dead-letter topic it creates."""
    command = compose["services"]["pubsub-init"]["command"]
    assert command[:3] == ["python", "-m", "conveyor.pubsub_topics"]
    project, *topics = command[3:]
    bridge_env = compose["services"]["bridge"]["environment"]
    (subscription,) = json.loads(bridge_env["CONVEYOR_BRIDGE_SUBSCRIPTIONS"])
    assert subscription["topic"] in topics and bridge_env["CONVEYOR_BRIDGE_DEAD_LETTER_TOPIC"] in topics
    assert bridge_env["CONVEYOR_PUBSUB_PROJECT"] == project
    from conveyor.pubsub_topics import ensure_topics

    unique = f"{project}-{os.getpid()}"
    assert ensure_topics(unique, topics) == topics
    assert ensure_topics(unique, topics) == [], "running it again creates nothing"
