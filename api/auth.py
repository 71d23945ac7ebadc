"""Authentication: a bearer credential (API key or OIDC JWT) becomes a :class:`Principal`.

Used by REST dependencies, the GraphQL context (HTTP header or ``connection_init``
payload) and the progress streams, so every entry point authenticates the same way.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from api.oidc import JwksCache, OidcVerifier
from engine.auth import Principal, anonymous_admin
from engine.errors import AuthenticationFailed
from engine.keys import ApiKeys, hash_token, looks_like_key
from engine.settings import Settings

#: How long a verified API key is trusted without a store read. Revocation takes effect
#: within this delay (at once in the process that revoked it); it spares one store read per
#: request on hot paths. An expiring key is trusted at most until it expires.
KEY_CACHE_SECONDS = 5.0
#: How often an open progress stream opened with an API key checks the key again
#: (:meth:`Authenticator.recheck`): with the cache, a revoked key's streams end within
#: ``KEY_CACHE_SECONDS + RECHECK_SECONDS``.
RECHECK_SECONDS = 5.0
_KEY_CACHE_SIZE = 4096


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@dataclass(frozen=True)
class Credential:
    """A presented bearer token and the principal it authenticated.

    Long-lived connections (progress streams, GraphQL WebSockets) keep it, to check it again
    with :meth:`Authenticator.recheck` while they stay open.
    """

    principal: Principal
    token: str | None = None

    @property
    def revocable(self) -> bool:
        """True for an API key: it can stop being valid before it expires."""
        return self.principal.kind == "key" and self.token is not None


class Authenticator:
    """Turns presented credentials into principals."""

    def __init__(self, settings: Settings, keys: ApiKeys, oidc: OidcVerifier | None = None) -> None:
        self.enabled = settings.auth_enabled
        self.keys = keys
        self.oidc = oidc
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings, keys: ApiKeys) -> Authenticator:
        oidc = None
        if settings.oidc_jwks_url:
            oidc = OidcVerifier(
                JwksCache(settings.oidc_jwks_url),
                issuer=settings.oidc_issuer or "",
                audience=settings.oidc_audience or "",
                algorithms=settings.oidc_algorithms,
                tenant_claim=settings.oidc_tenant_claim,
                role_claim=settings.oidc_role_claim,
            )
        return cls(settings, keys, oidc)

    async def authenticate(self, token: str | None) -> Principal:
        """The principal for ``token``; ``AuthenticationFailed`` when it is missing or invalid."""
        if not self.enabled:
            return anonymous_admin()
        if not token:
            raise AuthenticationFailed("credentials are required: send 'Authorization: Bearer <token>'")
        if looks_like_key(token):
            return await self._api_key(token)
        if self.oidc is not None:
            return await self.oidc.verify(token)
        raise AuthenticationFailed("invalid bearer token")

    async def login(self, token: str | None) -> Credential:
        """:meth:`authenticate`, keeping the token for later re-checks."""
        return Credential(await self.authenticate(token), token)

    async def recheck(self, credential: Credential) -> None:
        """Raise ``AuthenticationFailed`` when a credential accepted earlier is no longer valid.

        It has expired (a JWT's ``exp``, an API key's expiry), or it is an API key that was
        revoked since: the key is looked up again through the request cache, so at most one
        store read per key every ``KEY_CACHE_SECONDS``. A JWT cannot be revoked before its ``exp``.
        """
        expires_at = credential.principal.expires_at
        if expires_at is not None and expires_at <= self.keys.clock.now():
            raise AuthenticationFailed("the credentials that opened this connection have expired")
        if credential.revocable and credential.token is not None:
            try:
                await self._api_key(credential.token)
            except AuthenticationFailed:
                raise AuthenticationFailed("the API key that opened this connection was revoked") from None

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache (after revocation, so it stops working here at once)."""
        for digest, (_, principal) in list(self._cache.items()):
            if principal.key_id == key_id:
                self._cache.pop(digest, None)

    async def _api_key(self, token: str) -> Principal:
        now = time.monotonic()
        # Cached by hash so the process never keeps a table of raw secrets.
        digest = hash_token(token)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = await run_in_threadpool(self.keys.authenticate, token)
        trusted_for = KEY_CACHE_SECONDS
        if principal.expires_at is not None:  # an expiring key is never trusted past its expiry
            trusted_for = min(trusted_for, principal.expires_at - self.keys.clock.now())
        self._cache[digest] = (now + trusted_for, principal)
        self._cache.move_to_end(digest)
        while len(self._cache) > _KEY_CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal
