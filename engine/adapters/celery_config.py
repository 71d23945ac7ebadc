"""Celery configuration that serves Conveyor's delivery guarantees (ARCHITECTURE §2).

The store is the source of truth and the broker may drop or repeat messages, so every
setting here errs towards redelivery over loss: late acks, re-queue on a lost worker, one
message prefetched at a time. Results live in the store, so there is no result backend.

Without ``CONVEYOR_BROKER_URL`` the broker is kombu's in-memory transport (embedded mode:
``conveyor dev`` and ``conveyor run`` run the worker in the same process).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import Celery

from engine.errors import ConveyorError
from engine.settings import Settings

MEMORY_BROKER = "memory://"

#: Seconds between polls of the in-memory transport: kombu's default of 1s would add up to
#: a second of latency to every step in embedded mode.
MEMORY_POLLING_INTERVAL = 0.01

#: Give up connecting to the broker after this many seconds, so an API call that dispatches
#: while Redis is down fails fast instead of hanging.
SOCKET_CONNECT_TIMEOUT = 5


#: Message priorities on kombu's Redis transport, which keeps one list per step of
#: ``PRIORITY_STEPS`` and serves the *lowest* number first. Step messages are published as
#: normal; those the reconciler recovers as urgent, so they do not wait behind a backlog.
URGENT_PRIORITY = 0
NORMAL_PRIORITY = 9
PRIORITY_STEPS = [URGENT_PRIORITY, NORMAL_PRIORITY]


#: kombu's Redis transport with the message ledger (``engine/adapters/broker_redis.py``),
#: named by path: Celery imports it, and this module only for a Redis broker URL.
REDIS_TRANSPORT = "engine.adapters.broker_redis:Transport"


def broker_url(settings: Settings) -> str:
    """The broker to use: ``settings.broker_url`` or the in-memory transport."""
    return settings.broker_url or MEMORY_BROKER


def is_embedded(settings: Settings) -> bool:
    """True when messages only travel inside this process (in-memory broker)."""
    return broker_url(settings).startswith(MEMORY_BROKER)


def _redis_transport(url: str, mode: str) -> dict[str, Any]:
    """On a Redis broker, the transport that records step messages in the ledger as it queues them.

    Naming a transport overrides the URL's scheme, which is also how kombu turns TLS on for
    ``rediss://``: without ``ssl_*`` options in the URL, kombu's default for that scheme
    (certificates not checked) is kept by saying it here. ``mode`` is ``broker_transport``:
    ``stock`` names none (kombu's own serves), ``auto`` too when this kombu lacks the private
    names that transport relies on (see ``broker_redis``), ``ledger`` refuses to go without them.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or mode == "stock":
        return {}
    from engine.adapters.broker_redis import ledger_transport_usable, missing_private_names

    if mode == "ledger" and missing_private_names():
        raise ConveyorError(
            f"broker_transport=ledger, but this kombu lacks or changed {', '.join(missing_private_names())}; "
            "set broker_transport to auto or stock"
        )
    if not ledger_transport_usable():
        return {}
    config: dict[str, Any] = {"broker_transport": REDIS_TRANSPORT}
    if parts.scheme == "rediss" and not any(key.startswith("ssl_") for key in parse_qs(parts.query)):
        config["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_NONE}
    return config


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings for ``settings`` (keys are Celery's lowercase setting names)."""
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if is_embedded(settings):
        transport["polling_interval"] = MEMORY_POLLING_INTERVAL
    else:
        transport["socket_connect_timeout"] = SOCKET_CONNECT_TIMEOUT
        transport["priority_steps"] = PRIORITY_STEPS
    return {
        "broker_url": broker_url(settings),
        **_redis_transport(broker_url(settings), settings.broker_transport),
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # A message is acknowledged only after its task returned, and given back to the
        # broker when the worker process dies: a step message is never lost in flight.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Conveyor logs with structlog to stderr; Celery re-logging stdout/stderr would wrap
        # every structured line in a second, WARNING-level record.
        "worker_redirect_stdouts": False,
        "task_default_queue": settings.default_queue,
        # Step results are recorded in the store; a result backend would be a second,
        # unfenced copy. Without one, beat must not schedule its backend cleanup either.
        "task_ignore_result": True,
        "result_backend": None,
        "result_expires": None,
        "timezone": "UTC",
        "enable_utc": True,
    }


def queue_keys(queue: str) -> list[str]:
    """The Redis lists holding ``queue``'s messages, one per priority step (kombu's naming)."""
    return [queue if priority == URGENT_PRIORITY else f"{queue}\x06\x16{priority}" for priority in PRIORITY_STEPS]


def make_celery(settings: Settings, name: str, include: Sequence[str] = ()) -> Celery:
    """A Celery app configured from ``settings``; ``include`` names task modules to import."""
    app = Celery(name, include=list(include), set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
