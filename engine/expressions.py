"""CEL expressions and ``${...}`` templates, compiled once and evaluated with bound variables only.

Expressions appear in ``when``, ``foreach``, ``outputs``, step configs that take CEL (a
switch's cases) and inside strings as ``${ <cel> }`` templates. They are compiled by the
``cel`` package (cel-rust bindings); nothing here ever calls Python's ``eval``.

Variables an expression may use are :data:`ALLOWED_VARIABLES`; anything else is refused at
compile time, as is a function CEL does not know, so typos surface when a definition is
saved rather than in the middle of an execution.

Functions: the native CEL library (``size``, ``contains``, ``startsWith``, ``matches``,
conversions, timestamp accessors, the ``all``/``exists``/``map``/``filter`` macros) plus
the extension functions of :mod:`cel.stdlib` (``join``, ``split``, ``lowerAscii``,
``math.greatest``, ``base64.encode``, ...). Extension functions run as Python callbacks, so
an expression pays for them only when it uses them.

Evaluation is on the hot path. Converting Python data into CEL values costs roughly a
microsecond per value, which dwarfs running the program, so :meth:`Expression.evaluate`
binds only the variables an expression references and, for ``steps``, only the step
records it names (``steps.fetch...``) instead of every step of the execution.

Templates: a string that is exactly one ``${...}`` renders to the raw value (keeping its
type); any other string is interpolated, strings as they are and every other value as JSON
text (``true``, ``null``, ``{"a":1}``, keys sorted), which is what a URL or a prompt expects. ``$${``
writes a literal ``${``.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import cel
from cel import stdlib as cel_stdlib

from engine.errors import ExpressionError

ALLOWED_VARIABLES: Final = frozenset({"input", "steps", "item", "index", "event", "execution", "signal"})

#: CEL type identifiers (``type(x) == int``): they parse as variables but are built in.
_TYPE_NAMES: Final = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "dyn"}
)

#: Functions the native (Rust) CEL library implements. Checked against the installed
#: package by the unit tests so a library upgrade that drops one is noticed.
NATIVE_FUNCTIONS: Final = frozenset(
    {
        "size", "contains", "startsWith", "endsWith", "matches",
        "int", "uint", "double", "string", "bytes", "timestamp", "duration", "dyn", "type",
        "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek",
        "getHours", "getMinutes", "getSeconds", "getMilliseconds",
    }
)  # fmt: skip

_EXTENSIONS: Final[Mapping[str, Callable[..., Any]]] = cel_stdlib.STDLIB_FUNCTIONS
#: Namespaces of extension functions: ``math.greatest(x)`` parses as function ``greatest``
#: applied to a variable ``math``, so the namespace shows up among the variables.
_NAMESPACES: Final = frozenset(name.split(".")[0] for name in _EXTENSIONS if "." in name)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MACRO_BINDER = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
#: A field selection ``.name`` that is not a method call ``.name(``.
_FIELD = re.compile(r"\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()")
_INDEX_OPEN = re.compile(r"\s*\[\s*(?=['\"])")
_INDEX_CLOSE = re.compile(r"\s*\]")

#: What of a variable an expression reads: ``None`` for the whole value, else the keys it
#: selects, each with what it reads below that key.
Shape = dict[str, "Shape"] | None
_CEL_LOCATION = re.compile(r"ERROR: <input>:(\d+):(\d+): ")


@dataclass(frozen=True, eq=False)
class Expression:
    """A compiled CEL expression.

    ``variables`` are the free variables it reads; ``step_refs`` the step ids it reads as
    ``steps.<id>`` (or ``steps["<id>"]``); ``steps_opaque`` is true when it reads ``steps``
    in a way that cannot be resolved statically (``steps[name]``, ``steps.size()``), in
    which case every step record is bound when it is evaluated.

    Only what the expression selects is bound: for ``steps.fetch.output.status == 200``
    that is ``{"steps": {"fetch": {"output": {"status": ...}}}}``, whatever else the
    output holds. A value used as a whole (``size(x)``, ``x == y``, ``x.map(...)``, an
    index that is not a string literal) is bound whole, so results never differ.
    """

    source: str
    variables: frozenset[str]
    step_refs: frozenset[str]
    steps_opaque: bool
    _program: cel.Program = field(repr=False)
    _shapes: tuple[tuple[str, Shape], ...] = field(repr=False)
    _functions: Mapping[str, Callable[..., Any]] = field(repr=False, default_factory=dict)

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """Evaluate with ``variables``; return plain JSON-like data or raise ``ExpressionError``."""
        bound = self._bind(variables)
        try:
            if self._functions:
                result = self._program.execute(cel.Context(variables=bound, functions=dict(self._functions)))
            else:
                result = self._program.execute(bound)
        except Exception as exc:  # the CEL library raises many types; every one is an evaluation error
            raise ExpressionError(f"expression {self.source!r} failed: {_evaluation_message(exc)}") from exc
        return to_plain(result)

    def evaluate_bool(self, variables: Mapping[str, Any]) -> bool:
        """Evaluate a condition (``when``, a switch case); anything but a boolean is an error."""
        result = self.evaluate(variables)
        if not isinstance(result, bool):
            raise ExpressionError(f"expression {self.source!r} must be a boolean but returned {type_name(result)}")
        return result

    def _bind(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        # Only what the expression reads: converting unused data into CEL values is the
        # dominant cost of an evaluation (about a microsecond per value).
        return {name: _project(variables[name], shape) for name, shape in self._shapes if name in variables}


def _project(value: Any, shape: Shape) -> Any:
    """The part of ``value`` that ``shape`` selects (a missing key stays missing)."""
    if shape is None or not isinstance(value, Mapping):
        return value
    return {key: _project(value[key], below) for key, below in shape.items() if key in value}


def type_name(value: Any) -> str:
    """The JSON-ish name of a value's type, for error messages."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a map"}.get(type(value), type(value).__name__)  # fmt: skip


