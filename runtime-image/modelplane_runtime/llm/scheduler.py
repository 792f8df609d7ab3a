"""Continuous batching over one llama.cpp context: many sequences, one ``llama_decode`` per step.

One thread owns the engine. Each step it drops the sequences whose client went away, admits
waiting requests into free sequence slots, and builds one batch: a token for every sequence that
is generating, then chunks of the prompts being read, up to the batch's token budget. After the
decode it samples each sequence with its own sampler chain and hands the new text to the
request's event loop. A request joins at the next step, never waiting for others to finish.

The KV cells a prompt fills are kept for the requests after it (a prefix cache, as llama.cpp's
server and vLLM keep one): a new prompt starts where it stops matching the tokens some slot holds
(the chat template and system prompt every request repeats), so only the rest is decoded. A
finished sequence's cells stay in its free slot until the slot is taken again: each slot has its
own KV stream, so kept cells cost a step nothing.

Requests beyond ``max_queue`` waiting are refused (:class:`Overloaded`, a 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from modelplane_runtime.errors import InvalidInput, ModelError, Overloaded
from modelplane_runtime.llm.llamacpp import LlamaEngine, json_grammar
from modelplane_runtime.llm.schema import SamplingParams, TokenLogprob

log = logging.getLogger("modelplane.runtime.llm")
#: Prompt tokens a step reads beside sequences that generate. On one core here a step of 16 generating
#: sequences takes about 170 ms and 128 prompt tokens about 1.1 s more: their next token waits that long.
PROMPT_CHUNK_TOKENS = 128


class Observer(Protocol):
    """What the scheduler reports (metrics.LLMMetrics implements it)."""

    def step(self, sequences: int, tokens: int) -> None: ...
    def state(self, running: int, waiting: int, kv_usage: float) -> None: ...
    def prompt(self, tokens: int) -> None: ...
    def prefix_cache(self, queried: int, hits: int) -> None: ...
    def generated(self, tokens: int) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def inter_token(self, seconds: float) -> None: ...
    def finished(self, seconds: float) -> None: ...


@dataclass
class Event:
    """New output of one choice since its last event."""

    index: int
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int = 0


class Generation:
    """The front's handle on one request: iterate its events; cancel it when the client leaves."""

    def __init__(self, prompt_tokens: list[int], sampling: SamplingParams, max_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.sampling = sampling
        self.max_tokens = max_tokens
        self.loop = asyncio.get_running_loop()
        self.created = time.monotonic()
        self.first_token_at: float | None = None
        self.cancelled = False
        self._queue: asyncio.Queue[list[Event] | BaseException] = asyncio.Queue()
        self._open = sampling.n

    def deliver(self, events: list[Event]) -> None:
        """Called from the engine thread: hand a step's events to the request's loop."""
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self.loop.call_soon_threadsafe(self._queue.put_nowait, events)

    def fail(self, error: BaseException) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._queue.put_nowait, error)

    def cancel(self) -> None:
        self.cancelled = True

    async def events(self) -> AsyncIterator[Event]:
        while self._open:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            for event in item:
                if event.finish_reason is not None:
                    self._open -= 1
                yield event


@dataclass
class _Sequence:
    slot: int
    index: int
    generation: Generation
    sampler: Any
    pending: list[int]  # tokens to feed: the prompt (chunked), then the last sampled token
    position: int = 0  # tokens already in this sequence's KV cells
    generated: int = 0
    text: str = ""
    sent: int = 0  # characters of text already delivered
    last_token_at: float = 0.0
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )


@dataclass
class _EmbedJob:
    inputs: list[list[int]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[np.ndarray[Any, Any]]]


class Scheduler:
    def __init__(
        self,
        engine: LlamaEngine,
        max_queue: int,
        observer: Observer | None = None,
        prompt_chunk: int = PROMPT_CHUNK_TOKENS,
    ) -> None:
        self.engine = engine
        self.prompt_chunk = max(1, prompt_chunk)
        self.max_queue = max_queue
        self.observer = observer
        self.context_length = engine.config.context_length
        self._free = list(range(engine.config.max_sequences))  # the least recently used first
        # The tokens whose KV cells each slot holds (positions 0 on), running or free.
        self._held: list[list[int]] = [[] for _ in range(engine.config.max_sequences)]
        self._running: list[_Sequence] = []
        self._waiting: deque[Generation] = deque()
        self._embeds: deque[_EmbedJob] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._grammar: str | None = None
        self._thread = threading.Thread(target=self._run, name="llm-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ the loop thread's side

    def check_prompt(self, prompt_tokens: Sequence[int], sampling: SamplingParams) -> int:
        """The max_tokens this request gets; InvalidInput when it cannot fit the context."""
        limit, count = self.context_length, len(prompt_tokens)
        if count == 0:
            raise InvalidInput("the prompt is empty")
        if any(not self.engine.valid_token(token) for token in prompt_tokens):
            raise InvalidInput(
                f"the prompt holds token ids outside the vocabulary (0 to {self.engine.n_vocab - 1})"
            )
        if count >= limit:
            raise InvalidInput(
                f"this model's maximum context length is {limit} tokens, and the prompt is {count} tokens: "
                "shorten the prompt"
            )
        if sampling.max_tokens is None:
            return limit - count
        if count + sampling.max_tokens > limit:
            raise InvalidInput(
                f"this model's maximum context length is {limit} tokens; you asked for "
                f"{count + sampling.max_tokens} "
                f"({count} in the prompt, {sampling.max_tokens} in the completion): lower max_tokens"
            )
        return sampling.max_tokens

    def submit(self, prompt_tokens: list[int], sampling: SamplingParams) -> Generation:
        max_tokens = self.check_prompt(prompt_tokens, sampling)
        if sampling.n > self.engine.config.max_sequences:
            raise InvalidInput(
                f"'n' must be at most {self.engine.config.max_sequences} here "
                "(the sequences decoded together)"
            )
        generation = Generation(prompt_tokens, sampling, max_tokens)
        with self._wake:
            if len(self._waiting) >= self.max_queue:
                raise Overloaded(f"{len(self._waiting)} requests are already waiting: retry later")
            self._waiting.append(generation)
            self._wake.notify()
        return generation

    def cancel(self, generation: Generation) -> None:
        with self._wake:
            generation.cancel()
            self._wake.notify()

    async def embed(self, inputs: list[list[int]]) -> list[np.ndarray[Any, Any]]:
        limit = self.context_length
        for item in inputs:
            if not item:
                raise InvalidInput("an input is empty")
            if len(item) > limit:
                raise InvalidInput(
                    f"this model's maximum context length is {limit} tokens, "
                    f"and an input is {len(item)} tokens"
                )
            if any(not self.engine.valid_token(token) for token in item):
                raise InvalidInput("an input holds token ids outside the vocabulary")
        loop = asyncio.get_running_loop()
        job = _EmbedJob(inputs, loop, loop.create_future())
        with self._wake:
            if len(self._embeds) >= self.max_queue:
                raise Overloaded(f"{len(self._embeds)} requests are already waiting: retry later")
            self._embeds.append(job)
            self._wake.notify()
        return await job.future

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len({id(seq.generation) for seq in self._running})

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------ the engine thread

    def _run(self) -> None:
        while True:
            with self._wake:
                self._drop_cancelled()
                self._admit()
                while not self._running and not self._embeds and not self._stopping:
                    self._report()
                    self._wake.wait()
                    self._drop_cancelled()
                    self._admit()
                if self._stopping:
                    break
                job = self._embeds.popleft() if self._embeds else None
            try:
                if job is not None:
                    self._embed(job)
                else:
                    self._step()
            except Exception as error:
                log.exception("decode step failed")
                self._fail_all(ModelError(f"the engine failed: {error}"))
            self._report()
        self._fail_all(ModelError("the server is stopping"))

    def _report(self) -> None:
        if self.observer is not None:
            used = sum(seq.position for seq in self._running)
            self.observer.state(self.running, len(self._waiting), used / max(1, self.engine.n_ctx))

    def _drop_cancelled(self) -> None:
        kept = []
        for seq in self._running:
            if seq.generation.cancelled:
                self._release(seq)
            else:
                kept.append(seq)
        self._running = kept
        if any(generation.cancelled for generation in self._waiting):
            self._waiting = deque(g for g in self._waiting if not g.cancelled)

    def _admit(self) -> None:
        while self._waiting and len(self._free) >= self._waiting[0].sampling.n:
            generation = self._waiting.popleft()
            sampling = generation.sampling
            grammar = None
            if sampling.json_mode:
                self._grammar = self._grammar or json_grammar()
                grammar = self._grammar
            prompt = generation.prompt_tokens
            for index in range(sampling.n):
                # Choices of one request differ by seed; a seeded request stays reproducible.
                seed = None if sampling.seed is None else (sampling.seed + index) % 2**32
                sampler = self.engine.sampler(sampling.temperature, sampling.top_p, seed, grammar)
                slot, cached = self._place(prompt)
                self._running.append(
                    _Sequence(slot, index, generation, sampler, prompt[cached:], position=cached)
                )
                if self.observer is not None:
                    self.observer.prefix_cache(len(prompt), cached)
            if self.observer is not None:
                self.observer.prompt(len(prompt))

    def _place(self, prompt: list[int]) -> tuple[int, int]:
        """A free slot for ``prompt``, and how many of its first tokens that slot's cells now hold.

        The longest match against what any slot holds wins; the last prompt token is always decoded
        again, for the logits of the first new one. A free slot keeps its own cells when it is the
        match; otherwise the emptiest free slot gets the matched cells shared into it.
        """
        limit = len(prompt) - 1
        source, cached = -1, 0
        for slot, held in enumerate(self._held):
            length = common_prefix(held, prompt, limit)
            if length > cached:
                source, cached = slot, length
        if source in self._free:
            target = source
            self.engine.forget(target, cached)
        else:
            target = min(self._free, key=lambda slot: len(self._held[slot]))  # ties: least recent
            self.engine.forget(target)
            if cached:
                self.engine.share(source, target, cached)
        self._free.remove(target)
        self._held[target] = prompt[:cached]
        return target, cached

    def _release(self, seq: _Sequence) -> None:
        """Free the slot but keep its cells for a later prompt that starts the same way."""
        self.engine.free_sampler(seq.sampler)
        self._free.append(seq.slot)

    def _forget(self, slot: int) -> None:
        self.engine.forget(slot)
        self._held[slot] = []

    def _step(self) -> None:
        engine = self.engine
        engine.batch_clear()
        budget = engine.batch_capacity
        outputs: list[tuple[_Sequence, int]] = []
        # Sequences that are generating first (one token each), then prompt chunks.
        ordered = sorted(self._running, key=lambda seq: len(seq.pending) > 1)
        decoding = sum(1 for seq in ordered if len(seq.pending) == 1)
        # While sequences generate, prompts are read a chunk per step (vLLM's chunked prefill): a long
        # prompt delays their next token by one chunk's decode, not by the whole prompt's.
        prompt_budget = min(budget - decoding, self.prompt_chunk) if decoding else budget
        fed: set[int] = set()
        for seq in ordered:
            if budget == 0:
                break
            if len(seq.pending) == 1:
                take = 1
            else:
                take = min(len(seq.pending), prompt_budget, budget)
                if take == 0:
                    break
                prompt_budget -= take
            chunk, seq.pending = seq.pending[:take], seq.pending[take:]
            self._held[seq.slot].extend(chunk)
            for offset, token in enumerate(chunk):
                last = not seq.pending and offset == take - 1
                index = engine.batch_add(token, seq.position + offset, seq.slot, last)
                if last:
                    outputs.append((seq, index))
            seq.position += take
            budget -= take
            fed.add(seq.slot)
        if not fed:
            return
        code = engine.decode()
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        if self.observer is not None:
            self.observer.step(len(fed), engine.batch_size)
        now = time.monotonic()
        by_generation: dict[int, list[Event]] = {}
        finished: list[_Sequence] = []
        generated = 0
        for seq, index in outputs:
            event = self._sample(seq, index, now)
            generated += 1
            by_generation.setdefault(id(seq.generation), []).append(event)
            if event.finish_reason is not None:
                finished.append(seq)
        if self.observer is not None and generated:
            self.observer.generated(generated)
        delivered: dict[int, Generation] = {id(seq.generation): seq.generation for seq, _ in outputs}
        for key, events in by_generation.items():
            delivered[key].deliver(events)
        for seq in finished:
            self._running.remove(seq)
            self._release(seq)
            generation = seq.generation
            if self.observer is not None and not any(s.generation is generation for s in self._running):
                self.observer.finished(now - generation.created)

    def _sample(self, seq: _Sequence, index: int, now: float) -> Event:
        engine, generation = self.engine, seq.generation
        sampling = generation.sampling
        logprobs: list[TokenLogprob] = []
        if sampling.logprobs is not None:
            logits = engine.logits(index).astype(np.float64)
        token = engine.sample(seq.sampler, index)
        if sampling.logprobs is not None:
            logprobs.append(self._logprob(logits, token, sampling.logprobs))
        seq.generated += 1
        if generation.first_token_at is None:
            generation.first_token_at = now
            if self.observer is not None:
                self.observer.first_token(now - generation.created)
        elif self.observer is not None and seq.last_token_at:
            self.observer.inter_token(now - seq.last_token_at)
        seq.last_token_at = now
        finish: str | None = None
        if engine.is_end(token):
            finish = "stop"
        else:
            seq.text += seq.decoder.decode(engine.piece(token))
            seq.pending = [token]
            if seq.generated >= generation.max_tokens or seq.position + 1 >= self.context_length:
                finish = "length"
        if finish is not None:
            seq.text += seq.decoder.decode(b"", final=True)
        text, seq.text, seq.sent, stopped = visible_text(
            seq.text, seq.sent, sampling.stop, finish is not None
        )
        if stopped:
            finish = "stop"
        return Event(seq.index, text, logprobs, finish, seq.generated)

    def _logprob(self, logits: np.ndarray[Any, Any], token: int, top: int) -> TokenLogprob:
        shifted = logits - logits.max()
        logsoftmax = shifted - np.log(np.exp(shifted).sum())
        engine = self.engine

        def described(token_id: int) -> tuple[str, float, list[int]]:
            data = engine.piece(token_id)
            return data.decode("utf-8", "replace"), float(logsoftmax[token_id]), list(data)

        text, value, data = described(token)
        best: list[tuple[str, float, list[int]]] = []
        if top:
            best = [described(int(i)) for i in np.argsort(-logsoftmax)[:top]]
        return TokenLogprob(text, value, data, best)

    def _embed(self, job: _EmbedJob) -> None:
        engine = self.engine
        vectors: list[np.ndarray[Any, Any]] = []
        pending = list(job.inputs)
        try:
            while pending:
                engine.batch_clear()
                group: list[int] = []
                budget = engine.batch_capacity
                while pending and len(pending[0]) <= budget and len(group) < engine.config.max_sequences:
                    tokens = pending.pop(0)
                    slot = len(group)
                    for position, token in enumerate(tokens):
                        engine.batch_add(token, position, slot, True)
                    group.append(slot)
                    budget -= len(tokens)
                code = engine.decode()
                if code != 0:
                    raise RuntimeError(f"llama_decode returned {code}")
                if self.observer is not None:
                    self.observer.step(len(group), engine.batch_size)
                for slot in group:
                    vector = engine.embedding_of(slot)
                    norm = float(np.linalg.norm(vector))
                    vectors.append(vector / norm if norm > 0 else vector)
                    engine.forget(slot)
        except Exception as error:  # noqa: BLE001 - handed to the request
            _resolve(job, error=ModelError(f"the engine failed: {error}"))
            return
        if self.observer is not None:
            self.observer.prompt(sum(len(item) for item in job.inputs))
        _resolve(job, vectors)

    def _fail_all(self, error: BaseException) -> None:
        for seq in self._running:
            seq.generation.fail(error)
            self._release(seq)
        self._running = []
        for slot in self._free:  # a failed decode leaves the cells in no known state
            self._forget(slot)
        with self._wake:
            for generation in self._waiting:
                generation.fail(error)
            self._waiting.clear()
            for job in self._embeds:
                _resolve(job, error=error)
            self._embeds.clear()


def _resolve(
    job: _EmbedJob, vectors: list[np.ndarray[Any, Any]] | None = None, error: BaseException | None = None
) -> None:
    def settle() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(vectors or [])

    with contextlib.suppress(RuntimeError):
        job.loop.call_soon_threadsafe(settle)


def common_prefix(held: Sequence[int], prompt: Sequence[int], limit: int) -> int:
    """How many first tokens ``held`` and ``prompt`` share, at most ``limit``."""
    length = min(len(held), limit)
    for position in range(length):
        if held[position] != prompt[position]:
            return position
    return length


def visible_text(text: str, sent: int, stops: tuple[str, ...], final: bool) -> tuple[str, str, int, bool]:
    """What a choice may send now: (chunk, its text, characters sent, whether a stop ended it).

    ``text`` is everything generated so far and ``sent`` how much of it went out. A stop sequence
    is cut off with what follows it; text that could still become the start of one is held back
    until the next token shows it is not (or the choice ends).
    """
    if stops:
        start = max(0, sent - max(len(stop) for stop in stops))
        found = [position for stop in stops if (position := text.find(stop, start)) >= 0]
        if found:
            text = text[: min(found)]
            return text[sent:], text, max(sent, len(text)), True
    safe = len(text)
    if stops and not final:
        for stop in stops:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    safe = min(safe, len(text) - size)
                    break
    safe = max(safe, sent)
    return text[sent:safe], text, safe, False
