"""compile_workflow: every validation problem with its path, the DAG, and input validation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from engine.compile import CompiledWorkflow, compile_workflow
from engine.errors import DefinitionInvalid, InputInvalid
from engine.model import load_definition

ORDER_YAML = """
name: order-fulfilment
inputs: {type: object, required: [order_id], properties: {order_id: {type: string}}}
steps:
  - id: fetch
    type: task
    with: {function: shop.fetch, args: {id: "${input.order_id}"}}
    retry: {max_attempts: 5, backoff: exponential, initial: 1s, max: 1m}
    timeout: 30s
  - id: route
    type: switch
    needs: [fetch]
    with:
      cases:
        - {when: 'steps.fetch.output.total > 100', value: review}
      default: standard
  - id: charge
    type: task
    needs: [route]
    when: steps.route.output.value == "standard"
    with: {function: payments.charge, args: {order: "${steps.fetch.output.body}"}}
  - id: review
    type: wait
    needs: [route]
    when: steps.route.output.value == "review"
    with: {duration: 1h}
  - id: ship
    type: task
    needs: [charge, review]
    foreach: steps.fetch.output.items
    concurrency: 10
    with: {function: shipping.ship, args: {item: "${item}", position: "${index}"}}
outputs: {shipped: steps.ship.output.size()}
"""


def workflow(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "wf", "steps": list(steps), **extra}


def transform(step_id: str, value: Any = 1, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "transform", "with": {"value": value}, **extra}


def problems_of(document: dict[str, Any] | str) -> list[str]:
    with pytest.raises(DefinitionInvalid) as caught:
        compile_workflow(document)
    return [str(problem) for problem in caught.value.problems]


def only_problem(document: dict[str, Any] | str) -> str:
    problems = problems_of(document)
    assert len(problems) == 1, problems
    return problems[0]


# --------------------------------------------------------------------------- a valid workflow


@pytest.fixture(scope="module")
def order() -> CompiledWorkflow:
    return compile_workflow(ORDER_YAML)


def test_dag(order: CompiledWorkflow) -> None:
    assert order.name == "order-fulfilment"
    assert order.order == ("fetch", "route", "charge", "review", "ship")
    assert order.roots == ("fetch",)
    assert dict(order.needs) == {
        "fetch": (),
        "route": ("fetch",),
        "charge": ("route",),
        "review": ("route",),
        "ship": ("charge", "review"),
    }
    assert dict(order.successors) == {
        "fetch": ("route",),
        "route": ("charge", "review"),
        "charge": ("ship",),
        "review": ("ship",),
        "ship": (),
    }
    assert order.ancestors["ship"] == {"fetch", "route", "charge", "review"}


def test_expressions_are_compiled(order: CompiledWorkflow) -> None:
    assert set(order.when) == {"charge", "review"}
    assert order.when["charge"].step_refs == {"route"}
    assert order.foreach["ship"].source == "steps.fetch.output.items"
    assert order.outputs["shipped"].step_refs == {"ship"}


def test_referenced_steps(order: CompiledWorkflow) -> None:
    assert order.referenced_steps("fetch") == frozenset()
    assert order.referenced_steps("route") == {"fetch"}  # the switch's case expression
    assert order.referenced_steps("charge") == {"fetch"}  # templates, not its `when`
    assert order.referenced_steps("review") == frozenset()
    # Its foreach reads fetch, but an item carries its own element: running one reads nothing.
    assert order.referenced_steps("ship") == frozenset()


def test_planning_steps_are_needs_plus_what_when_and_foreach_read(order: CompiledWorkflow) -> None:
    assert order.planning_steps("fetch") == frozenset()
    assert order.planning_steps("charge") == {"route"}  # its need, also read by its `when`
    assert order.planning_steps("ship") == {"charge", "review", "fetch"}  # needs + the foreach's source


def test_a_when_reading_steps_dynamically_plans_with_every_ancestor() -> None:
    compiled = compile_workflow({"name": "dyn", "steps": [
        transform("a"), transform("b", needs=["a"]), transform("c", needs=["b"], when="steps['a'].output == 1"),
    ]})
    assert compiled.planning_steps("c") == {"a", "b"}


def test_referenced_steps_when_steps_is_used_dynamically() -> None:
    compiled = compile_workflow(
        workflow(transform("a"), transform("b", needs=["a"]), transform("c", "${steps[input.k]}", needs=["b"]))
    )
    assert compiled.referenced_steps("c") == {"a", "b"}


def test_step_lookup(order: CompiledWorkflow) -> None:
    assert order.step("review").type == "wait"
    with pytest.raises(KeyError):
        order.step("nope")


def test_sources_mapping_text_and_model_compile_alike(order: CompiledWorkflow) -> None:
    document = order.definition.to_document()
    assert compile_workflow(document).digest == order.digest
    assert compile_workflow(load_definition(document)).digest == order.digest


def test_digest_is_stable_and_content_sensitive(order: CompiledWorkflow) -> None:
    document = order.definition.to_document()
    reordered = dict(reversed(list(document.items())))
    assert compile_workflow(reordered).digest == order.digest
    changed = copy.deepcopy(document)
    changed["steps"][0]["timeout"] = 31
    assert compile_workflow(changed).digest != order.digest
    assert len(order.digest) == 64


def test_topological_order_keeps_document_order_where_free() -> None:
    compiled = compile_workflow(
        workflow(transform("z", needs=["b"]), transform("a"), transform("b", needs=["a"]), transform("c"))
    )
    assert compiled.order == ("a", "b", "z", "c")
    assert compiled.roots == ("a", "c")


def test_long_chain_does_not_recurse() -> None:
    steps = [transform("s0")] + [transform(f"s{i}", needs=[f"s{i - 1}"]) for i in range(1, 2000)]
    compiled = compile_workflow(workflow(*steps))
    assert compiled.order[-1] == "s1999"


# --------------------------------------------------------------------------- the DAG's problems


def test_empty_steps() -> None:
    assert only_problem(workflow()) == "steps: a workflow needs at least one step"


def test_duplicate_step_id() -> None:
    problem = only_problem(workflow(transform("a"), transform("b"), transform("a")))
    assert problem == "steps[2].id: duplicate step id 'a' (already used by steps[0])"


def test_unknown_need_with_suggestion() -> None:
    problem = only_problem(workflow(transform("fetch"), transform("b"), transform("c", needs=["b", "fetc"])))
    assert problem == "steps[2].needs[1]: unknown step 'fetc' (did you mean 'fetch'?)"


def test_unknown_need_without_suggestion() -> None:
    assert only_problem(workflow(transform("a", needs=["zzz"]))) == "steps[0].needs[0]: unknown step 'zzz'"


def test_self_need() -> None:
    assert only_problem(workflow(transform("a", needs=["a"]))) == "steps[0].needs[0]: a step cannot need itself"


def test_need_listed_twice() -> None:
    problem = only_problem(workflow(transform("a"), transform("b", needs=["a", "a"])))
    assert problem == "steps[1].needs[1]: 'a' is listed twice"


def test_two_step_cycle() -> None:
    problem = only_problem(workflow(transform("a", needs=["b"]), transform("b", needs=["a"])))
    assert problem == "steps[0].needs: dependency cycle: a -> b -> a (each step needs the next)"


def test_longer_cycle_reports_its_path() -> None:
    problem = only_problem(
        workflow(
            transform("start"),
            transform("x", needs=["start", "z"]),
            transform("y", needs=["x"]),
            transform("z", needs=["y"]),
        )
    )
    assert problem == "steps[1].needs: dependency cycle: x -> z -> y -> x (each step needs the next)"


def test_every_cycle_is_reported() -> None:
    problems = problems_of(
        workflow(
            transform("a", needs=["b"]),
            transform("b", needs=["a"]),
            transform("c", needs=["d"]),
            transform("d", needs=["c"]),
        )
    )
    assert problems == [
        "steps[0].needs: dependency cycle: a -> b -> a (each step needs the next)",
        "steps[2].needs: dependency cycle: c -> d -> c (each step needs the next)",
    ]


# --------------------------------------------------------------------------- step types and configs


def test_unknown_step_type_lists_known_ones() -> None:
    problem = only_problem(workflow({"id": "a", "type": "tsk"}))
    assert problem.startswith("steps[0].type: unknown step type 'tsk' (known: ")
    for known in ("fail", "switch", "task", "transform", "wait"):
        assert known in problem


def test_config_missing_key() -> None:
    assert only_problem(workflow({"id": "a", "type": "transform"})) == "steps[0].with.value: required key is missing"


def test_config_bad_value() -> None:
    problem = only_problem(workflow({"id": "a", "type": "wait", "with": {"duration": "soon"}}))
    assert problem == "steps[0].with.duration: not a duration: 'soon' (use e.g. 500ms, 30s, 5m, 1h30m, 1d)"


def test_config_unknown_key_lists_allowed_ones() -> None:
    problem = only_problem(workflow({"id": "a", "type": "wait", "with": {"duration": "1s", "durtion": "2s"}}))
    assert problem == "steps[0].with.durtion: unknown key (allowed here: duration, until, match)"


def test_config_nested_path() -> None:
    problem = only_problem(workflow({"id": "a", "type": "switch", "with": {"cases": [{"when": "true", "nam": 1}]}}))
    assert problem.startswith("steps[0].with.cases[0].nam: unknown key")


def test_a_rules_switch_needs_when_on_every_case() -> None:
    problem = only_problem(workflow({"id": "a", "type": "switch", "with": {"cases": [{"value": 1}]}}))
    assert problem == "steps[0].with: strategy 'rules' needs 'when' on every case (missing on cases 0)"


def test_config_model_level_problem() -> None:
    problem = only_problem(workflow({"id": "a", "type": "wait", "with": {}}))
    assert problem == "steps[0].with: give exactly one of 'duration' or 'until'"


def test_templated_config_value_is_not_type_checked() -> None:
    compiled = compile_workflow(
        workflow({"id": "a", "type": "wait", "with": {"duration": "${input.delay}"}}),
    )
    assert compiled.roots == ("a",)


def test_templated_value_under_unknown_key_is_still_refused() -> None:
    problem = only_problem(workflow({"id": "a", "type": "wait", "with": {"duration": "1s", "delay": "${input.d}"}}))
    assert problem == "steps[0].with.delay: unknown key (allowed here: duration, until, match)"


def test_step_type_check_problems() -> None:
    document = workflow({"id": "a", "type": "switch", "with": {"cases": [{"when": "input.x >", "value": 1}]}})
    problem = only_problem(document)
    assert problem.startswith("steps[0].with.cases[0].when: cannot compile 'input.x >': line 1, column 10")


def test_switch_condition_written_as_template() -> None:
    document = workflow({"id": "a", "type": "switch", "with": {"cases": [{"when": "${input.x}", "value": 1}]}})
    # the worker would render it to a boolean and the case model wants CEL text
    assert "steps[0].with.cases[0].when: write the CEL condition bare, without '${...}'" in problems_of(document)


def test_concurrency_without_foreach() -> None:
    problem = only_problem(workflow(transform("a", concurrency=5)))
    assert problem == "steps[0].concurrency: 'concurrency' only applies to steps with 'foreach'"


def test_shape_problems_come_from_the_model() -> None:
    problem = only_problem(workflow(transform("a", timeout="soon")))
    assert problem.startswith("steps[0].timeout: not a duration: 'soon'")


def test_malformed_yaml_reports_line_and_column() -> None:
    problem = only_problem("name: x\nsteps:\n  - id: a\n    with: {value: [1, 2}\n")
    assert problem == "line 4, column 24: expected ',' or ']', but got '}'"


def test_a_key_given_twice_is_refused_not_replaced_by_the_last() -> None:
    text = "name: x\nsteps:\n  - id: a\n    type: transform\n    with: {value: 1}\n    with: {value: 2}\n"
    assert only_problem(text) == "line 6, column 5: duplicate key 'with'"
    assert only_problem('{"name": "x", "name": "y", "steps": []}') == "line 1, column 15: duplicate key 'name'"


# --------------------------------------------------------------------------- expressions


@pytest.mark.parametrize(
    ("step", "path"),
    [
        (transform("a", when="input.x +"), "steps[0].when"),
        (transform("a", foreach="[1,"), "steps[0].foreach"),
        (transform("a", {"k": ["x ${input.x +}"]}), "steps[0].with.value.k[0]"),
    ],
)
def test_expressions_must_compile(step: dict[str, Any], path: str) -> None:
    problem = only_problem(workflow(step))
    assert problem.startswith(f"{path}: cannot compile ")


def test_unknown_variable_in_template() -> None:
    problem = only_problem(workflow(transform("a", "${inputs.x}")))
    assert problem.startswith("steps[0].with.value: expression 'inputs.x': unknown variable 'inputs'")


def test_unterminated_template() -> None:
    problem = only_problem(workflow(transform("a", {"url": "/x/${input.id"})))
    assert problem == "steps[0].with.value.url: unterminated '${' in template '/x/${input.id' (close it with '}')"


def test_output_expression_must_compile() -> None:
    problem = only_problem(workflow(transform("a"), outputs={"total": "steps.a.output +"}))
    assert problem.startswith("outputs.total: cannot compile ")


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("when", "steps.b.output == 1", "steps[2].when"),
        ("foreach", "steps.b.output", "steps[2].foreach"),
        ("with", {"value": "${steps.b.output}"}, "steps[2].with.value"),
    ],
)
def test_reading_a_step_that_is_not_needed(field: str, value: Any, path: str) -> None:
    third = {"id": "c", "type": "transform", "with": {"value": 1}, "needs": ["a"], field: value}
    problem = only_problem(workflow(transform("a"), transform("b"), third))
    assert problem == f"{path}: references step 'b' that is not among its needs"


def test_reading_a_transitive_need_is_fine() -> None:
    compiled = compile_workflow(
        workflow(transform("a"), transform("b", needs=["a"]), transform("c", "${steps.a.output}", needs=["b"]))
    )
    assert compiled.referenced_steps("c") == {"a"}


def test_reading_an_unknown_step() -> None:
    problem = only_problem(workflow(transform("fetch"), transform("b", "${steps.fetc.output}", needs=["fetch"])))
    assert problem == "steps[1].with.value: references unknown step 'fetc' (did you mean 'fetch'?)"


def test_switch_case_reading_a_step_that_is_not_needed() -> None:
    switch = {"id": "s", "type": "switch", "with": {"cases": [{"when": "steps.a.output > 1", "value": 1}]}}
    problem = only_problem(workflow(transform("a"), switch))
    assert problem == "steps[1].with.cases[0].when: references step 'a' that is not among its needs"


def test_item_in_when() -> None:
    step = transform("a", "${item}", foreach="[1, 2]", when="item > 1")
    problem = only_problem(workflow(step))
    assert problem == (
        "steps[0].when: 'item' is not available in 'when': it is evaluated once, before 'foreach' expands the step"
    )


def test_index_in_foreach() -> None:
    problem = only_problem(workflow(transform("a", foreach="[index]")))
    assert problem == "steps[0].foreach: 'index' is not available in 'foreach' itself"


def test_item_in_with_without_foreach() -> None:
    problem = only_problem(workflow(transform("a", "${item.sku}")))
    assert problem == "steps[0].with.value: 'item' is only available in steps with 'foreach'"


def test_item_and_index_in_with_with_foreach() -> None:
    compiled = compile_workflow(workflow(transform("a", {"i": "${item}", "n": "${index}"}, foreach="[1, 2]")))
    assert "a" in compiled.foreach


def test_item_in_outputs_and_unknown_step_in_outputs() -> None:
    problems = problems_of(workflow(transform("a"), outputs={"x": "item", "y": "steps.b.output"}))
    assert problems == [
        "outputs.x: 'item' is not available in workflow outputs",
        "outputs.y: references unknown step 'b'",
    ]


# --------------------------------------------------------------------------- inputs


def test_input_schema_must_be_valid() -> None:
    document = workflow(transform("a"), inputs={"type": "object", "properties": {"n": {"type": "integr"}}})
    assert only_problem(document) == ("inputs.properties.n.type: 'integr' is not valid under any of the given schemas")


def test_validate_input(order: CompiledWorkflow) -> None:
    order.validate_input({"order_id": "o-1"})
    with pytest.raises(InputInvalid) as caught:
        order.validate_input({})
    assert [str(p) for p in caught.value.problems] == ["input.order_id: 'order_id' is a required property"]


def test_validate_input_lists_every_problem_with_its_path() -> None:
    schema = {
        "type": "object",
        "required": ["order_id", "lines"],
        "properties": {
            "order_id": {"type": "string"},
            "lines": {"type": "array", "items": {"type": "object", "required": ["sku"]}},
            "email": {"type": "string", "format": "email"},
        },
    }
    compiled = compile_workflow(workflow(transform("a"), inputs=schema))
    with pytest.raises(InputInvalid) as caught:
        compiled.validate_input({"order_id": 7, "lines": [{"sku": "x"}, {}], "email": "nope"})
    assert [str(p) for p in caught.value.problems] == [
        "input.email: 'nope' is not a 'email'",
        "input.lines[1].sku: 'sku' is a required property",
        "input.order_id: 7 is not of type 'string'",
    ]
    assert caught.value.code == "input-invalid"


def test_no_schema_accepts_any_input() -> None:
    compiled = compile_workflow(workflow(transform("a")))
    assert compiled.input_validator is None
    compiled.validate_input({"anything": [1, 2]})


# --------------------------------------------------------------------------- all at once


def test_every_problem_is_reported_at_once_in_document_order() -> None:
    document = workflow(
        {"id": "fetch", "type": "tsk"},
        {"id": "route", "type": "wait", "needs": ["fetc"], "with": {"duration": "x"}, "concurrency": 2},
        transform("a", "${steps.fetch.output}", needs=["b"], when="item"),
        transform("b", needs=["a"]),
        transform("fetch"),
        inputs={"type": "obj"},
        outputs={"o": "steps.zzz.output"},
    )
    problems = problems_of(document)
    assert problems[0].startswith("inputs.type: 'obj' is not valid")
    assert problems[1].startswith("steps[0].type: unknown step type 'tsk'")
    assert problems[2:] == [
        "steps[1].needs[0]: unknown step 'fetc' (did you mean 'fetch'?)",
        "steps[1].concurrency: 'concurrency' only applies to steps with 'foreach'",
        "steps[1].with.duration: not a duration: 'x' (use e.g. 500ms, 30s, 5m, 1h30m, 1d)",
        "steps[2].needs: dependency cycle: a -> b -> a (each step needs the next)",
        "steps[2].when: 'item' is not available in 'when': it is evaluated once, before 'foreach' expands the step",
        "steps[2].with.value: references step 'fetch' that is not among its needs",
        "steps[4].id: duplicate step id 'fetch' (already used by steps[0])",
        "outputs.o: references unknown step 'zzz'",
    ]


def test_error_is_a_definition_invalid_with_a_readable_message() -> None:
    with pytest.raises(DefinitionInvalid) as caught:
        compile_workflow(workflow(transform("a", needs=["a"])))
    assert caught.value.code == "definition-invalid"
    assert caught.value.message == "workflow 'wf' is invalid\n  - steps[0].needs[0]: a step cannot need itself"


# --------------------------------------------------------------------------- retention


@pytest.mark.parametrize(("declared", "seconds"), [("90d", 90 * 86_400.0), ("1h30m", 5400.0), (0, 0.0), ("1s", 1.0)])
def test_retention_takes_a_duration_and_zero_means_forever(declared: Any, seconds: float) -> None:
    assert compile_workflow(workflow(transform("a"), retention=declared)).definition.retention == seconds


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ("500ms", "retention: retention must be 0 (keep forever) or at least 1s, got 0.5s"),
        ("soon", "retention: not a duration: 'soon' (use e.g. 500ms, 30s, 5m, 1h30m, 1d)"),
        (-5, "retention: duration must not be negative: -5"),
    ],
)
def test_a_retention_that_is_not_a_usable_duration_is_refused(declared: Any, message: str) -> None:
    assert only_problem(workflow(transform("a"), retention=declared)) == message
