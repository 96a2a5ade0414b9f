"""Every script in examples/ runs against a real server on the embedded
default config (what `make serve` serves) and exits 0.

The scripts are found with a glob, so a new example is covered as soon as
it is added; give it expected output in EXPECTED to check more than its
exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.real_model

EXAMPLES = sorted((REPO / "examples").glob("*.py"))

# Text each example's stdout must contain, beyond exiting 0.
EXPECTED: dict[str, list[str]] = {
    "chat.py": ["model: smollm2", "reply: ", "usage: prompt="],
    "streaming.py": ["reply: ", "finish_reason: ", "usage: prompt="],
    "multi_model.py": [
        "smollm2",
        "modality=chat",
        "status=loaded",
        "asked for 'smollm2', answered by 'smollm2'",
        "asked for 'gpt-4o-mini', answered by 'smollm2'",
        "model_not_found",
    ],
    "skills.py": ["created skill_", "version 2: ", "listed: ['haiku-writer']", "same as uploaded: True", "reply: ", "deleted: True"],
    "files.py": ["uploaded part-0.jsonl: file-", "has_more=True", "downloaded part-0.jsonl: ", "anthropic sees part-0.jsonl", "after delete: 404 file_not_found"],
    "anthropic_chat.py": ["stop_reason=", "tool_use: get_weather(", "after the tool result:"],
    "agent_chat.py": ["web_search round 1: failed=False", "sources: ['local:zorland.md'", "citations: ['local:",
                      "code_interpreter round 1", "progress: code_interpreter calling", "progress: code_interpreter complete"],
    "agent_responses.py": ["item: web_search_call status=completed", "item: code_interpreter_call", "container=cntr_",
                           "same container: True"],
    "agent_messages.py": ["block: server_tool_use", "block: web_search_tool_result", "block: code_execution_tool_result",
                          "container: cntr_"],
    "speech.py": [
        "voices of piper-joe: alloy, ",
        *(f"wrote speech.{fmt}: " for fmt in ("mp3", "opus", "aac", "flac", "wav", "pcm")),
        "audio/mpeg",
        "streamed story.mp3: ",
    ],
    "vision.py": [
        "smollm2-vision: capabilities ['chat', 'vision']",
        "smollm2: capabilities ['chat']",
        "chat: ",  # the model's words follow, in whichever quotes repr() picks
        "without the image, ",
        "responses: ",
        "messages: ",
        "smollm2 refused: 400 The model 'smollm2' does not take images: messages[0].content[0] is an image.",
    ],
    "transcribe.py": [
        "json: 'Good morning",
        "weather",
        "text: 'Good morning",
        "srt:\n1\n00:00:00,000 --> ",
        "vtt:\nWEBVTT\n",
        "verbose_json: language=english",
        "  word ",
        "[delta ",
        "done: 'Good morning",
        "translation (to English): '",
    ],
}


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    # No -c: the CLI serves the embedded configs/default.toml (with the agent tools on, for agent_chat.py).
    return server_factory(None, args=["--agent"])


def test_examples_are_found() -> None:
    names = {path.name for path in EXAMPLES}
    assert set(EXPECTED) <= names, f"missing examples: {set(EXPECTED) - names}"


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(script: Path, server: Any) -> None:
    env = {**os.environ, "MODELYARD_BASE_URL": f"{server.base_url}/v1", "MODELYARD_API_KEY": "not-needed"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\nserver log:\n{server.log()}"
    assert result.returncode == 0, output
    assert result.stdout.strip(), output
    for expected in EXPECTED.get(script.name, []):
        assert expected in result.stdout, f"{expected!r} not in the output of {script.name}\n{output}"
    if "reply: " in result.stdout:
        reply = result.stdout.split("reply: ", 1)[1].split("\n", 1)[0]
        assert reply.strip(), f"empty reply from {script.name}\n{output}"
