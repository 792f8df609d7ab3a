"""The gRPC servicer: a thin translator over the data plane, like the REST app."""

from __future__ import annotations

from typing import Any

import grpc
import modelplane_contract as contract

from modelplane_runtime.dataplane import DataPlane
from modelplane_runtime.errors import (
    InvalidInput,
    ModelError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    RequestTimeout,
    RuntimeFailure,
)
from modelplane_runtime.grpc import converters
from modelplane_runtime.grpc.generated import inference_pb2 as pb
from modelplane_runtime.grpc.generated import inference_pb2_grpc as pb_grpc

_CODE_BY_ERROR: dict[type[Exception], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RequestTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    ModelError: grpc.StatusCode.INTERNAL,
}


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

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
        dataplane = self.dataplane
        try:
            with dataplane.call(contract.PROTOCOL_GRPC, request.model_name, _client_id(context)) as call:
                decoded = converters.decode_request(request, dataplane.signature, dataplane.output_names)
                outputs, names = await call.infer(decoded)
                return converters.encode_response(
                    call.model.options.name, decoded.id, outputs, names, raw=bool(request.raw_input_contents)
                )
        except RuntimeFailure as error:
            await context.abort(_CODE_BY_ERROR.get(type(error), grpc.StatusCode.INTERNAL), str(error))
            raise


def _client_id(context: Any) -> str | None:
    """The client id the gateway forwarded (contract.CONSUMER_HEADER metadata), if any."""
    for key, value in context.invocation_metadata() or ():
        if key == contract.CONSUMER_HEADER:
            return str(value)
    return None


def make_server(dataplane: DataPlane, port: int) -> Any:
    """A grpc.aio server on ``port`` (SO_REUSEPORT, so every worker process listens on it)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        InferenceService(dataplane), server
    )
    server.add_insecure_port(f"[::]:{port}")
    return server
