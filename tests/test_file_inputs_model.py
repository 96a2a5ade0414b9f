"""Files attached to requests, on the real SmolLM2 through a real server:
an uploaded text file reaches the prompt on chat completions, Responses
and Messages (the prompt's token count is exactly that of the same prompt
with the file's preview written out as text), the model reads it (a forced
JSON answer naming the attached file among decoys), and a file too long
for the context is a 400 naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import ServerProcess, chat_model_toml

pytestmark = pytest.mark.real_model

NAME = "warehouse_inventory.txt"
TEXT = "Inventory of the north warehouse: 42 red boxes, 7 blue crates and 3 green barrels."
PREVIEW = f'<file name="{NAME}">\n{TEXT}\n</file>'
QUESTION = "Which file is attached above? Answer with its exact file name."
# The attached file's name is not the first choice: a model that did not read it has no reason to pick it.
CHOICES = ["budget_2024.csv", "meeting_notes.md", NAME, "holiday_photos.zip"]
SCHEMA = {"type": "object", "properties": {"file": {"type": "string", "enum": CHOICES}}, "required": ["file"], "additionalProperties": False}
LONG = " ".join(f"line {i} of the log says nothing new." for i in range(600))  # ~5,000 tokens: over n_ctx 1024


@pytest.fixture(scope="module")
def server(server_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    storage: Path = tmp_path_factory.mktemp("storage") / "responses.sqlite3"
    server: ServerProcess = server_factory(f'[storage]\npath = "{storage}"\n\n' + chat_model_toml("smol"))
    return server


# `client` and `claude`: conftest's SDK clients of this module's server.
@pytest.fixture(scope="module")
def file_id(client: openai.OpenAI) -> str:
    return client.files.create(file=(NAME, TEXT.encode()), purpose="user_data").id


def test_chat_reads_an_uploaded_file(client: openai.OpenAI, file_id: str) -> None:
    def ask(content: Any) -> Any:
        return client.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": content}],
            temperature=0,
            max_tokens=40,
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}},
        )

    with_file = ask([{"type": "file", "file": {"file_id": file_id}}, {"type": "text", "text": QUESTION}])
    written_out = ask(f"{PREVIEW}\n{QUESTION}")
    bare = ask(QUESTION)
    assert with_file.usage is not None and written_out.usage is not None and bare.usage is not None
    assert with_file.usage.prompt_tokens == written_out.usage.prompt_tokens
    assert with_file.usage.prompt_tokens >= bare.usage.prompt_tokens + len(TEXT.split())
    assert json.loads(with_file.choices[0].message.content or "") == {"file": NAME}
    # Without the file, the name is not what the model picks: the answer above came from reading it.
    assert json.loads(bare.choices[0].message.content or "") != {"file": NAME}


def test_responses_reads_an_uploaded_file(client: openai.OpenAI, file_id: str, server: ServerProcess) -> None:
    def ask(content: Any) -> Any:
        return client.responses.create(
            model="smol",
            input=[{"role": "user", "content": content}],
            temperature=0,
            max_output_tokens=40,
            text={"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA, "strict": True}},
        )

    file_url = f"{server.base_url}/v1/files/{file_id}/content"
    with_file = ask([{"type": "input_file", "file_url": file_url}, {"type": "input_text", "text": QUESTION}])
    written_out = ask([{"type": "input_text", "text": f"{PREVIEW}\n{QUESTION}"}])
    assert with_file.usage.input_tokens == written_out.usage.input_tokens
    assert json.loads(with_file.output_text) == {"file": NAME}


def test_messages_reads_an_uploaded_file(claude: anthropic.Anthropic) -> None:
    uploaded = claude.beta.files.upload(file=(NAME, TEXT.encode(), "text/plain")).id

    def ask(content: Any) -> Any:
        return claude.messages.create(
            model="smol",
            max_tokens=40,
            messages=[{"role": "user", "content": content}],
            # This SDK's create() takes no temperature any more; the API still does.
            extra_body={"temperature": 0, "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
        )

    document = {"type": "document", "source": {"type": "file", "file_id": uploaded}}
    with_file = ask([document, {"type": "text", "text": QUESTION}])
    written_out = ask(f"{PREVIEW}\n{QUESTION}")
    assert with_file.usage.input_tokens == written_out.usage.input_tokens
    block = with_file.content[0]
    assert block.type == "text" and json.loads(block.text) == {"file": NAME}


def test_a_file_too_long_for_the_context_is_named(client: openai.OpenAI, server: ServerProcess) -> None:
    long_id = client.files.create(file=("server.log", LONG.encode()), purpose="user_data").id
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": [{"type": "text", "text": "Summarize."}, {"type": "file", "file": {"file_id": long_id}}]}],
            max_tokens=5,
        )
    assert "this model's context holds 1024" in caught.value.message and "'server.log'" in caught.value.message
    body = {
        "model": "smol",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": LONG}, "title": "huge.txt"}]}],
    }
    response = httpx.post(f"{server.base_url}/v1/messages", json=body, timeout=120)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and "'huge.txt'" in error["error"]["message"], error
