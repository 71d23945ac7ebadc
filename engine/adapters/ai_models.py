"""Chat models for AI steps: a registry over LangChain's ``init_chat_model`` and scripted models.

``provider:model`` specs go to ``init_chat_model`` with the step's settings; provider
credentials come from the provider's own environment variables (``OPENAI_API_KEY``, ...),
never from a definition. ``fake:<name>`` resolves to the workflow's scripted model ``name``
(or one given to the registry, e.g. by a test fixture): offline, deterministic, and
answering the same after a crash because it picks its reply from the conversation.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from engine.adapters.ai_summary import model_turns
from engine.ai import FAKE_PROVIDER, ModelSettings, ScriptedModel, ScriptTurn
from engine.errors import StepFailure

#: Calls of scripted models in this process, by model name (tests read it).
SCRIPTED_CALLS: Counter[str] = Counter()
_calls_lock = threading.Lock()


class ScriptedProviderError(RuntimeError):
    """A scripted turn's ``error``: stands for a provider failing (rate limit, outage)."""


class ScriptedChatModel(BaseChatModel):
    """Replies with ``script[n]``, ``n`` being the number of AI messages in the input.

    Supports tool binding (``bind_tools``, hence ``with_structured_output``), usage metadata
    and token streaming. :data:`SCRIPTED_CALLS` counts its calls per model name.
    """

    name: str
    script: tuple[ScriptTurn, ...]

    @property
    def _llm_type(self) -> str:
        return "conveyor-scripted"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"name": self.name}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | BaseTool | Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        names = [convert_to_openai_tool(tool)["function"]["name"] for tool in tools]
        return self.bind(tool_names=names, **kwargs)

    def _turn(self, messages: list[BaseMessage]) -> tuple[int, ScriptTurn]:
        index = model_turns(messages)  # summaries count the turns they replaced
        with _calls_lock:
            SCRIPTED_CALLS[self.name] += 1
        if index >= len(self.script):
            raise StepFailure(
                f"scripted model {self.name!r} has {len(self.script)} replies; reply {index + 1} was asked for",
                retryable=False,
                error_type="ScriptExhausted",
            )
        turn = self.script[index]
        if turn.error is not None:
            raise ScriptedProviderError(turn.error)
        return index, turn

    def _reply(self, messages: list[BaseMessage], tool_names: Sequence[str] | None) -> AIMessage:
        index, turn = self._turn(messages)
        calls = [{"name": call.name, "args": dict(call.args)} for call in turn.tool_calls]
        if turn.structured is not None:
            if not tool_names:
                raise StepFailure(
                    f"scripted model {self.name!r}: reply {index + 1} is structured but no output schema is bound",
                    retryable=False,
                    error_type="ScriptMismatch",
                )
            calls = [{"name": tool_names[-1], "args": dict(turn.structured)}]
        tool_calls = [
            {"name": call["name"], "args": call["args"], "id": f"call_{index}_{n}", "type": "tool_call"}
            for n, call in enumerate(calls)
        ]
        input_tokens = sum(_words(message.content) for message in messages)
        output_tokens = _words(turn.content) + sum(_words(json.dumps(call["args"])) for call in calls)
        usage = turn.usage or {}
        usage_metadata = {
            "input_tokens": usage.get("input", input_tokens),
            "output_tokens": usage.get("output", output_tokens),
        }
        usage_metadata["total_tokens"] = usage_metadata["input_tokens"] + usage_metadata["output_tokens"]
        return AIMessage(
            content=turn.content,
            tool_calls=tool_calls,
            usage_metadata=usage_metadata,
            response_metadata={"model_name": f"{FAKE_PROVIDER}:{self.name}"},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages, kwargs.get("tool_names")))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._reply(messages, kwargs.get("tool_names"))
        text = str(reply.content)
        tokens = text.split(" ") if text else []
        for n, token in enumerate(tokens):
            piece = token if n == len(tokens) - 1 else f"{token} "
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {"name": call["name"], "args": json.dumps(call["args"]), "id": call["id"], "index": n}
                    for n, call in enumerate(reply.tool_calls)
                ],
                usage_metadata=reply.usage_metadata,
                response_metadata=reply.response_metadata,
                chunk_position="last",
            )
        )


def _words(content: Any) -> int:
    return len(content.split()) if isinstance(content, str) else len(json.dumps(content).split())


class ModelRegistry:
    """Resolves model specs to chat models; ``scripted`` adds models for ``fake:<name>``."""

    def __init__(self, scripted: Mapping[str, ScriptedModel] | None = None) -> None:
        self.scripted = dict(scripted or {})

    def chat_model(
        self, spec: str, settings: ModelSettings, declared: Mapping[str, ScriptedModel] | None = None
    ) -> BaseChatModel:
        """The chat model for ``spec`` with the step's settings; scripts ``declared`` by the workflow win."""
        provider, _, name = spec.partition(":")
        if provider == FAKE_PROVIDER:
            scripted = (declared or {}).get(name) or self.scripted.get(name)
            if scripted is None:
                raise StepFailure(
                    f"no scripted model {name!r}: declare it under the workflow's 'models:'",
                    retryable=False,
                    error_type="ModelNotFound",
                )
            return ScriptedChatModel(name=name, script=scripted.script)
        from langchain.chat_models import init_chat_model

        options = settings.model_dump(exclude_none=True)
        try:
            model: BaseChatModel = init_chat_model(spec, **options)
            return model
        except (ImportError, ValueError) as exc:
            raise StepFailure(
                f"model {spec!r} cannot be loaded: {exc}", retryable=False, error_type="ModelNotFound"
            ) from None
