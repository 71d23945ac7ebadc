"""A heartbeat file for Kubernetes liveness probes of workers and beat.

The process touches the file from its own main loop (a Celery consumer timer, the beat tick),
so a hung loop stops touching it; the probe is a shell test of the file's age (milliseconds,
no Python and no broker round trip as ``celery inspect ping`` would need).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class LivenessFile:
    """Touch ``path`` at most every ``every`` seconds."""

    def __init__(self, path: Path, every: float = 5.0) -> None:
        self.path = path
        self.every = every
        self._last = float("-inf")

    def touch(self) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        os.utime(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
