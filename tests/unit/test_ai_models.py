"""The scripted chat model and the model registry (no network, no backends)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from engine.adapters.ai_models import ModelRegistry, ScriptedChatModel, ScriptedProviderError
from engine.ai import Budget, BudgetExceeded, ModelSettings, ScriptedModel, Usage, check_budget, cost_of
from engine.errors import DefinitionInvalid, StepFailure
from engine.model import load_definition

SCRIPT = ScriptedModel.model_validate(
    {
        "script": [
            {"tool_calls": [{"name": "lookup", "args": {"id": 7}}]},
            {"content": "the order shipped yesterday", "usage": {"input": 30, "output": 4}},
        ]
    }
)


def model(name: str = "m") -> ScriptedChatModel:
    return ModelRegistry().chat_model(f"fake:{name}", ModelSettings(), {name: SCRIPT})  # type: ignore[return-value]


def test_the_reply_is_chosen_by_the_model_turns_already_in_the_conversation() -> None:
    first = model().invoke([HumanMessage("where is order 7?")])
    assert first.tool_calls == [{"name": "lookup", "args": {"id": 7}, "id": "call_0_0", "type": "tool_call"}]
    conversation = [HumanMessage("where is order 7?"), first, ToolMessage("shipped", tool_call_id="call_0_0")]
    second = model().invoke(conversation)
    assert second.content == "the order shipped yesterday"
    # the same conversation (e.g. replayed after a crash) gets the same reply
    assert model().invoke(conversation).content == second.content
    assert second.usage_metadata == {"input_tokens": 30, "output_tokens": 4, "total_tokens": 34}


def test_usage_defaults_to_words_in_and_out() -> None:
    reply = model().invoke([HumanMessage("one two three")])
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == 3 and reply.usage_metadata["output_tokens"] > 0


def test_an_exhausted_script_fails_clearly() -> None:
    conversation = [HumanMessage("x"), AIMessage("a"), AIMessage("b")]
    with pytest.raises(StepFailure, match="reply 3 was asked for"):
        model().invoke(conversation)


def test_tokens_stream_one_by_one_and_tool_calls_arrive_whole() -> None:
    chunks = list(model().stream([HumanMessage("q"), AIMessage("", tool_calls=[]), ToolMessage("r", tool_call_id="c")]))
    assert [c.content for c in chunks[:-1]] == ["the ", "order ", "shipped ", "yesterday"]
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    assert whole.content == "the order shipped yesterday"
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] == 4


def test_structured_output_answers_through_the_bound_schema() -> None:
    scripted = ScriptedModel.model_validate({"script": [{"structured": {"route": "refund", "confidence": 0.9}}]})
    chat = ModelRegistry().chat_model("fake:router", ModelSettings(), {"router": scripted})
    schema = {"title": "decision", "type": "object", "properties": {"route": {"type": "string"}}}
    assert chat.with_structured_output(schema).invoke("route this") == {"route": "refund", "confidence": 0.9}


def test_a_scripted_error_stands_for_a_provider_failure() -> None:
    scripted = ScriptedModel.model_validate({"script": [{"error": "429 rate limited"}]})
    with pytest.raises(ScriptedProviderError, match="429"):
        ModelRegistry().chat_model("fake:e", ModelSettings(), {"e": scripted}).invoke("x")


def test_unknown_models_are_refused_clearly() -> None:
    with pytest.raises(StepFailure, match="no scripted model 'ghost'"):
        ModelRegistry().chat_model("fake:ghost", ModelSettings())
    with pytest.raises(StepFailure, match="cannot be loaded"):
        ModelRegistry().chat_model("nosuchprovider:model-1", ModelSettings())


def test_registry_scripts_serve_when_the_workflow_declares_none() -> None:
    chat = ModelRegistry({"fixture": SCRIPT}).chat_model("fake:fixture", ModelSettings())
    assert chat.invoke("hi").tool_calls[0]["name"] == "lookup"


def test_budgets_count_tokens_and_cost() -> None:
    spent = Usage(60, 50, cost_of("p:m", 60, 50, {"p:m": {"input": 1000, "output": 2000}}), 2)
    assert spent.cost == pytest.approx(0.16)
    check_budget(Budget(tokens=110), spent, "step")
    with pytest.raises(BudgetExceeded, match="110 tokens"):
        check_budget(Budget(tokens=110), spent, "step", before_call=True)
    with pytest.raises(BudgetExceeded) as refused:
        check_budget(Budget(cost=0.1), spent, "step")
    assert (refused.value.retryable, refused.value.error_type) == (False, "BudgetExceeded")


def test_scripted_models_are_validated_when_the_workflow_is_saved() -> None:
    with pytest.raises(DefinitionInvalid) as invalid:
        load_definition(
            {
                "name": "bad",
                "models": {"m": {"script": [{"structured": {}, "tool_calls": [{"name": "x"}]}]}},
                "steps": [{"id": "a", "type": "transform", "with": {"value": 1}}],
            }
        )
    assert "not both" in str(invalid.value.problems)


def test_an_agent_config_is_checked_when_the_workflow_is_saved() -> None:
    from engine.compile import compile_workflow

    with pytest.raises(DefinitionInvalid) as invalid:
        compile_workflow(
            {
                "name": "bad-agent",
                "steps": [
                    {
                        "id": "a",
                        "type": "ai.agent",
                        "with": {"model": "no-provider", "prompt": "p", "tools": ["x.f"], "approve": ["x.g"]},
                    }
                ],
            }
        )
    text = str(invalid.value.problems)
    assert "steps[0].with.model" in text
