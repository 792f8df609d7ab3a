"""The ONNX form of a loaded model, and dynamic int8 quantization of an ONNX graph."""

from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from modelplane_runtime.datatypes import NUMPY_BY_DATATYPE
from modelplane_runtime.formats.base import Model, find_artifact

LABEL: Final = "label"  # compared by agreement
VALUES: Final = "values"  # compared by absolute and relative error
#: Graph operators dynamic quantization rewrites; a graph without them has nothing to quantize.
QUANTIZABLE_OPS: Final = frozenset({"MatMul", "Gemm"})
#: The ONNX opset tf2onnx writes (onnxruntime runs it; the one measured here).
TF2ONNX_OPSET: Final = 17


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
    """The ONNX form of ``model`` (a scikit-learn estimator, an XGBoost/LightGBM booster or a
    TensorFlow model converted, an ONNX model as it is)."""
    if model.format_name == "onnx":
        path = find_artifact(model.options.model_dir, (".onnx",), "ONNX model")
        outputs = tuple(
            OutputMap(spec.name, spec.name, VALUES if spec.datatype.startswith("FP") else LABEL)
            for spec in model.outputs
        )
        return OnnxForm(path.read_bytes(), outputs, "none (already ONNX)")
    if model.format_name == "sklearn":
        return _sklearn(model)
    if model.format_name in ("xgboost", "lightgbm"):
        return _booster(model)
    if model.format_name == "tensorflow":
        return _tensorflow(model)
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


#: What answers for a booster's ``predict`` in the classifier or regressor graph onnxmltools makes,
#: by the booster's objective: all class probabilities, the positive class's, the class, the value.
PROBABILITIES, POSITIVE_PROBABILITY, CLASS, VALUE = "probabilities", "positive", "class", "value"
BOOSTER_OBJECTIVES: Final = {
    "xgboost": {
        "multi:softprob": PROBABILITIES,
        "multi:softmax": CLASS,
        "binary:logistic": POSITIVE_PROBABILITY,
        "reg:squarederror": VALUE,
        "reg:squaredlogerror": VALUE,
        "reg:absoluteerror": VALUE,
        "reg:pseudohubererror": VALUE,
        "reg:logistic": VALUE,
        "count:poisson": VALUE,
        "reg:gamma": VALUE,
        "reg:tweedie": VALUE,
    },
    "lightgbm": {
        "multiclass": PROBABILITIES,
        "multiclassova": PROBABILITIES,
        "binary": POSITIVE_PROBABILITY,
        "regression": VALUE,
        "regression_l1": VALUE,
        "huber": VALUE,
        "fair": VALUE,
        "poisson": VALUE,
        "quantile": VALUE,
        "mape": VALUE,
        "gamma": VALUE,
        "tweedie": VALUE,
    },
}
POSITIVE_OUTPUT: Final = "positive_probability"


def _booster(model: Model) -> OnnxForm:
    """An XGBoost or LightGBM booster through onnxmltools, its graph answering ``predict`` as the
    booster does (the probabilities, the positive class's alone, the class or the value).

    Which graph output that is follows from the objective the booster was trained with; one whose
    predictions this mapping does not know (ranking, survival, raw margins) is not converted.
    """
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    from modelplane_runtime.formats.lightgbm import LightGBMModel
    from modelplane_runtime.formats.xgboost import XGBoostModel

    assert isinstance(model, XGBoostModel | LightGBMModel)
    library = model.format_name
    objective = model.objective
    answer = BOOSTER_OBJECTIVES[library].get(objective)
    if answer is None:
        raise ConversionError(
            f"{library} objective {objective} is not converted here (converted: "
            f"{', '.join(BOOSTER_OBJECTIVES[library])})"
        )
    types = [("input", FloatTensorType([None, model.inputs[0].shape[1]]))]
    try:
        if library == "xgboost":
            graph: Any = onnxmltools.convert_xgboost(model.booster, initial_types=types)
        else:
            graph = onnxmltools.convert_lightgbm(model.booster, initial_types=types, zipmap=False)
    except Exception as error:  # onnxmltools raises many kinds: every one means "no ONNX form"
        raise ConversionError(f"onnxmltools cannot convert this {library} booster: {error}") from error
    names = [output.name for output in graph.graph.output]
    if answer == VALUE:
        served = OutputMap("predict", names[0], VALUES)
    elif answer == CLASS:
        served = OutputMap("predict", names[0], LABEL)
    elif answer == PROBABILITIES:
        served = OutputMap("predict", names[1], VALUES)
    else:
        _add_column_output(graph, names[1], 1, POSITIVE_OUTPUT)
        served = OutputMap("predict", POSITIVE_OUTPUT, VALUES)
    return OnnxForm(graph.SerializeToString(), (served,), f"onnxmltools {onnxmltools.__version__}")


