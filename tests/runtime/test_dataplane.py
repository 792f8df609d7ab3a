"""The data plane's per-request policy and the REST route table, in-process (no server process)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import modelplane_contract as contract
import orjson
import pytest
from modelplane_runtime.dataplane import DataPlane
from modelplane_runtime.errors import ModelNotFound, RequestTimeout
from modelplane_runtime.rest import EVENT_STREAM, ROUTES, Exchange, RestApp, Route, Router
from modelplane_runtime.server import ServeConfig, load

from tests.runtime.asgi import call, call_json
from tests.runtime.models import make_slow_model_dir

SLOW_CLASS = "tests.runtime.models:SlowModel"
REQUEST = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}


@pytest.fixture(scope="module")
def dataplane(tmp_path_factory: pytest.TempPathFactory) -> DataPlane:
    model_dir = make_slow_model_dir(tmp_path_factory.mktemp("model"), 0.0)
    model = load(ServeConfig(model_dir=model_dir, format="custom", name="m", custom_class=SLOW_CLASS))
    return DataPlane("m", model, request_timeout=0.2)


async def numbers(count: int, pause: float = 0.0) -> AsyncIterator[int]:
    for number in range(count):
        await asyncio.sleep(pause)
        yield number


async def count_events(app: RestApp, exchange: Exchange) -> None:
    """A streaming route as the OpenAI front will add them: one row, answered through the Call."""
    with app.dataplane.call("test", exchange.name) as call_:
        await exchange.start()
        async for number in call_.stream(numbers(3)):
            await exchange.write(b"data: " + orjson.dumps({"n": number}) + b"\n\n")
        await exchange.write(b"data: [DONE]\n\n", more=False)


def test_paths_with_no_route_get_404_and_other_methods_405(dataplane: DataPlane) -> None:
    app = RestApp(dataplane)
    assert call_json(app, "GET", "/v3/anything") == (404, {"error": "no route /v3/anything"})
    assert call_json(app, "GET", "/v2/models/m/infer")[0] == 405
    assert call_json(app, "GET", "/v1/models/m:predict")[0] == 405  # not the model-ready route
    assert call_json(app, "DELETE", "/v2/models/m") == (
        405,
        {"error": "DELETE /v2/models/m is not supported"},
    )
    assert call_json(app, "GET", "/v2/models/m/x/ready")[0] == 404  # {name} is one segment
    assert call_json(app, "POST", "/v2/models/m/infer", REQUEST)[0] == 200
    status, _, body = asyncio.run(call(app, "HEAD", contract.LIVE_PATH))
    assert (status, body) == (200, b'{"live":true}')


def test_a_protocol_turned_off_has_no_routes(dataplane: DataPlane) -> None:
    app = RestApp(dataplane, protocols=frozenset({contract.PROTOCOL_V2}))
    assert call_json(app, "POST", "/v1/models/m:predict", {"instances": [[1, 2]]})[0] == 404
    assert call_json(app, "POST", "/v2/models/m/infer", REQUEST)[0] == 200
    assert call_json(app, "GET", contract.READY_PATH) == (200, {"ready": True})


def test_the_route_table_refuses_two_rows_for_one_route() -> None:
    with pytest.raises(ValueError, match=re.escape("two routes for GET /v2/models/{name}")):
        Router([*ROUTES, Route("GET", "/v2/models/{name}", RestApp.live)])


def test_a_streamed_route_is_a_row(dataplane: DataPlane) -> None:
    app = RestApp(dataplane, routes=[*ROUTES, Route("POST", "/test/{name}/events", count_events)])
    status, headers, body = asyncio.run(call(app, "POST", "/test/m/events"))
    assert status == 200
    assert headers["content-type"] == EVENT_STREAM.decode()
    assert "content-length" not in headers  # chunked: the length is not known up front
    assert body == b'data: {"n":0}\n\ndata: {"n":1}\n\ndata: {"n":2}\n\ndata: [DONE]\n\n'
    status, _, body = asyncio.run(call(app, "POST", "/test/other/events"))
    assert status == 404  # the Call looked the model up before anything was streamed
    assert b"not served here" in body


def test_a_stream_is_bounded_by_the_request_timeout(dataplane: DataPlane) -> None:
    async def consume() -> list[int]:
        with dataplane.call("test", "m") as call_:
            return [number async for number in call_.stream(numbers(10, pause=0.05))]

    with pytest.raises(RequestTimeout, match=re.escape("took longer than 0.2 s")):
        asyncio.run(consume())


def test_a_call_for_a_model_not_served_fails_on_entry(dataplane: DataPlane) -> None:
    with pytest.raises(ModelNotFound, match="this server serves 'm'"), dataplane.call("grpc", "other"):
        pass


def test_while_draining_readiness_fails_and_answers_close_their_connection(dataplane: DataPlane) -> None:
    app = RestApp(dataplane)
    _, headers, _ = asyncio.run(call(app, "GET", contract.READY_PATH))
    assert "connection" not in headers
    dataplane.draining = True
    try:
        status, headers, body = asyncio.run(call(app, "GET", contract.READY_PATH))
        assert (status, orjson.loads(body)) == (503, {"ready": False})
        assert headers["connection"] == "close"
        status, headers, _ = asyncio.run(call(app, "POST", "/v2/models/m/infer", orjson.dumps(REQUEST)))
        assert status == 200  # still served: only new connections go elsewhere
        assert headers["connection"] == "close"
    finally:
        dataplane.draining = False
