"""`modelplane-runtime optimize`: after the pull, before serving (an init container).

Reads spec.model.optimize (``contract.ENV_OPTIMIZE``, JSON), loads the original, takes the result
for this digest from the cache or makes it (ONNX form, int8 where the graph has MatMul/Gemm, p50
latencies of both at batch 1 and 64), runs the accuracy gate, and leaves
``OPTIMIZED_DIR/OPTIMIZED_RECORD_FILE`` (with the ONNX form beside it when it passed) for `serve`.
It writes one line ``<Reason>: <JSON>`` to the termination log, which the operator puts in status.
A model that cannot be optimized is served as it is: only a usage error exits non-zero.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import modelplane_contract as contract

from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats import LoadOptions, Model, load_model
from modelplane_runtime.formats.base import Arrays, read_pull_record, resolve_trust
from modelplane_runtime.formats.optimized import OptimizedModel
from modelplane_runtime.optimize import convert
from modelplane_runtime.optimize.cache import CacheError, ResultCache, cache_for
from modelplane_runtime.optimize.gate import GateResult, GateSettings, compare, sample_inputs
from modelplane_runtime.storage.base import Settings

log = logging.getLogger("modelplane.optimize")
#: Bumped when what the step makes changes: a cached result of another version is not reused.
STEP_VERSION: Final = 1
LATENCY_BATCHES: Final = (1, 64)
LATENCY_SECONDS: Final = 0.5  # per model and batch size: bounded, once per digest
LATENCY_MAX_CALLS: Final = 200
TERMINATION_BYTES: Final = 4096  # the most the kubelet keeps of a termination message


@dataclass(frozen=True)
class OptimizeSettings:
    onnx: bool = False
    quantize: str | None = None
    gate: GateSettings = field(default_factory=GateSettings)

    @classmethod
    def from_json(cls, text: str) -> OptimizeSettings:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("must be a JSON object")
        gate = raw.get("gate") or {}
        quantize = raw.get("quantize")
        if quantize is not None and quantize not in contract.QUANTIZE_MODES:
            raise ValueError(f"quantize must be one of {', '.join(contract.QUANTIZE_MODES)}")
        return cls(
            onnx=bool(raw.get("onnx", False)),
            quantize=quantize,
            gate=GateSettings(
                min_agreement=float(gate.get("minAgreement", contract.GATE_MIN_AGREEMENT)),
                max_abs_error=float(gate.get("maxAbsError", contract.GATE_MAX_ABS_ERROR)),
                max_rel_error=float(gate.get("maxRelError", contract.GATE_MAX_REL_ERROR)),
            ),
        )

    def key(self, digest: str, signature: str | None = None) -> str:
        """The cache key: the artifact (and the SavedModel signature converted, when one is named),
        what was asked, and this step's version (not the gate: the gate is re-run by every pod, so a
        changed threshold reuses the conversion)."""
        what = json.dumps([digest, self.onnx, self.quantize, STEP_VERSION, _versions()])
        if signature is not None:
            what += json.dumps(["signature", signature])
        return hashlib.sha256(what.encode()).hexdigest()[:32]


def _versions() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    converters = ("onnxruntime", "skl2onnx", "onnxmltools", "tf2onnx", "onnx")
    libraries = (
        "scikit-learn",
        "xgboost",
        "xgboost-cpu",
        "lightgbm",
        "tensorflow-cpu",
        "tensorflow",
        "keras",
    )
    for name in (*converters, *libraries):
        try:
            found.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return found


@dataclass
class Outcome:
    """What the step did; ``status()`` is what the operator shows (camelCase, as status is)."""

    reason: str
    message: str
    original: dict[str, Any]
    applied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    optimized: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    cache: str = ""

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "original": self.original, "applied": self.applied}
        for name in ("notes", "optimized", "gate", "cache"):
            value = getattr(self, name)
            if value:
                body[name] = value
        return body


def optimize(
    model_dir: Path,
    format_name: str,
    settings: OptimizeSettings,
    cache: ResultCache | None,
    pinned_digest: str | None = None,
    allow_pickle: bool = False,
    signature: str | None = None,
) -> Outcome:
    """Runs the step on the pulled model in ``model_dir`` (through the SavedModel ``signature``
    that `serve` serves, for format tensorflow); see the module docstring."""
    trust = resolve_trust(model_dir, pinned_digest, allow_pickle)
    pull = read_pull_record(model_dir) or {}
    options = LoadOptions(model_dir=model_dir, name="original", trust=trust, threads=1, signature=signature)
    original_model = load_model(format_name, options)
    digest = trust.pulled_digest or trust.pinned_digest or ""
    original: dict[str, Any] = {"digest": digest}
    if isinstance(pull.get("bytes"), int):
        original["bytes"] = pull["bytes"]
    out_dir = model_dir / contract.OPTIMIZED_DIR
    out_dir.mkdir(exist_ok=True)
    try:
        sample, source = sample_inputs(original_model)
        made = _cached_or_made(original_model, settings, digest, cache, sample)
    except convert.ConversionError as error:
        outcome = Outcome(contract.REASON_OPTIMIZATION_FAILED, f"{error}: serving the original", original)
        _write_record(out_dir, outcome, None)
        return outcome
    original.update(made.original_latency)
    outcome = Outcome(
        contract.REASON_OPTIMIZED, "", original, made.applied, made.notes, made.optimized, cache=made.cache
    )
    if not made.applied:
        outcome.reason = contract.REASON_OPTIMIZATION_FAILED
        outcome.message = "nothing applied (" + "; ".join(made.notes) + "): serving the original"
        _write_record(out_dir, outcome, None)
        return outcome
    served = _served(original_model, made.graph, made.outputs)
    names = [output.served for output in made.outputs]
    result = compare(
        original_model.predict(sample, names),
        served.predict(sample, names),
        made.outputs,
        settings.gate,
        source,
    )
    outcome.gate = _gate_status(result, settings.gate)
    applied = " + ".join(made.applied)
    if result.passed:
        outcome.message = f"serving the {applied} form: {_figures(result)} on {result.samples} samples"
        (out_dir / contract.OPTIMIZED_MODEL_FILE).write_bytes(made.graph)
        _write_record(out_dir, outcome, made, original_model)
    else:
        outcome.reason = contract.REASON_OPTIMIZATION_REJECTED
        outcome.message = f"the {applied} form fell below the gate ({result.why}): serving the original"
        _write_record(out_dir, outcome, None)
    return outcome


@dataclass
class _Made:
    graph: bytes
    outputs: tuple[convert.OutputMap, ...]
    applied: list[str]
    notes: list[str]
    optimized: dict[str, Any] | None
    original_latency: dict[str, Any]
    cache: str


def _cached_or_made(
    original: Model, settings: OptimizeSettings, digest: str, cache: ResultCache | None, sample: Arrays
) -> _Made:
    key = settings.key(digest, original.options.signature)
    if cache is not None:
        try:
            found = cache.get(key)
        except CacheError as error:
            log.warning("optimize cache not read: %s", error)
            found = None
        if found is not None:
            record, graph = found
            if record.get("optimized", {}).get("digest") == _sha256(graph):
                log.info("optimized form of %s found in %s", digest, cache.where)
                return _Made(
                    graph,
                    tuple(convert.OutputMap(**item) for item in record["outputs"]),
                    list(record["applied"]),
                    list(record["notes"]),
                    record["optimized"],
                    record["originalLatency"],
                    f"found in {cache.where}/{key}",
                )
            log.warning("optimize cache entry %s/%s does not match its digest: made again", cache.where, key)
    made = _make(original, settings, sample)
    if cache is None:
        made.cache = "not kept: the model's store is not one modelplane writes (each pod optimizes)"
        return made
    record = {
        "outputs": [vars(output) for output in made.outputs],
        "applied": made.applied,
        "notes": made.notes,
        "optimized": made.optimized,
        "originalLatency": made.original_latency,
    }
    try:
        cache.put(key, record, made.graph)
        made.cache = f"stored in {cache.where}/{key}"
    except CacheError as error:
        made.cache = f"not kept ({error}): each pod optimizes"
    return made


def _make(original: Model, settings: OptimizeSettings, sample: Arrays) -> _Made:
    started = time.perf_counter()
    form = convert.to_onnx(original)
    graph = form.graph
    applied = ["onnx"] if settings.onnx and original.format_name != "onnx" else []
    notes = [f"converter: {form.converter}"] if applied else []
    if settings.quantize == "int8":
        if convert.quantizable(graph):
            graph = convert.quantize_int8(graph)
            applied.append("int8")
        else:
            notes.append("int8 quantization does not apply: the ONNX graph has no MatMul or Gemm")
    served = _served(original, graph, form.outputs)
    names = [output.served for output in form.outputs]
    optimized = {"digest": _sha256(graph), "bytes": len(graph), **_latencies(served, sample, names)}
    original_latency = _latencies(original, sample, names)
    log.info("optimized in %.1fs: %s", time.perf_counter() - started, applied)
    return _Made(graph, form.outputs, applied, notes, optimized, original_latency, "")


def _served(original: Model, graph: bytes, outputs: tuple[convert.OutputMap, ...]) -> OptimizedModel:
    specs = {spec.name: spec for spec in original.outputs}
    model = OptimizedModel(
        original.options,
        graph,
        original.format_name,
        original.inputs,
        {specs[output.served]: output.graph for output in outputs},
        default_outputs=original.default_outputs,
    )
    model.load()
    return model


def _latencies(model: Model, sample: Arrays, outputs: list[str]) -> dict[str, float]:
    """p50 of one call at each batch size, in microseconds (measured here, once per digest)."""
    found = {}
    for batch in LATENCY_BATCHES:
        rows = {name: array[:batch] for name, array in sample.items()}
        found[f"p50Batch{batch}Microseconds"] = round(_p50(partial(model.predict, rows, outputs)), 1)
    return found


def _p50(call: Callable[[], object]) -> float:
    for _ in range(3):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + LATENCY_SECONDS
    while len(times) < 10 or (len(times) < LATENCY_MAX_CALLS and time.perf_counter() < deadline):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def _gate_status(result: GateResult, settings: GateSettings) -> dict[str, Any]:
    body: dict[str, Any] = {
        "passed": result.passed,
        "samples": result.samples,
        "sample": result.sample_source,
    }
    if result.agreement is not None:
        body["agreement"] = round(result.agreement, 6)
        body["minAgreement"] = settings.min_agreement
    if result.max_abs_error is not None:
        body["maxAbsErrorMeasured"] = float(f"{result.max_abs_error:.4g}")
        body["maxRelErrorMeasured"] = float(f"{result.max_rel_error or 0.0:.4g}")
        body["maxAbsError"] = settings.max_abs_error
        body["maxRelError"] = settings.max_rel_error
    return body


def _figures(result: GateResult) -> str:
    parts = []
    if result.agreement is not None:
        parts.append(f"label agreement {result.agreement:.4f}")
    if result.max_abs_error is not None:
        parts.append(f"max absolute error {result.max_abs_error:.3g}")
    return ", ".join(parts)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write_record(out_dir: Path, outcome: Outcome, made: _Made | None, original: Model | None = None) -> None:
    """The record `serve` reads: with ``serve: true`` only when the ONNX form beside it passed,
    and then the original's signature, so that `serve` need not load the original."""
    record: dict[str, Any] = {"reason": outcome.reason, "status": outcome.status(), "serve": made is not None}
    if made is not None and original is not None:
        specs = {spec.name: spec for spec in original.outputs}
        record["format"] = original.format_name
        record["inputs"] = [spec.as_dict() for spec in original.inputs]
        record["defaultOutputs"] = list(original.default_outputs)
        record["outputs"] = [
            {**specs[output.served].as_dict(), "served": output.served, "graph": output.graph}
            for output in made.outputs
        ]
    (out_dir / contract.OPTIMIZED_RECORD_FILE).write_text(json.dumps(record, sort_keys=True) + "\n")


