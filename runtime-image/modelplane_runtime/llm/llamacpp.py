"""llama.cpp through its public ctypes bindings (``llama_cpp.llama_cpp``), nothing above them.

llama-cpp-python's ``Llama`` class decodes one sequence at a time behind a lock and its
``_internals`` module is private, so this module holds the few calls the scheduler needs:
load a model and a multi-sequence context, tokenize and detokenize, fill and decode a batch
that mixes sequences, make one sampler chain per sequence, and drop a sequence's KV cells.
Every pointer it takes from llama.cpp is freed here, in :meth:`LlamaEngine.close`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from modelplane_runtime.errors import ModelLoadError

log = logging.getLogger("modelplane.runtime.llama")

#: ggml's log levels (ggml.h): what llama.cpp's log callback receives.
_LOG_WARN: Final = 3
_LOG_ERROR: Final = 4
_LOG_CONT: Final = 5
KV_BYTES_PER_VALUE: Final = 2  # the KV cache is f16 (llama.cpp's default type_k / type_v)
#: Room the compute buffers and the runtime itself take beside the weights and the KV cache.
OVERHEAD_BYTES: Final = 160 * 1024 * 1024
MIN_CONTEXT_LENGTH: Final = 16


@dataclass(frozen=True)
class EngineConfig:
    context_length: int = 2048  # the most tokens one sequence may hold (prompt + completion)
    max_sequences: int = 4  # sequences decoded together: the KV cache holds this many contexts
    batch_tokens: int = 512  # tokens per llama_decode call (decode steps + prompt chunks)
    threads: int = 1
    max_queue: int = 256  # requests waiting for a free sequence before new ones get a 503


class _LogCapture:
    """llama.cpp logs its reasons (unknown architecture, allocation failures) instead of returning
    them: keep the last error lines so a failed load can say why in one line."""

    def __init__(self) -> None:
        self.errors: deque[str] = deque(maxlen=8)
        self._current: list[str] = []
        self._level = 0
        self._lock = threading.Lock()
        self.callback = _bindings().llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes | None, _user: Any) -> None:
        message = (text or b"").decode("utf-8", "replace")
        with self._lock:
            if level != _LOG_CONT:
                self._level = level
            if self._level >= _LOG_ERROR:
                self.errors.append(message.strip())
            elif self._level == _LOG_WARN and message.strip():
                log.warning("llama.cpp: %s", message.strip())

    def reason(self) -> str:
        """The first error of the failed call (the later ones only say that it failed), without
        the C function name llama.cpp puts first."""
        with self._lock:
            lines = [line for line in self.errors if line]
        if not lines:
            return "no reason logged"
        function, separator, rest = lines[0].partition(": ")
        return rest if separator and function.isidentifier() else lines[0]


_CAPTURE: _LogCapture | None = None


def _bindings() -> Any:
    try:
        from llama_cpp import llama_cpp  # the public ctypes module
    except ImportError as error:
        raise ModelLoadError(
            f"the gguf format needs llama-cpp-python (the runtime's 'llm' extra): {error}"
        ) from error
    return llama_cpp


def memory_limit_bytes() -> int | None:
    """The cgroup's memory limit, or None when there is none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            text = Path(path).read_text().strip()
            if text != "max" and int(text) < 2**60:
                return int(text)
    return None


def _mib(count: float) -> str:
    return f"{count / 2**20:.0f} MiB"


