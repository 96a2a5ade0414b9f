"""The model-free parts of images in llama-cpp prompts (adapters/llama_vision.py):
content parts to a templated string and back to typed parts, the sentinels
an image's places hold, and the rule that a cached prefix never ends inside
an image. The model side is tests/test_vision.py."""

from __future__ import annotations

import pytest
from modelyard.adapters.base import ImageInput, InvalidRequestError
from modelyard.adapters.llama_prompt_cache import common_prefix
from modelyard.adapters.llama_vision import ImagePrompt, ImageSpan, flatten_images, image_sentinels, typed_content

MARK = "<__media_test__>"
A = ImageInput(b"png-a", 1, 1)
B = ImageInput(b"png-b", 1, 1)


def test_parts_become_one_string_with_a_marker_per_image_in_order() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look: "},
                {"type": "image", "image": A},
                {"type": "text", "text": " and "},
                {"type": "image", "image": B},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Two."}]},
    ]
    flat, images = flatten_images(messages, MARK)
    assert [m["content"] for m in flat] == ["Be brief.", f"Look: {MARK} and {MARK}", "Two."]
    assert images == [b"png-a", b"png-b"]
    assert messages[1]["content"][0]["text"] == "Look: "  # the request's own messages are left as they were


def test_an_image_for_a_model_without_a_projector_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="takes no images"):
        flatten_images([{"role": "user", "content": [{"type": "image", "image": A}]}], None)
    flat, images = flatten_images([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], None)
    assert flat == [{"role": "user", "content": "hi"}] and images == []


def test_typed_content_makes_each_marker_a_part() -> None:
    typed = typed_content([{"role": "user", "content": f"a{MARK}b{MARK}"}, {"role": "assistant", "content": ""}], MARK)
    assert [part["text"] for part in typed[0]["content"]] == ["a", MARK, "b", MARK]
    assert all(part["type"] == "text" for part in typed[0]["content"])
    assert typed[1]["content"] == [{"type": "text", "text": ""}]  # templates that index content[0] still find a part
    no_marker = typed_content([{"role": "user", "content": f"x{MARK}"}], None)
    assert no_marker[0]["content"] == [{"type": "text", "text": f"x{MARK}"}]


def test_sentinels_match_only_the_same_image_at_the_same_place() -> None:
    red, blue = "ab" * 32, "cd" * 32  # SHA-256 hex ids
    assert image_sentinels(red, 4) == image_sentinels(red, 4)
    assert all(t < 0 for t in image_sentinels(red, 4)) and len(set(image_sentinels(red, 4))) == 4
    text = [1, 2, 3]
    assert common_prefix(text + image_sentinels(red, 4) + [9], text + image_sentinels(blue, 4) + [9]) == 3
    assert common_prefix(text + image_sentinels(red, 4) + [9], text + image_sentinels(red, 4) + [9]) == 8
    assert image_sentinels("", 2) != image_sentinels("", 2)  # an image without an id never matches


def test_a_kept_prefix_never_ends_inside_an_image() -> None:
    prompt = ImagePrompt(None, None, [1, 2, *image_sentinels("ab" * 32, 4), 3], [ImageSpan(2, 4, None)])
    assert [prompt.aligned(keep) for keep in range(8)] == [0, 1, 2, 2, 2, 2, 6, 7]
    assert prompt.at(2) is prompt.spans[0] and prompt.at(3) is None
    assert prompt.next_start(0) == 2 and prompt.next_start(3) is None
