"""Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService``).

The stubs in ``generated/`` come from ``inference.proto`` (``make runtime-grpc-stubs``).
"""
