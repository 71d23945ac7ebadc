"""Render a compiled workflow as a Mermaid flowchart (``conveyor graph``, the API, docs).

One node per step labelled ``id<br/>type``; node shapes hint at behaviour (switch: rhombus,
wait: stadium, approval: hexagon, fail: trapezoid). Edges follow ``needs``; an edge into a
step with a ``when`` condition is dashed and labelled with the condition (a root step
with a condition shows it in its label). Steps with ``foreach`` say so in their label and
carry the ``foreach`` class.
"""

from __future__ import annotations

from engine.compile import CompiledWorkflow
from engine.model import StepDef

#: Opening and closing brackets of the Mermaid node shape per step type.
_SHAPES: dict[str, tuple[str, str]] = {
    "switch": ("{", "}"),
    "wait": ("([", "])"),
    "wait_for_event": ("([", "])"),
    "approval": ("{{", "}}"),
    "fail": ("[/", "\\]"),
}
_DEFAULT_SHAPE = ("[", "]")

#: Words Mermaid's flowchart grammar reserves; a node with such an id breaks the diagram.
_RESERVED = frozenset(
    {"end", "graph", "flowchart", "subgraph", "style", "class", "classdef", "click", "linkstyle", "default",
     "direction", "call", "href", "callback"}
)  # fmt: skip
_MAX_LABEL = 60


def to_mermaid(compiled: CompiledWorkflow) -> str:
    """The workflow as Mermaid ``flowchart TD`` source, ending with a newline."""
    ids = _node_ids([step.id for step in compiled.definition.steps])
    lines = ["flowchart TD"]
    lines += [f"    {ids[step.id]}{_node(step, compiled)}" for step in compiled.definition.steps]
    for step in compiled.definition.steps:
        for need in compiled.needs[step.id]:
            lines.append(f"    {ids[need]} {_edge(step)} {ids[step.id]}")
    looped = [ids[step.id] for step in compiled.definition.steps if step.foreach is not None]
    if looped:
        lines.append("    classDef foreach stroke-width:3px,stroke-dasharray:6 3")
        lines.append(f"    class {','.join(looped)} foreach")
    return "\n".join(lines) + "\n"


def _node(step: StepDef, compiled: CompiledWorkflow) -> str:
    label = f"{_escape(step.id)}<br/>{_escape(step.type)}"
    if step.foreach is not None:
        label += f"<br/>foreach {_escape(_shorten(step.foreach))}"
    if step.when is not None and not compiled.needs[step.id]:
        label += f"<br/>when {_escape(_shorten(step.when))}"
    opening, closing = _SHAPES.get(step.type, _DEFAULT_SHAPE)
    return f'{opening}"{label}"{closing}'


def _edge(step: StepDef) -> str:
    if step.when is None:
        return "-->"
    return f'-.->|"{_escape(_shorten(step.when))}"|'


def _node_ids(step_ids: list[str]) -> dict[str, str]:
    """Mermaid node ids: the step id unless Mermaid reserves it, then prefixed (unique)."""
    taken = set(step_ids)
    ids: dict[str, str] = {}
    for step_id in step_ids:
        node = step_id
        while node.lower() in _RESERVED or (node != step_id and node in taken):
            node = f"step_{node}"
        taken.add(node)
        ids[step_id] = node
    return ids


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"


def _escape(text: str) -> str:
    """Mermaid entity codes for characters that would end a quoted label or start markup."""
    # '#' first: every replacement below introduces one.
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("|", "#124;")):
        text = text.replace(char, code)
    return text


__all__ = ["to_mermaid"]
