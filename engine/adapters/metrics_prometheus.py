"""Prometheus metrics of executions, steps and the reconciler, for every Conveyor process.

The metric families live in prometheus_client's default registry, once per process. Under a
prefork Celery worker each pool process counts in its own files when
``PROMETHEUS_MULTIPROC_DIR`` is set (``conveyor worker --metrics-port`` sets it), and the
worker's main process serves their sum (:func:`serve_worker_metrics`). Labels are workflow
names, step types and statuses: bounded by what is deployed, never ids or tenants.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess

from engine.ports import ModelCall, StepAttempt

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

STEP_ATTEMPTS = Counter(
    "conveyor_step_attempts_total",
    "Step attempts by workflow, step type and how the attempt ended",
    ["workflow", "step_type", "outcome"],
)
STEP_SECONDS = Histogram(
    "conveyor_step_attempt_seconds",
    "Wall time of a step attempt (running and recording) by workflow and step type",
    ["workflow", "step_type"],
    buckets=DURATION_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "conveyor_step_queue_wait_seconds",
    "From a step's dispatch to its attempt's start, by workflow",
    ["workflow"],
    buckets=DURATION_BUCKETS,
)
RETRIES = Counter(
    "conveyor_step_retries_total",
    "Attempts after a step's first (retries and re-runs of a lost worker's step)",
    ["workflow", "step_type"],
)
STARTED = Counter(
    "conveyor_executions_started_total",
    "Executions created (by the API, a trigger or the CLI), by workflow",
    ["workflow"],
)
EXECUTIONS = Counter(
    "conveyor_executions_finished_total",
    "Executions that reached a final status, by workflow and status",
    ["workflow", "status"],
)
EXECUTION_SECONDS = Histogram(
    "conveyor_execution_seconds",
    "From an execution's start to its final status, by workflow and status",
    ["workflow", "status"],
    buckets=DURATION_BUCKETS,
)
REPAIRS = Counter(
    "conveyor_reconciler_repairs_total",
    "What reconciler passes repaired, by kind (expired_leases counts lease expiries)",
    ["kind"],
)

PURGED = Counter(
    "conveyor_executions_purged_total",
    "Executions deleted with everything derived from them, by reason (expired: retention; deleted: asked for)",
    ["reason"],
)


MODEL_CALLS = Counter(
    "conveyor_model_calls_total",
    "Chat model calls of AI steps by workflow, step, model and outcome (ok or the error's type)",
    ["workflow", "step", "model", "outcome"],
)
MODEL_TOKENS = Counter(
    "conveyor_model_tokens_total",
    "Tokens of AI steps' model calls by workflow, step, model and direction (input or output)",
    ["workflow", "step", "model", "direction"],
)
MODEL_COST = Counter(
    "conveyor_model_cost_total",
    "Cost of AI steps' model calls (CONVEYOR_AI_PRICES units) by workflow, step and model",
    ["workflow", "step", "model"],
)
MODEL_SECONDS = Histogram(
    "conveyor_model_call_seconds",
    "Latency of AI steps' model calls by workflow, step and model",
    ["workflow", "step", "model"],
    buckets=DURATION_BUCKETS,
)


class PrometheusTelemetry:
    """A :class:`~engine.ports.Telemetry` over the metric families above."""

    def step_attempt(self, attempt: StepAttempt) -> None:
        STEP_ATTEMPTS.labels(attempt.workflow, attempt.step_type, attempt.outcome).inc()
        STEP_SECONDS.labels(attempt.workflow, attempt.step_type).observe(attempt.seconds)
        if attempt.queue_wait is not None and attempt.queue_wait >= 0:
            QUEUE_WAIT.labels(attempt.workflow).observe(attempt.queue_wait)
        if attempt.attempt > 1:
            RETRIES.labels(attempt.workflow, attempt.step_type).inc()

    def execution_started(self, workflow: str) -> None:
        STARTED.labels(workflow).inc()

    def execution_settled(self, workflow: str, status: str, seconds: float) -> None:
        EXECUTIONS.labels(workflow, status).inc()
        EXECUTION_SECONDS.labels(workflow, status).observe(max(seconds, 0.0))

    def reconciled(self, repairs: dict[str, int]) -> None:
        for kind, count in repairs.items():
            if count:
                REPAIRS.labels(kind).inc(count)

    def executions_purged(self, count: int, reason: str) -> None:
        if count:
            PURGED.labels(reason).inc(count)

    def model_call(self, call: ModelCall) -> None:
        """Also the :class:`~engine.ports.ModelTelemetry` of the AI runtime."""
        labels = (call.workflow, call.step_id, call.model)
        MODEL_CALLS.labels(*labels, call.error or "ok").inc()
        MODEL_SECONDS.labels(*labels).observe(max(call.seconds, 0.0))
        if call.input_tokens:
            MODEL_TOKENS.labels(*labels, "input").inc(call.input_tokens)
        if call.output_tokens:
            MODEL_TOKENS.labels(*labels, "output").inc(call.output_tokens)
        if call.cost:
            MODEL_COST.labels(*labels).inc(call.cost)


def multiprocess_dir() -> Path | None:
    """Where pool processes keep their metric files, when multiprocess mode is on."""
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def collecting_registry() -> CollectorRegistry:
    """The registry whose output is this process's /metrics: the sum of every process's files in
    multiprocess mode, else the default registry."""
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def render() -> bytes:
    """This process's engine metrics in the text exposition format."""
    return generate_latest(collecting_registry())


def serve_worker_metrics(port: int, address: str) -> None:
    """Serve /metrics on ``port`` from the worker's main process (Prometheus scrapes it)."""
    start_http_server(port, addr=address, registry=collecting_registry())


def process_exited(pid: int) -> None:
    """Forget a dead pool process's live gauges (counters and histograms are kept)."""
    if multiprocess_dir() is not None:
        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
