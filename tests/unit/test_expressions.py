"""CEL expressions and ${...} templates: compiling, static analysis, evaluation, rendering."""

from __future__ import annotations

from typing import Any

import cel
import pytest

from engine.errors import ExpressionError
from engine.expressions import (
    ALLOWED_VARIABLES,
    NATIVE_FUNCTIONS,
    child_path,
    compile_expression,
    is_template,
    parse_template,
    render,
    split_template,
    template_expressions,
)

VARIABLES: dict[str, Any] = {
    "input": {"order_id": "o-1", "n": 3, "flag": True, "tags": ["a", "b"], "name": "Ada"},
    "steps": {
        "fetch": {"status": "SUCCEEDED", "output": {"total": 120, "items": [{"sku": "x"}, {"sku": "y"}]}},
        "route": {"status": "SUCCEEDED", "output": {"route": "standard", "big": list(range(100))}},
        "skipped": {"status": "SKIPPED", "output": None},
    },
    "item": {"sku": "x", "qty": 2},
    "index": 1,
    "execution": {"id": "ex-1"},
}


def evaluate(source: str, variables: dict[str, Any] | None = None) -> Any:
    return compile_expression(source).evaluate(VARIABLES if variables is None else variables)


# --------------------------------------------------------------------------- compiling


def test_allowed_variables() -> None:
    assert {"input", "steps", "item", "index", "event", "execution", "signal"} == ALLOWED_VARIABLES


def test_compile_collects_variables_and_step_refs() -> None:
    expression = compile_expression('steps.fetch.output.total > 100 && input.flag && steps["route"].status != ""')
    assert expression.source == 'steps.fetch.output.total > 100 && input.flag && steps["route"].status != ""'
    assert expression.variables == {"steps", "input"}
    assert expression.step_refs == {"fetch", "route"}
    assert not expression.steps_opaque


def test_step_refs_ignore_string_literals_and_fields_named_steps() -> None:
    expression = compile_expression('"steps.fake" + input.steps.other + string(steps.real.status)')
    assert expression.step_refs == {"real"}


def test_method_on_steps_makes_it_opaque() -> None:
    expression = compile_expression("steps.size() > 0 && steps.fetch.status == 'SUCCEEDED'")
    assert expression.steps_opaque
    assert expression.step_refs == {"fetch"}  # not "size"


def test_dynamic_index_on_steps_is_opaque() -> None:
    assert compile_expression("steps[input.name].status").steps_opaque


def test_macro_binders_and_type_names_are_not_variables() -> None:
    expression = compile_expression("steps.fetch.output.items.map(i, i.sku).exists(s, type(s) == string)")
    assert expression.variables == {"steps"}


def test_unknown_variable_lists_available_ones() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("inputs.order_id")
    assert caught.value.message == (
        "expression 'inputs.order_id': unknown variable 'inputs' "
        "(available: event, execution, index, input, item, signal, steps)"
    )


def test_unknown_function_is_refused_at_compile_time() -> None:
    with pytest.raises(ExpressionError, match="unknown function 'lenght'"):
        compile_expression("input.tags.lenght() > 1")


def test_syntax_error_has_line_column_and_caret() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("input.n +")
    message = caught.value.message
    assert message.startswith("cannot compile 'input.n +': line 1, column 10: Syntax error")
    assert "| input.n +\n| .........^" in message


def test_empty_expression() -> None:
    with pytest.raises(ExpressionError, match="expression is empty"):
        compile_expression("  ")


def test_compile_is_cached() -> None:
    assert compile_expression("input.n + 1") is compile_expression("input.n + 1")


