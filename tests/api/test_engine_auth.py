"""engine/auth.py and engine/keys.py: roles, claims mapping, key format."""

from __future__ import annotations

import pytest

from engine.auth import Principal, Role, principal_from_claims
from engine.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from engine.keys import ApiKeys, hash_token, looks_like_key, parse_token
from engine.service import Service


def test_roles_are_ordered_and_include_the_ones_below() -> None:
    assert [r.value for r in sorted(Role, key=lambda r: r.rank)] == ["viewer", "operator", "editor", "admin"]
    assert Role.ADMIN.allows(Role.VIEWER) and Role.EDITOR.allows(Role.EDITOR)
    assert not Role.OPERATOR.allows(Role.EDITOR)
    with pytest.raises(PermissionDenied, match="editor"):
        Principal("t", Role.VIEWER, "s", "key").require(Role.EDITOR)


def test_claims_map_to_a_principal_and_never_guess_the_tenant() -> None:
    principal = principal_from_claims(
        {"tenant": "acme", "role": "operator", "sub": "u"}, tenant_claim="tenant", role_claim="role"
    )
    assert (principal.tenant, principal.role, principal.subject, principal.kind) == ("acme", Role.OPERATOR, "u", "oidc")
    assert principal_from_claims({"tenant": "acme"}, tenant_claim="tenant", role_claim="role").role is Role.VIEWER
    for claims in ({}, {"tenant": ""}, {"tenant": "UPPER"}, {"tenant": 3}, {"tenant": "acme", "role": "root"}):
        with pytest.raises(AuthenticationFailed):
            principal_from_claims(claims, tenant_claim="tenant", role_claim="role")


def test_key_format_and_hashing() -> None:
    assert parse_token("cvk_0123456789abcdef_s3cr_et") == "0123456789abcdef"
    for bad in ("cvk_short_x", "xyz_0123456789abcdef_s", "cvk_0123456789abcdef_", "eyJhbGciOi.x.y"):
        assert parse_token(bad) is None
    assert looks_like_key("cvk_x") and not looks_like_key("eyJ.x.y")
    assert hash_token("a") != hash_token("b") and len(hash_token("a")) == 64


def test_keys_use_cases(api) -> None:  # type: ignore[no-untyped-def]
    service: Service = api.service
    keys = ApiKeys(service.store, service.clock)
    created = keys.create("acme", Role.EDITOR, "deploy", ttl_seconds=3600)
    assert created.token.startswith(f"cvk_{created.record.id}_")
    assert keys.authenticate(created.token).role is Role.EDITOR
    assert keys.get("acme", created.record.id).name == "deploy"
    keys.revoke("acme", created.record.id)
    keys.revoke("acme", created.record.id)  # twice is harmless
    with pytest.raises(AuthenticationFailed):
        keys.authenticate(created.token)
    with pytest.raises(InvalidRequest):
        keys.create("Bad Tenant", Role.VIEWER, "x")
    with pytest.raises(InvalidRequest):
        keys.create("acme", Role.VIEWER, "x", ttl_seconds=0)
