"""The OpenAI subset's parsing and the stop-sequence rule, without an engine."""

from __future__ import annotations

from typing import Any

import pytest
from modelplane_runtime.errors import InvalidInput
from modelplane_runtime.llm import schema
from modelplane_runtime.llm.scheduler import visible_text

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_chat_defaults() -> None:
    request = schema.parse_chat(CHAT)
    assert request.sampling == schema.SamplingParams()
    assert request.stream == schema.StreamOptions()
    assert request.messages == [{"role": "user", "content": "hi"}]


def test_chat_parameters_are_read() -> None:
    request = schema.parse_chat(
        {
            **CHAT,
            "max_completion_tokens": 9,
            "temperature": 0,
            "top_p": 0.5,
            "stop": "END",
            "seed": -1,
            "n": 2,
            "logprobs": True,
            "top_logprobs": 3,
            "response_format": {"type": "json_object"},
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert request.sampling == schema.SamplingParams(
        max_tokens=9,
        temperature=0.0,
        top_p=0.5,
        stop=("END",),
        seed=2**32 - 1,
        n=2,
        logprobs=3,
        json_mode=True,
    )
    assert request.stream == schema.StreamOptions(stream=True, include_usage=True)


def test_text_parts_and_developer_role() -> None:
    request = schema.parse_chat(
        {"model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}]}]}
    )
    assert request.messages == [{"role": "system", "content": "a"}]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({**CHAT, "frequency_penalty": 0.5}, "frequency_penalty"),
        ({**CHAT, "temperature": 3}, "temperature"),
        ({**CHAT, "n": 0}, "'n'"),
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({**CHAT, "stop": [""]}, "stop"),
        ({**CHAT, "top_logprobs": 2}, "logprobs"),
        ({**CHAT, "stream_options": {"include_usage": True}}, "stream"),
        ({**CHAT, "response_format": {"type": "json_schema"}}, "response_format"),
        ({**CHAT, "messages": []}, "messages"),
        ({**CHAT, "messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text parts"),
        ({**CHAT, "max_tokens": True}, "max_tokens"),
        ({"messages": CHAT["messages"]}, "model"),
        ([], "JSON object"),
    ],
)
def test_chat_refusals_name_the_parameter(body: Any, named: str) -> None:
    with pytest.raises(InvalidInput, match=named):
        schema.parse_chat(body)


def test_completion_prompt_forms_and_default_max_tokens() -> None:
    assert schema.parse_completion({"model": "m", "prompt": "x"}).sampling.max_tokens == 16
    assert schema.parse_completion({"model": "m", "prompt": ["x"]}).prompt == "x"
    assert schema.parse_completion({"model": "m", "prompt": [1, 2]}).prompt == [1, 2]
    for bad in ([], [-1], ["a", "b"], 3, None, [True]):
        with pytest.raises(InvalidInput, match="prompt"):
            schema.parse_completion({"model": "m", "prompt": bad})
    with pytest.raises(InvalidInput, match="logprobs"):
        schema.parse_completion({"model": "m", "prompt": "x", "logprobs": 6})


def test_embedding_inputs() -> None:
    assert schema.parse_embedding({"model": "m", "input": "a"}).inputs == ["a"]
    assert schema.parse_embedding({"model": "m", "input": ["a", [1, 2]]}).inputs == ["a", [1, 2]]
    assert schema.parse_embedding({"model": "m", "input": "a", "encoding_format": "base64"}).base64
    for bad in ("", [], [""], {"a": 1}):
        with pytest.raises(InvalidInput, match="input"):
            schema.parse_embedding({"model": "m", "input": bad})
    with pytest.raises(InvalidInput, match="dimensions"):
        schema.parse_embedding({"model": "m", "input": "a", "dimensions": 8})


def _stream(pieces: list[str], stops: tuple[str, ...]) -> tuple[list[str], bool]:
    """What a choice sends, piece by piece, with these stop sequences."""
    text, sent, out = "", 0, []
    for number, piece in enumerate(pieces):
        text += piece
        chunk, text, sent, stopped = visible_text(text, sent, stops, final=number == len(pieces) - 1)
        out.append(chunk)
        if stopped:
            return out, True
    return out, False


def test_a_stop_sequence_split_over_tokens_is_never_sent() -> None:
    out, stopped = _stream(["Hello ", "wo", "rld", "!"], ("world",))
    assert stopped
    assert "".join(out) == "Hello "
    assert out == ["Hello ", "", ""]


def test_held_back_text_is_released_when_it_is_not_a_stop() -> None:
    out, stopped = _stream(["Hello ", "wo", "nder", "s"], ("world",))
    assert not stopped
    assert out == ["Hello ", "", "wonder", "s"]


def test_the_earliest_stop_wins() -> None:
    out, stopped = _stream(["a1b2c"], ("2", "1"))
    assert stopped
    assert out == ["a"]
