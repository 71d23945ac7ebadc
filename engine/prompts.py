"""Named, versioned prompt templates for AI steps.

A prompt is declared in the workflow's ``prompts:`` or stored per tenant through the API
(``PUT /v1/prompts/{name}``; the :class:`~engine.ports.PromptStore` port). An AI step names
one with ``prompt: {name: ..., version: ...}`` (no version: the newest). A name declared in
the definition is looked up there (an unknown version fails validation); any other name is
the tenant's stored prompt, looked up when the step runs (unknown: the attempt fails with
``PromptNotFound``, never retried).

Templates are rendered with the same bound variables as every CEL template of the step
(``input``, ``steps``, ``execution``, ``item``/``index``). The rendered text is recorded in
the step's history (its ``step.succeeded`` event) beside the model's answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from engine.errors import ExpressionError, InvalidRequest, NotFound, Problem, StepFailure
from engine.expressions import compile_expression, template_expressions

if TYPE_CHECKING:
    from engine.ports import Clock, PromptStore
    from engine.records import Page
    from engine.steptypes.base import StepContext

PROMPT_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
#: Longest template (or system text) a prompt may hold, in characters.
MAX_TEMPLATE_CHARS = 100_000


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PromptVersion(_Frozen):
    """One version of a prompt: the user ``template`` and an optional ``system`` text."""

    version: int = Field(default=1, ge=1, le=2**31)
    template: str = Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)
    system: str | None = Field(default=None, max_length=MAX_TEMPLATE_CHARS)
    description: str | None = Field(default=None, max_length=1000)


def _as_versions(value: Any) -> Any:
    """``name: "text"`` is version 1; ``name: {template: ...}`` one version; else a list."""
    if isinstance(value, str):
        return [{"template": value}]
    if isinstance(value, Mapping):
        return [value]
    return value


#: A definition's prompt: its versions (at least one).
PromptVersions = Annotated[tuple[PromptVersion, ...], BeforeValidator(_as_versions), Field(min_length=1)]


class PromptRef(_Frozen):
    """A step's reference to a named prompt; ``version`` ``None`` is the newest."""

    name: str = Field(pattern=PROMPT_NAME_PATTERN)
    version: int | None = Field(default=None, ge=1, le=2**31)


@dataclass(frozen=True)
class PromptRecord:
    """A stored version of a tenant's prompt."""

    tenant: str
    name: str
    version: int
    template: str
    system: str | None
    description: str | None
    created_at: float

    def same_text(self, template: str, system: str | None, description: str | None) -> bool:
        return (self.template, self.system, self.description) == (template, system, description)


@dataclass(frozen=True)
class RenderedPrompt:
    """The text an AI step sends, and where it came from (``source``: inline, workflow or tenant)."""

    text: str
    system: str | None
    source: str = "inline"
    name: str | None = None
    version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"source": self.source, "text": self.text, "system": self.system}
        if self.name is not None:
            found |= {"name": self.name, "version": self.version}
        return found