class LlamaEngine:
    """One model and one context holding up to ``max_sequences`` sequences. Not thread-safe:
    the scheduler's thread is its only caller after load."""

    def __init__(self, path: Path, config: EngineConfig, memory_limit: int | None = None) -> None:
        global _CAPTURE  # noqa: PLW0603 - llama.cpp has one process-wide log callback
        self.lib = lib = _bindings()
        self.config = config
        if config.context_length < MIN_CONTEXT_LENGTH:
            raise ModelLoadError(f"the context length must be at least {MIN_CONTEXT_LENGTH} tokens")
        if _CAPTURE is None:
            _CAPTURE = _LogCapture()
            lib.llama_log_set(_CAPTURE.callback, None)
            lib.llama_backend_init()
        self._capture = _CAPTURE
        self._capture.errors.clear()
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        model_params = lib.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self._model = lib.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise ModelLoadError(f"llama.cpp cannot load {path.name}: {self._capture.reason()}")
        self.vocab = lib.llama_model_get_vocab(self._model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.architecture = self.meta("general.architecture") or "unknown"
        self.n_ctx_train = int(lib.llama_model_n_ctx_train(self._model))
        pooling = self.meta(f"{self.architecture}.pooling_type")
        self.embedding = pooling not in (None, "0")
        self.n_embd = int(lib.llama_model_n_embd(self._model))
        if config.context_length > self.n_ctx_train > 0:
            self.close()
            raise ModelLoadError(
                f"context length {config.context_length} exceeds what {path.name} was trained for "
                f"({self.n_ctx_train} tokens): lower the context length"
            )
        self._check_memory(path, memory_limit if memory_limit is not None else memory_limit_bytes())
        context_params = lib.llama_context_default_params()
        context_params.n_ctx = config.context_length * config.max_sequences
        # An embedding is pooled over one ubatch, so an input must fit in one.
        batch = config.context_length if self.embedding else config.batch_tokens
        context_params.n_batch = batch
        context_params.n_ubatch = batch
        context_params.n_seq_max = config.max_sequences
        context_params.n_threads = config.threads
        context_params.n_threads_batch = config.threads
        # One KV stream per sequence: a step attends over each sequence's own cells only. In one
        # buffer shared by all, every token of a step attends over every sequence's cells (masked),
        # which at 16 sequences of a long prompt is most of the step's compute.
        context_params.kv_unified = False
        context_params.embeddings = self.embedding
        context_params.no_perf = True
        self._ctx = lib.llama_init_from_model(self._model, context_params)
        if not self._ctx:
            reason = self._capture.reason()
            self.close()
            raise ModelLoadError(f"llama.cpp cannot create a context for {path.name}: {reason}")
        self.memory = lib.llama_get_memory(self._ctx)
        self.n_ctx = int(lib.llama_n_ctx(self._ctx))
        self.batch_capacity = batch
        self._batch = lib.llama_batch_init(batch, 0, 1)
        self.chat_template = self._chat_template()
        self.bos_text = self.token_text(lib.llama_vocab_bos(self.vocab))
        self.eos_text = self.token_text(lib.llama_vocab_eos(self.vocab))
        self.add_bos = bool(lib.llama_vocab_get_add_bos(self.vocab))
        self._n_batch = 0

    # ------------------------------------------------------------ model facts

    def meta(self, key: str) -> str | None:
        buffer = ctypes.create_string_buffer(4096)
        length = self.lib.llama_model_meta_val_str(self._model, key.encode(), buffer, len(buffer))
        if length < 0:
            return None
        if length >= len(buffer):
            buffer = ctypes.create_string_buffer(length + 1)
            self.lib.llama_model_meta_val_str(self._model, key.encode(), buffer, len(buffer))
        return buffer.value.decode("utf-8", "replace")

    def _chat_template(self) -> str | None:
        template = self.lib.llama_model_chat_template(self._model, None)
        return template.decode("utf-8", "replace") if template else None

    def kv_bytes(self) -> int:
        """Bytes of the KV cache for the configured contexts (f16 keys and values, every layer)."""
        lib, arch = self.lib, self.architecture
        n_layer = int(lib.llama_model_n_layer(self._model))
        n_head = max(1, int(lib.llama_model_n_head(self._model)))
        n_head_kv = int(lib.llama_model_n_head_kv(self._model)) or n_head
        key_length = int(self.meta(f"{arch}.attention.key_length") or self.n_embd // n_head)
        value_length = int(self.meta(f"{arch}.attention.value_length") or key_length)
        cells = self.config.context_length * self.config.max_sequences
        return cells * n_layer * n_head_kv * (key_length + value_length) * KV_BYTES_PER_VALUE

    def _check_memory(self, path: Path, limit: int | None) -> None:
        if limit is None:
            return
        weights = path.stat().st_size
        kv = self.kv_bytes()
        needed = weights + kv + OVERHEAD_BYTES
        if needed > limit:
            self.close()
            raise ModelLoadError(
                f"the model does not fit the memory limit of {_mib(limit)}: its weights take {_mib(weights)} "
                f"and a KV cache of {self.config.max_sequences} x {self.config.context_length} tokens takes "
                f"{_mib(kv)} (about {_mib(needed)} with the runtime): lower the context length or the "
                f"sequences, or raise the memory limit"
            )

    # ------------------------------------------------------------ tokens

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        data = text.encode()
        capacity = len(data) + 8
        tokens = (self.lib.llama_token * capacity)()
        count = self.lib.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, True)
        if count < 0:
            capacity = -count
            tokens = (self.lib.llama_token * capacity)()
            count = self.lib.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, True)
        return list(tokens[: max(0, count)])

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for in generated text (special tokens render as nothing)."""
        buffer = ctypes.create_string_buffer(64)
        length = self.lib.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
        if length < 0:
            buffer = ctypes.create_string_buffer(-length)
            length = self.lib.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:length]

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        buffer = ctypes.create_string_buffer(64)
        length = self.lib.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, True)
        return buffer.raw[: max(0, length)].decode("utf-8", "replace")

    def is_end(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    def valid_token(self, token: int) -> bool:
        return 0 <= token < self.n_vocab

    # ------------------------------------------------------------ batches

    def batch_clear(self) -> None:
        self._n_batch = 0

    def batch_add(self, token: int, position: int, sequence: int, output: bool) -> int:
        """Append one token; returns its index in the batch (where its logits will be)."""
        batch, index = self._batch, self._n_batch
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = sequence
        batch.logits[index] = 1 if output else 0
        self._n_batch = index + 1
        return index

    @property
    def batch_size(self) -> int:
        return self._n_batch

    def decode(self) -> int:
        """Run the batch; 0 on success, llama_decode's code otherwise."""
        self._batch.n_tokens = self._n_batch
        return int(self.lib.llama_decode(self._ctx, self._batch))

    def logits(self, index: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        pointer = self.lib.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def embedding_of(self, sequence: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        pointer = self.lib.llama_get_embeddings_seq(self._ctx, sequence)
        if not pointer:
            raise RuntimeError("llama.cpp returned no pooled embedding for the sequence")
        return np.ctypeslib.as_array(pointer, shape=(self.n_embd,)).copy()

    def forget(self, sequence: int, start: int = 0) -> None:
        """Free the KV cells of ``sequence`` from position ``start`` on (from 0: its slot is empty)."""
        self.lib.llama_memory_seq_rm(self.memory, sequence, start if start > 0 else -1, -1)

    def share(self, source: int, target: int, count: int) -> None:
        """Give ``target`` the KV cells of ``source``'s first ``count`` positions, without a decode.
        Each sequence has its own stream, and llama.cpp copies between streams only whole (a buffer
        copy at the next decode), so the copy's tail past ``count`` is removed after."""
        self.lib.llama_memory_seq_cp(self.memory, source, target, -1, -1)
        self.lib.llama_memory_seq_rm(self.memory, target, count, -1)

    # ------------------------------------------------------------ samplers

    def sampler(self, temperature: float, top_p: float, seed: int | None, grammar: str | None) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if grammar is not None:
            sampler = lib.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
            if not sampler:
                lib.llama_sampler_free(chain)
                raise RuntimeError("llama.cpp refused the grammar")
            lib.llama_sampler_chain_add(chain, sampler)
        if temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        if top_p < 1.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(top_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(temperature))
        seed_value = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed_value))
        return chain

    def sample(self, sampler: Any, index: int) -> int:
        return int(self.lib.llama_sampler_sample(sampler, self._ctx, index))

    def free_sampler(self, sampler: Any) -> None:
        self.lib.llama_sampler_free(sampler)

    def close(self) -> None:
        lib = self.lib
        if self._batch is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            lib.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            lib.llama_model_free(self._model)
            self._model = None


def json_grammar() -> str:
    """llama.cpp's JSON grammar, as llama-cpp-python ships it (its public llama_grammar module)."""
    from llama_cpp.llama_grammar import JSON_GBNF

    return str(JSON_GBNF)
