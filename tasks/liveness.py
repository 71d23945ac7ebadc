"""A Celery consumer bootstep that keeps ``CONVEYOR_LIVENESS_FILE`` fresh while the worker's
event loop turns (see :mod:`engine.adapters.liveness`)."""

from __future__ import annotations

from typing import Any

from celery import Celery, bootsteps

from engine.adapters.liveness import LivenessFile
from engine.settings import Settings

#: Seconds between touches; the chart's probe allows 60 s of silence.
TOUCH_EVERY = 5.0


class LivenessStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Touch the file on the consumer's timer, which runs in the worker's main event loop."""

    requires = {"celery.worker.consumer.heart:Heart"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        path = Settings().liveness_file
        self.file = LivenessFile(path, every=0) if path else None
        self.timer: Any = None

    def start(self, parent: Any) -> None:
        if self.file is None:
            return
        self.file.touch()
        self.timer = parent.timer.call_repeatedly(TOUCH_EVERY, self.file.touch)

    def stop(self, parent: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
        if self.file is not None:
            self.file.remove()


def install(app: Celery) -> None:
    """Add the liveness bootstep to ``app``'s consumer."""
    app.steps["consumer"].add(LivenessStep)
