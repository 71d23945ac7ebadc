"""Compile a workflow definition: validate everything, then precompute what execution needs.

:func:`compile_workflow` reports every problem at once, each with its path in the
document (``steps[2].needs[0]: unknown step 'fetc'``), and returns a
:class:`CompiledWorkflow`: the DAG in topological order, compiled expressions and a cached
input validator. Shape problems (types, required keys, durations) come from
:func:`engine.model.load_definition`; when the shape is wrong nothing else can be checked,
so those are reported alone.

Where variables are available:

- ``when`` is evaluated once, before ``foreach`` expands a step, so it cannot use ``item``
  or ``index`` (filter items in the ``foreach`` expression instead, e.g. with ``filter``).
- ``foreach`` cannot use ``item``/``index`` either; ``with`` templates (and CEL in a step
  type's config, such as a switch's cases) may use them only in steps with ``foreach``.
- ``outputs`` may read any step; a step may read only steps it transitively needs.
- ``event`` and ``execution`` are not restricted here: the runtime binds them.

A step config value holding a ``${...}`` template cannot be type-checked before it is
rendered, so for such a value only the key is checked (it must exist in the type's config
model); the type's own ``check`` runs only when the config validates fully.
"""

from __future__ import annotations

import difflib
import hashlib
import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jsonschema
from jsonschema.protocols import Validator
from pydantic import ValidationError

from engine import steptypes
from engine.errors import DefinitionInvalid, ExpressionError, InputInvalid, Problem
from engine.expressions import Expression, child_path, compile_expression, split_template, template_strings
from engine.model import StepDef, WorkflowDef, canonical_json, load_definition
from engine.prompts import definition_problems, pick_version, reference_problems
from engine.steptypes.base import StepConfig, StepType

_ITEM_VARIABLES = frozenset({"item", "index"})
#: The shortest ``retention:`` a definition may ask for (a finished execution deleted sooner
#: could vanish before its caller has read its result).
MIN_RETENTION_SECONDS = 1.0


