"""Tenants' prompt templates in the embedded SQLite store's file (the ``PromptStore`` port)."""

from __future__ import annotations

import sqlite3

from engine.adapters.store_sqlite import SqliteStore
from engine.prompts import PromptRecord, version_cursor
from engine.records import Page

_SCHEMA = """CREATE TABLE IF NOT EXISTS prompt_versions (
    tenant TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, template TEXT NOT NULL,
    system TEXT, description TEXT, created_at REAL NOT NULL, PRIMARY KEY (tenant, name, version))"""
_NEWEST = (
    "SELECT tenant, name, version, template, system, description, created_at FROM prompt_versions "
    "WHERE tenant = ? AND name = ? ORDER BY version DESC LIMIT 1"
)
_ONE = (
    "SELECT tenant, name, version, template, system, description, created_at FROM prompt_versions "
    "WHERE tenant = ? AND name = ? AND version = ?"
)
_LIST = (
    "SELECT tenant, name, version, template, system, description, created_at FROM prompt_versions p "
    "WHERE tenant = ? AND name > ? AND version = "
    "(SELECT MAX(version) FROM prompt_versions q WHERE q.tenant = p.tenant AND q.name = p.name) "
    "ORDER BY name LIMIT ?"
)
_VERSIONS = (
    "SELECT tenant, name, version, template, system, description, created_at FROM prompt_versions "
    "WHERE tenant = ? AND name = ? AND version < ? ORDER BY version DESC LIMIT ?"
)
_INSERT = (
    "INSERT INTO prompt_versions (tenant, name, version, template, system, description, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class SqlitePromptStore:
    """Prompt versions in their own table of the store's file; a new version is numbered in
    the same write transaction that reads the newest (``BEGIN IMMEDIATE``: no race)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        store.run_write(lambda conn: conn.execute(_SCHEMA))

    def add_prompt_version(
        self, tenant: str, name: str, template: str, system: str | None, description: str | None, now: float
    ) -> tuple[PromptRecord, bool]:
        def add(conn: sqlite3.Connection) -> tuple[PromptRecord, bool]:
            row = conn.execute(_NEWEST, (tenant, name)).fetchone()
            newest = None if row is None else PromptRecord(*row)
            if newest is not None and newest.same_text(template, system, description):
                return newest, False
            record = PromptRecord(
                tenant, name, 1 if newest is None else newest.version + 1, template, system, description, now
            )
            conn.execute(
                _INSERT,
                (
                    record.tenant,
                    record.name,
                    record.version,
                    record.template,
                    record.system,
                    record.description,
                    record.created_at,
                ),
            )
            return record, True

        return self._store.run_write(add)

    def get_prompt(self, tenant: str, name: str, version: int | None = None) -> PromptRecord | None:
        if version is None:
            row = self._store.run_read(lambda conn: conn.execute(_NEWEST, (tenant, name)).fetchone())
        else:
            row = self._store.run_read(lambda conn: conn.execute(_ONE, (tenant, name, version)).fetchone())
        return None if row is None else PromptRecord(*row)

    def list_prompts(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        rows = self._store.run_read(lambda conn: conn.execute(_LIST, (tenant, cursor or "", limit + 1)).fetchall())
        items = [PromptRecord(*row) for row in rows[:limit]]
        return Page(items, items[-1].name if len(rows) > limit else None)

    def list_prompt_versions(self, tenant: str, name: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        below = version_cursor(cursor)
        rows = self._store.run_read(lambda conn: conn.execute(_VERSIONS, (tenant, name, below, limit + 1)).fetchall())
        items = [PromptRecord(*row) for row in rows[:limit]]
        return Page(items, str(items[-1].version) if len(rows) > limit else None)
