"""The LangGraph side of AI steps: one checkpointed agent thread per step, built with
``langchain.agents.create_agent`` and run with ``durability="sync"``.

Every attempt of an ``ai.agent`` step opens the same thread (``<tenant>/<execution>/<step
key>``) and looks at what is saved there before doing anything:

* nothing saved: start the conversation with the step's prompt;
* stopped at an interrupt: resume it with the signal's answer (``ctx.resume``), or wait again;
* tasks pending (a crash mid-run): continue them; finished tasks are not run again, since
  ``durability="sync"`` saved each task's writes before the next began;
* finished: return the recorded answer without calling any model.

Token usage is read from the checkpointed messages, so budgets count every attempt and
resume of the step, not just the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, HumanInTheLoopMiddleware, ModelFallbackMiddleware
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import BaseTool, InjectedToolCallId, StructuredTool
from langchain_core.tools.base import create_schema_from_function
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphRecursionError
from langgraph.store.base import BaseStore
from langgraph.types import Command
from pydantic import BaseModel, TypeAdapter, ValidationError, create_model

from engine import functions
from engine.adapters.ai_memory import TenantStore, memory_tools, sweep_expired
from engine.adapters.ai_models import ModelRegistry
from engine.adapters.ai_summary import SummarizeOlderTurns, carried_usage, model_turns
from engine.ai import (
    HTTP_TOOL,
    AgentFinished,
    AgentInterrupted,
    AgentOutcome,
    AgentRequest,
    Choice,
    ChoiceRequest,
    Usage,
    agent_thread_id,
    check_budgets,
    cost_of,
)
from engine.errors import EgressDenied, LeaseLost, OutboundRequestFailed, StepFailure
from engine.events import token_event
from engine.ports import HttpClient, HttpRequest, ModelCall, ModelTelemetry
from engine.steptypes.base import StepContext

#: Opens the checkpointer for one step attempt (and closes it afterwards).
CheckpointerFactory = Callable[[StepContext], contextlib.AbstractAsyncContextManager[BaseCheckpointSaver[Any]]]

#: Heartbeats on model and tool activity are at most this often (the lease keeper extends
#: the lease anyway; an activity beat claims a step that started unclaimed).
ACTIVITY_BEAT_SECONDS = 5.0


def thread_id(ctx: StepContext) -> str:
    """The LangGraph thread of a step: one per step, shared by all its attempts."""
    return agent_thread_id(ctx.tenant, ctx.execution_id, ctx.step_key)


@dataclass
class _Activity:
    """Heartbeats and cancellation checks around model and tool calls.

    The first beat comes after ``ACTIVITY_BEAT_SECONDS`` of activity: a short agent step
    costs no heartbeat write (the lease keeper covers the start, as for any step).
    """

    ctx: StepContext
    last_beat: float = field(default_factory=time.monotonic)

    async def touch(self) -> None:
        if self.ctx.cancelled():
            raise LeaseLost(f"step {self.ctx.step_key!r} lost its lease (cancelled or taken over)")
        now = time.monotonic()
        if now - self.last_beat >= ACTIVITY_BEAT_SECONDS:
            self.last_beat = now
            await asyncio.to_thread(self.ctx.heartbeat)  # a store write: off the event loop


class _ActivityCallbacks(AsyncCallbackHandler):
    """LangChain callbacks: every model call and tool call is activity; model calls are measured."""

    raise_error = True

    def __init__(self, activity: _Activity, measure: _ModelMeter) -> None:
        self.activity = activity
        self.measure = measure

    async def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.measure.started(kwargs.get("run_id"))
        await self.activity.touch()

    async def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.measure.ended(kwargs.get("run_id"), response)

    async def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        self.measure.failed(kwargs.get("run_id"), error)

    async def on_tool_start(self, serialized: Any, input_str: str, **kwargs: Any) -> None:
        await self.activity.touch()


class _ModelMeter:
    """Times model calls and reports them (tokens, cost, errors) to :class:`ModelTelemetry`."""

    def __init__(
        self, telemetry: ModelTelemetry | None, ctx: StepContext, model: str, prices: Mapping[str, Mapping[str, float]]
    ) -> None:
        self.telemetry, self.ctx, self.model, self.prices = telemetry, ctx, model, prices
        self._started: dict[Any, float] = {}

    def started(self, run_id: Any) -> None:
        self._started[run_id] = time.monotonic()

    def _seconds(self, run_id: Any) -> float:
        return time.monotonic() - self._started.pop(run_id, time.monotonic())

    def ended(self, run_id: Any, response: Any) -> None:
        if self.telemetry is None:
            return
        generation = response.generations[0][0] if response.generations and response.generations[0] else None
        message = getattr(generation, "message", None)
        usage = usage_of([message], self.model, self.prices) if isinstance(message, AIMessage) else Usage()
        name = str(message.response_metadata.get("model_name") or self.model) if message is not None else self.model
        self.telemetry.model_call(
            ModelCall(
                self.ctx.workflow,
                self.ctx.step_id,
                name,
                self._seconds(run_id),
                usage.input_tokens,
                usage.output_tokens,
                usage.cost,
            )
        )

    def failed(self, run_id: Any, error: BaseException) -> None:
        if self.telemetry is not None:
            self.telemetry.model_call(
                ModelCall(
                    self.ctx.workflow, self.ctx.step_id, self.model, self._seconds(run_id), error=type(error).__name__
                )
            )


def usage_of(messages: Sequence[BaseMessage], model: str, prices: Mapping[str, Mapping[str, float]]) -> Usage:
    """Usage recorded on the AI messages of a conversation (each model call made one), and on
    the summaries that replaced older ones."""
    total = Usage()
    for message in messages:
        summarised = carried_usage(message)
        if summarised is not None:
            total = total + summarised
        if isinstance(message, AIMessage) and message.usage_metadata:
            tokens_in = message.usage_metadata.get("input_tokens", 0)
            tokens_out = message.usage_metadata.get("output_tokens", 0)
            name = str(message.response_metadata.get("model_name") or model)
            price_key = name if name in prices else model
            total = total + Usage(tokens_in, tokens_out, cost_of(price_key, tokens_in, tokens_out, prices), 1)
    return total


class _BudgetGuard(AgentMiddleware):
    """Refuses a model call once the thread's checkpointed usage reached the step's budget, or
    with what the execution's other steps spent, the execution's."""

    def __init__(self, request: AgentRequest, prices: Mapping[str, Mapping[str, float]], scope: str) -> None:
        super().__init__()
        self.request, self.prices, self.scope = request, prices, scope

    def before_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        spent = usage_of(state["messages"], self.request.model, self.prices)
        check_budgets(self.request, spent, self.scope, before_call=True)
        return None


def _tool_name(function_name: str) -> str:
    return function_name.rpartition(".")[2]


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


@functools.lru_cache(maxsize=1024)
def _args_schema(name: str, function: Callable[..., Any]) -> type[BaseModel]:
    """The tool's argument model from the function's signature (built once per function)."""
    base = create_schema_from_function(name, function, filter_args=["ctx"])
    schema: type[BaseModel] = create_model(
        name,
        __base__=cast(type[BaseModel], base),
        tool_call_id=(Annotated[str, InjectedToolCallId], ...),
    )
    return schema


def function_tool(ctx: StepContext, function_name: str) -> BaseTool:
    """A registered ``@step`` function as an agent tool.

    A function taking ``ctx`` gets the step's context whose ``idempotency_key`` is the
    step's key plus the model's tool call id: stable across attempts (a continued thread
    replays the same call id), distinct per call.
    """
    registered = functions.resolve(function_name)
    if registered is None:
        raise StepFailure(
            f"tool {function_name!r} is not a registered @step function",
            retryable=False,
            error_type="FunctionNotFound",
        )
    name = _tool_name(function_name)
    schema = _args_schema(name, registered.function)

    async def call(tool_call_id: str, **kwargs: Any) -> str:
        if registered.wants_context:
            kwargs["ctx"] = ToolContext.of(ctx, tool_call_id)
        if registered.is_async:
            result = await registered.function(**kwargs)
        else:
            result = await asyncio.to_thread(registered.function, **kwargs)
        return _json(result)

    return StructuredTool.from_function(
        coroutine=call,
        name=name,
        description=inspect.getdoc(registered.function) or name,
        args_schema=schema,
    )


class ToolContext(StepContext):
    """The step's context inside one tool call: the idempotency key names the call too."""

    tool_call_id: str = ""

    @classmethod
    def of(cls, ctx: StepContext, tool_call_id: str) -> ToolContext:
        fields = {name: getattr(ctx, name) for name in ctx.__dataclass_fields__}
        tool_ctx = cls(**fields)
        tool_ctx.tool_call_id = tool_call_id
        return tool_ctx

    @property
    def idempotency_key(self) -> str:
        return f"{self.execution_id}/{self.step_key}/{self.tool_call_id}"


