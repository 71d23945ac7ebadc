"""Strict requests: unknown query parameters refused, bodies decoded as strict JSON (and YAML
where a route declares it), nesting-limited.

A query parameter the route does not declare is a 400 ``unknown-parameter`` problem (it would
otherwise be ignored silently: a misspelt filter returning everything). Every body is checked
the same way before any model or use case sees it:

- malformed JSON is a 400 ``malformed-json`` problem (``NaN`` and ``Infinity``, which
  Python's decoder accepts, are refused by the engine with the path they were found at:
  :func:`engine.payloads.check_payload`, a 422 ``payload-invalid``);
- a body nested deeper than ``settings.max_json_depth`` is a 422 ``nested-too-deeply`` problem
  (deep nesting otherwise ends in a ``RecursionError`` somewhere in validation, a 500);
- a route that lists ``application/yaml`` in its OpenAPI ``requestBody`` also accepts YAML
  (safe subset, no aliases), checked the same way and handed on as JSON;
- a body sent as any other media type (``text/plain``, a form) is a 415
  ``unsupported-media-type`` problem, not a 422 about a missing body: JSON is
  ``application/json`` or any ``application/*+json``; no ``Content-Type`` is read as JSON.

REST routes get this through :class:`StrictRoute` (the routers' ``route_class``; the approval
links and decisions routers only the 415, :class:`JsonBodyRoute`); GraphQL through
:func:`decode_json` in its router.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import yaml
from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from api.deps import runtime
from engine.model import UniqueKeyLoader

YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})


class BodyRefused(HTTPException):
    """A body that cannot be decoded; ``code`` is the problem's code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(status, detail)
        self.code = code


def _too_deep(max_depth: int) -> BodyRefused:
    return BodyRefused(422, "nested-too-deeply", f"the body nests deeper than {max_depth} levels")


def check_depth(value: Any, max_depth: int) -> None:
    """Refuse ``value`` when objects and arrays nest deeper than ``max_depth`` (no recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while pending:
        current, depth = pending.pop()
        if depth > max_depth:
            raise _too_deep(max_depth)
        children = current.values() if isinstance(current, dict) else current
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _decoded(decode: Callable[[], Any], max_depth: int) -> Any:
    try:
        value = decode()
    except RecursionError:  # nesting deeper than the decoder itself can follow
        raise _too_deep(max_depth) from None
    check_depth(value, max_depth)
    return value


class _DuplicateKey(ValueError):
    """A JSON object names a key twice (its one argument); refused as malformed JSON."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: JSON parsers keep the last of repeated ones silently."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def _json_loads(raw: str | bytes) -> Any:
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise BodyRefused(400, "malformed-json", f"the body is not valid JSON: duplicate key {exc.args[0]!r}") from None
    except json.JSONDecodeError as exc:
        raise BodyRefused(400, "malformed-json", f"the body is not valid JSON: {exc.msg} at {exc.pos}") from None
    except UnicodeDecodeError as exc:  # bytes that are no Unicode text at all
        raise BodyRefused(400, "malformed-json", f"the body is not valid JSON: not UTF-8 text ({exc.reason})") from None


def decode_json(raw: str | bytes, max_depth: int) -> Any:
    """Strict JSON, nesting-limited (see the module docstring)."""
    return _decoded(lambda: _json_loads(raw), max_depth)


class _NoAliasLoader(UniqueKeyLoader):
    """YAML without anchors and aliases (a few aliases can stand for a huge document)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise BodyRefused(400, "malformed-yaml", "YAML aliases are not accepted")
        return super().compose_node(parent, index)


def _yaml_loads(raw: bytes) -> Any:
    loader = _NoAliasLoader(raw)  # a SafeLoader: plain data only
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise BodyRefused(400, "malformed-yaml", f"the body is not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def decode_yaml(raw: bytes, max_depth: int) -> Any:
    """Safe YAML without aliases, nesting-limited, as the JSON value it stands for."""
    value = _decoded(lambda: _yaml_loads(raw), max_depth)
    # YAML has values JSON has not (dates, timestamps): refuse them rather than convert them.
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise BodyRefused(422, "invalid", "the YAML holds values JSON cannot (such as dates): quote them") from None


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json_media_type(media_type: str) -> bool:
    """``application/json`` or a structured ``application/*+json`` (what FastAPI decodes as JSON)."""
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def unsupported_media_type(media_type: str, accepted: str = "JSON (application/json)") -> BodyRefused:
    """The 415 for a body sent as ``media_type`` where only ``accepted`` is read."""
    return BodyRefused(415, "unsupported-media-type", f"the body must be {accepted}, not {media_type or 'untyped'}")


class _CheckedRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decode_json(await self.body(), runtime(self).settings.max_json_depth)
        return self._json


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _accepts_yaml(route: APIRoute) -> bool:
    content = (route.openapi_extra or {}).get("requestBody", {}).get("content", {})
    return any(media in YAML_MEDIA_TYPES for media in content)


class JsonBodyRoute(APIRoute):
    """A route whose body must be JSON (YAML too where it lists it): any other media type is a
    415 (FastAPI would pass such a body on undecoded and answer 422 about a missing body)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None
        accepted = "JSON or YAML" if _accepts_yaml(self) else "JSON (application/json)"

        async def route_handler(request: Request) -> Response:
            media_type = _media_type(request)  # a YAML body reaches here as JSON (StrictRoute)
            if takes_body and media_type and not is_json_media_type(media_type):
                raise unsupported_media_type(media_type, accepted)
            return await handler(request)

        return route_handler


class StrictRoute(JsonBodyRoute):
    """A route refusing undeclared query parameters, its body decoded by :func:`decode_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        accepts_yaml = _accepts_yaml(self)
        known = frozenset(_query_names(self.dependant))

        async def route_handler(request: Request) -> Response:
            unknown = sorted(set(request.query_params) - known)
            if unknown:
                expected = ", ".join(sorted(known)) or "none"
                raise BodyRefused(
                    400, "unknown-parameter", f"unknown query parameter(s) {', '.join(unknown)} (expected: {expected})"
                )
            checked = _CheckedRequest(request.scope, request.receive)
            if accepts_yaml and _media_type(request) in YAML_MEDIA_TYPES:
                value = decode_yaml(await request.body(), runtime(request).settings.max_json_depth)
                # Hand the route JSON: FastAPI decodes only JSON media types into models.
                scope = dict(request.scope)
                scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
                scope["headers"].append((b"content-type", b"application/json"))
                checked = _CheckedRequest(scope, request.receive)
                checked._body = json.dumps(value).encode()
                checked._json = value
            return await handler(checked)

        return route_handler
