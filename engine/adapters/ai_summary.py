"""Summarisation that bounds an agent thread's memory (``summarize:`` on ``ai.agent``).

Before a model call, a thread over its message or token limit has its older messages
replaced by one summary message written by a model; the last ``keep_messages`` stay (never
split between a tool call and its result). The summary message records what it replaced in
``additional_kwargs[SUMMARY_KEY]``: the model turns (so a scripted model answers the next
turn, and ``turns`` stays right) and their token usage plus the summary call's own (so
budgets keep counting everything the step spent). The state update is checkpointed like any
other (``durability="sync"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage, SystemMessage, ToolMessage
from langchain_core.messages.utils import count_tokens_approximately
from langgraph.graph.message import REMOVE_ALL_MESSAGES

from engine.ai import SUMMARY_KEY, Summarize, Usage

SUMMARY_PROMPT = (
    "Summarise the conversation below for the assistant that continues it: the user's request, "
    "what was done (tool calls and their results), what was decided, and what is left to do. "
    "Keep names, numbers and identifiers exactly. Answer with the summary only."
)


def carried(message: BaseMessage) -> Mapping[str, Any] | None:
    """What a summary message replaced (``{"turns", "usage"}``), or ``None`` for another message."""
    found = message.additional_kwargs.get(SUMMARY_KEY) if isinstance(message, HumanMessage) else None
    return found if isinstance(found, Mapping) else None


def carried_usage(message: BaseMessage) -> Usage | None:
    found = carried(message)
    if found is None:
        return None
    usage = found.get("usage") or {}
    return Usage(
        int(usage.get("input_tokens", 0)),
        int(usage.get("output_tokens", 0)),
        float(usage.get("cost", 0.0)),
        int(usage.get("calls", 0)),
    )


def model_turns(messages: Sequence[BaseMessage]) -> int:
    """Model turns of a conversation, counting those its summaries replaced."""
    return sum(1 if isinstance(m, AIMessage) else int((carried(m) or {}).get("turns", 0)) for m in messages)


def _transcript(messages: Sequence[BaseMessage]) -> str:
    lines = []
    for message in messages:
        text = message.text if isinstance(message.content, str | list) else str(message.content)
        calls = getattr(message, "tool_calls", None) or []
        called = "".join(f" [calls {c['name']}({c['args']})]" for c in calls)
        lines.append(f"{message.type}: {text}{called}")
    return "\n".join(lines)


class SummarizeOlderTurns(AgentMiddleware):
    """Replaces older messages by a summary when the thread is over its limits (see module doc)."""

    def __init__(
        self, policy: Summarize, model: BaseChatModel, measure: Callable[[Sequence[BaseMessage]], Usage]
    ) -> None:
        super().__init__()
        self.policy, self.model, self.measure = policy, model, measure

    def _over(self, messages: Sequence[BaseMessage]) -> bool:
        policy = self.policy
        if policy.after_messages is not None and len(messages) > policy.after_messages:
            return True
        return policy.after_tokens is not None and count_tokens_approximately(messages) > policy.after_tokens

    def _cut(self, messages: Sequence[BaseMessage]) -> int:
        """Where the kept messages start: ``keep_messages`` from the end, moved back so a tool
        result is never kept without the call that asked for it."""
        cut = max(len(messages) - self.policy.keep_messages, 0)
        while 0 < cut < len(messages) and isinstance(messages[cut], ToolMessage):
            cut -= 1
        return cut

    async def abefore_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        messages: list[BaseMessage] = list(state["messages"])
        if not self._over(messages):
            return None
        cut = self._cut(messages)
        older = messages[:cut]
        if len(older) < 2:
            return None  # nothing worth a summary: the kept turns alone are over the limit
        reply = await self.model.ainvoke([SystemMessage(SUMMARY_PROMPT), HumanMessage(_transcript(older))])
        spent = self.measure(older) + self.measure([reply] if isinstance(reply, AIMessage) else [])
        summary = HumanMessage(
            f"Summary of the earlier conversation:\n{reply.text}",
            additional_kwargs={SUMMARY_KEY: {"turns": model_turns(older), "usage": spent.as_dict()}},
        )
        return {"messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES), summary, *messages[cut:]]}