class _HttpArgs(BaseModel):
    method: str = "GET"
    url: str
    headers: dict[str, str] = {}
    body: str | None = None
    tool_call_id: Annotated[str, InjectedToolCallId]


def http_tool(ctx: StepContext, client: HttpClient, methods: Sequence[str], max_chars: int) -> BaseTool:
    """The SSRF-guarded HTTP client as an agent tool (``http_request``).

    Requests go through the egress policy; a refused or failed request is told to the model
    (it may try something else) rather than failing the step. Requests other than GET/HEAD
    carry an ``Idempotency-Key`` of the step and the model's tool call id.
    """

    async def call(
        tool_call_id: str,
        method: str = "GET",
        url: str = "",
        headers: dict[str, str] | None = None,
        body: str | None = None,
    ) -> str:
        method = method.upper()
        if method not in methods:
            return f"refused: method {method} is not allowed here (allowed: {', '.join(methods)})"
        sent_headers = dict(headers or {})
        if method not in ("GET", "HEAD"):
            sent_headers.setdefault("Idempotency-Key", f"{ctx.idempotency_key}/{tool_call_id}")
        request = HttpRequest(method, url, sent_headers, body.encode() if body is not None else None)
        try:
            response = await client.send(request)
        except (EgressDenied, OutboundRequestFailed) as exc:
            return f"refused: {exc.message}"
        text = response.body.decode("utf-8", "replace")
        truncated = len(text) > max_chars
        return _json({"status": response.status, "url": response.url, "body": text[:max_chars], "truncated": truncated})

    return StructuredTool.from_function(
        coroutine=call,
        name=HTTP_TOOL,
        description=f"Send an HTTP request ({', '.join(methods)}) and read the response status and body.",
        args_schema=_HttpArgs,
    )


