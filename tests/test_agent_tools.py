"""Checks of a hosted call's arguments and of skill zips that need no server: what the model writes never
reaches a program as something it cannot take (router/agent_tools.py, router/skill_archive.py)."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from modelyard.router.agent_tools import parse_arguments
from modelyard.router.errors import APIError
from modelyard.router.skill_archive import ArchiveLimits, read_skill_zip
from modelyard.schemas.config import StorageConfig


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("web_search", {"query": " kettles "}, {"query": "kettles"}),
        ("code_interpreter", {"code": "print(1)"}, {"code": "print(1)"}),
        ("shell", {"commands": ["ls", "pwd"]}, {"commands": ["ls", "pwd"]}),
        ("shell", {"command": "ls"}, {"commands": ["ls"]}),
    ],
)
def test_good_arguments(tool: str, arguments: dict[str, object], expected: dict[str, object]) -> None:
    assert parse_arguments(tool, json.dumps(arguments)) == expected


@pytest.mark.parametrize(
    ("tool", "arguments", "reason"),
    [
        ("code_interpreter", '{"code": "print(\\"\\ud800\\")"}', "lone surrogate"),
        ("shell", '{"commands": ["echo hi\\u0000there"]}', "NUL"),
        ("web_search", '{"query": "\\udfff"}', "lone surrogate"),
        ("shell", '{"commands": [{"nested": "\\ud800"}]}', "lone surrogate"),
        ("code_interpreter", "[1]", "JSON object"),
        ("code_interpreter", "{not json", "not JSON"),
        ("web_search", '{"query": "  "}', "non-empty"),
        ("shell", '{"commands": []}', "list of command lines"),
    ],
)
def test_arguments_a_program_cannot_take_are_told_to_the_model(tool: str, arguments: str, reason: str) -> None:
    told = parse_arguments(tool, arguments)
    assert isinstance(told, str) and reason in told


def test_a_skill_entry_that_is_a_file_and_a_folder_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("SKILL.md", "---\nname: clash\ndescription: a clash\n---\nBody.\n")
        archive.writestr("x", "a file")
        archive.writestr("x/y", "and a folder")
    with pytest.raises(APIError) as refused:
        read_skill_zip(buffer.getvalue(), ArchiveLimits.of(StorageConfig()))
    assert refused.value.status == 400 and "'x' is a file and also a folder" in refused.value.message


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "web_search_call", "id": "ws_1", "status": "completed", "action": "search"}, "input[1].action"),
        ({"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "sources": 5}},
         "input[1].action.sources"),
        ({"type": "code_interpreter_call", "id": "ci_1", "status": "completed", "code": "x", "outputs": 5,
          "container_id": "c"}, "input[1].outputs"),
        ({"type": "code_interpreter_call", "id": "ci_1", "status": "completed", "code": "x",
          "outputs": [{"type": "logs", "logs": 5}], "container_id": "c"}, "input[1].outputs[0].logs"),
        ({"type": "shell_call", "call_id": "c1", "status": "completed", "action": {"commands": "ls"}}, "input[1].action.commands"),
        ({"type": "shell_call_output", "call_id": "c1", "output": [{"stdout": "", "stderr": "", "outcome": "exit"}]},
         "input[1].output[0].outcome"),
    ],
)
def test_hosted_items_of_another_shape_in_responses_input_are_a_400(item: dict[str, object], param: str) -> None:
    from modelyard.router.response_input import chat_messages, normalize_input
    from modelyard.schemas import responses as rs

    body = rs.CreateResponseRequest(model="m", input=[{"role": "user", "content": "hi"}, item])
    with pytest.raises(APIError) as refused:
        chat_messages(None, normalize_input(body.input), [])
    assert refused.value.status == 400 and refused.value.param == param
