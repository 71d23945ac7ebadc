"""How the ``conveyor`` process ends.

A command that abandoned running steps (``conveyor run`` after Ctrl-C, a cancel or a
deadline) asks for a prompt exit: its result is printed and every change is committed, so
the process ends without finalizing the interpreter. Finalizing a process that loaded Celery,
kombu and the store clients takes up to a second or more on a loaded machine, and nothing in
it is needed once the store is closed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

_prompt = False


def exit_promptly() -> None:
    """Ask :func:`run_app` to end the process without interpreter finalization once the command returns."""
    global _prompt
    _prompt = True


def run_app(app: Callable[..., object], **kwargs: object) -> None:
    """Run a Typer/Click app as the process's main program, honouring :func:`exit_promptly`."""
    try:
        app(**kwargs)
    except SystemExit as exc:
        if not _prompt:
            raise
        code = exc.code
        logging.shutdown()  # flush log handlers, as interpreter exit would
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)
