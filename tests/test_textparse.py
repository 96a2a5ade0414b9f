"""The incremental parsers give the same result however the text is split."""

from __future__ import annotations

import json

import pytest
from modelyard.router.textparse import ParsedCall, ReasoningSplitter, ToolCallParser

TEXT = 'Sure.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call> Done <tool_call>{"bad json</tool_call>'


def splits(text: str) -> list[list[str]]:
    """The text whole, char by char, and cut in two at every position."""
    cuts = [[text], list(text)]
    cuts += [[text[:i], text[i:]] for i in range(1, len(text))]
    return cuts


def run_tools(pieces: list[str]) -> list[str | ParsedCall]:
    parser = ToolCallParser()
    out: list[str | ParsedCall] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out + parser.flush()


def merged(parts: list[str | ParsedCall]) -> list[object]:
    out: list[object] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        else:
            out.append(part if isinstance(part, str) else (part.name, json.loads(part.arguments)))
    return out


@pytest.mark.parametrize("pieces", splits(TEXT))
def test_tool_call_parser(pieces: list[str]) -> None:
    assert merged(run_tools(pieces)) == [
        "Sure.",
        ("get_weather", {"city": "Paris"}),
        ' Done <tool_call>{"bad json</tool_call>',
    ]


IN_STRING = ('<tool_call>\n{"name": "web_search", "arguments": {"query": "a \\" </tool_call>"}}\n</tool_call> then '
             '<tool_call>{"bad json</tool_call> and <tool_call>{"name": "f", "arguments": {}}</tool_call>')


@pytest.mark.parametrize("pieces", splits(IN_STRING))
def test_an_end_tag_inside_a_json_string_does_not_end_the_call(pieces: list[str]) -> None:
    # A grammar-forced call may hold the end tag in a string (CI saw a model search for "Amarakan</tool_call>");
    # a body that is no JSON still ends at its first end tag, and what follows it is parsed as ever.
    assert merged(run_tools(pieces)) == [
        ("web_search", {"query": 'a " </tool_call>'}),
        ' then <tool_call>{"bad json</tool_call> and ',
        ("f", {}),
    ]


def test_white_space_between_calls_is_not_content() -> None:
    call = '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    out = run_tools([call, "\n\n", call[:5], call[5:], "\n"])
    assert [type(part) for part in out] == [ParsedCall, ParsedCall]
    assert run_tools(["  hello  "]) == ["  hello  "]


def test_call_cut_off_mid_json_is_returned_as_text() -> None:
    assert run_tools(['<tool_call>{"name":']) == ['<tool_call>{"name":']


def test_tool_call_cut_off_but_whole_is_parsed() -> None:
    parser = ToolCallParser()
    out = parser.feed('<tool_call>{"name": "f", "arguments": {}}') + parser.flush()
    assert len(out) == 1 and isinstance(out[0], ParsedCall) and out[0].name == "f"
    assert out[0].id.startswith("call_")


THINK = "<think>plan a b</think>\n\nThe answer <thi is 4."


@pytest.mark.parametrize("pieces", splits(THINK))
def test_reasoning_splitter(pieces: list[str]) -> None:
    splitter = ReasoningSplitter(["<think>", "</think>"])
    parts = [p for piece in pieces for p in splitter.feed(piece)] + splitter.flush()
    reasoning = "".join(p.text for p in parts if p.kind == "reasoning")
    content = "".join(p.text for p in parts if p.kind == "content")
    assert reasoning == "plan a b"
    assert content == "The answer <thi is 4."


def test_reasoning_splitter_off() -> None:
    splitter = ReasoningSplitter([])
    assert [p.text for p in splitter.feed("<think>x</think>")] == ["<think>x</think>"]


# --- text cut off by max_tokens ------------------------------------------------------

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def run_truncated(pieces: list[str]) -> list[str | ParsedCall]:
    parser = ToolCallParser()
    out: list[str | ParsedCall] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out + parser.flush(truncated=True)


@pytest.mark.parametrize("cut", range(len("Sure. ") + 1, len("Sure. " + CALL)))
def test_truncated_call_never_leaks_markup(cut: int) -> None:
    """Cut anywhere inside the call: the markup never becomes content; the
    call survives once its JSON is whole, whatever the split."""
    text = ("Sure. " + CALL)[:cut]
    for pieces in ([text], list(text)):
        # (White space before a call is held, and dropped with the call.)
        out = [part.rstrip() if isinstance(part, str) else part for part in merged(run_truncated(pieces))]
        whole = cut >= len("Sure. " + CALL) - len("\n</tool_call>")
        assert out == (["Sure.", ("get_weather", {"city": "Paris"})] if whole else ["Sure."]), (cut, out)


def test_truncated_text_loses_only_a_start_tag_cut_off_at_its_end() -> None:
    assert "".join(map(str, run_truncated(["a < b and c <tool_"]))) == "a < b and c "
    assert run_truncated(["a < b"]) == ["a < b"]
    # Text that ended on its own keeps an unclosed call as text, as before.
    assert "".join(map(str, run_tools(["x <tool_"]))) == "x <tool_"


def test_many_unclosed_strings_neither_recurse_nor_hold_text_back() -> None:
    junk = '<tool_call>"</tool_call>x"' * 1001
    assert "".join(str(part) for part in run_tools([junk])) == junk  # no RecursionError, all of it text
    parser = ToolCallParser()
    shown = parser.feed('<tool_call>{"bad json</tool_call> Here is my answer.')
    shown += parser.feed(" It goes on" * 60)  # past HELD_PAST_AN_END_TAG: shown before the text ends
    assert "".join(map(str, shown)).startswith('<tool_call>{"bad json</tool_call> Here is my answer. It goes on')


def test_a_raw_newline_in_a_calls_string_is_the_newline_meant() -> None:
    # Models that are not grammar-constrained (another backend, an upstream) write code with raw newlines.
    (call,) = run_tools(['<tool_call>{"name": "run", "arguments": {"code": "a = 1\nprint(a)"}}</tool_call>'])
    assert isinstance(call, ParsedCall) and json.loads(call.arguments) == {"code": "a = 1\nprint(a)"}
