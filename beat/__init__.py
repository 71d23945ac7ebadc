"""Celery Beat for Conveyor: periodic jobs (the reconciler) behind a single-active Redis lease."""
