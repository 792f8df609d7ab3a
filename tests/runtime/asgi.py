"""Call the runtime's ASGI app in-process, as uvicorn would, for tests of the REST layer."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from modelplane_runtime.rest import Message, RestApp


async def call(app: RestApp, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    sent: list[Message] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.sleep(3600)
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-length", str(len(body)).encode())],
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return (
        start["status"],
        headers,
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
    )


def call_json(app: RestApp, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
    body = b"" if payload is None else orjson.dumps(payload)
    status, _, raw = asyncio.run(call(app, method, path, body))
    return status, orjson.loads(raw)
