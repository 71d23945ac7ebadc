"""Conveyor's HTTP API: REST ``/v1``, GraphQL, progress streams. Never runs steps."""

from api.app import create_app

__all__ = ["create_app"]
