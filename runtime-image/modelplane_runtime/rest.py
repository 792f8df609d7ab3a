"""KServe v1 and Open Inference Protocol v2 over REST: a bare ASGI app over the data plane.

The routes are the rows of :data:`ROUTES`; a path is matched once, against that table, and the
row's handler translates between HTTP and the data plane. A handler answers through its
:class:`Exchange`: :meth:`Exchange.respond` for one body, or :meth:`Exchange.start` then
:meth:`Exchange.write` for a stream (server-sent events, for example). Adding a protocol's routes
is adding rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

import modelplane_contract as contract
import orjson

from modelplane_runtime import codecs
from modelplane_runtime.dataplane import DataPlane
from modelplane_runtime.errors import ClientGone, InvalidInput, Overloaded, RuntimeFailure

CONSUMER_HEADER: Final = contract.CONSUMER_HEADER.encode()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Header = tuple[bytes, bytes]
Headers = list[Header]

JSON: Final = b"application/json"
EVENT_STREAM: Final = b"text/event-stream"
RETRY_AFTER_SECONDS = b"1"
# Extra headers of an error's answer, by its class (a full queue says when to come back).
_ERROR_HEADERS: dict[type[RuntimeFailure], Headers] = {Overloaded: [(b"retry-after", RETRY_AFTER_SECONDS)]}
_CONNECTION_CLOSE: Final = (b"connection", b"close")
NAME_PARAMETER: Final = "{name}"


class BodyTooLarge(RuntimeFailure):
    status = 413


class Exchange:
    """One HTTP request and its answer. ``name`` is the route's ``{name}`` segment, if it has one."""

    __slots__ = ("_app", "_receive", "_send", "name", "scope")

    def __init__(self, app: RestApp, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        self._app = app
        self.scope = scope
        self._receive = receive
        self._send = send
        self.name = name

    def header(self, name: bytes) -> str | None:
        """The first value of the request header NAME (lowercase), if any."""
        for key, value in self.scope["headers"]:
            if key == name:
                return bytes(value).decode("latin-1")
        return None

    @property
    def client_id(self) -> str | None:
        """The client id the gateway forwarded (contract.CONSUMER_HEADER), if any."""
        return self.header(CONSUMER_HEADER)

    async def body(self) -> bytes:
        """The whole request body, refused past the server's limit (:class:`BodyTooLarge`)."""
        limit = self._app.max_body_bytes
        for key, value in self.scope["headers"]:
            if key == b"content-length":
                try:
                    if int(value) > limit:
                        raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
                except ValueError:
                    raise InvalidInput("the Content-Length header is not a number") from None
                break
        message = await self._receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if message["type"] == "http.disconnect":
                raise ClientGone
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _headers(self, content_type: bytes, extra: Iterable[Header]) -> Headers:
        headers = [(b"content-type", content_type), *extra]
        if self._app.dataplane.draining:
            # A kept-alive connection stays pinned (by conntrack) to this terminating pod: closing
            # it after this answer makes the client's next request open one to a pod that stays.
            headers.append(_CONNECTION_CLOSE)
        return headers

    async def respond(
        self, status: int, body: bytes, content_type: bytes = JSON, headers: Iterable[Header] = ()
    ) -> None:
        """The whole answer at once."""
        all_headers = self._headers(content_type, headers)
        all_headers.append((b"content-length", str(len(body)).encode()))
        await self._send({"type": "http.response.start", "status": status, "headers": all_headers})
        await self._send({"type": "http.response.body", "body": body})

    async def start(
        self, status: int = 200, content_type: bytes = EVENT_STREAM, headers: Iterable[Header] = ()
    ) -> None:
        """Begin a streamed answer (chunked); :meth:`write` its parts, the last with ``more=False``."""
        all_headers = self._headers(content_type, headers)
        all_headers.append((b"cache-control", b"no-cache"))
        await self._send({"type": "http.response.start", "status": status, "headers": all_headers})

    async def write(self, chunk: bytes, *, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": chunk, "more_body": more})

    async def disconnected(self) -> None:
        """Return once the client hangs up (call after :meth:`body`): a long answer races it."""
        while (await self._receive())["type"] != "http.disconnect":
            pass

    async def error(self, error: RuntimeFailure) -> None:
        """The JSON answer to a failure: its status and message."""
        if not isinstance(error, ClientGone):  # nobody to tell
            body = codecs.error_body(str(error))
            await self.respond(error.status, body, headers=_ERROR_HEADERS.get(type(error), ()))


Handler = Callable[["RestApp", Exchange], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    """A row of the route table. ``path`` holds at most one ``{name}``, matching one path segment;
    ``protocol`` is the one that must be enabled for the route to exist (None: always)."""

    method: str
    path: str
    handler: Handler
    protocol: str | None = None


class RestApp:
    def __init__(
        self,
        dataplane: DataPlane,
        protocols: frozenset[str] = frozenset({contract.PROTOCOL_V1, contract.PROTOCOL_V2}),
        max_body_bytes: int = 16 * 1024 * 1024,
        routes: Iterable[Route] | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.max_body_bytes = max_body_bytes
        self.router = Router(
            route for route in (ROUTES if routes is None else routes) if route.protocol in (None, *protocols)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        handler, name, path_known = self.router.match(method, path)
        exchange = Exchange(self, scope, receive, send, name)
        if handler is None:
            if path_known:
                await exchange.respond(405, codecs.error_body(f"{method} {path} is not supported"))
            else:
                await exchange.respond(404, codecs.error_body(f"no route {path}"))
            return
        try:
            await handler(self, exchange)
        except RuntimeFailure as error:
            await exchange.error(error)

    # The handlers of the table's rows.

    async def live(self, exchange: Exchange) -> None:
        await exchange.respond(200, b'{"live":true}')

    async def ready(self, exchange: Exchange) -> None:
        ready = self.dataplane.ready()
        await exchange.respond(200 if ready else 503, orjson.dumps({"ready": ready}))

    async def metrics(self, exchange: Exchange) -> None:
        body, content_type = self.dataplane.metrics_text()
        await exchange.respond(200, body, content_type.encode())

    async def v2_server_metadata(self, exchange: Exchange) -> None:
        await exchange.respond(200, orjson.dumps(self.dataplane.server_metadata()))

    async def v2_model_metadata(self, exchange: Exchange) -> None:
        await exchange.respond(200, orjson.dumps(self.dataplane.model_metadata(exchange.name)))

    async def model_ready(self, exchange: Exchange) -> None:
        ready = self.dataplane.model_ready(exchange.name)
        await exchange.respond(200 if ready else 503, orjson.dumps({"name": exchange.name, "ready": ready}))

    async def v2_infer(self, exchange: Exchange) -> None:
        dataplane = self.dataplane
        with dataplane.call(contract.PROTOCOL_V2, exchange.name, exchange.client_id) as call:
            body = await exchange.body()
            request = codecs.decode_v2(body, dataplane.signature, dataplane.output_names)
            outputs, names = await call.infer(request)
            await exchange.respond(200, codecs.encode_v2(call.model.options.name, request.id, outputs, names))

    async def v1_predict(self, exchange: Exchange) -> None:
        dataplane = self.dataplane
        with dataplane.call(contract.PROTOCOL_V1, exchange.name, exchange.client_id) as call:
            body = await exchange.body()
            request = codecs.decode_v1(body, dataplane.signature)
            outputs, names = await call.infer(request)
            await exchange.respond(200, codecs.encode_v1(outputs, names))


ROUTES: Final = (
    Route("GET", contract.LIVE_PATH, RestApp.live),
    Route("GET", contract.READY_PATH, RestApp.ready),
    Route("GET", contract.METRICS_PATH, RestApp.metrics),
    Route("GET", "/v2", RestApp.v2_server_metadata, contract.PROTOCOL_V2),
    Route("GET", "/v2/models/{name}", RestApp.v2_model_metadata, contract.PROTOCOL_V2),
    Route("GET", "/v2/models/{name}/ready", RestApp.model_ready, contract.PROTOCOL_V2),
    Route("POST", "/v2/models/{name}/infer", RestApp.v2_infer, contract.PROTOCOL_V2),
    Route("GET", "/v1/models/{name}", RestApp.model_ready, contract.PROTOCOL_V1),
    Route("POST", "/v1/models/{name}:predict", RestApp.v1_predict, contract.PROTOCOL_V1),
)


class Router:
    """Matches a request against the routes: exact paths by one lookup, ``{name}`` paths by prefix
    and suffix, the most specific first. HEAD is answered as GET."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        templated: dict[tuple[str, str], dict[str, Handler]] = {}
        for route in routes:
            prefix, parameter, suffix = route.path.partition(NAME_PARAMETER)
            if NAME_PARAMETER in suffix:
                raise ValueError(f"route {route.path}: at most one {NAME_PARAMETER}")
            if parameter:
                methods = templated.setdefault((prefix, suffix), {})
            else:
                methods = self._exact.setdefault(prefix, {})
            if route.method in methods:
                raise ValueError(f"two routes for {route.method} {route.path}")
            methods[route.method] = route.handler
        self._templated = sorted(
            ((prefix, suffix, methods) for (prefix, suffix), methods in templated.items()),
            key=lambda row: -(len(row[0]) + len(row[1])),
        )

    def match(self, method: str, path: str) -> tuple[Handler | None, str, bool]:
        """The handler (None if no route has this method), the ``{name}`` segment, and whether
        any route has this path."""
        if method == "HEAD":
            method = "GET"
        methods = self._exact.get(path)
        if methods is not None:
            return methods.get(method), "", True
        for prefix, suffix, methods in self._templated:
            if path.startswith(prefix) and path.endswith(suffix):
                name = path[len(prefix) : len(path) - len(suffix)]
                if name and "/" not in name:
                    return methods.get(method), name, True
        return None, "", False


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
