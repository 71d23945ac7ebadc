"""Tenants' prompt templates in Firestore (the ``PromptStore`` port).

``tenants/{tenant}/prompts/{name}`` holds the newest version (listings read only these);
``.../versions/{version}`` every version. A new version is numbered in a transaction that
reads the newest, so two writers never take the same number.
"""

from __future__ import annotations

from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from engine.adapters.store_firestore.errors import translated_errors
from engine.adapters.store_firestore.layout import encode_id
from engine.adapters.store_firestore.transaction import MAX_ATTEMPTS
from engine.prompts import PromptRecord, version_cursor
from engine.records import Page

_FIELDS = ("tenant", "name", "version", "template", "system", "description", "created_at")


def _record(data: dict[str, Any]) -> PromptRecord:
    return PromptRecord(
        data["tenant"],
        data["name"],
        int(data["version"]),
        data["template"],
        data.get("system"),
        data.get("description"),
        float(data["created_at"]),
    )


def _data(record: PromptRecord) -> dict[str, Any]:
    return {key: getattr(record, key) for key in _FIELDS}


class FirestorePromptStore:
    def __init__(self, client: firestore.Client) -> None:
        self._client = client

    def _prompts(self, tenant: str) -> firestore.CollectionReference:
        return self._client.collection("tenants", encode_id(tenant), "prompts")

    def _versions(self, tenant: str, name: str) -> firestore.CollectionReference:
        versions: firestore.CollectionReference = self._prompts(tenant).document(encode_id(name)).collection("versions")
        return versions

    def add_prompt_version(
        self, tenant: str, name: str, template: str, system: str | None, description: str | None, now: float
    ) -> tuple[PromptRecord, bool]:
        summary = self._prompts(tenant).document(encode_id(name))

        @firestore.transactional
        def add(txn: firestore.Transaction) -> tuple[PromptRecord, bool]:
            snapshot = summary.get(transaction=txn)
            newest = _record(snapshot.to_dict() or {}) if snapshot.exists else None
            if newest is not None and newest.same_text(template, system, description):
                return newest, False
            version = 1 if newest is None else newest.version + 1
            record = PromptRecord(tenant, name, version, template, system, description, now)
            txn.create(self._versions(tenant, name).document(f"{version:010d}"), _data(record))
            txn.set(summary, _data(record))
            return record, True

        with translated_errors():
            result: tuple[PromptRecord, bool] = add(self._client.transaction(max_attempts=MAX_ATTEMPTS))
        return result

    def get_prompt(self, tenant: str, name: str, version: int | None = None) -> PromptRecord | None:
        if version is None:
            ref = self._prompts(tenant).document(encode_id(name))
        else:
            ref = self._versions(tenant, name).document(f"{version:010d}")
        with translated_errors():
            snapshot = ref.get()
        return _record(snapshot.to_dict() or {}) if snapshot.exists else None

    def list_prompts(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        query = self._prompts(tenant).order_by("name")
        if cursor is not None:
            query = query.start_after({"name": cursor})
        with translated_errors():
            found = [_record(s.to_dict() or {}) for s in query.limit(limit + 1).stream()]
        items = found[:limit]
        return Page(items, items[-1].name if len(found) > limit else None)

    def list_prompt_versions(self, tenant: str, name: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        query = (
            self._versions(tenant, name)
            .where(filter=FieldFilter("version", "<", version_cursor(cursor)))
            .order_by("version", direction=firestore.Query.DESCENDING)
        )
        with translated_errors():
            found = [_record(s.to_dict() or {}) for s in query.limit(limit + 1).stream()]
        items = found[:limit]
        return Page(items, str(items[-1].version) if len(found) > limit else None)