class PromptLibrary:
    """The tenants' stored prompts, for the API: add versions, read them back."""

    def __init__(self, store: PromptStore, clock: Clock) -> None:
        self.store, self.clock = store, clock

    def apply(
        self, tenant: str, name: str, template: str, system: str | None = None, description: str | None = None
    ) -> tuple[PromptRecord, bool]:
        """Save the texts as the next version of ``name`` (unchanged texts: the newest version, ``False``).

        The name, the sizes and every ``${...}`` expression are checked first.
        """
        try:
            PromptRef(name=name)
            PromptVersion(template=template, system=system, description=description)
        except ValidationError as exc:
            problems = [Problem(".".join(map(str, err["loc"])), err["msg"]) for err in exc.errors()]
            raise InvalidRequest("the prompt is invalid", problems) from None
        problems = template_problems({"template": template, "system": system})
        if problems:
            raise InvalidRequest("the prompt's template is invalid", problems)
        return self.store.add_prompt_version(tenant, name, template, system, description, self.clock.now())

    def get(self, tenant: str, name: str, version: int | None = None) -> PromptRecord:
        record = self.store.get_prompt(tenant, name, version)
        if record is None:
            which = "" if version is None else f" version {version}"
            raise NotFound(f"no prompt {name!r}{which}")
        return record

    def list(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        return self.store.list_prompts(tenant, cursor=cursor, limit=limit)

    def versions(self, tenant: str, name: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        found = self.store.list_prompt_versions(tenant, name, cursor=cursor, limit=limit)
        if not found.items and cursor is None:
            self.get(tenant, name)  # an unknown prompt is 404, not an empty list
        return found


def template_problems(texts: Mapping[str, str | None]) -> list[Problem]:
    """Syntax problems of the ``${...}`` expressions in prompt texts."""
    problems: list[Problem] = []
    for key, text in texts.items():
        if text is None:
            continue
        try:
            sources = template_expressions(text, key)
        except ExpressionError as exc:
            problems.append(Problem(key, exc.message))
            continue
        for path, source in sources:
            try:
                compile_expression(source)
            except ExpressionError as exc:
                problems.append(Problem(path, exc.message))
    return problems


def pick_version(versions: Sequence[PromptVersion], version: int | None) -> PromptVersion | None:
    """The asked version, or the newest when ``version`` is ``None``."""
    if version is None:
        return max(versions, key=lambda v: v.version, default=None)
    return next((v for v in versions if v.version == version), None)


def definition_problems(prompts: Mapping[str, Sequence[PromptVersion]]) -> list[Problem]:
    """Save-time problems of a definition's ``prompts:`` (a version listed twice)."""
    problems: list[Problem] = []
    for name, versions in prompts.items():
        seen: set[int] = set()
        for index, item in enumerate(versions):
            if item.version in seen:
                problems.append(Problem(f"prompts.{name}[{index}].version", f"version {item.version} is listed twice"))
            seen.add(item.version)
    return problems


def reference_problems(ref: PromptRef, prompts: Mapping[str, Sequence[PromptVersion]], path: str) -> list[Problem]:
    """Save-time problems of a step's reference to a prompt of the definition (none for a
    tenant's stored prompt: those are looked up when the step runs)."""
    versions = prompts.get(ref.name)
    if versions is None or pick_version(versions, ref.version) is not None:
        return []
    known = ", ".join(str(v.version) for v in sorted(versions, key=lambda v: v.version))
    return [Problem(path, f"prompt {ref.name!r} has no version {ref.version} (declared: {known})")]


def not_found(message: str) -> StepFailure:
    return StepFailure(message, retryable=False, error_type="PromptNotFound")


def render_prompt(ctx: StepContext, prompt: str | PromptRef, system: str | None) -> RenderedPrompt:
    """The step's prompt as sent: an inline ``prompt`` (already rendered with the step's
    config) or a named one, looked up and rendered now. The step's own ``system`` wins over
    the prompt's."""
    if isinstance(prompt, str):
        return RenderedPrompt(prompt, system)
    declared = ctx.prompts.get(prompt.name)
    if declared is not None:
        found = pick_version(declared, prompt.version)
        if found is None:
            raise not_found(f"the workflow's prompt {prompt.name!r} has no version {prompt.version}")
        template, own_system, source, version = found.template, found.system, "workflow", found.version
    else:
        store = ctx.ports.prompts
        if store is None:
            raise StepFailure("no prompt store is configured", retryable=False, error_type="NotConfigured")
        record = store.get_prompt(ctx.tenant, prompt.name, prompt.version)
        if record is None:
            which = "any version" if prompt.version is None else f"version {prompt.version}"
            raise not_found(f"no prompt {prompt.name!r} ({which}) in the workflow or the tenant's prompts")
        template, own_system, source, version = record.template, record.system, "tenant", record.version
    text = _rendered(ctx, template, f"prompt {prompt.name!r} v{version}")
    if system is None and own_system is not None:
        system = _rendered(ctx, own_system, f"prompt {prompt.name!r} v{version} system")
    return RenderedPrompt(text, system, source, prompt.name, version)


def _rendered(ctx: StepContext, template: str, what: str) -> str:
    try:
        value = ctx.render(template)
    except ExpressionError as exc:
        raise StepFailure(f"{what}: {exc.message}", retryable=False, error_type="ExpressionError") from None
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def version_cursor(cursor: str | None) -> int:
    """A listing of versions continues below its cursor (the last version of the previous page)."""
    if cursor is None:
        return 2**62
    if not cursor.isdigit():
        raise InvalidRequest("invalid cursor")
    return int(cursor)
