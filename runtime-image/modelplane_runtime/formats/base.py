"""The one small interface every model format implements, and what loaders share."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import modelplane_contract as contract
import numpy as np

from modelplane_runtime.errors import ModelLoadError

if TYPE_CHECKING:
    from modelplane_runtime.llm.llamacpp import EngineConfig
    from modelplane_runtime.llm.scheduler import Scheduler

Arrays = dict[str, np.ndarray[Any, Any]]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model's signature; -1 in ``shape`` is a free dimension."""

    name: str
    datatype: str  # an Open Inference Protocol datatype: FP64, INT64, BYTES, ...
    shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Trust:
    """What the operator of the pod vouched for: code in the artifact may run only under it."""

    pinned_digest: str | None  # the digest the user pinned, verified by pull
    pulled_digest: str | None  # what pull recorded (or None when the model was not pulled)
    allow_pickle: bool

    @property
    def allows_code(self) -> bool:
        return self.allow_pickle or self.pinned_digest is not None


@dataclass
class LoadOptions:
    model_dir: Path
    name: str
    trust: Trust
    custom_class: str | None = None
    threads: int = 1  # threads a model may use per worker process
    signature: str | None = None  # a SavedModel's signature to serve (format tensorflow)
    llm: EngineConfig | None = None  # the engine settings of a language model


class Model(ABC):
    """A loaded model. Batch dimension first: every input and output has one row per item."""

    format_name: str = ""
    #: The engine that runs predictions when it is not the library's own (said in metadata).
    engine: str | None = None
    #: How long one call took at warm-up (the batcher's first estimate).
    call_seconds: float = 0.0
    #: False when the loaded model cannot cross a fork (its library's thread pools would not survive
    #: it): the pod then serves from the process that loaded it, one worker.
    fork_safe: bool = True

    def __init__(self, options: LoadOptions) -> None:
        self.options = options
        self._ready = False

    @abstractmethod
    def load(self) -> None:
        """Read the artifact from ``options.model_dir``. Runs once, before workers fork."""

    @abstractmethod
    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        """Run the model on a batch; ``outputs`` names which outputs to compute (never empty)."""

    # Each format sets these in load(), from the artifact's own signature.
    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    def example_inputs(self) -> Arrays | None:
        """A one-row input the model is known to accept, to warm up with (None: built from the signature)."""
        return None

    @property
    def default_outputs(self) -> tuple[str, ...]:
        """Outputs returned when a request names none (v1 returns the first of these)."""
        return (self.outputs[0].name,)

    @property
    def ready(self) -> bool:
        return self._ready

    def mark_ready(self) -> None:
        self._ready = True

    def unload(self) -> None:
        self._ready = False

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.options.name,
            "versions": [],
            "platform": self.format_name,
            "inputs": [spec.as_dict() for spec in self.inputs],
            "outputs": [spec.as_dict() for spec in self.outputs],
        }
        parameters: dict[str, Any] = {}
        if self.options.trust.pulled_digest or self.options.trust.pinned_digest:
            parameters["digest"] = self.options.trust.pulled_digest or self.options.trust.pinned_digest
        if self.engine:
            parameters["engine"] = self.engine
        if parameters:
            meta["parameters"] = parameters
        return meta


class LanguageModel(Model):
    """A model served over the OpenAI API by an engine that batches sequences itself.

    It runs in one process per pod (no forked workers: the engine's threads and KV cache are
    not shared across a fork) and the data plane gives it no batcher. It has no tensor signature.
    """

    scheduler: Scheduler
    fork_safe = False  # the engine's threads and KV cache are not shared across a fork
    #: True for an embedding model (POST /v1/embeddings), False for a generative one.
    embedding: bool = False

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        from modelplane_runtime.errors import InvalidInput

        raise InvalidInput(
            f"model {self.options.name!r} is a language model: it serves the OpenAI API "
            "(POST /v1/chat/completions, /v1/completions, /v1/embeddings), not tensor inference"
        )

    @property
    def default_outputs(self) -> tuple[str, ...]:
        return ()

    @abstractmethod
    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt's tokens for chat messages, through the model's own chat template."""

    @abstractmethod
    def text_prompt(self, prompt: str | list[int]) -> list[int]:
        """The prompt's tokens for a completion (text, or token ids as given)."""

    @abstractmethod
    def warm_up(self) -> None:
        """Generate a few real tokens; raises ModelLoadError when the engine cannot."""

    @abstractmethod
    def close(self) -> None:
        """Stop the engine and free its memory."""


def find_artifact(model_dir: Path, suffixes: Sequence[str], what: str) -> Path:
    """The one file in ``model_dir`` (searched recursively) whose name ends with one of ``suffixes``."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist or is not a directory")
    found = sorted(
        path
        for path in model_dir.rglob("*")
        if path.is_file()
        and path.name.lower().endswith(tuple(suffixes))
        and not path.name.startswith(".")
        and path.name != contract.WARMUP_REQUEST_FILE
        and contract.OPTIMIZED_DIR not in path.relative_to(model_dir).parts
    )
    if not found:
        raise ModelLoadError(
            f"no {what} file in {model_dir}: expected a file ending in {', '.join(suffixes)}"
        )
    if len(found) > 1:
        names = ", ".join(str(path.relative_to(model_dir)) for path in found)
        raise ModelLoadError(f"more than one {what} file in {model_dir} ({names}): keep exactly one")
    return found[0]


def read_pull_record(model_dir: Path) -> dict[str, Any] | None:
    """What ``pull`` recorded beside the model, or None when it was not pulled."""
    path = model_dir / contract.PULL_RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read the pull record {path}: {error}") from error
    if not isinstance(record, dict):
        raise ModelLoadError(f"pull record {path} is not a JSON object")
    return record


def resolve_trust(model_dir: Path, pinned_digest: str | None, allow_pickle: bool) -> Trust:
    """Combine the pinned digest with what pull verified; a pin that pull did not verify is refused."""
    record = read_pull_record(model_dir)
    pulled = str(record["digest"]) if record and record.get("digest") else None
    pinned = pinned_digest or None
    if pinned is not None:
        if pulled is None:
            raise ModelLoadError(
                f"digest {pinned} is pinned but {model_dir} has no pull record "
                f"({contract.PULL_RECORD_FILE}) showing it was verified: pull the model with "
                f"`{contract.RUNTIME_COMMAND} {contract.PULL_SUBCOMMAND} --digest {pinned}` first"
            )
        if pulled.lower() != pinned.lower():
            raise ModelLoadError(
                f"the pinned digest {pinned} differs from the digest of what was pulled ({pulled})"
            )
    return Trust(pinned_digest=pinned, pulled_digest=pulled, allow_pickle=allow_pickle)


def require_code_trust(trust: Trust, what: str) -> None:
    """Refuse to run code shipped in an artifact unless its digest is pinned or the user allowed it."""
    if trust.allows_code:
        return
    raise ModelLoadError(
        f"{what} runs code when loaded, so it loads only from a pinned digest: set "
        f"{contract.ENV_MODEL_DIGEST} (storage digest in the ModelDeployment) to its sha256, "
        f"or set {contract.ENV_ALLOW_PICKLE}=true if you trust its source"
    )


def env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}