def to_plain(value: Any) -> Any:
    """Convert a CEL result into JSON-compatible Python data.

    Timestamps become ISO 8601 strings, durations seconds, bytes base64 text, optionals
    their value (or ``None``) and map keys strings.
    """
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(key) if not isinstance(key, str) else key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, cel.OptionalValue):
        return to_plain(value.value()) if value.has_value() else None
    return str(value)


def _evaluation_message(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0]!r}" if exc.args else "no such key"
    text = str(exc).strip() or type(exc).__name__
    if text.startswith("Undefined variable or function"):
        # The library's hint about spelling is misleading here: names are checked at save
        # time, so an undefined name means the variable was not bound for this evaluation.
        text = text.split(". Check")[0] + " (not available here)"
    return text


# --------------------------------------------------------------------------- compiling


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str) -> Expression:
    """Compile CEL ``source`` once (cached); raise ``ExpressionError`` with a caret diagnostic."""
    if not source.strip():
        raise ExpressionError("expression is empty")
    try:
        program = cel.compile(source)
    except ValueError as exc:
        raise ExpressionError(f"cannot compile {source!r}: {_syntax_message(str(exc))}") from None
    references = program.references()
    code = _blank_strings(source)
    binders = frozenset(_MACRO_BINDER.findall(code))
    # A binder may shadow an allowed variable; the variable is then bound whole (see _shape).
    free = frozenset(references["variables"]) - (binders - ALLOWED_VARIABLES) - _TYPE_NAMES
    functions = _extension_functions(source, free, frozenset(references["functions"]))
    namespaces = {name.split(".")[0] for name in functions if "." in name}
    variables = free - namespaces
    unknown = sorted(variables - ALLOWED_VARIABLES)
    if unknown:
        raise ExpressionError(
            f"expression {source!r}: unknown variable {unknown[0]!r} "
            f"(available: {', '.join(sorted(ALLOWED_VARIABLES))})"
        )
    paths = {name: _access_paths(name, source, code) for name in sorted(variables)}
    shapes = {name: None if name in binders else _shape(found) for name, found in paths.items()}
    return Expression(
        source=source,
        variables=variables,
        step_refs=frozenset(path[0] for path in paths.get("steps") or () if path),
        steps_opaque="steps" in shapes and shapes["steps"] is None,
        _program=program,
        _shapes=tuple(shapes.items()),
        _functions=functions,
    )


