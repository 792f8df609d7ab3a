"""The ONNX form of a loaded model, and dynamic int8 quantization of an ONNX graph."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from modelplane_runtime.formats.base import Model, find_artifact

LABEL: Final = "label"  # compared by agreement
VALUES: Final = "values"  # compared by absolute and relative error
#: Graph operators dynamic quantization rewrites; a graph without them has nothing to quantize.
QUANTIZABLE_OPS: Final = frozenset({"MatMul", "Gemm"})


class ConversionError(Exception):
    """The model has no ONNX form here; the message says why (the original is served)."""


@dataclass(frozen=True)
class OutputMap:
    """Which graph output answers for one of the original model's outputs, and how to compare it."""

    served: str  # the original's output name (what clients ask for)
    graph: str  # the ONNX graph's output name
    kind: str  # LABEL or VALUES


@dataclass(frozen=True)
class OnnxForm:
    graph: bytes  # a serialized ModelProto
    outputs: tuple[OutputMap, ...]
    converter: str  # what made it (name and version), for status


def to_onnx(model: Model) -> OnnxForm:
    """The ONNX form of ``model`` (a scikit-learn estimator converted, an ONNX model as it is)."""
    if model.format_name == "onnx":
        path = find_artifact(model.options.model_dir, (".onnx",), "ONNX model")
        outputs = tuple(
            OutputMap(spec.name, spec.name, VALUES if spec.datatype.startswith("FP") else LABEL)
            for spec in model.outputs
        )
        return OnnxForm(path.read_bytes(), outputs, "none (already ONNX)")
    if model.format_name == "sklearn":
        return _sklearn(model)
    raise ConversionError(f"format {model.format_name} has no ONNX converter here")


def _sklearn(model: Model) -> OnnxForm:
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.base import is_classifier

    from modelplane_runtime.formats.sklearn import SklearnModel

    assert isinstance(model, SklearnModel)
    if not model.takes_matrix:
        raise ConversionError(
            "ONNX conversion takes models with one numeric matrix input; this one takes "
            + ", ".join(f"{spec.name} ({spec.datatype})" for spec in model.inputs)
        )
    features = model.inputs[0].shape[1]
    estimator = model.estimator
    try:
        graph: Any = skl2onnx.to_onnx(
            estimator,
            initial_types=[("input", FloatTensorType([None, features]))],
            # Tensors out, not a list of dicts: the served outputs stay arrays.
            options={id(estimator): {"zipmap": False}} if is_classifier(estimator) else None,
        )
    except Exception as error:  # skl2onnx raises many kinds: every one means "no ONNX form"
        raise ConversionError(f"skl2onnx cannot convert {type(estimator).__name__}: {error}") from error
    names = [output.name for output in graph.graph.output]
    served = [spec.name for spec in model.outputs]
    outputs: list[OutputMap] = []
    if is_classifier(estimator):
        outputs.append(OutputMap("predict", names[0], LABEL))
        if "predict_proba" in served and len(names) > 1:
            outputs.append(OutputMap("predict_proba", names[1], VALUES))
    else:
        outputs.append(OutputMap("predict", names[0], VALUES))
    return OnnxForm(graph.SerializeToString(), tuple(outputs), f"skl2onnx {skl2onnx.__version__}")


def quantizable(graph: bytes) -> bool:
    """The graph has an operator dynamic int8 quantization applies to (MatMul or Gemm)."""
    import onnx

    proto = onnx.load_from_string(graph)
    return any(node.op_type in QUANTIZABLE_OPS for node in proto.graph.node)


def quantize_int8(graph: bytes) -> bytes:
    """Weights of MatMul/Gemm as int8, activations quantized at run time (onnxruntime's dynamic mode)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="modelplane-quantize-") as work:
        source, target = Path(work, "model.onnx"), Path(work, "model.int8.onnx")
        source.write_bytes(graph)
        quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        return target.read_bytes()
