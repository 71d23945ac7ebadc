"""Settings, read from the environment with the ``CONVEYOR_`` prefix (or a ``.env`` file).

See the configuration table in README.md; every field here is listed there.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class BridgeSubscription(BaseModel):
    """One Pub/Sub subscription the bridge pulls, and the tenant its events belong to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Subscription id (in ``pubsub_project``) or full path ``projects/P/subscriptions/S``.
    subscription: str = Field(min_length=1)
    tenant: str = Field(min_length=1)
    #: Topic to create the subscription on when it does not exist yet (with the dead-letter policy).
    topic: str | None = None
    #: Event type of messages without a ``type`` / ``ce-type`` attribute.
    event_type: str | None = None
    #: Only messages whose attributes include all of these are routed; others are acknowledged
    #: and dropped (filtering happens here: the emulator ignores subscription filters).
    attributes: dict[str, str] = Field(default_factory=dict)


class Settings(BaseSettings):
    """Every knob of Conveyor. Defaults run embedded on a laptop with no services."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", env_file=".env", extra="ignore")

    profile: Literal["development", "production"] = "development"

    # storage
    store: Literal["sqlite", "firestore"] = "sqlite"
    state_dir: Path = Path(".conveyor")
    sqlite_path: Path | None = None
    firestore_project: str = "conveyor-local"
    firestore_database: str = "(default)"
    firestore_wire: Literal["auto", "raw", "public"] = "auto"

    # messaging
    broker_url: str | None = None
    broker_transport: Literal["auto", "ledger", "stock"] = "auto"
    redis_url: str | None = None
    visibility_timeout: int = 3600
    default_queue: str = "conveyor"
    event_stream_maxlen: int = 10_000

    # execution behaviour
    imports: list[str] = Field(default_factory=list)
    lease_seconds: float = 30.0
    redispatch_after: float = 30.0
    unclaimed_run_seconds: float = 1.0
    cancel_check_seconds: float = Field(default=0.5, ge=0)
    reconcile_interval: float = 5.0
    reconcile_batch: int = Field(default=200, ge=1)
    reconcile_pass_seconds: float = Field(default=2.0, gt=0)
    reconcile_concurrency: int = Field(default=8, ge=1)
    redispatch_held_after: float = 300.0
    schedule_poll_interval: float = Field(default=1.0, gt=0, le=1.0)
    short_timer_threshold: float = 5.0
    max_payload_bytes: int = 8 * 1024 * 1024
    inline_payload_bytes: int = 256 * 1024
    max_foreach_items: int = 10_000

    # outbound HTTP (the http step; see engine/egress.py)
    http_allow_hosts: list[str] = Field(default_factory=list)
    http_allow_cidrs: list[str] = Field(default_factory=list)
    http_allow_ports: list[int] = Field(default_factory=list)
    http_timeout: float = 30.0
    http_max_response_bytes: int = 1024 * 1024
    http_max_redirects: int = Field(default=5, ge=0, le=5)

    # approvals and subworkflows
    approval_link_secret: SecretStr | None = None
    approval_link_ttl: float = 7 * 24 * 3600.0
    subworkflow_max_depth: int = Field(default=5, ge=1)

    # AI steps (conveyor[ai])
    #: Where the embedded store keeps agent checkpoints (default: beside the SQLite store).
    ai_checkpoint_path: Path | None = None
    #: Model prices for cost budgets: ``{"openai:gpt-4o-mini": {"input": 0.15, "output": 0.6}}``
    #: in currency units per million tokens.
    ai_prices: dict[str, dict[str, float]] = Field(default_factory=dict)

    # external events and the Pub/Sub bridge (conveyor bridge)
    #: An accepted event its router has not finished after this many seconds (it died) is
    #: routed by the reconciler.
    event_route_after: float = Field(default=5.0, ge=0)
    #: Routed events are deleted from the event log this many seconds after they were accepted
    #: (by the reconciler). A ``wait_for_event`` step that starts waiting later no longer sees
    #: them, and a copy of a deleted event published again is accepted anew.
    event_retention_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    #: Days a finished execution is kept, counted from when it reached a terminal status; then
    #: the reconciler deletes it with everything derived from it (steps, history, payloads, step
    #: logs, agent checkpoints and the memory notes it wrote; see engine/retention.py). ``0``
    #: keeps executions forever. A workflow's ``retention:`` overrides it; a change applies to
    #: executions that finish afterwards.
    execution_retention_days: float = Field(default=30.0, ge=0)
    #: Google Cloud project of the Pub/Sub subscriptions, topics and ``pubsub.publish`` steps.
    pubsub_project: str | None = None
    #: Subscriptions the bridge pulls: ``[{"subscription": "orders", "tenant": "acme", ...}]``
    #: (see docs/configuration.md for every key). The tenant is never taken from a message.
    bridge_subscriptions: list[BridgeSubscription] = Field(default_factory=list)
    #: Topic that receives messages the bridge cannot turn into events, the reason in attributes.
    bridge_dead_letter_topic: str | None = None
    #: Dead letters kept per tenant for people to look at (the console, GET /v1/events/dead-letters).
    bridge_dead_letters_kept: int = Field(default=200, ge=1, le=10_000)
    #: Deliveries of a message failing transiently before it is dead-lettered (the native
    #: dead-letter policy set on created subscriptions is this plus 2, a backstop).
    bridge_max_attempts: int = Field(default=5, ge=1, le=98)
    #: Flow control: messages held by the bridge at once.
    bridge_max_messages: int = Field(default=100, ge=1)
    #: Most messages whose events the bridge accepts in one store transaction (messages
    #: pulled together are batched; 1 makes one transaction per message).
    bridge_batch_size: int = Field(default=50, ge=1, le=200)
    #: Larger messages are dead-lettered as too large.
    bridge_max_message_bytes: int = Field(default=1024 * 1024, ge=1)

    # step logs (what step functions log and print, per attempt; see engine/steplogs)
    #: Capture step logs: off, steps log only to the worker's own output as before.
    step_logs_enabled: bool = True
    #: Lowest level of ``logging`` records captured (whatever CONVEYOR_LOG_LEVEL prints).
    step_logs_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    #: Lines kept per attempt; later lines are counted as dropped, not stored.
    step_logs_max_lines: int = Field(default=1000, ge=0)
    #: Bytes of messages kept per attempt (one stored record stays under Firestore's 1 MiB).
    step_logs_max_bytes: int = Field(default=256 * 1024, ge=1024, le=900 * 1024)
    #: Longer lines are cut to this many characters.
    step_logs_max_line_chars: int = Field(default=4000, ge=80)
    #: Environment variables whose values are replaced by ``***`` in captured lines.
    step_logs_redact_env: list[str] = Field(default_factory=list)
    #: Regular expressions whose matches are replaced by ``***`` in captured lines.
    step_logs_redact_patterns: list[str] = Field(default_factory=list)
    #: Where the embedded store keeps step logs (default: beside the SQLite store).
    step_logs_path: Path | None = None

    # api
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    auth_enabled: bool = True
    max_concurrent_executions: int = 10_000
    max_request_bytes: int = 1024 * 1024
    rate_limit: str = "600/minute"
    tenant_rate_limit: str = "6000/minute"
    allowed_origins: list[str] = Field(default_factory=lambda: ["http://localhost", "http://127.0.0.1"])
    allowed_hosts: list[str] = Field(default_factory=lambda: ["*"])
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0)
    max_json_depth: int = Field(default=64, ge=2)
    oidc_jwks_url: str | None = None
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256"])
    oidc_tenant_claim: str = "tenant"
    oidc_role_claim: str = "role"
    graphql_introspection: bool | None = None
    graphql_max_depth: int = 12
    graphql_max_aliases: int = 30
    graphql_max_tokens: int = 5000
    graphql_max_document_bytes: int = 16 * 1024
    graphql_max_cost: int = 50_000

    # operations
    liveness_file: Path | None = None
    worker_metrics_port: int | None = None
    worker_metrics_address: str = "127.0.0.1"
    tracing_enabled: bool = False
    sentry_dsn: str | None = None
    sentry_environment: str | None = None
    flower_port: int = 5555
    flower_address: str = "127.0.0.1"
    flower_basic_auth: list[str] = Field(default_factory=list)
    flower_auth_disabled: bool = False
    flower_inline_events: bool = True

    # logging
    log_level: str = "INFO"
    log_json: bool = False

    def resolved_sqlite_path(self) -> Path:
        return self.sqlite_path or self.state_dir / "conveyor.db"

    def resolved_ai_checkpoint_path(self) -> Path:
        sqlite = self.resolved_sqlite_path()
        return self.ai_checkpoint_path or sqlite.with_name(f"{sqlite.stem}-checkpoints.db")

    def resolved_step_logs_path(self) -> Path:
        sqlite = self.resolved_sqlite_path()
        return self.step_logs_path or sqlite.with_name(f"{sqlite.stem}-logs.db")

    @field_validator("step_logs_redact_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"step_logs_redact_patterns: {pattern!r} is not a regular expression: {exc}") from None
        return patterns

    def introspection_enabled(self) -> bool:
        if self.graphql_introspection is not None:
            return self.graphql_introspection
        return self.profile != "production"


#: Prefixes of variables the test suite, CI (``.ci/``) and the benchmarks read; they are not settings.
NOT_SETTINGS = ("CONVEYOR_TEST_", "CONVEYOR_CHAOS_", "CONVEYOR_BENCH_", "CONVEYOR_CI_")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``CONVEYOR_*`` variables in ``environ`` that name no setting, each with the setting it
    most resembles (``CONVEYOR_LEASE_SECNDS (did you mean CONVEYOR_LEASE_SECONDS?)``).

    Settings ignore them, so a misspelt setting would otherwise do nothing without a word.
    Names are compared as settings read them: regardless of case.
    """
    fields = [name.upper() for name in Settings.model_fields]
    found = []
    for name in sorted(environ):
        upper = name.upper()
        field = upper.removeprefix("CONVEYOR_")
        if field == upper or field in fields or upper.startswith(NOT_SETTINGS):
            continue
        close = difflib.get_close_matches(field, fields, n=1)  # on the field: every name shares the prefix
        found.append(f"{name} (did you mean CONVEYOR_{close[0]}?)" if close else name)
    return found
