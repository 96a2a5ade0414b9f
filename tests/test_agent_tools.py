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
