"""OIDC bearer tokens: RS256 JWTs checked against a JWKS served by this test (no network)."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from engine.auth import Role
from tests.api.conftest import Api, ApiFactory
from tests.api.support import HELLO, bearer
from tests.jwks import AUDIENCE, ISSUER, Jwks


@pytest.fixture
def oidc_api(make_api: ApiFactory, jwks: Jwks) -> Api:
    return make_api(oidc_jwks_url=jwks.url, oidc_issuer=ISSUER, oidc_audience=AUDIENCE)


def test_a_valid_token_maps_to_its_tenant_and_role(oidc_api: Api, jwks: Jwks) -> None:
    token = jwks.token()
    assert oidc_api.client.put("/v1/workflows/hello", json=HELLO, headers=bearer(token)).status_code == 201
    # the tenant came from the token: tenant acme's admin key sees the workflow
    assert oidc_api.call("GET", "/v1/workflows/hello").status_code == 200
    viewer = jwks.token(role="viewer")
    assert oidc_api.client.put("/v1/workflows/other", json=HELLO, headers=bearer(viewer)).status_code == 403
    no_role = jwks.token(role=None)
    assert oidc_api.client.get("/v1/workflows", headers=bearer(no_role)).status_code == 200  # viewer by default
    assert oidc_api.client.post("/v1/keys", json={"name": "x"}, headers=bearer(no_role)).status_code == 403


def test_signing_keys_are_fetched_once_and_cached(oidc_api: Api, jwks: Jwks) -> None:
    for _ in range(5):
        assert oidc_api.client.get("/v1/workflows", headers=bearer(jwks.token())).status_code == 200
    assert jwks.fetches == 1


def test_a_rotated_key_is_fetched_when_a_token_names_it(oidc_api: Api, jwks: Jwks) -> None:
    assert oidc_api.client.get("/v1/workflows", headers=bearer(jwks.token())).status_code == 200
    oidc_api.app.state.runtime.auth.oidc.jwks.min_refresh_interval = 0
    jwks.add_key("k2")
    assert oidc_api.client.get("/v1/workflows", headers=bearer(jwks.token("k2"))).status_code == 200
    assert jwks.fetches == 2


def _claims_cases(jwks: Jwks) -> dict[str, str]:
    now = int(time.time())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        jwks.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {
        "wrong audience": jwks.token(aud="someone-else"),
        "wrong issuer": jwks.token(iss="https://evil.example"),
        "expired": jwks.token(exp=now - 3600, iat=now - 7200),
        "no expiry": jwks.token(exp=None),
        "no tenant": jwks.token(tenant=None),
        "bad tenant": jwks.token(tenant="Not A Tenant!"),
        "unknown role": jwks.token(role="superuser"),
        "forged signature": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 60, "tenant": "acme"},
            other,
            algorithm="RS256",
            headers={"kid": "k1"},
        ),
        "alg none": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 60, "tenant": "acme"},
            None,
            algorithm="none",
            headers={"kid": "k1"},
        ),
        # the classic confusion attack: HS256 with the public key as the shared secret
        "hs256 with the public key": _hs256(public_pem, now),
        "unknown kid": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 60, "tenant": "acme"},
            jwks.keys["k1"],
            algorithm="RS256",
            headers={"kid": "nope"},
        ),
        "not a jwt": "abc.def.ghi",
    }


def _hs256(secret: bytes, now: int) -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    payload = b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 60, "tenant": "acme"}).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def test_refused_tokens(oidc_api: Api, jwks: Jwks) -> None:
    for case, token in _claims_cases(jwks).items():
        response = oidc_api.client.get("/v1/workflows", headers=bearer(token))
        assert response.status_code == 401, case
        assert response.json()["code"] == "unauthenticated", case


def test_several_issuers_can_be_accepted(make_api: ApiFactory, jwks: Jwks) -> None:
    # Google signs ID tokens with either spelling of its issuer.
    api = make_api(oidc_jwks_url=jwks.url, oidc_issuer=f"accounts.example.test,{ISSUER}", oidc_audience=AUDIENCE)
    assert api.client.get("/v1/workflows", headers=bearer(jwks.token())).status_code == 200
    assert api.client.get("/v1/workflows", headers=bearer(jwks.token(iss="accounts.example.test"))).status_code == 200


def test_oidc_also_authenticates_graphql_and_keys_still_work(oidc_api: Api, jwks: Jwks) -> None:
    body = oidc_api.client.post(
        "/graphql", json={"query": "{ workflows { items { name } } }"}, headers=bearer(jwks.token(role="viewer"))
    )
    assert body.status_code == 200 and "errors" not in body.json()
    assert oidc_api.call("GET", "/v1/workflows", role=Role.VIEWER).status_code == 200


def test_symmetric_algorithms_cannot_be_configured(make_api: ApiFactory, jwks: Jwks) -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        make_api(oidc_jwks_url=jwks.url, oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_algorithms=["HS256"])
