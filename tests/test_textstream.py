"""adapters/textstream.py: token bytes → text to hand out, with stop strings."""

from __future__ import annotations

from modelyard.adapters.textstream import TextStream, find_stop, partial_stop_suffix


def feed_all(stream: TextStream, pieces: list[bytes]) -> list[str]:
    out = [stream.feed(piece) for piece in pieces]
    return out + [stream.finish()]


def test_a_character_split_over_tokens_waits_for_its_last_byte() -> None:
    data = "é日".encode()
    stream = TextStream([])
    assert feed_all(stream, [data[:1], data[1:3], data[3:]]) == ["", "é", "日", ""]


def test_bytes_that_never_form_a_character_become_replacement_at_once() -> None:
    assert TextStream([]).feed(b"a\xffb") == "a\ufffdb"


def test_a_character_cut_off_at_the_end_is_dropped() -> None:
    stream = TextStream([])
    assert feed_all(stream, [b"ok", "日".encode()[:2]]) == ["ok", "", ""]


def test_stop_string_is_cut_and_its_start_held_back() -> None:
    stream = TextStream(["END"])
    assert feed_all(stream, [b"abc E", b"N", b"D more"]) == ["abc ", "", "", ""]
    assert stream.stopped and stream.stop_string == "END"


def test_held_text_is_released_when_it_stops_matching() -> None:
    stream = TextStream(["END"])
    assert feed_all(stream, [b"abc E", b"Nx", b"y"]) == ["abc ", "ENx", "y", ""]
    assert not stream.stopped and stream.stop_string is None


def test_held_text_is_returned_at_the_end_without_a_stop() -> None:
    stream = TextStream(["END"])
    assert feed_all(stream, [b"abc EN"]) == ["abc ", "EN"]


def test_earliest_stop_wins_and_empty_stops_are_ignored() -> None:
    stream = TextStream(["", "yz", "x"])
    assert stream.feed(b"wxyz") == "w" and stream.stop_string == "x"
    assert stream.feed(b"more") == "" and stream.finish() == ""


def test_helpers() -> None:
    assert partial_stop_suffix("hello wo", ["world", "low"]) == 2
    assert partial_stop_suffix("hello", ["hello"]) == 0  # a whole stop string is a match, not a prefix
    assert find_stop("a<|im_end|>b", ["b", "<|im_end|>"]) == (1, "<|im_end|>")
    assert find_stop("abc", ["x"]) == (-1, None)
