"""v1 / v2 JSON <-> numpy, and the errors a client sees."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from modelplane_runtime import codecs
from modelplane_runtime.errors import InvalidInput
from modelplane_runtime.formats.base import TensorSpec

SIGNATURE = [TensorSpec("input-0", "FP64", (-1, 4))]
OUTPUTS = ("predict", "predict_proba")


def v2(inputs: list[dict[str, object]], **extra: object) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


def test_v2_flat_data_is_reshaped_and_cast_to_the_model_type() -> None:
    body = v2([{"name": "x", "shape": [2, 4], "datatype": "INT32", "data": [1, 2, 3, 4, 5, 6, 7, 8]}])
    request = codecs.decode_v2(body, SIGNATURE, OUTPUTS)
    array = request.inputs["input-0"]
    assert array.dtype == np.float64
    assert array.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert request.outputs is None


def test_v2_nested_data_id_and_requested_outputs() -> None:
    body = v2(
        [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [[0.5, 1, 2, 3]]}],
        id="abc",
        outputs=[{"name": "predict_proba"}],
    )
    request = codecs.decode_v2(body, SIGNATURE, OUTPUTS)
    assert request.id == "abc"
    assert request.outputs == ("predict_proba",)
    assert request.inputs["input-0"].tolist() == [[0.5, 1, 2, 3]]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (
            {"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3]},
            "has 3 elements but shape [2, 4]",
        ),
        ({"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}, "expects [-1, 4]"),
        (
            {"name": "x", "shape": [1, 4], "datatype": "FP128", "data": [1, 2, 3, 4]},
            "datatype 'FP128' is not one of",
        ),
        (
            {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ["a", "b", "c", "d"]},
            "must hold only numbers",
        ),
        (
            {"name": "x", "shape": [1, 4], "datatype": "INT8", "data": [1, 2, 3, 300]},
            "outside the range of INT8",
        ),
        (
            {"name": "x", "shape": [1, 4], "datatype": "INT32", "data": [1.5, 2, 3, 4]},
            "must hold only numbers",
        ),
        ({"name": "x", "shape": [1, 4], "datatype": "BOOL", "data": [1, 0, 1, 0]}, "must hold only booleans"),
        ({"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}, "expects FP64"),
        (
            {"name": "x", "shape": [-1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]},
            "shape must be a list of non-negative",
        ),
        ({"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [[1, 2], [3]]}, "not a regular array"),
        ({"name": "x", "shape": [1, 4], "datatype": "FP64"}, "has no 'data'"),
        ({"shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}, "inputs[0].name must be a string"),
    ],
)
def test_v2_bad_tensors_name_the_problem(tensor: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        codecs.decode_v2(v2([tensor]), SIGNATURE, OUTPUTS)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"inputs": []}', "non-empty list"),
        (
            (
                b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}], '
                b'"outputs": [{"name": "nope"}]}'
            ),
            "unknown output 'nope'",
        ),
    ],
)
def test_v2_bad_bodies_name_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        codecs.decode_v2(body, SIGNATURE, OUTPUTS)
    assert message in str(raised.value)


def test_v2_bytes_and_several_named_inputs() -> None:
    signature = [TensorSpec("text", "BYTES", (-1,)), TensorSpec("flag", "BOOL", (-1, 1))]
    body = v2(
        [
            {"name": "flag", "shape": [2, 1], "datatype": "BOOL", "data": [True, False]},
            {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["héllo", "b"]},
        ]
    )
    request = codecs.decode_v2(body, signature, ("out",))
    assert request.inputs["text"].tolist() == ["héllo".encode(), b"b"]
    assert request.inputs["flag"].dtype == np.bool_
    missing = v2([{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}])
    with pytest.raises(InvalidInput, match=r"missing \['flag'\]"):
        codecs.decode_v2(missing, signature, ("out",))


def test_v2_response_is_flat_with_shape_and_datatype() -> None:
    outputs = {"predict": np.array([0, 2]), "predict_proba": np.array([[0.25, 0.75], [1.0, 0.0]])}
    body = orjson.loads(codecs.encode_v2("iris", "7", outputs, ("predict", "predict_proba")))
    assert body == {
        "model_name": "iris",
        "id": "7",
        "outputs": [
            {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 2]},
            {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": [0.25, 0.75, 1.0, 0.0]},
        ],
    }
    labels = {"predict": np.array(["setosa", "virginica"])}
    assert orjson.loads(codecs.encode_v2("iris", None, labels, ("predict",)))["outputs"][0]["data"] == [
        "setosa",
        "virginica",
    ]


def test_v1_instances_in_and_predictions_out() -> None:
    request = codecs.decode_v1(b'{"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}', SIGNATURE)
    assert request.inputs["input-0"].shape == (2, 4)
    assert request.inputs["input-0"].dtype == np.float64
    assert orjson.loads(codecs.encode_v1({"predict": np.array([1, 0])}, ("predict",))) == {
        "predictions": [1, 0]
    }
    for body, message in [
        (b'{"instances": [[1, 2, 3]]}', "expects [-1, 4]"),
        (b'{"instances": [[1, 2, 3, 4], [1]]}', "not a regular array"),
        (b'{"rows": [[1, 2, 3, 4]]}', "'instances' must be a non-empty list"),
        (b'{"instances": [[{}, 2, 3, 4]]}', "must hold numbers or strings"),
    ]:
        with pytest.raises(InvalidInput) as raised:
            codecs.decode_v1(body, SIGNATURE)
        assert message in str(raised.value)