def _syntax_message(raw: str) -> str:
    """Turn the library's parse error into ``line L, column C: <problem>`` plus its caret lines."""
    first = _CEL_LOCATION.search(raw)
    detail = raw[first.start() :] if first else raw  # drop "Failed to parse expression '<source>': "
    return _CEL_LOCATION.sub(lambda m: f"line {m.group(1)}, column {m.group(2)}: ", detail).strip()


def _extension_functions(source: str, free: frozenset[str], used: frozenset[str]) -> dict[str, Callable[..., Any]]:
    """The :mod:`cel.stdlib` callbacks ``source`` needs; refuse functions nobody implements."""
    needed: dict[str, Callable[..., Any]] = {}
    for name in sorted(used):
        if not _IDENTIFIER.fullmatch(name) or name.startswith("@"):
            continue  # an operator such as _+_ or @in
        namespaced = [f"{ns}.{name}" for ns in sorted(free & _NAMESPACES) if f"{ns}.{name}" in _EXTENSIONS]
        if namespaced:
            needed.update({full: _EXTENSIONS[full] for full in namespaced})
        elif name in _EXTENSIONS:
            needed[name] = _EXTENSIONS[name]
        elif name not in NATIVE_FUNCTIONS:
            raise ExpressionError(f"expression {source!r}: unknown function {name!r}")
    return needed


def _access_paths(name: str, source: str, code: str) -> list[tuple[str, ...]]:
    """The access path after every occurrence of variable ``name``."""
    token = re.compile(rf"(?<![A-Za-z0-9_.]){name}(?![A-Za-z0-9_])")
    return [_access_path(source, code, occurrence.end()) for occurrence in token.finditer(code)]


def _shape(paths: list[tuple[str, ...]]) -> Shape:
    """Merge access paths into one shape."""
    if not paths:
        return None  # the compiler saw the variable but this scan did not: bind it whole
    shape: Shape = {}
    for path in paths:
        shape = _merge(shape, path)
    return shape


def _access_path(source: str, code: str, position: int) -> tuple[str, ...]:
    """The keys selected right after ``position``: ``.a.b`` or ``["a"]``, up to anything else."""
    path: list[str] = []
    while True:
        field_match = _FIELD.match(code, position)
        if field_match:
            path.append(field_match.group(1))
            position = field_match.end()
            continue
        index_match = _INDEX_OPEN.match(code, position)
        if index_match is None:
            return tuple(path)
        start = index_match.end()
        end = _string_end(source, start)
        literal = source[start + 1 : end - 1]
        close = _INDEX_CLOSE.match(code, end)
        if close is None or end - start < 2 or any(char in literal for char in "\\'\""):
            return tuple(path)  # an escaped or triple-quoted key: bind the whole value
        path.append(literal)
        position = close.end()


def _merge(shape: Shape, path: tuple[str, ...]) -> Shape:
    if shape is None or not path:
        return None
    head, rest = path[0], path[1:]
    merged = dict(shape)
    merged[head] = _merge(shape.get(head, {}), rest)
    return merged


def _blank_strings(source: str) -> str:
    """``source`` with the contents of string literals replaced by spaces (positions kept)."""
    out = list(source)
    position = 0
    while position < len(source):
        if source[position] in "'\"":
            end = _string_end(source, position)
            for i in range(position + 1, max(position + 1, end - 1)):
                out[i] = " "
            position = end
        else:
            position += 1
    return "".join(out)


def _string_end(text: str, start: int) -> int:
    """Index just past the CEL string literal whose opening quote is at ``start``.

    Handles single, double and triple quotes, backslash escapes and raw (``r"..."``)
    strings. An unterminated literal ends at the end of ``text``.
    """
    quote = text[start]
    delimiter = quote * 3 if text.startswith(quote * 3, start) else quote
    prefix = text[max(0, start - 2) : start].lower()
    raw = prefix.endswith("r") and not (len(prefix) == 2 and _is_word(prefix[0]) and prefix[0] != "b")
    position = start + len(delimiter)
    while position < len(text):
        if text[position] == "\\" and not raw:
            position += 2
            continue
        if text.startswith(delimiter, position):
            return position + len(delimiter)
        position += 1
    return len(text)


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Template:
    """A string split into literal text and expressions; ``single`` if it is one ``${...}`` alone."""

    parts: tuple[str | Expression, ...]

    @property
    def single(self) -> bool:
        return len(self.parts) == 1 and isinstance(self.parts[0], Expression)

    @property
    def expressions(self) -> tuple[Expression, ...]:
        return tuple(part for part in self.parts if isinstance(part, Expression))

    def render(self, variables: Mapping[str, Any]) -> Any:
        if self.single:
            return self.parts[0].evaluate(variables)  # type: ignore[union-attr]
        return "".join(
            part if isinstance(part, str) else _interpolated(part.evaluate(variables)) for part in self.parts
        )


