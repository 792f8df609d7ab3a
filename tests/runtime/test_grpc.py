"""OIP v2 over gRPC (inference.GRPCInferenceService) against a running server process."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import modelplane_contract as contract
import numpy as np
import pytest
from modelplane_runtime.grpc.generated import inference_pb2 as pb
from modelplane_runtime.grpc.generated import inference_pb2_grpc as pb_grpc
from sklearn.linear_model import LogisticRegression

from tests.runtime.models import iris
from tests.runtime.serving import RunningServer
from tests.support.cluster import wait_until

FEATURES, _ = iris()
ROWS = FEATURES[::10]


@pytest.fixture
def stub(iris_server: RunningServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{iris_server.grpc_port}") as channel:
        # The generated module (grpcio-tools) is untyped; its .pyi covers the messages only.
        yield pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]


def infer_request(rows: np.ndarray, *outputs: str, raw: bool = False) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP64", shape=list(rows.shape))
    request = pb.ModelInferRequest(model_name="iris", id="g1", inputs=[tensor])
    if raw:
        request.raw_input_contents.append(rows.astype("<f8").tobytes())
    else:
        request.inputs[0].contents.fp64_contents.extend(rows.ravel().tolist())
    request.outputs.extend(pb.ModelInferRequest.InferRequestedOutputTensor(name=name) for name in outputs)
    return request


def test_health_and_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="iris")).ready
    assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "modelplane-runtime"
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris"))
    assert metadata.platform == "sklearn"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("input-0", "FP64", [-1, 4])]


def test_infer_equals_sklearn(
    stub: pb_grpc.GRPCInferenceServiceStub, iris_model: tuple[Path, LogisticRegression]
) -> None:
    estimator = iris_model[1]
    response = stub.ModelInfer(infer_request(ROWS, "predict", "predict_proba"))
    assert response.model_name == "iris"
    assert response.id == "g1"
    predict, proba = response.outputs
    assert (predict.name, predict.datatype, list(predict.shape)) == ("predict", "INT64", [len(ROWS)])
    assert list(predict.contents.int64_contents) == estimator.predict(ROWS).tolist()
    np.testing.assert_array_equal(
        np.reshape(proba.contents.fp64_contents, list(proba.shape)), estimator.predict_proba(ROWS)
    )


def test_raw_contents_in_and_out(
    stub: pb_grpc.GRPCInferenceServiceStub, iris_model: tuple[Path, LogisticRegression]
) -> None:
    response = stub.ModelInfer(infer_request(ROWS, raw=True))
    assert len(response.raw_output_contents) == 1
    labels = np.frombuffer(response.raw_output_contents[0], dtype="<i8")
    assert labels.tolist() == iris_model[1].predict(ROWS).tolist()
    assert struct.calcsize("<q") * len(ROWS) == len(response.raw_output_contents[0])


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (infer_request(ROWS[:, :3]), grpc.StatusCode.INVALID_ARGUMENT, "expects [-1, 4]"),
        (pb.ModelInferRequest(model_name="iris"), grpc.StatusCode.INVALID_ARGUMENT, "non-empty list"),
        (
            pb.ModelInferRequest(model_name="nope", inputs=[pb.ModelInferRequest.InferInputTensor()]),
            grpc.StatusCode.NOT_FOUND,
            "not served here",
        ),
        (infer_request(ROWS, "nothing"), grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'nothing'"),
    ],
)
def test_errors_carry_status_codes_and_reasons(
    stub: pb_grpc.GRPCInferenceServiceStub,
    request_: pb.ModelInferRequest,
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request_)
    assert raised.value.code() == code
    assert message in raised.value.details()


def test_grpc_calls_are_counted_like_rest_ones(
    stub: pb_grpc.GRPCInferenceServiceStub, iris_server: RunningServer
) -> None:
    """The data plane records every protocol's requests: gRPC ones under protocol="grpc" with the
    HTTP code of their outcome, as REST ones."""
    stub.ModelInfer(infer_request(ROWS))
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(infer_request(ROWS, "nothing"))

    def counted() -> tuple[float, float] | None:
        text = httpx.get(f"{iris_server.url}{contract.METRICS_PATH}").text
        found = []
        for code in ("200", "400"):
            labels = f'code="{code}",model="iris",protocol="grpc"'
            pattern = rf"^{contract.METRIC_REQUESTS_TOTAL}{{{labels}}} (\S+)$"
            match = re.search(pattern, text, re.MULTILINE)
            found.append(float(match.group(1)) if match else 0.0)
        return (found[0], found[1]) if found[0] >= 1 and found[1] >= 1 else None

    # Workers write their counts to the shared files at least once a second.
    wait_until("gRPC requests in the metrics", counted, timeout=10, interval=0.2)
