"""API keys: create, list, revoke and authenticate, over the :class:`~engine.ports.Store` port.

A key looks like ``cvk_<id>_<secret>``. Only ``sha256(key)`` is stored: the secret has 256
bits of entropy, so a fast hash is enough (a slow password hash buys nothing against a
random secret). The public ``<id>`` names the key in listings and revocation without
revealing it, and is checked against the record found by hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from engine.auth import Principal, Role, check_tenant
from engine.errors import AuthenticationFailed, InvalidRequest, NotFound
from engine.ports import Clock, Store
from engine.records import ApiKeyRecord

PREFIX = "cvk"


@dataclass(frozen=True)
class CreatedKey:
    """A new key: ``token`` is shown once and never stored."""

    record: ApiKeyRecord
    token: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token(token: str) -> str | None:
    """The key id inside a well-formed token, or None."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or len(key_id) != 16 or not secret:
        return None
    return key_id


def looks_like_key(token: str) -> bool:
    """True for tokens in API key format (as opposed to JWTs)."""
    return token.startswith(PREFIX + "_")


class ApiKeys:
    """API key use cases for one store."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def create(self, tenant: str, role: Role, name: str, *, ttl_seconds: float | None = None) -> CreatedKey:
        """Create a key for ``tenant`` with ``role``; it expires after ``ttl_seconds`` if given."""
        try:
            check_tenant(tenant)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise InvalidRequest("a key's lifetime must be positive")
        key_id = secrets.token_hex(8)
        token = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        now = self.clock.now()
        record = ApiKeyRecord(
            id=key_id,
            tenant=tenant,
            role=str(role),
            key_hash=hash_token(token),
            name=name,
            created_at=now,
            expires_at=now + ttl_seconds if ttl_seconds is not None else None,
        )
        self.store.put_api_key(record)
        return CreatedKey(record, token)

    def for_tenant(self, tenant: str) -> list[ApiKeyRecord]:
        return self.store.list_api_keys(tenant)

    def get(self, tenant: str, key_id: str) -> ApiKeyRecord:
        for record in self.store.list_api_keys(tenant):
            if record.id == key_id:
                return record
        raise NotFound(f"API key {key_id!r} not found")

    def revoke(self, tenant: str, key_id: str) -> ApiKeyRecord:
        """Revoke a key of ``tenant``; revoking twice is harmless."""
        record = self.get(tenant, key_id)
        if not record.revoked:
            record.revoked = True
            self.store.put_api_key(record)
        return record

    def authenticate(self, token: str) -> Principal:
        """The principal of a presented key; ``AuthenticationFailed`` for any unusable key."""
        key_id = parse_token(token)
        record = self.store.find_api_key(hash_token(token)) if key_id else None
        # Every refusal reads the same, so a caller cannot probe which keys exist.
        if record is None or key_id is None or not hmac.compare_digest(record.id, key_id):
            raise AuthenticationFailed("invalid API key")
        if record.revoked:
            raise AuthenticationFailed("invalid API key")
        if record.expires_at is not None and record.expires_at <= self.clock.now():
            raise AuthenticationFailed("invalid API key")
        return Principal(
            tenant=record.tenant,
            role=Role(record.role),
            subject=record.name or record.id,
            kind="key",
            key_id=record.id,
            expires_at=record.expires_at,
        )
