"""Workflow definitions: a frozen model parsed from YAML or JSON.

The model checks the shape of a definition (types, required fields, durations). Checks
across steps (unknown needs, cycles, expressions, step configs) live in
:mod:`engine.compile`, which reports every problem at once with its path.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from engine.ai import Budget, ScriptedModel
from engine.durations import parse_duration
from engine.errors import DefinitionInvalid, Problem
from engine.prompts import PROMPT_NAME_PATTERN, PromptVersions

Duration = Annotated[float, BeforeValidator(parse_duration)]
STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
WORKFLOW_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class RetryPolicy(Frozen):
    """How a failing step is retried: attempts, backoff curve, jitter and errors never retried."""

    max_attempts: int = Field(default=1, ge=1, le=100)
    backoff: Literal["exponential", "fixed"] = "exponential"
    initial: Duration = 1.0
    max: Duration = 60.0
    jitter: bool = True
    non_retryable: tuple[str, ...] = ()


class StepDef(Frozen):
    """One step of a workflow."""

    id: str = Field(pattern=STEP_ID_PATTERN)
    type: str
    needs: tuple[str, ...] = ()
    when: str | None = None
    foreach: str | None = None
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    config: dict[str, Any] = Field(default_factory=dict, alias="with")
    retry: RetryPolicy = RetryPolicy()
    timeout: Duration | None = None
    on_error: Literal["fail", "continue"] = "fail"
    queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    description: str | None = None


class WorkflowDef(Frozen):
    """A workflow definition: input schema, steps, outputs and an optional deadline."""

    name: str = Field(pattern=WORKFLOW_NAME_PATTERN)
    description: str | None = None
    inputs: dict[str, Any] | None = None
    steps: tuple[StepDef, ...]
    outputs: dict[str, str] = Field(default_factory=dict)
    deadline: Duration | None = None
    #: How long a finished execution is kept (``0``: forever); overrides
    #: ``CONVEYOR_EXECUTION_RETENTION_DAYS`` for this workflow's executions.
    retention: Duration | None = None
    #: Model token/cost limits over all AI steps of an execution (each counted over its attempts).
    budget: Budget | None = None
    #: Scripted models by name, used by AI steps as ``model: fake:<name>`` (offline runs, tests).
    models: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")], ScriptedModel] = Field(default_factory=dict)
    #: Named, versioned prompt templates AI steps use as ``prompt: {name, version}``.
    prompts: dict[Annotated[str, Field(pattern=PROMPT_NAME_PATTERN)], PromptVersions] = Field(default_factory=dict)

    def step(self, step_id: str) -> StepDef:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def to_document(self) -> dict[str, Any]:
        """The definition as plain JSON-compatible data, as a user would write it."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)


class UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a mapping naming one key twice.

    PyYAML keeps the last value of a repeated key without a word, so a second ``with:`` or
    ``needs:`` in a step would silently replace the first.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if repeated:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_definition_text(text: str, *, source: str = "definition") -> dict[str, Any]:
    """Parse YAML (a superset of JSON) into a mapping, reporting syntax errors with line numbers."""
    loader = UniqueKeyLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else source
        raise DefinitionInvalid(
            f"{source} is not valid YAML/JSON", [Problem(where, str(exc.problem or exc))]
        ) from None
    except yaml.YAMLError as exc:
        raise DefinitionInvalid(f"{source} is not valid YAML/JSON", [Problem("", str(exc))]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise DefinitionInvalid(f"{source} must be a mapping", [Problem("", "expected a mapping at the top level")])
    return data


def _path(location: tuple[int | str, ...], document: dict[str, Any]) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        else:
            parts.append("with" if item == "config" else str(item))
    return ".".join(parts)


def load_definition(data: dict[str, Any] | str) -> WorkflowDef:
    """Build the frozen model from a mapping or YAML/JSON text; shape problems are reported together."""
    document = parse_definition_text(data) if isinstance(data, str) else data
    try:
        return WorkflowDef.model_validate(document)
    except ValidationError as exc:
        # Pydantic prefixes a validator's own message with "Value error, ": the reader needs only the message.
        problems = [
            Problem(_path(err["loc"], document), err["msg"].removeprefix("Value error, ")) for err in exc.errors()
        ]
        raise DefinitionInvalid("workflow definition is invalid", problems) from None


def canonical_json(value: Any) -> str:
    """Stable JSON used for hashing and comparing definitions."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
