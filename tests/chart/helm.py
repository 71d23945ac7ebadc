"""The chart through real Helm: the Helm v4 Go SDK (``helm-python-sdk``), and every rendered
manifest validated strictly against the Kubernetes OpenAPI schemas (``kubernetes-validate``).

``render`` is what ``helm template`` runs (values schema, ``required``/``fail``, the real template
engine), hooks and ``helm test`` pods included; ``lint`` is ``helm lint --strict``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "conveyor"
#: The oldest and newest Kubernetes versions the chart supports (Chart.yaml's kubeVersion floor and
#: the newest schemas kubernetes-validate ships).
KUBE_VERSIONS = ("1.29.0", "1.37.0")
#: Kinds from CRDs, which the Kubernetes schemas do not know; their shape is asserted by tests.
CRD_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor")}

HelmError = helm.HelmError


NOTES = "conveyor/templates/NOTES.txt"


class Rendered:
    """One rendering: the release's objects (``docs``), its hooks and test pods (``hooks``) and NOTES."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.notes = manifests.get(NOTES, "")
        parsed = [d for path, text in manifests.items() if path != NOTES for d in yaml.safe_load_all(text) if d]
        is_hook = [bool(d["metadata"].get("annotations", {}).get("helm.sh/hook")) for d in parsed]
        self.docs: list[dict[str, Any]] = [d for d, hook in zip(parsed, is_hook, strict=True) if not hook]
        self.hooks: list[dict[str, Any]] = [d for d, hook in zip(parsed, is_hook, strict=True) if hook]

    def objects(self, kind: str) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d for d in self.docs if d["kind"] == kind}


def render(values: dict[str, Any] | None = None, *, release: str = "demo", namespace: str = "conveyor") -> Rendered:
    """Render the chart as ``helm template`` would; Helm's errors propagate as ``HelmError``."""
    chart = helm.Chart.load(str(CHART))
    try:
        return Rendered(chart.render(values or {}, name=release, namespace=namespace, is_install=True))
    finally:
        chart.close()


def lint(values: dict[str, Any] | None = None, *, kube_version: str) -> dict[str, Any]:
    """``helm lint --strict`` with ``values`` for one Kubernetes version."""
    return helm.lint(str(CHART), values or {}, strict=True, kube_version=f"v{kube_version}")


def validate(docs: list[dict[str, Any]], kube_version: str) -> None:
    """Validate every built-in object strictly (unknown fields are errors) for ``kube_version``."""
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, kube_version, strict=True)
