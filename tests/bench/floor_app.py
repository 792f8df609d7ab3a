"""The Python HTTP floor: a bare ASGI app that reads the request and answers a fixed v2 body.

Served by uvicorn (uvloop + httptools) on one core, it shows what any Python model server on this
machine can reach at best: ``uvicorn tests.bench.floor_app:app --lifespan off``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]

RESPONSE = b'{"model_name":"floor","outputs":[{"name":"predict","shape":[1],"datatype":"INT64","data":[0]}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(RESPONSE)).encode())]


async def app(
    scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
) -> None:
    if scope["type"] != "http":
        return
    # Drain the body as a real server must before it can answer.
    more_body = True
    while more_body:
        message = await receive()
        more_body = bool(message.get("more_body", False))
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": RESPONSE})
