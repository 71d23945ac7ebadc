"""RFC 9457 problem responses: the one place where errors become HTTP answers.

Every :class:`~engine.errors.ConveyorError` maps to a problem through its ``status`` and
``code``; request validation errors, unknown routes and unexpected exceptions are shaped
the same way, so clients parse one error format.
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

from engine.errors import AuthenticationFailed, ConveyorError, InvalidRequest, RateLimited

log = logging.getLogger("conveyor.api")

PROBLEM_TYPE_BASE = "https://conveyor.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemDetail(BaseModel):
    """One problem found in the request, with where it was found."""

    path: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(examples=[PROBLEM_TYPE_BASE + "not-found"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["execution '0f3a…' not found"])
    code: str = Field(description="Stable machine-readable error code", examples=["not-found"])
    instance: str | None = None
    problems: list[ProblemDetail] | None = None


def problem_body(
    status: int, code: str, detail: str, *, instance: str | None = None, problems: list[ProblemDetail] | None = None
) -> dict[str, Any]:
    """The problem document as plain data (also used for WebSocket and GraphQL error payloads)."""
    body = Problem(
        type=PROBLEM_TYPE_BASE + code,
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        code=code,
        instance=instance,
        problems=problems,
    )
    return body.model_dump(exclude_none=True)


async def send_problem(
    scope: Scope, send: Send, status: int, code: str, detail: str, *, close: bool = False
) -> None:
    """Answer with a problem document from ASGI middleware (before any route runs)."""
    body = json.dumps(problem_body(status, code, detail, instance=scope.get("path"))).encode()
    headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    request: Request | None = None,
    problems: list[ProblemDetail] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    instance = request.url.path if request is not None else None
    return JSONResponse(
        problem_body(status, code, detail, instance=instance, problems=problems),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def error_headers(exc: ConveyorError) -> dict[str, str]:
    """Headers an error asks for: ``Retry-After`` on 429, ``WWW-Authenticate`` on 401."""
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(max(1, exc.retry_after))}
    if isinstance(exc, AuthenticationFailed):
        return {"WWW-Authenticate": 'Bearer realm="conveyor"'}
    return {}


def error_details(exc: ConveyorError) -> list[ProblemDetail] | None:
    if isinstance(exc, InvalidRequest) and exc.problems:
        return [ProblemDetail(path=p.path, message=p.message) for p in exc.problems]
    return None


def error_detail_text(exc: ConveyorError) -> str:
    # InvalidRequest appends its problems to the message for logs and the CLI; the problem
    # document lists them in ``problems`` instead, so ``detail`` keeps only the first line.
    return exc.message.split("\n", 1)[0]


def conveyor_error_response(request: Request | None, exc: ConveyorError) -> JSONResponse:
    status = exc.status if 400 <= exc.status < 600 else 500
    return problem_response(
        status,
        exc.code,
        error_detail_text(exc),
        request=request,
        problems=error_details(exc),
        headers=error_headers(exc),
    )


def _validation_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts)


async def _on_conveyor_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConveyorError)
    if exc.status >= 500:
        log.error("request failed: %s", exc.message)
    return conveyor_error_response(request, exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [ProblemDetail(path=_validation_path(tuple(e["loc"])), message=e["msg"]) for e in exc.errors()]
    return problem_response(422, "invalid", "the request is not valid", request=request, problems=problems)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = getattr(exc, "code", None) or {404: "not-found", 405: "method-not-allowed"}.get(
        exc.status_code, "http-error"
    )
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        # Each route knows only its own methods; Allow must list every method of the path.
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
    return problem_response(exc.status_code, code, detail, request=request, headers=headers or None)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Methods the OpenAPI document lists for the path template matching ``path``.

    A concrete path (``/v1/executions/counts``) is matched before templated ones
    (``/v1/executions/{execution_id}``), as OpenAPI specifies.
    """
    paths: dict[str, Any] = app.openapi().get("paths", {})
    if path in paths:
        return sorted(m.upper() for m in paths[path])
    methods: set[str] = set()
    for template, operations in paths.items():
        pattern = "^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            methods.update(m.upper() for m in operations)
    return sorted(methods)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Never leak internals: the detail is generic, the traceback goes to the log.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "internal", "an unexpected error occurred", request=request)


def install(app: FastAPI) -> None:
    """Register the exception handlers that turn every error into a problem response."""
    app.add_exception_handler(ConveyorError, _on_conveyor_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem answers for ``statuses``.

    Every route also lists 400 (a body that cannot be decoded), 401, 403, 413, 422 and 429,
    which any authenticated route may return.
    """
    codes = sorted({400, 401, 403, 413, 422, 429, *statuses})
    return {
        status: {"model": Problem, "description": HTTPStatus(status).phrase, "content": _problem_content()}
        for status in codes
    }


def document_openapi(app: FastAPI) -> None:
    """List problem answers only as ``application/problem+json`` in the OpenAPI document,
    and the 415 every operation taking a body may answer.

    FastAPI also files a response ``model`` under ``application/json``; problems are never
    sent with that media type, so that entry would tell clients (and Schemathesis) a lie.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    if "requestBody" in operation:  # a body of another media type: 415 (api/bodies.py)
                        operation.setdefault("responses", {}).setdefault(
                            "415", {"description": HTTPStatus(415).phrase, "content": _problem_content()}
                        )
                    for response in operation.get("responses", {}).values():
                        content = response.get("content", {})
                        if PROBLEM_MEDIA_TYPE in content:
                            content.pop("application/json", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
