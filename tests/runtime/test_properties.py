"""Property: no request body, however malformed, makes the v2 or v1 endpoint answer 500."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelplane_runtime.dataplane import DataPlane
from modelplane_runtime.datatypes import DATATYPES
from modelplane_runtime.rest import RestApp
from modelplane_runtime.server import ServeConfig, load
from sklearn.linear_model import LogisticRegression

from tests.runtime.asgi import call

# orjson (like most JSON encoders) takes integers of 64 bits, signed or not.
json_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
json_scalars = st.none() | st.booleans() | json_ints | st.floats(allow_nan=False) | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
)
numbers = json_ints | st.floats(allow_nan=False) | st.booleans()
shapes = st.lists(st.integers(min_value=-2, max_value=6), max_size=4) | json_values
data = st.lists(numbers | st.text(max_size=3), max_size=30) | st.lists(
    st.lists(numbers, max_size=5), max_size=6
)
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=8) | json_values,
        "shape": shapes,
        "datatype": st.sampled_from([*DATATYPES, "FP128", ""]) | json_values,
        "data": data | json_values,
        "parameters": json_values,
    },
)
v2_requests = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(tensors, max_size=3) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=15)}), max_size=3) | json_values,
        "id": json_values,
        "parameters": json_values,
    },
)
v1_requests = st.fixed_dictionaries(
    {},
    optional={
        "instances": st.lists(st.lists(numbers | st.text(max_size=3), max_size=6), max_size=4) | json_values
    },
)
bodies = (
    v2_requests.map(orjson.dumps)
    | v1_requests.map(orjson.dumps)
    | json_values.map(orjson.dumps)
    | st.binary(max_size=200)
)


@pytest.fixture(scope="module")
def app(iris_model: tuple[Path, LogisticRegression]) -> RestApp:
    model = load(ServeConfig(model_dir=iris_model[0], format="sklearn", name="iris"))
    return RestApp(DataPlane("iris", model))


def answer(app: RestApp, path: str, body: bytes) -> tuple[int, Any]:
    status, _, raw = asyncio.run(call(app, "POST", path, body))
    return status, orjson.loads(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_malformed_v2_requests_never_get_a_500(app: RestApp, body: bytes) -> None:
    status, payload = answer(app, "/v2/models/iris/infer", body)
    assert status in (200, 400), payload
    if status == 400:
        assert isinstance(payload["error"], str)
        assert payload["error"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_malformed_v1_requests_never_get_a_500(app: RestApp, body: bytes) -> None:
    status, payload = answer(app, "/v1/models/iris:predict", body)
    assert status in (200, 400), payload


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensor=tensors)
def test_well_formed_requests_of_any_numeric_type_are_answered(app: RestApp, tensor: dict[str, Any]) -> None:
    body = orjson.dumps({"inputs": [tensor]})
    status, payload = answer(app, "/v2/models/iris/infer", body)
    assert status in (200, 400), payload
