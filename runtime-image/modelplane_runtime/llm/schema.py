"""The OpenAI API subset every Modelplane LLM engine serves, in one place.

Requests are parsed here into engine-neutral values (:class:`ChatRequest`, :class:`CompletionRequest`,
:class:`EmbeddingRequest`); responses are built here from what an engine produced. A parameter
outside the subset is refused with a 400 naming it, never ignored: a client must learn that its
``frequency_penalty`` did nothing. The same subset is what the contract tests check, whichever
engine answers (tests/runtime/llm_contract.py holds the response schemas).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

import numpy as np

from modelplane_runtime.errors import InvalidInput

#: Parameters each route accepts. Anything else is a 400 naming it.
CHAT_PARAMETERS: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "n",
        "stream",
        "stream_options",
        "logprobs",
        "top_logprobs",
        "response_format",
        "user",
    }
)
COMPLETION_PARAMETERS: Final = frozenset(
    {
        "model",
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "n",
        "stream",
        "stream_options",
        "logprobs",
        "user",
    }
)
EMBEDDING_PARAMETERS: Final = frozenset({"model", "input", "encoding_format", "user"})
MAX_N: Final = 8
MAX_STOP_SEQUENCES: Final = 4
MAX_TOP_LOGPROBS: Final = 20
MAX_COMPLETION_LOGPROBS: Final = 5
#: OpenAI's default for /v1/completions; chat defaults to the rest of the context.
COMPLETION_DEFAULT_MAX_TOKENS: Final = 16
ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass(frozen=True)
class SamplingParams:
    """What shapes one generation; the same for every engine."""

    max_tokens: int | None = None  # None: up to the context length
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    logprobs: int | None = None  # None: off; k: the chosen token's logprob and the top k
    json_mode: bool = False


@dataclass(frozen=True)
class StreamOptions:
    stream: bool = False
    include_usage: bool = False


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    sampling: SamplingParams
    stream: StreamOptions
    max_tokens_given: bool


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompt: str | list[int]
    sampling: SamplingParams
    stream: StreamOptions


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    inputs: list[str | list[int]]
    base64: bool


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]
    top: list[tuple[str, float, list[int]]] = field(default_factory=list)


@dataclass
class Choice:
    """What one choice of a generation produced so far (or in all)."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    completion_tokens: int = 0


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


# ---------------------------------------------------------------- parsing


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body


def _refuse_unknown(body: Mapping[str, Any], allowed: frozenset[str], route: str) -> None:
    unknown = sorted(key for key in body if key not in allowed)
    if unknown:
        raise InvalidInput(
            f"unsupported parameter {unknown[0]!r:.80} for {route}: "
            f"supported are {', '.join(sorted(allowed))}"
        )


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("'model' is required: the served model's name (GET /v1/models lists it)")
    return model


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidInput(f"'{name}' must be a number from {low:g} to {high:g}")
    return float(value)


def _integer(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"'{name}' must be an integer from {low} to {high}")
    return value


def _boolean(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"'{name}' must be true or false")
    return value


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if (
        not isinstance(items, list)
        or len(items) > MAX_STOP_SEQUENCES
        or not all(isinstance(item, str) and item for item in items)
    ):
        raise InvalidInput(
            f"'stop' must be a non-empty string or a list of up to {MAX_STOP_SEQUENCES} of them"
        )
    return tuple(items)


def _stream(body: Mapping[str, Any]) -> StreamOptions:
    stream = _boolean(body, "stream")
    options = body.get("stream_options")
    if options is None:
        return StreamOptions(stream=stream)
    if not stream:
        raise InvalidInput("'stream_options' is allowed only with 'stream': true")
    if not isinstance(options, dict) or any(key != "include_usage" for key in options):
        raise InvalidInput("'stream_options' supports only {'include_usage': true|false}")
    return StreamOptions(stream=True, include_usage=_boolean(options, "include_usage"))


def _sampling(
    body: Mapping[str, Any], max_tokens: int | None, logprobs: int | None, json_mode: bool
) -> SamplingParams:
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidInput("'seed' must be an integer")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0) or 1.0,
        stop=_stop(body),
        seed=None if seed is None else seed % 2**32,
        n=_integer(body, "n", 1, MAX_N) or 1,
        logprobs=logprobs,
        json_mode=json_mode,
    )


def _content(message: Mapping[str, Any], index: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise InvalidInput(
                    f"messages[{index}].content: only text parts "
                    "({'type': 'text', 'text': ...}) are supported"
                )
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidInput(f"messages[{index}].content must be a string or a list of text parts")


def parse_chat(raw: Any) -> ChatRequest:
    body = _object(raw)
    _refuse_unknown(body, CHAT_PARAMETERS, "/v1/chat/completions")
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("'messages' must be a non-empty list of {'role': ..., 'content': ...}")
    parsed: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidInput(f"messages[{index}] must be an object with 'role' and 'content'")
        extra = sorted(key for key in message if key not in {"role", "content", "name"})
        if extra:
            raise InvalidInput(f"messages[{index}]: unsupported field {extra[0]!r:.80}")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidInput(f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}")
        parsed.append(
            {"role": "system" if role == "developer" else str(role), "content": _content(message, index)}
        )
    given = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = _integer({"max_tokens": given}, "max_tokens", 1, 2**31 - 1)
    logprobs: int | None = None
    if _boolean(body, "logprobs"):
        logprobs = _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS) or 0
    elif body.get("top_logprobs") is not None:
        raise InvalidInput("'top_logprobs' needs 'logprobs': true")
    return ChatRequest(
        model=model,
        messages=parsed,
        sampling=_sampling(body, max_tokens, logprobs, _json_mode(body)),
        stream=_stream(body),
        max_tokens_given=max_tokens is not None,
    )


