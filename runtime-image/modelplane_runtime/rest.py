"""KServe v1 and Open Inference Protocol v2 over REST: a bare ASGI app over the data plane.

Routes (nothing else): ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
``/v2/models/{name}``, ``/v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``,
``GET /v1/models/{name}``, ``POST /v1/models/{name}:predict``, ``GET /metrics``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from modelplane_runtime import codecs, contract
from modelplane_runtime.dataplane import DataPlane
from modelplane_runtime.errors import InvalidInput, ModelError, ModelNotFound, ModelNotReady, Overloaded
from modelplane_runtime.metrics import Metrics, exposition

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_STATUS_BY_ERROR: dict[type[Exception], int] = {
    InvalidInput: 400,
    ModelNotFound: 404,
    ModelNotReady: 503,
    Overloaded: 503,
    ModelError: 500,
}
RETRY_AFTER_SECONDS = b"1"


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class RestApp:
    def __init__(
        self,
        dataplane: DataPlane,
        metrics: Metrics | None,
        protocols: frozenset[str] = frozenset({contract.PROTOCOL_V1, contract.PROTOCOL_V2}),
        max_body_bytes: int = 16 * 1024 * 1024,
        request_timeout: float = 60.0,
    ) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.v1 = contract.PROTOCOL_V1 in protocols
        self.v2 = contract.PROTOCOL_V2 in protocols
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "POST":
            if self.v2 and path.startswith("/v2/models/") and path.endswith("/infer"):
                await self._infer(scope, receive, send, contract.PROTOCOL_V2, path[11:-6])
                return
            if self.v1 and path.startswith("/v1/models/") and path.endswith(":predict"):
                await self._infer(scope, receive, send, contract.PROTOCOL_V1, path[11:-8])
                return
        elif method in ("GET", "HEAD"):
            try:
                found = self._get(path)
            except (ModelNotFound, ModelNotReady) as error:
                found = _STATUS_BY_ERROR[type(error)], codecs.error_body(str(error)), None
            if found is None:
                found = 404, codecs.error_body(f"no route {path}"), None
            await _respond(send, *found)
            return
        known = self._route_exists(path)
        await _respond(
            send,
            405 if known else 404,
            codecs.error_body(f"{method} {path} is not supported" if known else f"no route {path}"),
        )

    def _route_exists(self, path: str) -> bool:
        if path.endswith(("/infer", ":predict")):
            return path.startswith(("/v2/models/", "/v1/models/"))
        try:
            return self._get(path) is not None
        except (ModelNotFound, ModelNotReady):
            return True

    def _get(self, path: str) -> tuple[int, bytes, bytes | None] | None:
        """The answer to a GET of ``path``, or None when there is no such route."""
        dataplane = self.dataplane
        if path == contract.LIVE_PATH:
            return 200, b'{"live":true}', None
        if path == contract.READY_PATH:
            ready = dataplane.ready()
            return (200 if ready else 503), orjson.dumps({"ready": ready}), None
        if path == contract.METRICS_PATH:
            if self.metrics is not None:
                self.metrics.flush()
            body, content_type = exposition()
            return 200, body, content_type.encode()
        if self.v2:
            if path == "/v2":
                return 200, orjson.dumps(dataplane.server_metadata()), None
            if path.startswith("/v2/models/"):
                rest = path[11:]
                if rest.endswith("/ready"):
                    ready = dataplane.model_ready(rest[:-6])
                    return (200 if ready else 503), orjson.dumps({"name": rest[:-6], "ready": ready}), None
                if "/" not in rest:
                    return 200, orjson.dumps(dataplane.model_metadata(rest)), None
        if self.v1 and path.startswith("/v1/models/") and "/" not in path[11:] and ":" not in path[11:]:
            name = path[11:]
            return 200, orjson.dumps({"name": name, "ready": dataplane.model_ready(name)}), None
        return None

    async def _infer(self, scope: Scope, receive: Receive, send: Send, protocol: str, name: str) -> None:
        started = time.perf_counter()
        metrics = self.metrics
        if metrics is not None:
            metrics.in_flight_now += 1
        status = 500
        try:
            status, body, headers = await self._infer_body(scope, receive, protocol, name)
            await _respond(send, status, body, extra_headers=headers)
        except ClientGone:
            status = 499
        finally:
            if metrics is not None:
                metrics.in_flight_now -= 1
                metrics.observe_request(protocol, status, time.perf_counter() - started)

    async def _infer_body(
        self, scope: Scope, receive: Receive, protocol: str, name: str
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]] | None]:
        dataplane = self.dataplane
        try:
            model = dataplane.model(name)
            body = await self._read_body(scope, receive)
            if protocol == contract.PROTOCOL_V2:
                request = codecs.decode_v2(body, dataplane.signature, dataplane.output_names)
            else:
                request = codecs.decode_v1(body, dataplane.signature)
            async with asyncio.timeout(self.request_timeout):
                outputs, names = await dataplane.infer(request)
            if protocol == contract.PROTOCOL_V2:
                return 200, codecs.encode_v2(model.options.name, request.id, outputs, names), None
            return 200, codecs.encode_v1(outputs, names), None
        except BodyTooLarge:
            return (
                413,
                codecs.error_body(f"request body exceeds the limit of {self.max_body_bytes} bytes"),
                None,
            )
        except TimeoutError:
            return 504, codecs.error_body(f"inference took longer than {self.request_timeout:g} s"), None
        except Overloaded as error:
            return 503, codecs.error_body(str(error)), [(b"retry-after", RETRY_AFTER_SECONDS)]
        except (InvalidInput, ModelNotFound, ModelNotReady, ModelError) as error:
            return _STATUS_BY_ERROR[type(error)], codecs.error_body(str(error)), None

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    if int(value) > limit:
                        raise BodyTooLarge
                except ValueError:
                    raise InvalidInput("the Content-Length header is not a number") from None
                break
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if message["type"] == "http.disconnect":
                raise ClientGone
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type)] if content_type else list(_JSON)
    headers.append((b"content-length", str(len(body)).encode()))
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