@dataclass(frozen=True, eq=False)
class CompiledWorkflow:
    """A validated definition with its DAG and expressions ready for execution.

    ``needs`` and ``successors`` list steps in definition order; ``order`` is a
    topological order that keeps definition order where the DAG allows.
    """

    definition: WorkflowDef
    digest: str
    order: tuple[str, ...]
    needs: Mapping[str, tuple[str, ...]]
    successors: Mapping[str, tuple[str, ...]]
    roots: tuple[str, ...]
    when: Mapping[str, Expression]
    foreach: Mapping[str, Expression]
    outputs: Mapping[str, Expression]
    ancestors: Mapping[str, frozenset[str]]
    input_validator: Validator | None = field(repr=False)
    _referenced: Mapping[str, frozenset[str]] = field(repr=False)
    _planning: Mapping[str, frozenset[str]] = field(repr=False)
    _steps: Mapping[str, StepDef] = field(repr=False)

    @property
    def name(self) -> str:
        return self.definition.name

    def step(self, step_id: str) -> StepDef:
        """The definition of ``step_id``; ``KeyError`` if there is none."""
        return self._steps[step_id]

    def referenced_steps(self, step_id: str) -> frozenset[str]:
        """Steps whose records the step's ``with`` templates and type expressions read.

        The worker loads these records before running the step. A step that reads
        ``steps`` in a way that cannot be resolved statically gets all its ancestors.
        ``when`` and ``foreach`` are not included: they are evaluated when the step is
        planned (:meth:`planning_steps`), and a foreach item carries its own element, so
        running an item never reads the list's source.
        """
        return self._referenced[step_id]

    def planning_steps(self, step_id: str) -> frozenset[str]:
        """Steps whose records planning ``step_id`` reads: its needs and what ``when``/``foreach`` read."""
        return self._planning[step_id]

    def validate_input(self, value: Any) -> None:
        """Raise ``InputInvalid`` listing every way ``value`` fails the input schema."""
        if self.input_validator is None:
            return
        errors = sorted(self.input_validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
        if errors:
            problems = [Problem(_input_error_path(error), error.message) for error in errors]
            raise InputInvalid(f"input does not match the input schema of {self.name!r}", problems)


def compile_workflow(source: WorkflowDef | Mapping[str, Any] | str) -> CompiledWorkflow:
    """Validate ``source`` (model, mapping or YAML/JSON text) and compile it.

    Raises ``DefinitionInvalid`` with every problem found, each with its path.
    """
    if isinstance(source, WorkflowDef):
        definition = source
    else:
        definition = load_definition(source if isinstance(source, str) else dict(source))
    checker = _Checker(definition)
    problems = checker.run()
    if problems:
        raise DefinitionInvalid(f"workflow {definition.name!r} is invalid", problems)
    return checker.build()


# --------------------------------------------------------------------------- validation


class _Checker:
    """Collects problems across the whole definition, keeping what ``build`` needs."""

    def __init__(self, definition: WorkflowDef) -> None:
        self.definition = definition
        self.problems: list[Problem] = []
        self.position: dict[str, int] = {}
        self.needs: dict[str, tuple[str, ...]] = {}
        self.ancestors: dict[str, frozenset[str]] = {}
        self.when: dict[str, Expression] = {}
        self.foreach: dict[str, Expression] = {}
        self.outputs: dict[str, Expression] = {}
        self.referenced: dict[str, frozenset[str]] = {}
        self.planning: dict[str, frozenset[str]] = {}
        self.validator: Validator | None = None
        #: Steps that may read any ancestor: those using a tenant's stored prompt, and those whose
        #: config can be checked only once rendered.
        self.reads_any: set[str] = set()

    def run(self) -> list[Problem]:
        self._check_inputs()
        self.problems.extend(definition_problems(self.definition.prompts))
        self._index_steps()
        self._check_needs()
        self._check_cycles()
        self.ancestors = {step_id: _reachable(step_id, self.needs) for step_id in self.needs}
        for index, step in enumerate(self.definition.steps):
            self._check_step(index, step)
        self._check_outputs()
        self._check_retention()
        return sorted(self.problems, key=_problem_order)

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    # -- inputs

    def _check_inputs(self) -> None:
        schema = self.definition.inputs
        if schema is None:
            return
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        errors = list(cls(cls.META_SCHEMA).iter_errors(schema))
        for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
            self.add(_json_path("inputs", error.absolute_path), error.message)
        if not errors:
            self.validator = cls(schema, format_checker=cls.FORMAT_CHECKER)

    # -- the DAG

    def _index_steps(self) -> None:
        if not self.definition.steps:
            self.add("steps", "a workflow needs at least one step")
        for index, step in enumerate(self.definition.steps):
            if step.id in self.position:
                first = self.position[step.id]
                self.add(f"steps[{index}].id", f"duplicate step id '{step.id}' (already used by steps[{first}])")
            else:
                self.position[step.id] = index

    def _check_needs(self) -> None:
        for index, step in enumerate(self.definition.steps):
            valid: list[str] = []
            for k, need in enumerate(step.needs):
                path = f"steps[{index}].needs[{k}]"
                if need == step.id:
                    self.add(path, "a step cannot need itself")
                elif need not in self.position:
                    self.add(path, f"unknown step '{need}'{_suggest(need, self.position)}")
                elif need in valid:
                    self.add(path, f"'{need}' is listed twice")
                else:
                    valid.append(need)
            self.needs.setdefault(step.id, tuple(sorted(valid, key=self.position.__getitem__)))

    def _check_cycles(self) -> None:
        for component in _strongly_connected(list(self.position), self.needs):
            if len(component) < 2:
                continue  # a self-need is reported on its own
            start = min(component, key=self.position.__getitem__)
            cycle = _cycle_through(start, self.needs, frozenset(component))
            self.add(
                f"steps[{self.position[start]}].needs",
                f"dependency cycle: {' -> '.join(cycle)} (each step needs the next)",
            )

    # -- one step

    def _check_step(self, index: int, step: StepDef) -> None:
        path = f"steps[{index}]"
        if step.concurrency is not None and step.foreach is None:
            self.add(f"{path}.concurrency", "'concurrency' only applies to steps with 'foreach'")
        planned: list[Expression] = []
        if step.when is not None:
            expression = self._expression(step.when, f"{path}.when", step, "when")
            if expression is not None:
                self._check_constant_condition(expression, f"{path}.when")
                self.when[step.id] = expression
                planned.append(expression)
        if step.foreach is not None:
            expression = self._expression(step.foreach, f"{path}.foreach", step, "foreach")
            if expression is not None:
                self.foreach[step.id] = expression
                planned.append(expression)
        rendered = self._config_expressions(index, step)
        ancestors = self.ancestors.get(step.id, frozenset())
        reads = ancestors if step.id in self.reads_any else _steps_read(rendered, ancestors)
        self.referenced.setdefault(step.id, reads)
        self.planning.setdefault(step.id, _steps_read(planned, ancestors) | set(self.needs.get(step.id, ())))

    def _check_constant_condition(self, expression: Expression, path: str) -> None:
        """A condition that reads no variable has its value, hence its type, known now: it must be a boolean.

        One that reads variables is checked when it is evaluated (the step fails with
        ``PlanningFailed`` if it does not give a boolean).
        """
        if expression.variables:
            return
        try:
            expression.evaluate_bool({})
        except ExpressionError as exc:
            self.add(path, exc.message)

    def _config_expressions(self, index: int, step: StepDef) -> list[Expression]:
        """Check the ``with`` block: config model, type checks, templates and type expressions."""
        path = f"steps[{index}].with"
        found = [
            expression
            for string_path, source in self._template_sources(step.config, path)
            if (expression := self._expression(source, string_path, step, "with")) is not None
        ]
        step_type = steptypes.get(step.type)
        if step_type is None:
            known = ", ".join(steptypes.names())
            self.add(f"steps[{index}].type", f"unknown step type '{step.type}' (known: {known})")
            return found
        config = self._validate_config(step_type, step.config, path)
        if config is None:
            # Checked only once rendered (a template where a typed value goes), so what its
            # type and named prompts read is not known now: let it read any ancestor.
            self.reads_any.add(step.id)
            return found
        self.problems.extend(step_type.check(config, path))
        for relative, source in _type_expressions(step_type, config):
            expression = self._expression(source, f"{path}.{relative}", step, "with", report_syntax=False)
            if expression is not None:
                found.append(expression)
        found.extend(self._prompt_expressions(step_type, config, step, path))
        return found

    def _prompt_expressions(
        self, step_type: StepType, config: StepConfig, step: StepDef, path: str
    ) -> list[Expression]:
        """Check the named prompts a step uses; the templates of the definition's own are checked
        like the step's templates (the steps they read must be among its needs)."""
        found: list[Expression] = []
        for relative, ref in step_type.prompt_refs(config):
            where = f"{path}.{relative}"
            versions = self.definition.prompts.get(ref.name)
            if versions is None:
                self.reads_any.add(step.id)  # a tenant's stored prompt, looked up when the step runs
                continue
            self.problems.extend(reference_problems(ref, self.definition.prompts, where))
            chosen = pick_version(versions, ref.version)
            texts = [] if chosen is None else [chosen.template, chosen.system or ""]
            for _, source in self._template_sources(texts, where):
                expression = self._expression(source, where, step, "with")
                if expression is not None:
                    found.append(expression)
        return found

    def _template_sources(self, value: Any, path: str) -> list[tuple[str, str]]:
        sources: list[tuple[str, str]] = []
        for string_path, text in template_strings(value, path):
            try:
                parts = split_template(text)
            except ExpressionError as exc:
                self.add(string_path, exc.message)
                continue
            sources.extend((string_path, part[0]) for part in parts if isinstance(part, tuple))
        return sources

    def _validate_config(self, step_type: StepType, config: dict[str, Any], path: str) -> StepConfig | None:
        try:
            return step_type.Config.model_validate(config)
        except ValidationError as exc:
            allowed = ", ".join(step_type.Config.model_fields)
            for error in exc.errors():
                if error["type"] != "extra_forbidden" and _through_template(config, error["loc"]):
                    continue  # checked when rendered: the value is a template
                self.add(_config_error_path(path, error["loc"], config), _config_error_message(error, allowed))
            return None

    def _expression(
        self, source: str, path: str, step: StepDef, kind: str, *, report_syntax: bool = True
    ) -> Expression | None:
        """Compile ``source`` and check the steps and variables it reads against ``step``."""
        try:
            expression = compile_expression(source)
        except ExpressionError as exc:
            if report_syntax:  # step types report their own expressions' syntax in check()
                self.add(path, exc.message)
            return None
        ancestors = self.ancestors.get(step.id, frozenset())
        for ref in sorted(expression.step_refs):
            if ref not in self.position:
                self.add(path, f"references unknown step '{ref}'{_suggest(ref, self.position)}")
            elif ref not in ancestors:
                self.add(path, f"references step '{ref}' that is not among its needs")
        item_variables = sorted(expression.variables & _ITEM_VARIABLES)
        if item_variables and (kind != "with" or step.foreach is None):
            self.add(path, _item_message(item_variables[0], kind))
        return expression

    # -- outputs

    def _check_outputs(self) -> None:
        for key, source in self.definition.outputs.items():
            path = child_path("outputs", key)
            try:
                expression = compile_expression(source)
            except ExpressionError as exc:
                self.add(path, exc.message)
                continue
            for ref in sorted(expression.step_refs - self.position.keys()):
                self.add(path, f"references unknown step '{ref}'{_suggest(ref, self.position)}")
            item_variables = sorted(expression.variables & _ITEM_VARIABLES)
            if item_variables:
                self.add(path, _item_message(item_variables[0], "outputs"))
            self.outputs[key] = expression

    def _check_retention(self) -> None:
        retention = self.definition.retention
        if retention is not None and 0 < retention < MIN_RETENTION_SECONDS:
            self.add(
                "retention",
                f"retention must be 0 (keep forever) or at least {MIN_RETENTION_SECONDS:g}s, got {retention:g}s",
            )

    # -- result

    def build(self) -> CompiledWorkflow:
        definition = self.definition
        successors: dict[str, list[str]] = {step.id: [] for step in definition.steps}
        for step in definition.steps:
            for need in self.needs[step.id]:
                successors[need].append(step.id)
        return CompiledWorkflow(
            definition=definition,
            digest=hashlib.sha256(canonical_json(definition.to_document()).encode()).hexdigest(),
            order=_topological_order([step.id for step in definition.steps], self.needs),
            needs=MappingProxyType(dict(self.needs)),
            successors=MappingProxyType({k: tuple(v) for k, v in successors.items()}),
            roots=tuple(step.id for step in definition.steps if not self.needs[step.id]),
            when=MappingProxyType(self.when),
            foreach=MappingProxyType(self.foreach),
            outputs=MappingProxyType(self.outputs),
            ancestors=MappingProxyType(self.ancestors),
            input_validator=self.validator,
            _referenced=MappingProxyType(self.referenced),
            _planning=MappingProxyType(self.planning),
            _steps=MappingProxyType({step.id: step for step in definition.steps}),
        )


# --------------------------------------------------------------------------- helpers


def _steps_read(expressions: list[Expression], ancestors: frozenset[str]) -> frozenset[str]:
    """The steps ``expressions`` read; all ancestors when one reads ``steps`` dynamically."""
    if any(expression.steps_opaque for expression in expressions):
        return ancestors
    return frozenset(ref for expression in expressions for ref in expression.step_refs) & ancestors


def _type_expressions(step_type: StepType, config: StepConfig) -> list[tuple[str, str]]:
    # A step type whose config holds bare CEL (a switch's cases) lists it so step
    # references and item/index use are checked like any other expression.
    return list(step_type.expressions(config))


def _item_message(variable: str, kind: str) -> str:
    if kind == "when":
        return f"'{variable}' is not available in 'when': it is evaluated once, before 'foreach' expands the step"
    if kind == "foreach":
        return f"'{variable}' is not available in 'foreach' itself"
    if kind == "outputs":
        return f"'{variable}' is not available in workflow outputs"
    return f"'{variable}' is only available in steps with 'foreach'"


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _through_template(config: Any, loc: Sequence[int | str]) -> bool:
    """Whether the error location is at or under a string holding a ``${...}`` template."""
    value = config
    for part in loc:
        if isinstance(value, str):
            break
        in_map = isinstance(value, Mapping) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        if not (in_map or in_list):
            return False
        value = value[part]
    return isinstance(value, str) and "${" in value


def _config_error_path(base: str, loc: Sequence[int | str], config: Any) -> str:
    """Path of a config error; pydantic's union/validator tags in ``loc`` are not data, so skip them."""
    path, value = base, config
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(value, Mapping) and (part in value or last):
            path, value = child_path(path, str(part)), value.get(part)
        elif isinstance(value, list) and isinstance(part, int):
            path, value = child_path(path, part), value[part] if 0 <= part < len(value) else None
        else:
            break
    return path


def _config_error_message(error: Any, allowed: str) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown key (allowed here: {allowed})" if len(error["loc"]) == 1 else "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    return str(error["msg"]).removeprefix("Value error, ")


def _json_path(base: str, parts: Iterable[int | str]) -> str:
    path = base
    for part in parts:
        path = child_path(path, part if isinstance(part, int) else str(part))
    return path


def _input_error_path(error: jsonschema.ValidationError) -> str:
    path = _json_path("input", error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, Mapping):
        # Point at the missing property itself, not at the object that lacks it.
        for name in error.validator_value:
            if error.message == f"{name!r} is a required property":
                return child_path(path, str(name))
    return path


_STEP_INDEX = re.compile(r"^steps\[(\d+)\]")


def _problem_order(problem: Problem) -> tuple[int, int]:
    """Inputs, then steps in document order, then outputs; stable within a step."""
    if problem.path.startswith("inputs"):
        return (0, 0)
    match = _STEP_INDEX.match(problem.path)
    if match:
        return (1, int(match.group(1)))
    if problem.path.startswith("steps"):
        return (1, -1)
    return (2, 0)


def _reachable(start: str, edges: Mapping[str, Sequence[str]]) -> frozenset[str]:
    """Every node reachable from ``start`` (not including ``start`` unless on a cycle)."""
    seen: set[str] = set()
    stack = list(edges.get(start, ()))
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(edges.get(node, ()))
    return frozenset(seen)


def _strongly_connected(nodes: Sequence[str], edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so that long chains cannot hit the recursion limit."""
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in nodes:
        if root in index_of:
            continue
        work = [(root, iter(edges.get(root, ())))]
        index_of[root] = low[root] = len(index_of)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index_of:
                    index_of[child] = low[child] = len(index_of)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index_of[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index_of[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _cycle_through(start: str, edges: Mapping[str, Sequence[str]], members: frozenset[str]) -> list[str]:
    """The shortest cycle from ``start`` back to itself inside one strongly connected component."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        next_frontier: list[str] = []
        for node in frontier:
            for child in edges.get(node, ()):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if child in members and child not in parent:
                    parent[child] = node
                    next_frontier.append(child)
        frontier = next_frontier
    return [start, start]  # unreachable for a real component; keeps the type simple


def _topological_order(ids: Sequence[str], needs: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """Kahn's algorithm; among ready steps the earliest in the document goes first."""
    position = {step_id: i for i, step_id in enumerate(ids)}
    remaining = {step_id: len(needs[step_id]) for step_id in ids}
    successors: dict[str, list[str]] = {step_id: [] for step_id in ids}
    for step_id in ids:
        for need in needs[step_id]:
            successors[need].append(step_id)
    ready = [(position[s], s) for s in ids if remaining[s] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, step_id = heapq.heappop(ready)
        order.append(step_id)
        for successor in successors[step_id]:
            remaining[successor] -= 1
            if remaining[successor] == 0:
                heapq.heappush(ready, (position[successor], successor))
    return tuple(order)


__all__ = ["CompiledWorkflow", "compile_workflow"]
