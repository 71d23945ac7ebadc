"""OIDC bearer tokens: JWTs verified against a cached JWKS (any OIDC provider, or Google).

Algorithms are pinned by settings (a token cannot choose ``none`` or HS256 with a public
key as secret); ``exp``, ``iss`` and ``aud`` are required and checked.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt

from engine.auth import Principal, principal_from_claims
from engine.errors import AuthenticationFailed, StoreUnavailable


class JwksCache:
    """Signing keys of one JWKS URL, fetched on first use and refreshed after ``ttl``.

    An unknown ``kid`` triggers a refresh (key rotation), at most once per
    ``min_refresh_interval`` so forged ``kid`` values cannot make us hammer the provider.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 300.0,
        min_refresh_interval: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.min_refresh_interval = min_refresh_interval
        self._transport = transport
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """The key for ``kid`` (or the only key when the token names none)."""
        now = time.monotonic()
        stale = now - self._fetched_at > self.ttl
        unknown = kid not in self._keys if kid else len(self._keys) != 1
        if stale or (unknown and now - self._fetched_at > self.min_refresh_interval):
            await self._refresh(now)
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            raise AuthenticationFailed("the token names no signing key")
        found = self._keys.get(kid)
        if found is None:
            raise AuthenticationFailed("the token is signed with an unknown key")
        return found

    async def _refresh(self, started: float) -> None:
        async with self._lock:
            if self._fetched_at >= started:
                return  # another request refreshed while we waited
            try:
                async with httpx.AsyncClient(transport=self._transport, timeout=5.0) as client:
                    response = await client.get(self.url)
                    response.raise_for_status()
                    document = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                if self._keys:
                    return  # keep serving the keys we have; the provider may be briefly down
                raise StoreUnavailable(f"cannot fetch signing keys from {self.url}: {exc}") from None
            keys: dict[str, jwt.PyJWK] = {}
            for entry in document.get("keys", []):
                try:
                    parsed = jwt.PyJWK(entry)
                except (jwt.PyJWTError, ValueError, KeyError):
                    continue  # a key type we cannot use (e.g. an encryption key) is skipped
                keys[str(entry.get("kid", ""))] = parsed
            self._keys = keys
            self._fetched_at = time.monotonic()
            self.fetches += 1


class OidcVerifier:
    """Verifies bearer JWTs and maps their claims to a principal."""

    def __init__(
        self,
        jwks: JwksCache,
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        tenant_claim: str,
        role_claim: str,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("OIDC needs both an issuer and an audience")
        if not algorithms or any(a.lower() == "none" or a.startswith("HS") for a in algorithms):
            raise ValueError("OIDC algorithms must be asymmetric (e.g. RS256, ES256)")
        self.jwks = jwks
        # Several issuers may be given comma-separated (Google uses two spellings).
        self.issuers = [i.strip() for i in issuer.split(",") if i.strip()]
        self.audience = audience
        self.algorithms = list(algorithms)
        self.tenant_claim = tenant_claim
        self.role_claim = role_claim

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationFailed("the bearer token is not a valid JWT") from None
        if header.get("alg") not in self.algorithms:
            raise AuthenticationFailed("the token's algorithm is not accepted")
        key = await self.jwks.key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuers,
                options={"require": ["exp", "iss", "aud"]},
                leeway=30,
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed(f"the token was refused: {exc}") from None
        return principal_from_claims(claims, tenant_claim=self.tenant_claim, role_claim=self.role_claim)
