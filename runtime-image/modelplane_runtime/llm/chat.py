"""Chat templates: the Jinja template a model ships in its metadata (``tokenizer.chat_template``),
rendered in Jinja's sandbox as Hugging Face renders it, so the prompt is the one the model was
trained on."""

from __future__ import annotations

import datetime
from typing import Any

from modelplane_runtime.errors import InvalidInput, ModelLoadError


class ChatTemplate:
    def __init__(self, source: str, bos_token: str, eos_token: str) -> None:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals["raise_exception"] = _raise
        environment.globals["strftime_now"] = _strftime_now
        environment.filters["tojson"] = _tojson
        try:
            self._template = environment.from_string(source)
        except TemplateError as error:
            raise ModelLoadError(f"the model's chat template does not parse: {error}") from error
        self._bos, self._eos = bos_token, eos_token

    def render(self, messages: list[dict[str, str]]) -> str:
        from jinja2 import TemplateError

        try:
            return self._template.render(
                messages=messages, add_generation_prompt=True, bos_token=self._bos, eos_token=self._eos
            )
        except InvalidInput:
            raise
        except TemplateError as error:
            raise InvalidInput(f"the model's chat template refused these messages: {error}") from error


def _raise(message: str) -> None:
    raise InvalidInput(f"the model's chat template refused these messages: {message}")


def _strftime_now(layout: str) -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime(layout)


def _tojson(value: Any, indent: int | None = None) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, indent=indent)
