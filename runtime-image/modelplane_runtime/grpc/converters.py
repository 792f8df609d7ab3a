"""OIP v2 protobuf tensors <-> numpy, with the same checks as the REST codecs."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelplane_runtime import codecs
from modelplane_runtime.datatypes import NUMPY_BY_DATATYPE, datatype_of
from modelplane_runtime.errors import InvalidInput
from modelplane_runtime.formats.base import Arrays, TensorSpec
from modelplane_runtime.grpc.generated import inference_pb2 as pb

_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_request(
    request: pb.ModelInferRequest, signature: Sequence[TensorSpec], output_names: Sequence[str]
) -> codecs.InferRequest:
    if not request.inputs:
        raise InvalidInput("request 'inputs' must be a non-empty list of tensors")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but there are {len(request.inputs)} inputs"
        )
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for index, tensor in enumerate(request.inputs):
        where = f"inputs[{index}]"
        shape = tuple(tensor.shape)
        if any(dim < 0 for dim in shape):
            raise InvalidInput(f"{where}.shape must hold non-negative integers, got {list(shape)}")
        if tensor.datatype not in NUMPY_BY_DATATYPE:
            raise InvalidInput(
                f"{where}.datatype {tensor.datatype!r:.40} is not one of {', '.join(NUMPY_BY_DATATYPE)}"
            )
        if raw:
            array = _from_raw(raw[index], tensor.datatype, where)
            if array.size != math.prod(shape):
                raise InvalidInput(
                    f"{where} has {array.size} elements but shape {list(shape)} needs {math.prod(shape)}"
                )
            tensors[tensor.name] = array.reshape(shape)
            continue
        field = _CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            raise InvalidInput(f"{where}: datatype {tensor.datatype} travels only in raw_input_contents")
        values = getattr(tensor.contents, field)
        if tensor.datatype == "BYTES":
            data: Any = list(values)
        else:
            data = np.asarray(values, dtype=NUMPY_BY_DATATYPE[tensor.datatype])
            if data.size != math.prod(shape):
                raise InvalidInput(
                    f"{where} has {data.size} elements but shape {list(shape)} needs {math.prod(shape)}"
                )
            tensors[tensor.name] = data.reshape(shape)
            continue
        tensors[tensor.name] = codecs.tensor_from_data(data, tensor.datatype, shape, where)
    outputs = codecs.check_output_names([output.name for output in request.outputs], output_names)
    return codecs.InferRequest(
        inputs=codecs.conform(tensors, signature), outputs=outputs, id=request.id or None
    )


def _from_raw(raw: bytes, datatype: str, where: str) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        items: list[bytes] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise InvalidInput(f"{where}: BYTES raw contents must be 4-byte length-prefixed items")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise InvalidInput(f"{where}: a BYTES item runs past the end of its raw contents")
            items.append(raw[offset : offset + length])
            offset += length
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array
    dtype = NUMPY_BY_DATATYPE[datatype].newbyteorder("<")
    if len(raw) % dtype.itemsize:
        raise InvalidInput(f"{where}: raw contents of {len(raw)} bytes are not a whole number of {datatype}")
    return np.frombuffer(raw, dtype=dtype)


def encode_response(
    model_name: str, request_id: str | None, outputs: Arrays, names: Sequence[str], raw: bool
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model_name, id=request_id or "")
    for name in names:
        array = outputs[name]
        datatype = datatype_of(array.dtype)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        field = _CONTENTS_FIELD.get(datatype)
        if raw or field is None:
            response.raw_output_contents.append(_to_raw(array, datatype))
        elif datatype == "BYTES":
            getattr(tensor.contents, field).extend(
                item if isinstance(item, bytes) else str(item).encode() for item in array.ravel().tolist()
            )
        else:
            getattr(tensor.contents, field).extend(array.ravel().tolist())
    return response


def _to_raw(array: np.ndarray[Any, Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in array.ravel().tolist():
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