def _interpolated(value: Any) -> str:
    # Sorted keys: CEL maps do not keep insertion order, and a rendered string should be stable.
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def split_template(text: str) -> tuple[str | tuple[str], ...]:
    """Split ``text`` into literal strings and 1-tuples holding expression sources.

    Raises ``ExpressionError`` for an unterminated ``${``. Braces inside the expression
    are matched by depth, ignoring those in string literals, so ``${ {"a": "}"}.a }`` works.
    """
    parts: list[str | tuple[str]] = []
    literal: list[str] = []
    position = 0
    while True:
        start = text.find("${", position)
        if start < 0:
            literal.append(text[position:])
            break
        if start > 0 and text[start - 1] == "$":  # $${ escapes a literal ${
            literal.append(text[position : start - 1] + "${")
            position = start + 2
            continue
        literal.append(text[position:start])
        end = _expression_end(text, start + 2)
        if "".join(literal):
            parts.append("".join(literal))
        literal = []
        parts.append((text[start + 2 : end].strip(),))
        position = end + 1
    if "".join(literal):
        parts.append("".join(literal))
    return tuple(parts)


def _expression_end(text: str, position: int) -> int:
    """Index of the ``}`` closing the ``${`` whose body starts at ``position``."""
    depth = 0
    while position < len(text):
        char = text[position]
        if char in "'\"":
            position = _string_end(text, position)
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return position
            depth -= 1
        position += 1
    raise ExpressionError(f"unterminated '${{' in template {text!r} (close it with '}}')")


@functools.lru_cache(maxsize=4096)
def parse_template(text: str) -> Template:
    """Parse and compile a template string (cached); raise ``ExpressionError`` on any problem."""
    parts: list[str | Expression] = []
    for part in split_template(text):
        if isinstance(part, tuple):
            parts.append(compile_expression(part[0]))
        else:
            parts.append(part)
    return Template(tuple(parts))


def is_template(value: Any) -> bool:
    """Whether ``value`` (recursively) contains a ``${...}`` template."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, Mapping):
        return any(is_template(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(is_template(item) for item in value)
    return False


def render(value: Any, variables: Mapping[str, Any]) -> Any:
    """Render every template in ``value`` (dicts, lists and strings, recursively).

    Dict keys are never templates. Values without ``${`` are returned unchanged.
    """
    if isinstance(value, str):
        return parse_template(value).render(variables) if "${" in value else value
    if isinstance(value, Mapping):
        return {key: render(item, variables) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render(item, variables) for item in value]
    return value


def child_path(path: str, key: str | int) -> str:
    """``path`` extended by a list index (``a[0]``) or a map key (``a.b``, ``a["b c"]``)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def template_strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in ``value`` that contains ``${``, with its path."""
    if isinstance(value, str):
        if "${" in value:
            yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from template_strings(item, child_path(path, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from template_strings(item, child_path(path, index))


def template_expressions(value: Any, path: str) -> list[tuple[str, str]]:
    """``(path, source)`` of every ``${...}`` expression in ``value``, for validation.

    Raises ``ExpressionError`` (naming the path) for an unterminated ``${``.
    """
    found: list[tuple[str, str]] = []
    for string_path, text in template_strings(value, path):
        try:
            parts = split_template(text)
        except ExpressionError as exc:
            raise ExpressionError(f"{string_path}: {exc.message}") from None
        found.extend((string_path, part[0]) for part in parts if isinstance(part, tuple))
    return found


__all__ = [
    "ALLOWED_VARIABLES",
    "NATIVE_FUNCTIONS",
    "Expression",
    "Template",
    "child_path",
    "compile_expression",
    "is_template",
    "parse_template",
    "render",
    "split_template",
    "template_expressions",
    "template_strings",
    "to_plain",
    "type_name",
]