def _schema_json(schema: Any) -> dict[str, Any] | None:
    if schema is None:
        return None
    if isinstance(schema, dict):
        return schema
    try:
        return TypeAdapter(schema).json_schema()
    except Exception:  # a type pydantic cannot describe: LangGraph still checks the answer
        return None


class LangGraphRuntime:
    """:class:`~engine.ports.AgentRuntime` over LangGraph, LangChain models and a checkpointer."""

    def __init__(
        self,
        models: ModelRegistry,
        checkpointer: CheckpointerFactory,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        telemetry: ModelTelemetry | None = None,
        memory: BaseStore | None = None,
    ) -> None:
        self.models = models
        #: Agents' long-term memory (every tenant's; each run sees only its own through TenantStore).
        self.memory = memory
        self.checkpointer = checkpointer
        self.prices = dict(prices or {})
        self.telemetry = telemetry

    def _middleware(self, ctx: StepContext, request: AgentRequest) -> list[AgentMiddleware]:
        middleware: list[AgentMiddleware] = []
        if request.budget is not None or request.execution_budget is not None:
            middleware.append(_BudgetGuard(request, self.prices, f"step {ctx.step_key!r}"))
        if request.approve:
            middleware.append(
                HumanInTheLoopMiddleware(
                    interrupt_on={_tool_name(name): True for name in request.approve},
                    interrupt_mode="per_call",
                )
            )
        if request.summarize is not None:
            summarizer = self.models.chat_model(request.summarize.model or request.model, request.settings, ctx.models)
            measure = functools.partial(usage_of, model=request.model, prices=self.prices)
            middleware.append(SummarizeOlderTurns(request.summarize, summarizer, measure))
        if request.fallbacks:
            fallbacks = [self.models.chat_model(spec, request.settings, ctx.models) for spec in request.fallbacks]
            middleware.append(ModelFallbackMiddleware(*fallbacks))
        return middleware

    async def run_agent(self, ctx: StepContext, request: AgentRequest) -> AgentOutcome:
        model = self.models.chat_model(request.model, request.settings, ctx.models)
        tools = [function_tool(ctx, name) for name in request.tools]
        if request.http_methods:
            tools.append(http_tool(ctx, ctx.ports.require_http(), request.http_methods, request.http_max_chars))
        store = None
        if request.memory is not None:
            if self.memory is None:
                raise StepFailure("no memory store is configured", retryable=False, error_type="NotConfigured")
            await asyncio.to_thread(sweep_expired, self.memory)  # housekeeping: reads skip expired notes anyway
            store = TenantStore(self.memory, ctx.tenant)
            tools.extend(memory_tools(store, tuple(request.memory), request.memory_ttl, execution_id=ctx.execution_id))
        config: dict[str, Any] = {
            "configurable": {"thread_id": thread_id(ctx)},
            "callbacks": [
                _ActivityCallbacks(_Activity(ctx), _ModelMeter(self.telemetry, ctx, request.model, self.prices))
            ],
            "recursion_limit": 2 * request.max_turns + 1,
        }
        async with self.checkpointer(ctx) as saver:
            graph: Any = create_agent(
                model,
                tools,
                system_prompt=request.system,
                middleware=self._middleware(ctx, request),
                response_format=dict(request.output_schema) if request.output_schema is not None else None,
                checkpointer=saver,
                store=store,
            )
            state = await graph.aget_state(config)
            graph_input: Any
            if state.created_at is None:
                graph_input = {"messages": [HumanMessage(request.prompt)]}
            elif state.interrupts:
                answer = _answer_for(ctx.resume, state.interrupts[0].id)
                if answer is None:
                    return self._interrupted(state.interrupts[0], state.values, request)
                graph_input = Command(resume=answer)
            elif state.next:
                graph_input = None
            else:
                return self._finished(state.values, request)
            try:
                # A lost lease cancels this handler (the runner cancels its task), and with it the graph.
                if request.stream:
                    await _streamed(ctx, graph, graph_input, config)
                    state = await graph.aget_state(config)
                    values, interrupts = state.values, state.interrupts
                else:
                    values = await graph.ainvoke(graph_input, config, durability="sync")
                    interrupts = values.get("__interrupt__", ())
            except GraphRecursionError:
                raise StepFailure(
                    f"the agent did not answer within {request.max_turns} turns",
                    retryable=False,
                    error_type="AgentTurnLimit",
                ) from None
            except ValidationError as exc:
                raise StepFailure(
                    f"the answer does not match the interrupt's schema: {exc}",
                    retryable=False,
                    error_type="ResumeInvalid",
                ) from None
            if interrupts:
                return self._interrupted(interrupts[0], values, request)
            return self._finished(values, request)

    def _finished(self, values: Mapping[str, Any], request: AgentRequest) -> AgentFinished:
        messages = values.get("messages", [])
        last = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
        return AgentFinished(
            answer=last.text if last is not None else "",
            structured=values.get("structured_response"),
            usage=usage_of(messages, request.model, self.prices),
            turns=model_turns(messages),
        )

    def _interrupted(self, pending: Any, values: Mapping[str, Any], request: AgentRequest) -> AgentInterrupted:
        return AgentInterrupted(
            interrupt_id=pending.id,
            request=json.loads(_json(pending.value)),
            schema=_schema_json(getattr(pending, "response_schema", None)),
            usage=usage_of(values.get("messages", []), request.model, self.prices),
        )

    async def choose(self, ctx: StepContext, request: ChoiceRequest) -> Choice:
        model = self.models.chat_model(request.model, request.settings, ctx.models)
        schema = {
            "title": "route_decision",
            "description": "Pick exactly one route.",
            "type": "object",
            "properties": {
                "route": {"type": "string", "enum": list(request.routes)},
                "rationale": {"type": "string"},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "required": ["route", "rationale", "confidence"],
        }
        chain = model.with_structured_output(schema, include_raw=True)
        if request.fallbacks:
            chain = chain.with_fallbacks(
                [
                    self.models.chat_model(spec, request.settings, ctx.models).with_structured_output(
                        schema, include_raw=True
                    )
                    for spec in request.fallbacks
                ]
            )
        messages: list[BaseMessage] = [SystemMessage(request.system)] if request.system else []
        messages.append(HumanMessage(request.prompt))
        # Measured like an agent's calls (each model tried, fallbacks included), and activity.
        callbacks = _ActivityCallbacks(_Activity(ctx), _ModelMeter(self.telemetry, ctx, request.model, self.prices))
        result: Any = await chain.ainvoke(messages, {"callbacks": [callbacks]})
        raw = result.get("raw")
        usage = usage_of([raw] if isinstance(raw, AIMessage) else [], request.model, self.prices)
        parsed = result.get("parsed")
        error = result.get("parsing_error")
        if not isinstance(parsed, dict):
            return Choice(answer=None, usage=usage, error=str(error or "the model gave no structured answer"))
        return Choice(answer=parsed, usage=usage)


def _answer_for(resume: Any, interrupt_id: str) -> Any:
    """The signal's answer if it answers this interrupt (an answer to an earlier one is stale)."""
    if isinstance(resume, Mapping) and resume.get("interrupt_id") == interrupt_id:
        return {interrupt_id: resume.get("value")}
    return None


#: Tokens are sent to the live stream in batches at most this often (seconds).
TOKEN_BATCH_SECONDS = 0.1


async def _streamed(ctx: StepContext, graph: Any, graph_input: Any, config: dict[str, Any]) -> None:
    """Run the graph streaming model tokens (``stream_mode="messages"``) to the live stream."""
    live = ctx.ports.live
    pending: list[str] = []
    last_sent = time.monotonic()

    def flush() -> None:
        nonlocal last_sent
        if pending and live is not None:
            event = token_event(ctx.tenant, ctx.execution_id, ctx.step_key, ctx.attempt, ctx.now(), "".join(pending))
            live.publish([event])
        pending.clear()
        last_sent = time.monotonic()

    async for message, _metadata in graph.astream(graph_input, config, stream_mode="messages", durability="sync"):
        if isinstance(message, AIMessageChunk) and isinstance(message.content, str) and message.content:
            pending.append(message.content)
            if time.monotonic() - last_sent >= TOKEN_BATCH_SECONDS:
                flush()
    flush()


@contextlib.asynccontextmanager
async def sqlite_checkpointer(path: str, ctx: StepContext) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """An ``AsyncSqliteSaver`` on the embedded store's checkpoint file, open for one attempt."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        yield saver


@contextlib.asynccontextmanager
async def firestore_checkpointer(client: Any, ctx: StepContext) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """A :class:`FirestoreSaver` that writes only while this attempt holds the step's lease."""
    from engine.adapters.checkpoint_firestore import FirestoreSaver, LeaseFence

    await asyncio.to_thread(ctx.heartbeat)  # claims a step that started unclaimed: fencing needs its epoch
    epoch = ctx.lease_epoch()
    if epoch is None:
        raise LeaseLost(f"step {ctx.step_key!r} could not be claimed; its agent does not run")
    yield FirestoreSaver(client, fence=LeaseFence(ctx.tenant, ctx.execution_id, ctx.step_key, epoch))
