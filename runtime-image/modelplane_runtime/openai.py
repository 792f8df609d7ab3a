"""The OpenAI API over the data plane: rows for the REST route table (:data:`ROUTES`, which the
server adds to rest.ROUTES).

``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/embeddings``.
A thin translator: :mod:`modelplane_runtime.llm.schema` parses and builds the bodies, the language
model's scheduler generates, and each request is one data-plane :class:`Call` (in flight, bounded
by the request timeout, recorded with its code). Streams are server-sent events ending
``data: [DONE]``. A client that hangs up, mid-stream or while waiting for a whole answer, cancels
its generation: its sequence slot is free at the engine's next step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, TypeVar

import modelplane_contract as contract
import orjson

from modelplane_runtime.errors import ClientGone, InvalidInput, ModelNotFound, Overloaded, RuntimeFailure
from modelplane_runtime.formats.base import LanguageModel, Model
from modelplane_runtime.llm import schema
from modelplane_runtime.llm.scheduler import Generation
from modelplane_runtime.rest import Route

if TYPE_CHECKING:
    from modelplane_runtime.dataplane import Call
    from modelplane_runtime.rest import Exchange, RestApp

MODELS_PATH: Final = "/v1/models"
CHAT_PATH: Final = "/v1/chat/completions"
COMPLETIONS_PATH: Final = "/v1/completions"
EMBEDDINGS_PATH: Final = "/v1/embeddings"
RETRY_AFTER_SECONDS: Final = b"1"
T = TypeVar("T")
#: OpenAI's error ``type`` by HTTP status.
_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    404: "not_found_error",
    413: "invalid_request_error",
    503: "service_unavailable",
    504: "timeout",
}


async def models(app: RestApp, exchange: Exchange) -> None:
    async def answer(call: Call, _model: LanguageModel) -> None:
        created = int(getattr(call.model, "created", 0))
        await exchange.respond(200, orjson.dumps(schema.model_list(app.dataplane.name, created)))

    await _serve(app, exchange, answer)


async def chat_completions(app: RestApp, exchange: Exchange) -> None:
    async def answer(call: Call, model: LanguageModel) -> None:
        request = schema.parse_chat(await _json(exchange))
        _check_name(app, request.model)
        await _generate(
            exchange, call, model, True, request.model, model.chat_prompt(request.messages), request
        )

    await _serve(app, exchange, answer)


async def completions(app: RestApp, exchange: Exchange) -> None:
    async def answer(call: Call, model: LanguageModel) -> None:
        request = schema.parse_completion(await _json(exchange))
        _check_name(app, request.model)
        if model.embedding:
            raise InvalidInput(f"model {request.model!r} is an embedding model: use POST {EMBEDDINGS_PATH}")
        await _generate(
            exchange, call, model, False, request.model, model.text_prompt(request.prompt), request
        )

    await _serve(app, exchange, answer)


async def embeddings(app: RestApp, exchange: Exchange) -> None:
    async def answer(call: Call, model: LanguageModel) -> None:
        request = schema.parse_embedding(await _json(exchange))
        _check_name(app, request.model)
        if not model.embedding:
            raise InvalidInput(f"model {request.model!r} generates text; it is not an embedding model")
        inputs = [model.text_prompt(item) for item in request.inputs]
        vectors = await _unless_client_leaves(exchange, model.scheduler.embed(inputs))
        prompt_tokens = sum(map(len, inputs))
        body = schema.embedding_response(request.model, vectors, prompt_tokens, request.base64)
        await exchange.respond(200, orjson.dumps(body))
        call.count_tokens(prompt_tokens, 0)

    await _serve(app, exchange, answer)


ROUTES: Final = (
    Route("GET", MODELS_PATH, models, contract.PROTOCOL_OPENAI),
    Route("POST", CHAT_PATH, chat_completions, contract.PROTOCOL_OPENAI),
    Route("POST", COMPLETIONS_PATH, completions, contract.PROTOCOL_OPENAI),
    Route("POST", EMBEDDINGS_PATH, embeddings, contract.PROTOCOL_OPENAI),
)


# ------------------------------------------------------------------ shared


Answer = Callable[["Call", LanguageModel], Awaitable[None]]


async def _serve(app: RestApp, exchange: Exchange, answer: Answer) -> None:
    """One data-plane call around ``answer``; failures answered in OpenAI's error shape."""
    try:
        with app.dataplane.call(contract.PROTOCOL_OPENAI, app.dataplane.name, exchange.client_id) as call:
            await answer(call, _language_model(call.model))
    except ClientGone:
        return
    except RuntimeFailure as error:
        headers = [(b"retry-after", RETRY_AFTER_SECONDS)] if isinstance(error, Overloaded) else []
        kind = _ERROR_TYPES.get(error.status, "internal_server_error")
        body = schema.error_body(str(error), kind, code=error.status)
        await exchange.respond(error.status, orjson.dumps(body), headers=headers)


