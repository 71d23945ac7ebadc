"""A small, strict renderer for the subset of Helm templates that charts/conveyor uses.

Helm is not installable on every machine that runs the tests, so the chart tests render the chart
with this instead (and additionally with ``helm template`` when helm is on PATH). It follows Go's
text/template and Helm's conventions where the chart depends on them:

* values from values.yaml are float64 (as in Helm): integers print as ``3`` but ``8388608`` prints
  as ``8.388608e+06``, and comparing a float64 with an int literal (``eq .Values.n 1``) fails;
* a field of a nil value (``.Values.missing.key``) is an error, a missing map key is nil;
* ``{{-`` / ``-}}`` trim white space, variables are scoped to their block, ``and``/``or`` short-circuit;
* only the functions listed in ``FUNCTIONS`` exist: using another one fails loudly, so extend this
  module together with the chart.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    """A template failed to parse or render (including ``fail`` and ``required``)."""


# --------------------------------------------------------------------------------------- values


def helm_numbers(value: Any) -> Any:
    """Turn YAML integers into floats, as Helm's values loading does."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: helm_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [helm_numbers(v) for v in value]
    return value


def go_float(value: float) -> str:
    """Go's ``%v`` of a float64 (strconv 'g' with the shortest precision)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    dec = Decimal(repr(value)).normalize()
    sign, digits, exponent = dec.as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    exp10 = len(digits) + exponent - 1
    prefix = "-" if sign else ""
    # strconv 'g' with the shortest precision: exponent form when exp < -4 || exp >= 6
    if exp10 < -4 or exp10 >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    return prefix + format(abs(dec), "f")


def go_str(value: Any) -> str:
    """fmt's ``%v``, with Helm's ``<no value>`` -> "" replacement for nil."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, list):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_str(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def plain(value: Any) -> Any:
    """Integral floats as ints, for YAML/JSON output (Go marshals float64 3 as ``3``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def is_empty(value: Any) -> bool:
    return value is None or value is False or (value == 0 and not isinstance(value, str)) or value in ("", [], {})


def kind_of(value: Any) -> str:
    if value is None:
        return "invalid"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "slice"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


# ----------------------------------------------------------------------------------------- lexer

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<decl>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)


@dataclass
class Tok:
    kind: str
    text: str
    adjacent: bool = False  # no white space before it (for "(pipeline).field")


def tokenize(source: str, where: str) -> list[Tok]:
    tokens: list[Tok] = []
    pos = 0
    prev_ws = True
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise TemplateError(f"{where}: cannot parse action near {source[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        text = match.group()
        pos = match.end()
        if kind == "ws":
            prev_ws = True
            continue
        tokens.append(Tok(kind, text, adjacent=not prev_ws))
        prev_ws = False
    return tokens


# ------------------------------------------------------------------------------------------ AST


@dataclass
class Term:
    kind: str  # field | var | literal | ident | sub
    name: str = ""
    chain: list[str] = field(default_factory=list)
    value: Any = None
    pipe: Pipeline | None = None


@dataclass
class Pipeline:
    commands: list[list[Term]]
    decl: list[str] = field(default_factory=list)
    assign: bool = False


@dataclass
class Text:
    text: str


@dataclass
class Action:
    pipe: Pipeline


@dataclass
class If:
    branches: list[tuple[Pipeline, list[Any]]]
    otherwise: list[Any] | None = None


@dataclass
class Range:
    pipe: Pipeline
    body: list[Any]
    otherwise: list[Any] | None = None


@dataclass
class With:
    pipe: Pipeline
    body: list[Any]
    otherwise: list[Any] | None = None


@dataclass
class Define:
    name: str
    body: list[Any]


@dataclass
class TemplateCall:
    name: str
    pipe: Pipeline | None


# --------------------------------------------------------------------------------------- parser

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


def _split(source: str, where: str) -> Iterator[tuple[str, str]]:
    """Yield ("text", s) and ("action", body) pieces with trim markers applied."""
    pos = 0
    pieces: list[list[str]] = []
    trim_next = False
    while True:
        start = source.find("{{", pos)
        if start < 0:
            text = source[pos:]
            pieces.append(["text", text.lstrip() if trim_next else text])
            break
        text = source[pos:start]
        if trim_next:
            text = text.lstrip()
        # find the closing braces outside of string literals
        i = start + 2
        in_str: str | None = None
        while i < len(source):
            ch = source[i]
            if in_str:
                if ch == "\\" and in_str == '"':
                    i += 2
                    continue
                if ch == in_str:
                    in_str = None
            elif ch in '"`':
                in_str = ch
            elif source.startswith("}}", i):
                break
            i += 1
        else:
            raise TemplateError(f"{where}: unclosed action starting at {source[start : start + 30]!r}")
        body = source[start + 2 : i]
        trim_left = body.startswith("- ") or body.startswith("-\n") or body == "-"
        trim_right = body.endswith(" -") or body.endswith("\n-")
        if trim_left:
            text = text.rstrip()
            body = body[1:]
        if trim_right:
            body = body[:-1]
        pieces.append(["text", text])
        pieces.append(["action", body.strip()])
        trim_next = trim_right
        pos = i + 2
    for kind, value in pieces:
        if kind == "text" and value == "":
            continue
        yield kind, value


class Parser:
    def __init__(self, source: str, where: str) -> None:
        self.where = where
        self.items = list(_split(source, where))
        self.pos = 0

    def parse(self) -> list[Any]:
        nodes, stop = self._block(())
        if stop is not None:
            raise TemplateError(f"{self.where}: unexpected {{{{ {stop} }}}}")
        return nodes

    def _block(self, stops: tuple[str, ...]) -> tuple[list[Any], str | None]:
        nodes: list[Any] = []
        while self.pos < len(self.items):
            kind, value = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                nodes.append(Text(value))
                continue
            if value.startswith("/*"):
                if not value.endswith("*/"):
                    raise TemplateError(f"{self.where}: bad comment {value[:30]!r}")
                continue
            word = value.split(None, 1)[0] if value else ""
            rest = value[len(word) :].strip()
            if word in ("end", "else"):
                if word not in stops and not (word == "else" and "else" in stops):
                    raise TemplateError(f"{self.where}: unexpected {{{{ {value} }}}}")
                return nodes, value
            if word == "if":
                nodes.append(self._if(rest))
            elif word == "range":
                pipe = self._pipeline(rest)
                body, otherwise = self._body_else("range")
                nodes.append(Range(pipe, body, otherwise))
            elif word == "with":
                pipe = self._pipeline(rest)
                body, otherwise = self._body_else("with")
                nodes.append(With(pipe, body, otherwise))
            elif word == "define":
                name = self._string_arg(rest)
                body, stop = self._block(("end",))
                if stop != "end":
                    raise TemplateError(f"{self.where}: define {name!r} has no end")
                nodes.append(Define(name, body))
            elif word == "template":
                toks = tokenize(rest, self.where)
                if not toks or toks[0].kind != "string":
                    raise TemplateError(f"{self.where}: template needs a name")
                name = json.loads(toks[0].text)
                call_pipe = self._pipeline_tokens(toks[1:]) if len(toks) > 1 else None
                nodes.append(TemplateCall(name, call_pipe))
            elif word in ("block", "break", "continue"):
                raise TemplateError(f"{self.where}: {{{{ {word} }}}} is not supported by this renderer")
            else:
                nodes.append(Action(self._pipeline(value)))
        if stops:
            raise TemplateError(f"{self.where}: missing {{{{ end }}}}")
        return nodes, None

    def _body_else(self, what: str) -> tuple[list[Any], list[Any] | None]:
        body, stop = self._block(("end", "else"))
        if stop is None:
            raise TemplateError(f"{self.where}: {what} has no end")
        if stop == "end":
            return body, None
        if stop != "else":
            raise TemplateError(f"{self.where}: unsupported {{{{ {stop} }}}} in {what}")
        otherwise, stop = self._block(("end",))
        if stop != "end":
            raise TemplateError(f"{self.where}: {what} else has no end")
        return body, otherwise

    def _if(self, condition: str) -> If:
        branches: list[tuple[Pipeline, list[Any]]] = []
        otherwise: list[Any] | None = None
        pipe = self._pipeline(condition)
        while True:
            body, stop = self._block(("end", "else"))
            branches.append((pipe, body))
            if stop is None:
                raise TemplateError(f"{self.where}: if has no end")
            if stop == "end":
                break
            if stop == "else":
                otherwise, stop = self._block(("end",))
                if stop != "end":
                    raise TemplateError(f"{self.where}: else has no end")
                break
            if stop.startswith("else if "):
                pipe = self._pipeline(stop[len("else if ") :])
                continue
            raise TemplateError(f"{self.where}: unsupported {{{{ {stop} }}}}")
        return If(branches, otherwise)

    def _string_arg(self, text: str) -> str:
        toks = tokenize(text, self.where)
        if len(toks) != 1 or toks[0].kind != "string":
            raise TemplateError(f"{self.where}: expected a string, got {text!r}")
        return str(json.loads(toks[0].text))

    def _pipeline(self, text: str) -> Pipeline:
        return self._pipeline_tokens(tokenize(text, self.where))

    def _pipeline_tokens(self, toks: list[Tok]) -> Pipeline:
        decl: list[str] = []
        assign = False
        kinds = [t.kind for t in toks]
        if "decl" in kinds or ("assign" in kinds and toks[0].kind == "var"):
            idx = kinds.index("decl") if "decl" in kinds else kinds.index("assign")
            assign = toks[idx].kind == "assign"
            names = [t for t in toks[:idx] if t.kind != "comma"]
            if not names or any(t.kind != "var" or "." in t.text for t in names):
                raise TemplateError(f"{self.where}: bad variable declaration")
            decl = [t.text for t in names]
            toks = toks[idx + 1 :]
        pipe, rest = self._commands(toks)
        if rest:
            raise TemplateError(f"{self.where}: unexpected {rest[0].text!r}")
        pipe.decl = decl
        pipe.assign = assign
        return pipe

    def _commands(self, toks: list[Tok]) -> tuple[Pipeline, list[Tok]]:
        commands: list[list[Term]] = []
        current: list[Term] = []
        while toks:
            tok = toks[0]
            if tok.kind == "rparen":
                break
            toks = toks[1:]
            if tok.kind == "pipe":
                if not current:
                    raise TemplateError(f"{self.where}: empty command in pipeline")
                commands.append(current)
                current = []
            elif tok.kind == "lparen":
                sub, toks = self._commands(toks)
                if not toks or toks[0].kind != "rparen":
                    raise TemplateError(f"{self.where}: unclosed (")
                toks = toks[1:]
                term = Term("sub", pipe=sub)
                if toks and toks[0].kind == "field" and toks[0].adjacent and toks[0].text != ".":
                    term.chain = toks[0].text.split(".")[1:]
                    toks = toks[1:]
                current.append(term)
            else:
                current.append(self._term(tok))
        if current:
            commands.append(current)
        if not commands:
            raise TemplateError(f"{self.where}: empty pipeline")
        return Pipeline(commands), toks

    def _term(self, tok: Tok) -> Term:
        if tok.kind == "string":
            return Term("literal", value=json.loads(tok.text))
        if tok.kind == "raw":
            return Term("literal", value=tok.text[1:-1])
        if tok.kind == "number":
            return Term("literal", value=float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind == "field":
            return Term("field", chain=[] if tok.text == "." else tok.text.split(".")[1:])
        if tok.kind == "var":
            name, *chain = tok.text.split(".")
            return Term("var", name=name, chain=chain)
        if tok.kind == "ident":
            if tok.text in ("true", "false"):
                return Term("literal", value=tok.text == "true")
            if tok.text == "nil":
                return Term("literal", value=None)
            return Term("ident", name=tok.text)
        raise TemplateError(f"{self.where}: unexpected {tok.text!r}")


# ------------------------------------------------------------------------------------- renderer


class _Scope:
    def __init__(self, parent: _Scope | None = None) -> None:
        self.vars: dict[str, Any] = {}
        self.parent = parent

    def lookup(self, name: str) -> Any:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.vars:
                return scope.vars[name]
            scope = scope.parent
        raise TemplateError(f"undefined variable {name}")

    def assign(self, name: str, value: Any) -> None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.vars:
                scope.vars[name] = value
                return
            scope = scope.parent
        raise TemplateError(f"assignment to undeclared variable {name}")


def _get(value: Any, name: str, path: str) -> Any:
    if value is None:
        raise TemplateError(f"nil pointer evaluating interface {{}}.{name} (in {path})")
    if isinstance(value, dict):
        return value.get(name)
    raise TemplateError(f"can't evaluate field {name} in type {kind_of(value)} (in {path})")


def _check_comparable(a: Any, b: Any, op: str) -> None:
    ka, kb = kind_of(a), kind_of(b)
    if "invalid" in (ka, kb):
        return
    numeric = {"int", "float64"}
    if ka != kb and not (ka in numeric and kb in numeric and ka == kb):
        raise TemplateError(f"{op}: incompatible types for comparison ({ka} and {kb})")


def _compare(op: str) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        _check_comparable(a, b, op)
        if a is None or b is None:
            raise TemplateError(f"{op}: invalid type for comparison")
        return bool({"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op])

    return compare


def _eq(a: Any, *others: Any) -> bool:
    for b in others:
        _check_comparable(a, b, "eq")
        if a == b and kind_of(a) == kind_of(b):
            return True
    return False


def _printf(fmt: str, *args: Any) -> str:
    out: list[str] = []
    arg_iter = iter(args)
    i = 0
    while i < len(fmt):
        ch = fmt[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        verb = fmt[i + 1] if i + 1 < len(fmt) else ""
        i += 2
        if verb == "%":
            out.append("%")
            continue
        try:
            arg = next(arg_iter)
        except StopIteration:
            out.append(f"%!{verb}(MISSING)")
            continue
        if verb in "sv":
            out.append(go_str(arg))
        elif verb == "d":
            if not isinstance(arg, int) or isinstance(arg, bool):
                raise TemplateError(f"printf %d with a {kind_of(arg)} argument renders %!d(...) in Helm")
            out.append(str(arg))
        elif verb == "q":
            out.append(json.dumps(go_str(arg)))
        else:
            raise TemplateError(f"printf verb %{verb} is not supported by this renderer")
    return "".join(out)


def _sprint(*args: Any) -> str:
    out = ""
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_str(arg)
    return out


def _indent(n: Any, text: Any) -> str:
    pad = " " * int(n)
    return pad + go_str(text).replace("\n", "\n" + pad)


def _to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    dumped = yaml.safe_dump(plain(value), default_flow_style=False, sort_keys=True, width=1 << 20)
    if dumped.endswith("...\n"):
        dumped = dumped[: -len("...\n")]
    return dumped.rstrip("\n")


def _to_int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return 0
    return int(value)


def _deep_merge(dst: dict[str, Any], src: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    for key, value in src.items():
        if key in dst and isinstance(dst[key], dict) and isinstance(value, dict):
            _deep_merge(dst[key], value, overwrite)
        elif key not in dst or overwrite:
            dst[key] = copy.deepcopy(value)
    return dst


def _dict(*pairs: Any) -> dict[str, Any]:
    if len(pairs) % 2:
        pairs = (*pairs, "")
    return {go_str(pairs[i]): pairs[i + 1] for i in range(0, len(pairs), 2)}


def _required(message: str, value: Any = None) -> Any:
    if value is None or value == "":
        raise TemplateError(message)
    return value


def _fail(message: str) -> Any:
    raise TemplateError(message)


def _trunc(n: Any, text: Any) -> str:
    s, k = go_str(text), int(n)
    return s[:k] if k >= 0 else s[k:]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "default": lambda d, v=None: d if is_empty(v) else v,
    "required": _required,
    "fail": _fail,
    "empty": is_empty,
    "coalesce": lambda *a: next((v for v in a if not is_empty(v)), None),
    "ternary": lambda a, b, cond: a if cond else b,
    "not": lambda v: is_empty(v),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _compare("lt"),
    "le": _compare("le"),
    "gt": _compare("gt"),
    "ge": _compare("ge"),
    "len": lambda v: len(v) if v is not None else 0,
    "quote": lambda *a: " ".join(json.dumps(go_str(v)) for v in a if v is not None),
    "squote": lambda *a: " ".join("'" + go_str(v) + "'" for v in a if v is not None),
    "toString": go_str,
    "toYaml": _to_yaml,
    "toJson": lambda v: json.dumps(plain(v), separators=(",", ":"), sort_keys=True),
    "indent": _indent,
    "nindent": lambda n, t: "\n" + _indent(n, t),
    "trunc": _trunc,
    "trimSuffix": lambda suf, s: go_str(s)[: -len(suf)] if suf and go_str(s).endswith(suf) else go_str(s),
    "trimPrefix": lambda pre, s: go_str(s)[len(pre) :] if pre and go_str(s).startswith(pre) else go_str(s),
    "trim": lambda s: go_str(s).strip(),
    "replace": lambda old, new, s: go_str(s).replace(old, new),
    "contains": lambda sub, s: sub in go_str(s),
    "hasPrefix": lambda pre, s: go_str(s).startswith(pre),
    "hasSuffix": lambda suf, s: go_str(s).endswith(suf),
    "upper": lambda s: go_str(s).upper(),
    "lower": lambda s: go_str(s).lower(),
    "printf": _printf,
    "print": _sprint,
    "join": lambda sep, items: go_str(sep).join(go_str(v) for v in (items or [])),
    "int": _to_int,
    "int64": _to_int,
    "float64": lambda v: float(v or 0),
    "list": lambda *a: list(a),
    "dict": _dict,
    "hasKey": lambda m, k: k in (m or {}),
    "has": lambda needle, haystack: needle in (haystack or []),
    "keys": lambda *ms: [k for m in ms for k in m],
    "sortAlpha": lambda items: sorted(go_str(v) for v in items),
    "get": lambda m, k: (m or {}).get(k, ""),
    "deepCopy": copy.deepcopy,
    "merge": lambda dst, *srcs: [_deep_merge(dst, s, False) for s in srcs][-1] if srcs else dst,
    "mergeOverwrite": lambda dst, *srcs: [_deep_merge(dst, s, True) for s in srcs][-1] if srcs else dst,
    "kindIs": lambda kind, v: kind_of(v) == kind,
    "kindOf": kind_of,
    "sha256sum": lambda s: hashlib.sha256(go_str(s).encode()).hexdigest(),
    "b64enc": lambda s: base64.b64encode(go_str(s).encode()).decode(),
}


class Renderer:
    """Parses every template of a chart and renders them against values."""

    def __init__(self, chart_dir: Path) -> None:
        self.chart_dir = chart_dir
        self.chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
        self.defaults = yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}
        self.files: dict[str, list[Any]] = {}
        self.defines: dict[str, list[Any]] = {}
        base = f"{self.chart['name']}/templates"
        for path in sorted((chart_dir / "templates").iterdir()):
            if path.suffix not in (".yaml", ".yml", ".tpl", ".txt"):
                continue
            name = f"{base}/{path.name}"
            nodes = Parser(path.read_text(), name).parse()
            self.files[name] = nodes
            self.defines[name] = nodes
            self._collect_defines(nodes)

    def _collect_defines(self, nodes: list[Any]) -> None:
        for node in nodes:
            if isinstance(node, Define):
                self.defines[node.name] = node.body

    def context(self, values: dict[str, Any], release: str = "demo", namespace: str = "conveyor") -> dict[str, Any]:
        merged = _deep_merge(copy.deepcopy(self.defaults), values, True)
        chart = {
            "Name": self.chart["name"],
            "Version": self.chart["version"],
            "AppVersion": self.chart.get("appVersion"),
            "Description": self.chart.get("description"),
            "Type": self.chart.get("type"),
        }
        return {
            "Values": helm_numbers(merged),
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": True},
            "Chart": chart,
            "Template": {"BasePath": f"{self.chart['name']}/templates"},
            "Capabilities": {"KubeVersion": {"Version": "v1.30.0", "Major": "1", "Minor": "30"}},
        }

    def render(self, values: dict[str, Any] | None = None, **context: Any) -> dict[str, str]:
        """Render every template (not partials) to text, keyed by template path."""
        root = self.context(values or {}, **context)
        out: dict[str, str] = {}
        for name, nodes in self.files.items():
            if Path(name).name.startswith("_"):
                continue
            text = self._run(nodes, root, name)
            out[name] = text
        return out

    def manifests(self, values: dict[str, Any] | None = None, **context: Any) -> list[dict[str, Any]]:
        """Rendered Kubernetes objects (NOTES.txt left out), like `helm template`."""
        docs: list[dict[str, Any]] = []
        for name, text in self.render(values, **context).items():
            if name.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    docs.append(doc)
        return docs

    # -- execution

    def _run(self, nodes: list[Any], dot: Any, where: str) -> str:
        scope = _Scope()
        scope.vars["$"] = dot
        out: list[str] = []
        try:
            self._exec(nodes, dot, scope, out)
        except TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None
        return "".join(out)

    def _exec(self, nodes: list[Any], dot: Any, scope: _Scope, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, Text):
                out.append(node.text)
            elif isinstance(node, Action):
                value = self._pipeline(node.pipe, dot, scope)
                if not node.pipe.decl:
                    out.append(go_str(value))
            elif isinstance(node, If):
                for pipe, body in node.branches:
                    if not is_empty(self._pipeline(pipe, dot, scope)):
                        self._exec(body, dot, _Scope(scope), out)
                        break
                else:
                    if node.otherwise is not None:
                        self._exec(node.otherwise, dot, _Scope(scope), out)
            elif isinstance(node, With):
                inner = _Scope(scope)
                value = self._pipeline(node.pipe, dot, inner)
                if not is_empty(value):
                    self._exec(node.body, value, inner, out)
                elif node.otherwise is not None:
                    self._exec(node.otherwise, dot, _Scope(scope), out)
            elif isinstance(node, Range):
                self._range(node, dot, scope, out)
            elif isinstance(node, Define):
                continue
            elif isinstance(node, TemplateCall):
                data = self._pipeline(node.pipe, dot, scope) if node.pipe else None
                out.append(self._include(node.name, data))
            else:  # pragma: no cover
                raise TemplateError(f"unknown node {node!r}")

    def _range(self, node: Range, dot: Any, scope: _Scope, out: list[str]) -> None:
        pipe = Pipeline(node.pipe.commands)
        value = self._pipeline(pipe, dot, scope)
        if isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list):
            items = list(enumerate(value))
        elif value is None:
            items = []
        else:
            raise TemplateError(f"range can't iterate over {go_str(value)}")
        if not items:
            if node.otherwise is not None:
                self._exec(node.otherwise, dot, _Scope(scope), out)
            return
        for key, item in items:
            inner = _Scope(scope)
            if len(node.pipe.decl) == 1:
                inner.vars[node.pipe.decl[0]] = item
            elif len(node.pipe.decl) == 2:
                inner.vars[node.pipe.decl[0]] = key
                inner.vars[node.pipe.decl[1]] = item
            self._exec(node.body, item, inner, out)

    def _include(self, name: str, data: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f'no template "{name}"')
        return self._run(self.defines[name], data, name)

    def _pipeline(self, pipe: Pipeline, dot: Any, scope: _Scope) -> Any:
        value: Any = None
        for i, command in enumerate(pipe.commands):
            value = self._command(command, dot, scope, piped=(value,) if i else ())
        if pipe.decl:
            if pipe.assign:
                scope.assign(pipe.decl[0], value)
            else:
                scope.vars[pipe.decl[-1]] = value
        return value

    def _command(self, command: list[Term], dot: Any, scope: _Scope, piped: tuple[Any, ...]) -> Any:
        head = command[0]
        if head.kind == "ident":
            name = head.name
            if name in ("and", "or"):
                operands: list[Term | tuple[Any]] = [*command[1:], *((v,) for v in piped)]
                result: Any = None
                for operand in operands:
                    result = operand[0] if isinstance(operand, tuple) else self._term(operand, dot, scope)
                    if (name == "and") == is_empty(result):
                        return result
                return result
            args = [self._term(t, dot, scope) for t in command[1:]] + list(piped)
            if name == "include":
                if len(args) != 2:
                    raise TemplateError("include takes a name and a value")
                return self._include(go_str(args[0]), args[1])
            func = FUNCTIONS.get(name)
            if func is None:
                raise TemplateError(f'function "{name}" not defined (add it to tests/chart/gotemplate.py)')
            try:
                return func(*args)
            except TemplateError:
                raise
            except TypeError as exc:
                raise TemplateError(f"wrong arguments for {name}: {exc}") from None
        if len(command) > 1 or piped:
            raise TemplateError(f"can't give arguments to a non-function {head.kind}")
        return self._term(head, dot, scope)

    def _term(self, term: Term, dot: Any, scope: _Scope) -> Any:
        if term.kind == "literal":
            return term.value
        if term.kind == "ident":
            return self._command([term], dot, scope, ())
        if term.kind == "field":
            value, path = dot, ""
        elif term.kind == "var":
            value, path = scope.lookup(term.name), term.name
        elif term.kind == "sub":
            assert term.pipe is not None
            value, path = self._pipeline(term.pipe, dot, scope), "(...)"
        else:  # pragma: no cover
            raise TemplateError(f"bad term {term!r}")
        for name in term.chain:
            path += "." + name
            value = _get(value, name, path)
        return value
