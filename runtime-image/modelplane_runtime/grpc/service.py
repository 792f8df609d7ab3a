"""The gRPC servicer: a thin translator over the data plane, like the REST app."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from modelplane_runtime import contract
from modelplane_runtime.dataplane import DataPlane
from modelplane_runtime.errors import InvalidInput, ModelError, ModelNotFound, ModelNotReady, Overloaded
from modelplane_runtime.grpc import converters
from modelplane_runtime.grpc.generated import inference_pb2 as pb
from modelplane_runtime.grpc.generated import inference_pb2_grpc as pb_grpc
from modelplane_runtime.metrics import Metrics

_CODE_BY_ERROR: dict[type[Exception], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ModelError: grpc.StatusCode.INTERNAL,
}
# The HTTP-like code recorded in metrics for each gRPC outcome, so dashboards need one label set.
_METRIC_CODE = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
}


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane, metrics: Metrics | None, request_timeout: float) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.request_timeout = request_timeout

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            return pb.ModelReadyResponse(ready=self.dataplane.model_ready(request.name))
        except ModelNotFound as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))
            raise

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        try:
            meta = self.dataplane.model_metadata(request.name)
        except (ModelNotFound, ModelNotReady) as error:
            await context.abort(_CODE_BY_ERROR[type(error)], str(error))
            raise
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**spec) for spec in meta["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**spec) for spec in meta["outputs"]],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        started = time.perf_counter()
        metrics = self.metrics
        if metrics is not None:
            metrics.in_flight_now += 1
        code = grpc.StatusCode.INTERNAL
        try:
            dataplane = self.dataplane
            try:
                model = dataplane.model(request.model_name)
                decoded = converters.decode_request(request, dataplane.signature, dataplane.output_names)
                async with asyncio.timeout(self.request_timeout):
                    outputs, names = await dataplane.infer(decoded)
            except TimeoutError:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                await context.abort(code, f"inference took longer than {self.request_timeout:g} s")
                raise
            except (InvalidInput, ModelNotFound, ModelNotReady, Overloaded, ModelError) as error:
                code = _CODE_BY_ERROR[type(error)]
                await context.abort(code, str(error))
                raise
            code = grpc.StatusCode.OK
            return converters.encode_response(
                model.options.name, decoded.id, outputs, names, raw=bool(request.raw_input_contents)
            )
        finally:
            if metrics is not None:
                metrics.in_flight_now -= 1
                metrics.observe_request(
                    contract.PROTOCOL_GRPC, _METRIC_CODE.get(code, 500), time.perf_counter() - started
                )


def make_server(dataplane: DataPlane, metrics: Metrics | None, port: int, request_timeout: float) -> Any:
    """A grpc.aio server on ``port`` (SO_REUSEPORT, so every worker process listens on it)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        InferenceService(dataplane, metrics, request_timeout), server
    )
    server.add_insecure_port(f"[::]:{port}")
    return server
