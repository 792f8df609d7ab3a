"""The OpenAI response shapes every Modelplane LLM engine must produce (JSON Schema).

The subset modelplane_runtime.llm.schema builds; written independently of it, from OpenAI's API
reference, so that the same checks can run against any engine (the built-in one today, vLLM's
server later) through the same client code.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema

_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        "prompt_tokens": {"type": "integer", "minimum": 0},
        "completion_tokens": {"type": "integer", "minimum": 0},
        "total_tokens": {"type": "integer", "minimum": 0},
    },
}
_FINISH = {"enum": ["stop", "length"]}
_HEAD = {
    "id": {"type": "string", "minLength": 1},
    "created": {"type": "integer"},
    "model": {"type": "string", "minLength": 1},
}

MODEL_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "model"},
                    "owned_by": {"type": "string"},
                },
            },
        },
    },
}

CHAT_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        **_HEAD,
        "object": {"const": "chat.completion"},
        "usage": _USAGE,
        "choices": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "finish_reason": _FINISH,
                    "message": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
                    },
                },
            },
        },
    },
}

CHAT_CHUNK = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        **_HEAD,
        "object": {"const": "chat.completion.chunk"},
        "usage": {"anyOf": [_USAGE, {"type": "null"}]},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "delta"],
                "properties": {
                    "index": {"type": "integer"},
                    "finish_reason": {"anyOf": [_FINISH, {"type": "null"}]},
                    "delta": {
                        "type": "object",
                        "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
                    },
                },
            },
        },
    },
}

COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        **_HEAD,
        "object": {"const": "text_completion"},
        "usage": _USAGE,
        "choices": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["index", "text", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "text": {"type": "string"},
                    "finish_reason": _FINISH,
                },
            },
        },
    },
}

COMPLETION_CHUNK = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        **_HEAD,
        "object": {"const": "text_completion"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "text"],
                "properties": {
                    "index": {"type": "integer"},
                    "text": {"type": "string"},
                    "finish_reason": {"anyOf": [_FINISH, {"type": "null"}]},
                },
            },
        },
    },
}

EMBEDDINGS = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"const": "list"},
        "model": {"type": "string"},
        "data": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "properties": {
                    "object": {"const": "embedding"},
                    "index": {"type": "integer"},
                    "embedding": {
                        "anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]
                    },
                },
            },
        },
        "usage": {
            "type": "object",
            "required": ["prompt_tokens", "total_tokens"],
            "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}},
        },
    },
}

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {"message": {"type": "string", "minLength": 1}, "type": {"type": "string"}},
        }
    },
}


def check(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.validate(instance, schema)


# ------------------------------------------------------------------ the checks every engine passes

#: Bodies no engine may answer with a 5xx: (route, raw body; MODEL stands for the model's name).
#: Deterministic, so that an engine we do not control (vLLM) is held to exactly what the built-in one
#: is (whose own fuzz tests go further).
MALFORMED_BODIES = [
    ("/v1/completions", b"{"),
    ("/v1/completions", b"[]"),
    ("/v1/completions", b'"a prompt"'),
    ("/v1/completions", b'{"model": "MODEL", "prompt": "x", "max_tokens": -1}'),
    ("/v1/completions", b'{"model": "MODEL", "prompt": "x", "temperature": "hot"}'),
    ("/v1/completions", b'{"model": "MODEL", "prompt": {"nested": 1}}'),
    ("/v1/chat/completions", b'{"model": "MODEL", "messages": "hi"}'),
    ("/v1/chat/completions", b'{"model": "MODEL", "messages": [{"role": "user"}], "max_tokens": "many"}'),
    ("/v1/chat/completions", b'{"model": "MODEL", "messages": [{"role": "user", "content": "x"}], "n": "s"}'),
]


def sse_events(response: httpx.Response) -> list[Any]:
    """The data payloads of a server-sent event stream, "[DONE]" as the string itself. Split at line
    feeds only: a model's text may hold U+2028 or U+0085 raw inside the JSON, where str.splitlines
    (and httpx's iter_lines) would cut it."""
    events: list[Any] = []
    for line in response.read().split(b"\n"):
        if not line.strip():
            continue
        assert line.startswith(b"data: "), line
        data = line.removeprefix(b"data: ").decode()
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def check_engine(client: httpx.Client, model: str, context: int) -> None:
    """The OpenAI subset both engines serve, checked against CLIENT (based at the server's root): the
    shape of every route, whole and streamed; stop sequences; exact max_tokens; a prompt over CONTEXT
    tokens refused with a 400 naming the limit; another model's name a 404; malformed bodies a 4xx,
    never a 5xx."""

    def post(path: str, **body: Any) -> httpx.Response:
        return client.post(path, json={"model": model, "temperature": 0, **body})

    def ok(response: httpx.Response) -> Any:
        assert response.status_code == 200, response.text
        return response.json()

    check(ok(client.get("/v1/models")), MODEL_LIST)
    chat = ok(post("/v1/chat/completions", messages=[{"role": "user", "content": "Hello"}], max_tokens=8))
    check(chat, CHAT_COMPLETION)
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": model,
            "temperature": 0,
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "Hello"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    for chunk in events[:-1]:
        check(chunk, CHAT_CHUNK)
    assert events[-2]["choices"] == []
    assert events[-2]["usage"]["completion_tokens"] > 0

    whole = ok(post("/v1/completions", prompt="Hello world", max_tokens=12))
    check(whole, COMPLETION)
    with client.stream(
        "POST",
        "/v1/completions",
        json={"model": model, "temperature": 0, "prompt": "Hello world", "max_tokens": 12, "stream": True},
    ) as response:
        assert response.status_code == 200
        streamed = sse_events(response)
    assert streamed[-1] == "[DONE]"
    for chunk in streamed[:-1]:
        check(chunk, COMPLETION_CHUNK)
    assert (
        "".join(c["choices"][0]["text"] for c in streamed[:-1] if c["choices"]) == whole["choices"][0]["text"]
    )

    free = ok(post("/v1/completions", prompt="Hello world", max_tokens=40))["choices"][0]["text"]
    stop = free[len(free) // 2 : len(free) // 2 + 3]
    assert len(stop) == 3, free
    stopped = ok(post("/v1/completions", prompt="Hello world", max_tokens=40, stop=[stop, "never-appears"]))
    assert stopped["choices"][0]["text"] == free[: free.find(stop)]
    assert stopped["choices"][0]["finish_reason"] == "stop"
    for max_tokens in (1, 5):
        body = ok(post("/v1/completions", prompt="Count", max_tokens=max_tokens))
        assert body["usage"]["completion_tokens"] == max_tokens, body
        assert body["choices"][0]["finish_reason"] == "length"

    # (A short prompt with max_tokens past the context: the built-in engine refuses it, vLLM shortens
    # max_tokens to what fits; not part of the shared contract.)
    too_long = post("/v1/completions", prompt="fox jumps " * (2 * context), max_tokens=1)
    assert too_long.status_code == 400, too_long.text
    check(too_long.json(), ERROR)
    assert str(context) in too_long.json()["error"]["message"]
    other = client.post("/v1/completions", json={"model": "another-model", "prompt": "x"})
    assert other.status_code == 404, other.text
    check(other.json(), ERROR)
    for path, raw in MALFORMED_BODIES:
        named = raw.replace(b"MODEL", model.encode())  # what is refused is the body, not the model
        response = client.post(path, content=named, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (path, named, response.status_code, response.text)
