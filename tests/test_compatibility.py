"""docs/compatibility.md and the code agree: every request field is in the
table, and every field the table calls rejected is rejected by the server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from modelyard.schemas import anthropic as an
from modelyard.schemas import openai as oa

from tests.conftest import local_http, scripted_model_toml

DOC = Path(__file__).resolve().parent.parent / "docs" / "compatibility.md"

# A value that is not neutral for each field the server rejects.
NON_NEUTRAL: dict[str, Any] = {
    "audio": {"voice": "alloy", "format": "wav"},
    "function_call": "auto",
    "functions": [{"name": "f", "parameters": {}}],
    "prediction": {"type": "content", "content": "x"},
}


def chat_table(heading: str = "## `POST /v1/chat/completions`") -> dict[str, str]:
    text = DOC.read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`"):
            for name in re.findall(r"`([a-z_.]+)`", cells[0]):
                rows[name] = cells[1]
    return rows


def test_every_request_field_is_in_the_table() -> None:
    rows = chat_table()
    missing = [name for name in oa.ChatCompletionRequest.model_fields if name not in rows and f"{name}.include_usage" not in rows]
    assert not missing, f"docs/compatibility.md lacks rows for {missing}"


def test_every_messages_field_is_in_the_anthropic_table() -> None:
    rows = chat_table("## `POST /v1/messages` (Anthropic)")
    missing = [name for name in an.MessagesRequest.model_fields if name not in rows]
    assert not missing, f"docs/compatibility.md lacks Messages rows for {missing}"
    assert set(rows.values()) <= {"honoured", "accepted and ignored"}, rows


def test_table_status_matches_the_code() -> None:
    rows = chat_table()
    for name in oa.NOT_SUPPORTED:
        assert rows[name].startswith("rejected"), f"{name} is rejected by the code but documented as {rows[name]!r}"
    for name, status in rows.items():
        if status == "honoured":
            assert name not in oa.NOT_SUPPORTED, f"{name} is documented as honoured but rejected by the code"
    assert set(NON_NEUTRAL) == {n for n, s in rows.items() if s.startswith("rejected")}


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    # The model is never loaded: rejection happens before any model work.
    return server_factory(scripted_model_toml("lazy", load="lazy"), wait=False)


@pytest.mark.parametrize("field", sorted(NON_NEUTRAL))
def test_rejected_fields_get_400(server: Any, field: str) -> None:
    body = {"model": "lazy", "messages": [{"role": "user", "content": "hi"}], field: NON_NEUTRAL[field]}
    response = local_http.post(f"{server.base_url}/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["code"] == "unsupported_parameter"
    assert server.health()["models"]["lazy"]["status"] == "unloaded"


def test_unrecognized_field_is_named(server: Any) -> None:
    body = {"model": "lazy", "messages": [{"role": "user", "content": "hi"}], "best_of": 3}
    response = local_http.post(f"{server.base_url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Unrecognized request argument supplied: best_of"