def _add_column_output(graph: Any, source: str, column: int, name: str) -> None:
    """A graph output ``name`` that is column ``column`` of the (N, K) output ``source``, as (N,)."""
    import onnx
    from onnx import helper

    if not any(opset.domain in ("", "ai.onnx") for opset in graph.opset_import):
        graph.opset_import.append(helper.make_opsetid("", 13))  # Gather is in every opset from 1
    index = f"{name}_index"
    graph.graph.initializer.append(helper.make_tensor(index, onnx.TensorProto.INT64, [], [column]))
    graph.graph.node.append(helper.make_node("Gather", [source, index], [name], axis=1))
    graph.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [None]))


def _tensorflow(model: Model) -> OnnxForm:
    """A SavedModel signature or a Keras model through tf2onnx, traced from the format's own call.

    ``tf2onnx.convert.from_keras`` does not take Keras 3 models (it reads Keras 2 internals), so the
    model is traced as a ``tf.function`` of its inputs in signature order. String tensors have no
    ONNX form here (TensorFlow's string ops are not ONNX operators onnxruntime runs).
    """
    from modelplane_runtime.formats.tensorflow import TensorFlowModel

    # Typed as Any: the tensorflow extra is optional, and its stubs are there only where it is installed.
    tf: Any = importlib.import_module("tensorflow")
    tf2onnx: Any = importlib.import_module("tf2onnx")

    assert isinstance(model, TensorFlowModel)
    strings = [f"{spec.name} (BYTES)" for spec in (*model.inputs, *model.outputs) if spec.datatype == "BYTES"]
    if strings:
        raise ConversionError(
            "ONNX conversion of a TensorFlow model takes numeric tensors only; this one has string "
            "tensors: " + ", ".join(strings)
        )
    signature = [
        tf.TensorSpec(
            [None if dim < 0 else dim for dim in spec.shape],
            tf.as_dtype(NUMPY_BY_DATATYPE[spec.datatype]),
            name=spec.name,
        )
        for spec in model.inputs
    ]
    try:
        graph, _ = tf2onnx.convert.from_function(
            tf.function(model.graph_function()), input_signature=signature, opset=TF2ONNX_OPSET
        )
    except Exception as error:  # tf2onnx raises many kinds: every one means "no ONNX form"
        raise ConversionError(f"tf2onnx cannot convert this TensorFlow model: {error}") from error
    names = [output.name for output in graph.graph.output]
    served = sorted(spec.name for spec in model.outputs)
    if len(names) != len(served):
        raise ConversionError(f"tf2onnx made a graph of {len(names)} outputs for {len(served)} served ones")
    # tf2onnx renames each graph output to its key in the dict the function returns. It renames by
    # tensor, so should a name not come through (two keys of one tensor cannot both keep theirs),
    # the outputs are matched by position: the order tf.function flattens a dict in, sorted by key.
    by_name = dict(zip(served, served if sorted(names) == served else names, strict=True))
    outputs = tuple(
        OutputMap(spec.name, by_name[spec.name], VALUES if spec.datatype.startswith("FP") else LABEL)
        for spec in model.outputs
    )
    return OnnxForm(graph.SerializeToString(), outputs, f"tf2onnx {tf2onnx.__version__}")


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
