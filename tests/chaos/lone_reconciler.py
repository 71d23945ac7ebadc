"""A reconciler without its lease, in a process of its own: what a beat whose lease failed runs.

``python -m tests.chaos.lone_reconciler`` builds the service from the ``CONVEYOR_*``
environment and runs a pass every ``CONVEYOR_RECONCILE_INTERVAL`` seconds with no lease, so two
of them run their passes truly at once. SIGTERM stops it after the current pass.
"""

from __future__ import annotations

import signal
import threading

from conveyor.embedded import Reconciler
from engine.bootstrap import build_service
from engine.settings import Settings


def main() -> None:
    service = build_service(Settings())
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    reconciler = Reconciler(service, service.settings.reconcile_interval, lease=None)
    reconciler.start()
    print("lone reconciler ready.", flush=True)
    stopped.wait()
    reconciler.stop()
    service.store.close()


if __name__ == "__main__":
    main()