def _language_model(model: Model) -> LanguageModel:
    if not isinstance(model, LanguageModel):
        raise ModelNotFound(
            f"model {model.options.name!r} is a {model.format_name} model: it serves the v1/v2 "
            "inference protocols, not the OpenAI API"
        )
    return model


def _check_name(app: RestApp, name: str) -> None:
    if name != app.dataplane.name:
        raise ModelNotFound(
            f"model {name!r:.80} is not served here; this server serves {app.dataplane.name!r}"
        )


async def _json(exchange: Exchange) -> Any:
    body = await exchange.body()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"the request body is not JSON: {error}") from None


async def _generate(
    exchange: Exchange,
    call: Call,
    model: LanguageModel,
    chat: bool,
    name: str,
    prompt: list[int],
    request: schema.ChatRequest | schema.CompletionRequest,
) -> None:
    generation = model.scheduler.submit(prompt, request.sampling)
    answer = _Answer(exchange, call, chat, name, generation, request.stream)
    try:
        await _unless_client_leaves(exchange, answer.stream() if request.stream.stream else answer.whole())
    finally:
        model.scheduler.cancel(generation)  # a no-op once it finished; frees its slots otherwise


class _Answer:
    """One generation turned into a response: whole, or streamed chunk by chunk."""

    def __init__(
        self,
        exchange: Exchange,
        call: Call,
        chat: bool,
        model: str,
        generation: Generation,
        stream: schema.StreamOptions,
    ) -> None:
        self.exchange = exchange
        self.call = call
        self.chat = chat
        self.model = model
        self.generation = generation
        self.stream_options = stream
        self.id = schema.new_id("chatcmpl" if chat else "cmpl")
        self.created = schema.now()
        self.logprobs = generation.sampling.logprobs is not None

    def usage(self, completion_tokens: int) -> schema.Usage:
        return schema.Usage(len(self.generation.prompt_tokens), completion_tokens)

    async def whole(self) -> None:
        choices = {index: schema.Choice(index) for index in range(self.generation.sampling.n)}
        async for event in self.call.stream(self.generation.events()):
            choice = choices[event.index]
            choice.text += event.text
            choice.logprobs.extend(event.logprobs)
            choice.completion_tokens = event.completion_tokens
            if event.finish_reason is not None:
                choice.finish_reason = event.finish_reason
        ordered = [choices[index] for index in sorted(choices)]
        usage = self.usage(sum(choice.completion_tokens for choice in ordered))
        build = schema.chat_response if self.chat else schema.completion_response
        body = build(self.id, self.model, self.created, ordered, usage, self.logprobs)
        await self.exchange.respond(200, orjson.dumps(body))
        self.call.count_tokens(usage.prompt_tokens, usage.completion_tokens)

    async def stream(self) -> None:
        exchange = self.exchange
        await exchange.start(headers=[(b"x-accel-buffering", b"no")])
        tokens: dict[int, int] = {}
        offsets: dict[int, int] = {}
        if self.chat:
            for index in range(self.generation.sampling.n):
                delta = {"role": "assistant", "content": ""}
                await self._event(schema.chat_chunk(self.id, self.model, self.created, index, delta))
        try:
            await self._events(tokens, offsets)
        finally:  # what was generated was sent, even to a client that left mid-stream
            self.call.count_tokens(len(self.generation.prompt_tokens), sum(tokens.values()))
        await exchange.write(b"data: [DONE]\n\n", more=False)

    async def _events(self, tokens: dict[int, int], offsets: dict[int, int]) -> None:
        try:
            async for event in self.call.stream(self.generation.events()):
                tokens[event.index] = event.completion_tokens
                if not event.text and event.finish_reason is None and not event.logprobs:
                    continue
                logprobs = event.logprobs if self.logprobs else None
                if self.chat:
                    delta = {"content": event.text} if event.text else {}
                    chunk = schema.chat_chunk(
                        self.id, self.model, self.created, event.index, delta, event.finish_reason, logprobs
                    )
                else:
                    offset = offsets.get(event.index, 0)
                    chunk = schema.completion_chunk(
                        self.id,
                        self.model,
                        self.created,
                        event.index,
                        event.text,
                        event.finish_reason,
                        logprobs,
                        offset,
                    )
                    offsets[event.index] = offset + len(event.text)
                await self._event(chunk)
        except RuntimeFailure as error:
            # The status line is sent: the failure goes in the stream, in OpenAI's error shape.
            kind = _ERROR_TYPES.get(error.status, "internal_server_error")
            await self._event(schema.error_body(str(error), kind, code=error.status))
        else:
            if self.stream_options.include_usage:
                kind = "chat.completion.chunk" if self.chat else "text_completion"
                usage = self.usage(sum(tokens.values()))
                await self._event(schema.usage_chunk(self.id, self.model, self.created, kind, usage))

    async def _event(self, payload: dict[str, Any]) -> None:
        await self.exchange.write(b"data: " + orjson.dumps(payload) + b"\n\n")


async def _unless_client_leaves(exchange: Exchange, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result; if the client hangs up first, ``work`` is cancelled and ClientGone raised."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(exchange.disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientGone
