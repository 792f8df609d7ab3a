"""GGUF language models on llama.cpp (format ``gguf``, engine ``builtin``).

The artifact is one ``.gguf`` file. Its metadata gives the architecture, the tokenizer and the chat
template; the context length, the sequences decoded together and the threads come from the
engine settings. Generation is the scheduler's (:mod:`modelplane_runtime.llm.scheduler`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from modelplane_runtime.errors import InvalidInput, ModelLoadError
from modelplane_runtime.formats.base import LanguageModel, find_artifact
from modelplane_runtime.llm.chat import ChatTemplate
from modelplane_runtime.llm.llamacpp import EngineConfig, LlamaEngine
from modelplane_runtime.llm.scheduler import Scheduler
from modelplane_runtime.llm.schema import SamplingParams

WARM_UP_PROMPT = "Hello"
WARM_UP_TOKENS = 4


class GGUFModel(LanguageModel):
    format_name = "gguf"
    engine = "llama.cpp"

    def load(self) -> None:
        config = self.options.llm or EngineConfig()
        path = find_artifact(self.options.model_dir, (".gguf",), "GGUF")
        self.llama = LlamaEngine(path, config)
        self.embedding = self.llama.embedding
        self._template = (
            ChatTemplate(self.llama.chat_template, self.llama.bos_text, self.llama.eos_text)
            if self.llama.chat_template
            else None
        )
        self.scheduler = Scheduler(self.llama, config.max_queue)
        self.created = int(time.time())
        self._inputs, self._outputs = [], []

    def _tokens(self, text: str) -> list[int]:
        # A template (or a user) that already wrote the BOS token must not get a second one.
        add_bos = self.llama.add_bos and not (self.llama.bos_text and text.startswith(self.llama.bos_text))
        return self.llama.tokenize(text, add_special=add_bos)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        if self.embedding:
            raise InvalidInput(f"model {self.options.name!r} is an embedding model: use POST /v1/embeddings")
        if self._template is None:
            raise InvalidInput(
                f"model {self.options.name!r} ships no chat template in its GGUF metadata: "
                "use /v1/completions"
            )
        return self._tokens(self._template.render(messages))

    def text_prompt(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, list):
            return list(prompt)
        return self._tokens(prompt)

    def warm_up(self) -> None:
        """One real generation (or embedding) before readiness."""

        async def generate() -> None:
            tokens = self.text_prompt(WARM_UP_PROMPT)
            if self.embedding:
                await self.scheduler.embed([tokens])
                return
            generation = self.scheduler.submit(
                tokens, SamplingParams(max_tokens=WARM_UP_TOKENS, temperature=0.0)
            )
            async for _event in generation.events():
                pass

        started = time.perf_counter()
        try:
            asyncio.run(generate())
        except Exception as error:
            raise ModelLoadError(f"the warm-up generation failed: {error}") from error
        self.call_seconds = time.perf_counter() - started

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        config = self.llama.config
        meta.setdefault("parameters", {}).update(
            {
                "architecture": self.llama.architecture,
                "context_length": config.context_length,
                "max_sequences": config.max_sequences,
                "threads": config.threads,
                "task": "embedding" if self.embedding else "generation",
            }
        )
        return meta

    def close(self) -> None:
        self.scheduler.stop()
        self.llama.close()
