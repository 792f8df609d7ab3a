"""The accuracy gate: the optimized model against the original on one sample.

The sample is the artifact's own sample request (``contract.WARMUP_REQUEST_FILE``) when it ships
one, its rows repeated with noise of a tenth of each feature's magnitude, else rows generated
from the signature (standard normal features), for every input; seeded, so every pod measures the
same figures.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Final

import modelplane_contract as contract
import numpy as np

from modelplane_runtime import codecs
from modelplane_runtime.datatypes import NUMPY_BY_DATATYPE
from modelplane_runtime.errors import InvalidInput
from modelplane_runtime.formats.base import Arrays, Model
from modelplane_runtime.optimize.convert import LABEL, ConversionError, OutputMap

SAMPLE_ROWS: Final = 512
SEED: Final = 20240601
#: Noise around shipped rows, relative to each feature's mean magnitude: near the data, not on it.
NOISE: Final = 0.1


@dataclass(frozen=True)
class GateSettings:
    min_agreement: float = contract.GATE_MIN_AGREEMENT
    max_abs_error: float = contract.GATE_MAX_ABS_ERROR
    max_rel_error: float = contract.GATE_MAX_REL_ERROR


@dataclass(frozen=True)
class GateResult:
    passed: bool
    samples: int
    agreement: float | None  # share of labels equal (classifiers); None without a label output
    max_abs_error: float | None  # over every number compared; None without a numeric output
    max_rel_error: float | None
    sample_source: str  # "sample-request.json" or "signature"
    why: str  # what fell short, or "" when passed

    def as_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


def sample_inputs(model: Model, rows: int = SAMPLE_ROWS) -> tuple[Arrays, str]:
    """``rows`` rows of each of the model's inputs, in its datatype, and where they came from.

    Inputs are sampled when they are floats with a free batch dimension and fixed others (a
    matrix of features, say); integers, booleans and strings cannot be made up from a signature.
    """
    for spec in model.inputs:
        batch, *dims = spec.shape or (0,)
        if not spec.datatype.startswith("FP") or batch >= 0 or any(dim < 0 for dim in dims):
            raise ConversionError(
                "the accuracy gate samples float inputs of shape (N, features...) only; input "
                f"{spec.name} is {spec.datatype} {list(spec.shape)}"
            )
    rng = np.random.default_rng(SEED)
    shipped, source = _shipped_rows(model)
    sample: Arrays = {}
    for spec in model.inputs:
        base = shipped.get(spec.name)
        if base is None:
            values = rng.standard_normal((rows, *spec.shape[1:]))
        else:
            scale = np.maximum(np.abs(base).mean(axis=0), 1e-3) * NOISE
            picked = base[rng.integers(0, len(base), rows - len(base))]
            values = np.concatenate([base, picked + rng.standard_normal(picked.shape) * scale])
        sample[spec.name] = values.astype(NUMPY_BY_DATATYPE[spec.datatype])
    return sample, source


def _shipped_rows(model: Model) -> tuple[dict[str, np.ndarray[Any, Any]], str]:
    """The rows of the shipped sample request by input name, or none when it does not fit the signature."""
    path = model.options.model_dir / contract.WARMUP_REQUEST_FILE
    if not path.is_file():
        return {}, "signature"
    try:
        request = codecs.decode_v2(path.read_bytes(), model.inputs, [spec.name for spec in model.outputs])
    except (InvalidInput, ValueError):
        return {}, "signature"
    found = {name: np.asarray(array, dtype=np.float64) for name, array in request.inputs.items()}
    counts = {len(array) if array.ndim else 0 for array in found.values()}
    fits = all(spec.name in found and found[spec.name].ndim == len(spec.shape) for spec in model.inputs)
    if not fits or len(counts) != 1 or 0 in counts:
        return {}, "signature"
    return found, contract.WARMUP_REQUEST_FILE


def compare(
    original: Arrays, optimized: Arrays, outputs: tuple[OutputMap, ...], settings: GateSettings, source: str
) -> GateResult:
    """Labels by agreement, numbers by error (each within the absolute OR the relative bound)."""
    agreement: float | None = None
    abs_error: float | None = None
    rel_error: float | None = None
    numbers_pass = True
    samples = 0
    for output in outputs:
        want, got = np.asarray(original[output.served]), np.asarray(optimized[output.served])
        samples = len(want)
        if want.shape != got.shape:
            return GateResult(
                False, samples, None, None, None, source,
                f"output {output.served} has shape {got.shape}, the original's {want.shape}",
            )  # fmt: skip
        if output.kind == LABEL:
            share = float(np.mean(_as_comparable(want) == _as_comparable(got)))
            agreement = share if agreement is None else min(agreement, share)
            continue
        want64, got64 = want.astype(np.float64), got.astype(np.float64)
        diff = np.abs(want64 - got64)
        rel = diff / np.maximum(np.abs(want64), np.finfo(np.float64).tiny)
        abs_error = max(abs_error or 0.0, float(diff.max(initial=0.0)))
        rel_error = max(rel_error or 0.0, float(rel.max(initial=0.0)))
        within = (diff <= settings.max_abs_error) | (rel <= settings.max_rel_error)
        numbers_pass = numbers_pass and bool(within.all())
    why = []
    if agreement is not None and agreement < settings.min_agreement:
        why.append(f"label agreement {agreement:.4f} is below minAgreement {settings.min_agreement:g}")
    if not numbers_pass:
        why.append(
            f"max absolute error {abs_error:.3g} exceeds maxAbsError {settings.max_abs_error:g} and the "
            f"relative error {rel_error:.3g} exceeds maxRelError {settings.max_rel_error:g} for some values"
        )
    return GateResult(not why, samples, agreement, abs_error, rel_error, source, "; ".join(why))


def _as_comparable(labels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """String labels may come back as str from one engine and bytes from another."""
    if labels.dtype.kind in "OSU":
        return np.array([item.decode() if isinstance(item, bytes) else str(item) for item in labels.ravel()])
    return labels.ravel()


def settings_json(settings: GateSettings) -> str:
    return json.dumps(asdict(settings), sort_keys=True)