def test_native_function_list_matches_the_library() -> None:
    ts = 'timestamp("2024-03-01T10:20:30Z")'
    calls = {
        "size": "size([1])", "contains": '"ab".contains("a")', "startsWith": '"ab".startsWith("a")',
        "endsWith": '"ab".endsWith("b")', "matches": '"ab".matches("a.")', "int": 'int("1")',
        "uint": "uint(1)", "double": "double(1)", "string": "string(1)", "bytes": 'bytes("a")',
        "timestamp": ts, "duration": 'duration("1s")', "dyn": "dyn(1)", "type": "type(1)",
        "getFullYear": f"{ts}.getFullYear()", "getMonth": f"{ts}.getMonth()",
        "getDayOfYear": f"{ts}.getDayOfYear()", "getDayOfMonth": f"{ts}.getDayOfMonth()",
        "getDate": f"{ts}.getDate()", "getDayOfWeek": f"{ts}.getDayOfWeek()", "getHours": f"{ts}.getHours()",
        "getMinutes": f"{ts}.getMinutes()", "getSeconds": f"{ts}.getSeconds()",
        "getMilliseconds": f"{ts}.getMilliseconds()",
    }  # fmt: skip
    assert set(calls) == NATIVE_FUNCTIONS
    for source in calls.values():
        cel.compile(source).execute({})  # raises if the library lost the function


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('input.name.lowerAscii() + "-" + input.tags.join(",")', "ada-a,b"),
        ("math.greatest([1, 5, 2])", 5),
        ("[3, 1, 2].sort()", [1, 2, 3]),
        ('"a,b".split(",")', ["a", "b"]),
        ("input.tags.contains('b')", True),
    ],
)
def test_extension_functions(source: str, expected: Any) -> None:
    assert evaluate(source) == expected


# --------------------------------------------------------------------------- evaluating


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('steps.route.output.route == "standard"', True),
        ("steps.fetch.output.items.map(i, i.sku)", ["x", "y"]),
        ("steps.fetch.output.items.size()", 2),
        ("item.qty * index", 2),
        ("input.n > 2 ? 'many' : 'few'", "many"),
        ("{'a': [1, 2.5, null, true]}", {"a": [1, 2.5, None, True]}),
        ("{1: 'one'}", {"1": "one"}),
        ('timestamp("2024-01-02T03:04:05Z")', "2024-01-02T03:04:05Z"),
        ('duration("1m30s")', 90.0),
        ('b"hi"', "aGk="),
        ("steps.skipped.output == null", True),
    ],
)
def test_evaluate_returns_plain_data(source: str, expected: Any) -> None:
    assert evaluate(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "has(steps.fetch.output.total) && !has(steps.fetch.output.nope)",
        "steps.route.output.size()",
        "steps.fetch.output == steps.fetch.output",
        "steps.fetch.output.items[1].sku",
        "steps.size()",
        'steps["fetch"].output.total + steps.fetch.output.total',
        "input.tags.map(input, input + '!')",  # a binder shadowing a variable
        "input.n + [1].map(input, input)[0]",
        "'fetch' in steps && size(input) == 5",
    ],
)
def test_binding_only_what_is_read_never_changes_the_result(source: str) -> None:
    full = cel.compile(source).execute(VARIABLES)
    assert evaluate(source) == full


def test_evaluation_binds_only_selected_keys() -> None:
    expression = compile_expression("steps.route.output.route")
    assert expression._bind(VARIABLES) == {"steps": {"route": {"output": {"route": "standard"}}}}


def test_missing_key_names_expression_and_key() -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate("steps.fetch.output.missing > 1")
    assert caught.value.message == "expression 'steps.fetch.output.missing > 1' failed: no such key: 'missing'"


def test_type_errors_are_expression_errors() -> None:
    with pytest.raises(ExpressionError, match=r"expression 'input.n \+ 1.5' failed: No such overload"):
        evaluate("input.n + 1.5")


def test_division_by_zero() -> None:
    with pytest.raises(ExpressionError, match="division by zero"):
        evaluate("input.n / 0")


def test_unbound_variable_says_not_available() -> None:
    with pytest.raises(ExpressionError, match=r"Undefined variable or function: 'item' \(not available here\)"):
        compile_expression("item.sku").evaluate({"input": {}})


def test_evaluate_bool() -> None:
    assert compile_expression("input.n == 3").evaluate_bool(VARIABLES) is True
    with pytest.raises(ExpressionError, match="must be a boolean but returned an integer"):
        compile_expression("input.n").evaluate_bool(VARIABLES)


