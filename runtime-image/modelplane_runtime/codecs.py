"""Wire formats <-> numpy: KServe v1 instances and Open Inference Protocol v2 tensors.

JSON goes straight to numpy (orjson, no validation library). Every error here is the client's to
fix: it raises :class:`InvalidInput` naming the field and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelplane_runtime.datatypes import NUMPY_BY_DATATYPE, datatype_of
from modelplane_runtime.errors import InvalidInput
from modelplane_runtime.formats.base import Arrays, TensorSpec

_NUMPY_OPTION = orjson.OPT_SERIALIZE_NUMPY
# Kinds of numpy arrays that JSON numbers may become, per target datatype kind.
_ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}


@dataclass(frozen=True)
class InferRequest:
    """A decoded request: inputs by the model's input names, and the outputs asked for (or None)."""

    inputs: Arrays
    outputs: tuple[str, ...] | None = None
    id: str | None = None


def loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(dim) is int and dim >= 0 for dim in value):
        raise InvalidInput(f"{where}.shape must be a list of non-negative integers, got {value!r:.80}")
    return tuple(value)


def tensor_from_data(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray[Any, Any]:
    """A numpy array of ``datatype`` and ``shape`` from JSON ``data`` (flat or nested lists)."""
    dtype = NUMPY_BY_DATATYPE.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInput(f"{where}.datatype {datatype!r:.40} is not one of {', '.join(NUMPY_BY_DATATYPE)}")
    if not isinstance(data, list):
        data = [data]
    try:
        if datatype == "BYTES":
            array = _bytes_array(data, where)
        else:
            array = np.asarray(data)
            if array.dtype.kind not in _ACCEPTED_KINDS[dtype.kind] and array.size:
                raise InvalidInput(
                    f"{where}.data must hold only {'booleans' if dtype.kind == 'b' else 'numbers'} "
                    f"for datatype {datatype}"
                )
            if dtype.kind in "iu" and array.size:
                info = np.iinfo(dtype)
                if array.min() < info.min or array.max() > info.max:
                    raise InvalidInput(f"{where}.data has values outside the range of {datatype}")
            array = array.astype(dtype, copy=False)
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInput(f"{where}.data is not a regular array of {datatype}: {error}") from None
    if array.size != math.prod(shape):
        raise InvalidInput(
            f"{where}.data has {array.size} elements but shape {list(shape)} needs {math.prod(shape)}"
        )
    return array.reshape(shape)


def _bytes_array(data: list[Any], where: str) -> np.ndarray[Any, Any]:
    flat: list[Any] = []
    stack = [data]
    while stack:
        for item in stack.pop():
            if isinstance(item, list):
                stack.append(item)
            elif isinstance(item, str):
                flat.append(item.encode())
            elif isinstance(item, bytes):
                flat.append(item)
            else:
                raise InvalidInput(f"{where}.data must hold only strings for datatype BYTES")
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array


def decode_v2(body: bytes, signature: Sequence[TensorSpec], output_names: Sequence[str]) -> InferRequest:
    """An OIP v2 REST inference request, checked against the model's signature."""
    request = loads(body)
    if not isinstance(request, dict):
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request 'inputs' must be a non-empty list of tensors")
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for index, tensor in enumerate(raw_inputs):
        where = f"inputs[{index}]"
        if not isinstance(tensor, dict):
            raise InvalidInput(f"{where} must be an object with name, shape, datatype and data")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise InvalidInput(f"{where}.name must be a string")
        if "data" not in tensor:
            raise InvalidInput(f"{where} ({name}) has no 'data'")
        shape = _shape(tensor.get("shape"), where)
        tensors[name] = tensor_from_data(tensor["data"], tensor.get("datatype"), shape, where)  # type: ignore[arg-type]
    outputs = _requested_outputs(request.get("outputs"), output_names)
    request_id = request.get("id")
    return InferRequest(
        inputs=conform(tensors, signature),
        outputs=outputs,
        id=request_id if isinstance(request_id, str) else None,
    )


def _requested_outputs(value: Any, output_names: Sequence[str]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in value
    ):
        raise InvalidInput("request 'outputs' must be a list of objects with a 'name'")
    names = tuple(item["name"] for item in value)
    return check_output_names(names, output_names)


def check_output_names(names: Sequence[str], output_names: Sequence[str]) -> tuple[str, ...] | None:
    unknown = [name for name in names if name not in output_names]
    if unknown:
        raise InvalidInput(
            f"unknown output {unknown[0]!r:.60}: this model has outputs {', '.join(output_names)}"
        )
    return tuple(names) or None


def conform(tensors: Mapping[str, np.ndarray[Any, Any]], signature: Sequence[TensorSpec]) -> Arrays:
    """Match request tensors to the model's inputs (name, rank, fixed dimensions, type); cast numbers."""
    if len(signature) == 1 and len(tensors) == 1:
        # One input: its name is not worth a round trip (KServe and MLServer accept any name too).
        pairs = [(signature[0], next(iter(tensors.values())))]
    else:
        missing = [spec.name for spec in signature if spec.name not in tensors]
        extra = [name for name in tensors if name not in {spec.name for spec in signature}]
        if missing or extra:
            raise InvalidInput(
                f"inputs do not match the model: missing {missing or 'none'}, unexpected {extra or 'none'}"
            )
        pairs = [(spec, tensors[spec.name]) for spec in signature]
    conformed: Arrays = {}
    rows: int | None = None
    for spec, array in pairs:
        if array.ndim != len(spec.shape) or any(
            want >= 0 and have != want for have, want in zip(array.shape, spec.shape, strict=False)
        ):
            raise InvalidInput(
                f"input {spec.name!r} has shape {list(array.shape)} but the model expects {list(spec.shape)} "
                "(-1 is any size)"
            )
        if array.ndim == 0:
            raise InvalidInput(f"input {spec.name!r} needs a batch dimension")
        if rows is not None and array.shape[0] != rows:
            raise InvalidInput("all inputs must have the same number of rows (first dimension)")
        rows = array.shape[0]
        conformed[spec.name] = _cast(array, spec)
    return conformed


def _cast(array: np.ndarray[Any, Any], spec: TensorSpec) -> np.ndarray[Any, Any]:
    want = NUMPY_BY_DATATYPE[spec.datatype]
    if array.dtype == want:
        return array
    have = array.dtype.kind
    if want.kind == "O" or have == "O" or (want.kind == "b") != (have == "b"):
        raise InvalidInput(
            f"input {spec.name!r} has datatype {datatype_of(array.dtype)}, the model expects {spec.datatype}"
        )
    return array.astype(want)


def decode_v1(body: bytes, signature: Sequence[TensorSpec]) -> InferRequest:
    """A KServe v1 request: ``{"instances": [...]}`` (or ``{"inputs": [...]}``), one item per row."""
    request = loads(body)
    if not isinstance(request, dict):
        raise InvalidInput('request body must be a JSON object like {"instances": [[...], ...]}')
    instances = request.get("instances", request.get("inputs"))
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("request 'instances' must be a non-empty list (one item per row)")
    if all(isinstance(item, dict) for item in instances) and (
        len(signature) > 1 or signature[0].name in instances[0]
    ):
        # One object per row keyed by input name (a model whose inputs are named columns).
        for index, item in enumerate(instances):
            missing = [spec.name for spec in signature if spec.name not in item]
            if missing:
                raise InvalidInput(
                    f"instances[{index}] has no {', '.join(map(repr, missing))}: each row needs "
                    f"every input of the model ({', '.join(spec.name for spec in signature)})"
                )
        columns = {spec.name: [item[spec.name] for item in instances] for spec in signature}
        tensors = {name: _v1_array(values, f"instances[].{name}") for name, values in columns.items()}
    else:
        tensors = {signature[0].name: _v1_array(instances, "instances")}
    return InferRequest(inputs=conform(tensors, signature))


def _v1_array(values: list[Any], where: str) -> np.ndarray[Any, Any]:
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInput(
            f"{where} is not a regular array (every row needs the same length): {error}"
        ) from None
    if array.dtype.kind == "U":
        array = _bytes_array(values, where).reshape(array.shape)
    elif array.dtype.kind not in "biuf":
        raise InvalidInput(f"{where} must hold numbers or strings, with every row the same length")
    return array


def _jsonable(array: np.ndarray[Any, Any]) -> Any:
    if (array.dtype.kind in "biuf" and array.dtype.itemsize > 2) or array.dtype.kind == "b":
        return array
    if array.dtype.kind in "OS":
        return [
            item.decode(errors="replace") if isinstance(item, bytes) else item
            for item in array.ravel().tolist()
        ]
    return array.tolist()


def encode_v1(outputs: Arrays, names: Sequence[str]) -> bytes:
    """``{"predictions": [...]}`` from the first requested output."""
    array = outputs[names[0]]
    value = _jsonable(array)
    if isinstance(value, list) and array.ndim > 1 and array.dtype.kind in "OS":
        value = np.asarray(value, dtype=object).reshape(array.shape).tolist()
    return orjson.dumps({"predictions": value}, option=_NUMPY_OPTION)


def encode_v2(model_name: str, request_id: str | None, outputs: Arrays, names: Sequence[str]) -> bytes:
    tensors = []
    for name in names:
        array = outputs[name]
        tensors.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype_of(array.dtype),
                "data": _jsonable(array.ravel()),
            }
        )
    response: dict[str, Any] = {"model_name": model_name, "outputs": tensors}
    if request_id is not None:
        response["id"] = request_id
    return orjson.dumps(response, option=_NUMPY_OPTION)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