def _json_mode(body: Mapping[str, Any]) -> bool:
    value = body.get("response_format")
    if value is None:
        return False
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object") or len(value) != 1:
        raise InvalidInput("'response_format' supports {'type': 'text'} and {'type': 'json_object'}")
    return bool(value["type"] == "json_object")


def _token_list(value: Any) -> TypeGuard[list[int]]:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value)
    )


def parse_completion(raw: Any) -> CompletionRequest:
    body = _object(raw)
    _refuse_unknown(body, COMPLETION_PARAMETERS, "/v1/completions")
    model = _model(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    text: str | list[int]
    if isinstance(prompt, str) or _token_list(prompt):
        text = prompt
    else:
        raise InvalidInput("'prompt' must be a string, a list of one string, or a list of token ids")
    max_tokens = _integer(body, "max_tokens", 1, 2**31 - 1)
    logprobs = _integer(body, "logprobs", 0, MAX_COMPLETION_LOGPROBS)
    return CompletionRequest(
        model=model,
        prompt=text,
        sampling=_sampling(body, max_tokens or COMPLETION_DEFAULT_MAX_TOKENS, logprobs, json_mode=False),
        stream=_stream(body),
    )


def parse_embedding(raw: Any) -> EmbeddingRequest:
    body = _object(raw)
    _refuse_unknown(body, EMBEDDING_PARAMETERS, "/v1/embeddings")
    model = _model(body)
    value = body.get("input")
    inputs: list[str | list[int]]
    if isinstance(value, str) or _token_list(value):
        inputs = [value]
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(item, str) or _token_list(item) for item in value)
    ):
        inputs = list(value)
    else:
        raise InvalidInput(
            "'input' must be a string, a list of strings, or token ids (a list, or a list of lists)"
        )
    if any(item == "" for item in inputs):
        raise InvalidInput("'input' must not contain empty strings")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidInput("'encoding_format' must be 'float' or 'base64'")
    return EmbeddingRequest(model=model, inputs=inputs, base64=encoding == "base64")


# ---------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def model_list(name: str, created: int, owner: str = "modelplane") -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": created, "owned_by": owner}],
    }


def _chat_logprobs(items: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": item.token,
                "logprob": item.logprob,
                "bytes": item.bytes,
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": b} for t, lp, b in item.top],
            }
            for item in items
        ]
    }


def _completion_logprobs(items: Sequence[TokenLogprob], text_offset: int) -> dict[str, Any]:
    offsets = []
    position = text_offset
    for item in items:
        offsets.append(position)
        position += len(item.token)
    return {
        "tokens": [item.token for item in items],
        "token_logprobs": [item.logprob for item in items],
        "top_logprobs": [{t: lp for t, lp, _ in item.top} for item in items],
        "text_offset": offsets,
    }


def chat_response(
    request_id: str, model: str, created: int, choices: Sequence[Choice], usage: Usage, logprobs: bool
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": choice.index,
                "message": {"role": "assistant", "content": choice.text},
                "logprobs": _chat_logprobs(choice.logprobs) if logprobs else None,
                "finish_reason": choice.finish_reason,
            }
            for choice in choices
        ],
        "usage": usage.as_dict(),
    }


def chat_chunk(
    request_id: str,
    model: str,
    created: int,
    index: int,
    delta: dict[str, str],
    finish_reason: str | None = None,
    logprobs: Sequence[TokenLogprob] | None = None,
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": index,
                "delta": delta,
                "logprobs": _chat_logprobs(logprobs) if logprobs is not None else None,
                "finish_reason": finish_reason,
            }
        ],
    }


def completion_response(
    request_id: str, model: str, created: int, choices: Sequence[Choice], usage: Usage, logprobs: bool
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": choice.index,
                "text": choice.text,
                "logprobs": _completion_logprobs(choice.logprobs, 0) if logprobs else None,
                "finish_reason": choice.finish_reason,
            }
            for choice in choices
        ],
        "usage": usage.as_dict(),
    }


def completion_chunk(
    request_id: str,
    model: str,
    created: int,
    index: int,
    text: str,
    finish_reason: str | None = None,
    logprobs: Sequence[TokenLogprob] | None = None,
    text_offset: int = 0,
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": index,
                "text": text,
                "logprobs": _completion_logprobs(logprobs, text_offset) if logprobs is not None else None,
                "finish_reason": finish_reason,
            }
        ],
    }


def usage_chunk(request_id: str, model: str, created: int, obj: str, usage: Usage) -> dict[str, Any]:
    """The last chunk of a stream asked for with stream_options.include_usage: no choices."""
    return {
        "id": request_id,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage.as_dict(),
    }


def embedding_response(
    model: str, vectors: Sequence[np.ndarray[Any, Any]], prompt_tokens: int, as_base64: bool
) -> dict[str, Any]:
    data = []
    for index, vector in enumerate(vectors):
        values: Any = (
            base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
            if as_base64
            else [float(x) for x in vector]
        )
        data.append({"object": "embedding", "index": index, "embedding": values})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def error_body(message: str, kind: str, param: str | None = None, code: int = 400) -> dict[str, Any]:
    """OpenAI's error object; ``kind`` is its ``type`` (invalid_request_error, ...)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def now() -> int:
    return int(time.time())
