"""Celery side of Conveyor: the worker app (:mod:`tasks.app`) and its thin tasks (:mod:`tasks.steps`)."""