def termination_line(outcome: Outcome) -> str:
    """``<Reason>: <JSON>`` within the kubelet's 4096 bytes (long notes and messages cut first)."""
    status = outcome.status()
    for limit in (1000, 300, 80):
        status["message"] = outcome.message[:limit]
        status["notes"] = [note[:limit] for note in outcome.notes]
        if not status["notes"]:
            del status["notes"]
        line = f"{outcome.reason}: {json.dumps(status, sort_keys=True, separators=(',', ':'))}"
        if len(line.encode()) <= TERMINATION_BYTES:
            break
    return line


def parser() -> argparse.ArgumentParser:
    def env(name: str, default: str | None = None) -> str | None:
        return os.environ.get(name) or default

    result = argparse.ArgumentParser(
        prog=f"{contract.RUNTIME_COMMAND} {contract.OPTIMIZE_SUBCOMMAND}",
        description="Optimize the pulled model (ONNX, int8) behind an accuracy gate (docs/optimization.md).",
    )
    result.add_argument("--model-dir", default=env(contract.ENV_MODEL_DIR, contract.MODEL_DIR))
    result.add_argument("--format", default=env(contract.ENV_MODEL_FORMAT), choices=contract.FORMATS)
    result.add_argument("--uri", default=env(contract.ENV_MODEL_URI), help="where results are cached")
    result.add_argument("--digest", default=env(contract.ENV_MODEL_DIGEST))
    result.add_argument("--allow-pickle", default=env(contract.ENV_ALLOW_PICKLE, "false"))
    result.add_argument("--signature", default=env(contract.ENV_MODEL_SIGNATURE), help="format tensorflow")
    result.add_argument("--settings", default=env(contract.ENV_OPTIMIZE), help="spec.model.optimize as JSON")
    result.add_argument("--termination-log", type=Path, default=Path(contract.TERMINATION_LOG))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    if not args.format or not args.settings:
        return contract.EXIT_USAGE
    try:
        settings = OptimizeSettings.from_json(args.settings)
    except (ValueError, TypeError):
        return contract.EXIT_USAGE
    cache = cache_for(args.uri, Settings()) if args.uri else None
    allow_pickle = str(args.allow_pickle).strip().lower() in {"1", "true", "yes", "on"}
    try:
        outcome = optimize(
            Path(args.model_dir), args.format, settings, cache, args.digest, allow_pickle, args.signature
        )
    except ModelLoadError as error:
        # The server will refuse the same artifact with the same message: serve reports it.
        outcome = Outcome(contract.REASON_OPTIMIZATION_FAILED, f"the model does not load: {error}", {})
    line = termination_line(outcome)
    log.info("%s", line)
    if args.termination_log.exists():
        try:
            args.termination_log.write_text(line + "\n")
        except OSError as error:
            log.warning("could not write %s: %s", args.termination_log, error)
    return contract.EXIT_OK