# --------------------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${input.n}", 3),
        ("${ input.tags }", ["a", "b"]),
        ("${input.flag}", True),
        ("${steps.skipped.output}", None),
        ("${ {'k': input.n} }", {"k": 3}),
    ],
)
def test_single_template_keeps_the_type(template: str, expected: Any) -> None:
    assert render(template, VARIABLES) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("https://shop/orders/${input.order_id}", "https://shop/orders/o-1"),
        ("n=${input.n} flag=${input.flag} none=${steps.skipped.output}", "n=3 flag=true none=null"),
        ("tags=${input.tags} item=${item}", 'tags=["a","b"] item={"qty":2,"sku":"x"}'),
        ("${input.n}${input.n}", "33"),
        (" ${input.n}", " 3"),
        ("cost: $${input.n} is ${input.n}", "cost: ${input.n} is 3"),
        ("no templates here: $5 {x}", "no templates here: $5 {x}"),
    ],
)
def test_interpolation(template: str, expected: str) -> None:
    assert render(template, VARIABLES) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('${ {"a": "}"}.a }', "}"),
        ("${ '}' + \"{\" }", "}{"),
        ('x${ "a\\"}" }y', 'xa"}y'),
        ("${ '''}}}''' }", "}}}"),
        ('${ r"\\}" }', "\\}"),
        ('${ {"m": {"n": 1}}.m.n }', 1),
        ('<${ [{"a": 1}].map(x, x.a) }>', "<[1]>"),
    ],
)
def test_braces_inside_cel_strings_and_maps(template: str, expected: Any) -> None:
    assert render(template, VARIABLES) == expected


def test_render_recurses_into_dicts_and_lists_but_not_keys() -> None:
    value = {
        "${input.n}": "${input.n}",
        "nested": [{"sku": "${item.sku}", "n": 5}, "plain", None],
        "url": "/o/${input.order_id}",
    }
    assert render(value, VARIABLES) == {
        "${input.n}": 3,
        "nested": [{"sku": "x", "n": 5}, "plain", None],
        "url": "/o/o-1",
    }


def test_render_leaves_plain_values_alone() -> None:
    value = {"a": [1, 2.5, True, None, "text"]}
    assert render(value, VARIABLES) == value


def test_unterminated_template() -> None:
    with pytest.raises(ExpressionError, match=r"unterminated '\$\{' in template 'a \$\{input.n'"):
        render("a ${input.n", VARIABLES)


def test_empty_template_expression() -> None:
    with pytest.raises(ExpressionError, match="expression is empty"):
        render("${ }", VARIABLES)


def test_template_evaluation_error_names_expression() -> None:
    with pytest.raises(ExpressionError, match=r"expression 'input\.missing' failed: no such key"):
        render({"a": "x ${input.missing}"}, VARIABLES)


def test_split_and_parse_template() -> None:
    assert split_template("a ${ x } b ${y}") == ("a ", ("x",), " b ", ("y",))
    template = parse_template("a ${input.n} b")
    assert not template.single
    assert [e.source for e in template.expressions] == ["input.n"]
    assert parse_template("${input.n}").single
    assert parse_template("${input.n}") is parse_template("${input.n}")


def test_template_expressions_paths() -> None:
    config = {
        "function": "payments.charge",
        "args": {"order": "${steps.fetch.output.body}", "odd key": ["${a} and ${b}"]},
        "n": 3,
    }
    assert template_expressions(config, "steps[1].with") == [
        ("steps[1].with.args.order", "steps.fetch.output.body"),
        ('steps[1].with.args["odd key"][0]', "a"),
        ('steps[1].with.args["odd key"][0]', "b"),
    ]


def test_template_expressions_unterminated_names_path() -> None:
    with pytest.raises(ExpressionError, match=r"^steps\[0\]\.with\.url: unterminated"):
        template_expressions({"url": "x ${input"}, "steps[0].with")


def test_is_template_and_child_path() -> None:
    assert is_template({"a": [1, {"b": "x ${y}"}]})
    assert not is_template({"a": [1, {"b": "$ {y}"}]})
    assert child_path("steps[0].with", "url") == "steps[0].with.url"
    assert child_path("a", 2) == "a[2]"
    assert child_path("a", "b-c") == 'a["b-c"]'
    assert child_path("", "x") == "x"
