"""The Skills API through a real server: the openai SDK's `skills` (create,
versions, default version, pagination, content, delete) and the anthropic
SDK's `beta.skills` on the same routes (Anthropic's shapes and errors);
uploads refused before they are stored (zip bombs, traversal, symlinks,
SKILL.md problems); another key's 404; skills surviving a restart; and the
skills attached to a Responses shell tool or a Messages container reaching
the model's system prompt (the scripted `echo` model answers with what it
was sent). One real-model test checks the prompt grows by the skill's section."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from modelyard.router.skill_prompt import HEADER

from tests.conftest import chat_model_toml, scripted_model_toml

ALICE = "alice-skills-key-0001"
BOB = "bob-skills-key-00002"
DESCRIPTION = "Turns quarterly numbers into a one-page brief."


def config(storage: Path, model: str | None = None) -> str:
    keys = "".join(f'[[auth.keys]]\nname = "{n}"\nkey = "{k}"\nmetrics = true\n' for n, k in (("alice", ALICE), ("bob", BOB)))
    limits = 'skill_max_entries = 20\nskill_max_uncompressed_bytes = "2MiB"\n'
    models = model or scripted_model_toml("echo", options="echo = true\n")
    return f'[storage]\npath = "{storage}"\n{limits}\n{keys}\n{models}'


def skill_md(name: str = "quarterly-brief", description: str = DESCRIPTION, body: str = "# Steps\n1. Read the numbers.\n") -> bytes:
    return f"---\nname: {name}\ndescription: {description}\n---\n{body}".encode()


def make_zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def skill_zip(name: str = "quarterly-brief", description: str = DESCRIPTION) -> bytes:
    return make_zip({f"{name}/SKILL.md": skill_md(name, description), f"{name}/scripts/brief.py": b"print('brief')\n"})


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("skills") / "responses.sqlite3"


@pytest.fixture(scope="module")
def server(server_factory: Any, storage: Path) -> Any:
    return server_factory(config(storage), health_key=ALICE)


def openai_client(server: Any, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def alice(server: Any) -> Iterator[openai.OpenAI]:
    with openai_client(server) as client:
        yield client


@pytest.fixture(scope="module")
def claude_alice(server: Any) -> Iterator[Any]:
    import anthropic

    with anthropic.Anthropic(base_url=server.base_url, api_key=ALICE, max_retries=0, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def http(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"authorization": f"Bearer {ALICE}"}, timeout=30) as client:
        yield client


# --- the openai SDK -----------------------------------------------------------------


def test_openai_lifecycle(alice: openai.OpenAI) -> None:
    uploaded = skill_zip()
    skill = alice.skills.create(files=("brief.zip", uploaded, "application/zip"))
    assert skill.object == "skill" and skill.id.startswith("skill_")
    assert (skill.name, skill.description, skill.default_version, skill.latest_version) == ("quarterly-brief", DESCRIPTION, "1", "1")
    assert alice.skills.content.retrieve(skill.id).read() == uploaded

    # A folder upload (files[]), made the default.
    second = alice.skills.versions.create(
        skill.id, files=[("quarterly-brief/SKILL.md", skill_md(description="Version two.")), ("quarterly-brief/a.txt", b"a")], default=True
    )
    assert (second.object, second.version, second.skill_id, second.description) == ("skill.version", "2", skill.id, "Version two.")
    current = alice.skills.retrieve(skill.id)
    assert (current.default_version, current.latest_version, current.description) == ("2", "2", "Version two.")
    with zipfile.ZipFile(io.BytesIO(alice.skills.versions.content.retrieve("2", skill_id=skill.id).read())) as folder:
        assert sorted(folder.namelist()) == ["quarterly-brief/SKILL.md", "quarterly-brief/a.txt"]

    # A third version that is not the default; then the default set back to 1.
    third = alice.skills.versions.create(skill.id, files=("v3.zip", skill_zip(description="Version three."), "application/zip"))
    assert alice.skills.retrieve(skill.id).default_version == "2"
    back = alice.skills.update(skill.id, default_version="1")
    assert (back.default_version, back.latest_version, back.description) == ("1", "3", DESCRIPTION)
    assert alice.skills.content.retrieve(skill.id).read() == uploaded

    versions = alice.skills.versions.list(skill.id, limit=2, order="asc")
    assert [v.version for v in versions.data] == ["1", "2"] and versions.has_more
    assert [v.version for v in versions] == ["1", "2", "3"]  # the SDK follows `after`
    assert alice.skills.versions.retrieve("latest", skill_id=skill.id).id == third.id

    deleted = alice.skills.versions.delete("3", skill_id=skill.id)
    assert (deleted.object, deleted.deleted, deleted.version, deleted.id) == ("skill.version.deleted", True, "3", third.id)
    assert alice.skills.retrieve(skill.id).latest_version == "2"
    with pytest.raises(openai.NotFoundError, match="has no version '3'"):
        alice.skills.versions.retrieve("3", skill_id=skill.id)
    with pytest.raises(openai.NotFoundError):
        alice.skills.update(skill.id, default_version="7")

    gone = alice.skills.delete(skill.id)
    assert (gone.object, gone.deleted, gone.id) == ("skill.deleted", True, skill.id)
    with pytest.raises(openai.NotFoundError) as caught:
        alice.skills.retrieve(skill.id)
    assert caught.value.body["code"] == "skill_not_found"  # type: ignore[index]


def test_openai_list_pagination(server: Any) -> None:
    with openai_client(server, BOB) as bob:  # bob's list holds only these
        made = [bob.skills.create(files=(f"{i}.zip", skill_zip(f"skill-{i}"), "application/zip")).id for i in range(5)]
        first = bob.skills.list(limit=2)
        assert [s.id for s in first.data] == made[::-1][:2] and first.has_more
        assert [s.id for s in bob.skills.list(limit=2)] == made[::-1]  # auto-pagination
        assert [s.id for s in bob.skills.list(order="asc", limit=3).data] == made[:3]
        with pytest.raises(openai.BadRequestError, match="after"):
            bob.skills.list(after="skill_nope")
        with pytest.raises(openai.BadRequestError, match="limit"):
            bob.skills.list(limit=101)
        for odd in ("\u00b2", "9" * 30):
            with pytest.raises(openai.BadRequestError, match="limit"):
                bob.skills.list(extra_query={"limit": odd})
            with pytest.raises(openai.NotFoundError):
                bob.skills.versions.retrieve(odd, skill_id=made[0])
        for skill_id in made:
            bob.skills.delete(skill_id)
        assert bob.skills.list().data == []


# --- the anthropic SDK ----------------------------------------------------------------


def test_anthropic_lifecycle(claude_alice: Any, http: httpx.Client) -> None:
    import anthropic

    skill = claude_alice.beta.skills.create(
        display_name="Quarterly brief", files=[("quarterly-brief/SKILL.md", skill_md()), ("quarterly-brief/notes.md", b"n")]
    )
    assert (skill.type, skill.display_name, skill.source.type) == ("skill", "Quarterly brief", "custom")
    assert skill.latest_version_id.startswith("skillver_")
    listed = http.get("/v1/skills", headers={"anthropic-version": "2023-06-01", "anthropic-beta": "skills-2025-10-02"}).json()
    assert set(listed) == {"data", "has_more", "next_page"}
    mine = next(s for s in listed["data"] if s["id"] == skill.id)
    assert {"id", "type", "display_title", "latest_version", "source", "created_at", "updated_at"} <= set(mine)
    assert mine["display_title"] == "Quarterly brief" and mine["created_at"].endswith("Z")
    assert skill.id in [s.id for s in claude_alice.beta.skills.list(limit=1000)]
    assert claude_alice.beta.skills.retrieve(skill.id).display_name == "Quarterly brief"

    version = claude_alice.beta.skills.versions.create(skill.id, files=[("quarterly-brief/SKILL.md", skill_md(description="Two."))])
    assert (version.type, version.skill_id, version.name, version.description) == ("skill_version", skill.id, "quarterly-brief", "Two.")
    assert claude_alice.beta.skills.retrieve(skill.id).latest_version_id == version.id
    versions = claude_alice.beta.skills.versions.list(skill.id, limit=1)
    assert len(versions.data) == 1 and versions.next_page
    all_versions = list(claude_alice.beta.skills.versions.list(skill.id, limit=1))
    assert [v.id for v in all_versions] == [version.id, skill.latest_version_id]
    assert claude_alice.beta.skills.versions.retrieve(version.id, skill_id=skill.id).description == "Two."
    # Every version keeps the skill's name.
    with pytest.raises(anthropic.BadRequestError, match="must be named 'quarterly-brief'"):
        claude_alice.beta.skills.versions.create(skill.id, files=[("other/SKILL.md", skill_md("other"))])

    for each in all_versions:
        assert claude_alice.beta.skills.versions.delete(each.id, skill_id=skill.id).type == "skill_version_deleted"
    assert claude_alice.beta.skills.delete(skill.id).type == "skill_deleted"
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude_alice.beta.skills.retrieve(skill.id)
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "not_found_error"


def test_anthropic_errors_take_anthropic_shape(http: httpx.Client) -> None:
    headers = {"anthropic-version": "2023-06-01"}
    refused = http.post("/v1/skills", headers=headers, files=[("files[]", ("x/SKILL.md", b"no front matter"))])
    assert refused.status_code == 400
    assert refused.json()["error"] == {"type": "invalid_request_error", "message": refused.json()["error"]["message"]}
    assert "front matter" in refused.json()["error"]["message"]
    # Anthropic reserves some words in names.
    reserved = http.post("/v1/skills", headers=headers, files=[("files[]", ("x/SKILL.md", skill_md("claude-helper")))])
    assert reserved.status_code == 400 and "reserved word 'claude'" in reserved.json()["error"]["message"]
    unauthorized = httpx.get(f"{http.base_url}/v1/skills", headers=headers)
    assert unauthorized.status_code == 401 and unauthorized.json()["type"] == "error"
    bad_limit = http.get("/v1/skills?limit=abc", headers=headers)
    assert bad_limit.status_code == 400 and bad_limit.json()["type"] == "error"


# --- refused uploads -------------------------------------------------------------------


def symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("s/SKILL.md", skill_md("s"))
        link = zipfile.ZipInfo("s/passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def lying_zip() -> bytes:
    """A stored entry whose declared size (local header and central directory) is less than it holds."""
    data = bytearray(make_zip({"s/SKILL.md": skill_md("s"), "s/big.bin": b"x" * 5000}, zipfile.ZIP_STORED))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = data.find(signature, data.find(b"s/big.bin") - 50 if signature == b"PK\x03\x04" else 0)
        while start != -1 and b"s/big.bin" not in data[start : start + 60]:
            start = data.find(signature, start + 4)
        data[start + offset : start + offset + 4] = (100).to_bytes(4, "little")
    return bytes(data)


REFUSED = {
    "zip bomb (compression ratio)": (make_zip({"s/SKILL.md": skill_md("s"), "s/zeros.bin": bytes(1_500_000)}), "zip bomb"),
    "unzipped size": (make_zip({"s/SKILL.md": skill_md("s"), **{f"s/{i}.bin": os.urandom(800_000) for i in range(3)}}), "skill_max_uncompressed_bytes"),
    "entry count": (make_zip({"s/SKILL.md": skill_md("s"), **{f"s/{i}.txt": b"x" for i in range(25)}}), "skill_max_entries"),
    "declared size": (lying_zip(), "'s/big.bin'"),
    "traversal": (make_zip({"s/SKILL.md": skill_md("s"), "s/../../evil.sh": b"x"}), "'..'"),
    "absolute path": (make_zip({"s/SKILL.md": skill_md("s"), "/etc/cron.d/evil": b"x"}), "absolute path"),
    "symlink": (symlink_zip(), "symbolic link"),
    "missing SKILL.md": (make_zip({"s/README.md": b"hello"}), "no SKILL.md"),
    "no front matter": (make_zip({"s/SKILL.md": b"# just a title\n"}), "does not start with YAML front matter"),
    "no description": (make_zip({"s/SKILL.md": b"---\nname: s\n---\nbody\n"}), "no 'description'"),
    "bad name": (make_zip({"s/SKILL.md": skill_md("My Skill!")}), "the name 'My Skill!' is not valid"),
    "bad YAML": (make_zip({"s/SKILL.md": b"---\nname: [unclosed\ndescription: x\n---\n"}), "not valid YAML"),
    "not a zip": (b"PK\x03\x04 this is not really a zip", "not a readable zip"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_uploads_are_refused_saying_why(alice: openai.OpenAI, case: str) -> None:
    data, message = REFUSED[case]
    with pytest.raises(openai.BadRequestError) as caught:
        alice.skills.create(files=("skill.zip", data, "application/zip"))
    error = caught.value.body
    assert message in error["message"] and error["param"] == "files" and error["code"] == "invalid_skill", error  # type: ignore[index]


def test_bad_folder_uploads_are_refused(http: httpx.Client) -> None:
    two_tops = http.post("/v1/skills", files=[("files[]", ("a/SKILL.md", skill_md("a"))), ("files[]", ("b/x.txt", b"x"))])
    assert two_tops.status_code == 400 and "one top-level folder" in two_tops.json()["error"]["message"]
    traversal = http.post("/v1/skills", files=[("files[]", ("a/../SKILL.md", skill_md("a")))])
    assert traversal.status_code == 400 and "'..'" in traversal.json()["error"]["message"]
    not_multipart = http.post("/v1/skills", json={"files": "x"})
    assert not_multipart.status_code == 400 and "multipart/form-data" in not_multipart.json()["error"]["message"]
    nothing = http.post("/v1/skills", data={"display_name": "x"}, files=[("other", ("x", b"x"))])
    assert nothing.status_code == 400


# --- owners and restarts ---------------------------------------------------------------------


def test_another_key_gets_404(server: Any, alice: openai.OpenAI) -> None:
    skill = alice.skills.create(files=("s.zip", skill_zip("private-skill"), "application/zip"))
    with openai_client(server, BOB) as bob:
        for call in (
            lambda: bob.skills.retrieve(skill.id),
            lambda: bob.skills.content.retrieve(skill.id),
            lambda: bob.skills.versions.list(skill.id),
            lambda: bob.skills.delete(skill.id),
            lambda: bob.skills.versions.create(skill.id, files=("s.zip", skill_zip("private-skill"), "application/zip")),
        ):
            with pytest.raises(openai.NotFoundError):
                call()
        assert skill.id not in [s.id for s in bob.skills.list()]
        with pytest.raises(openai.NotFoundError, match="No skill with id"):
            bob.responses.create(model="echo", input="hi", tools=[shell_with(skill.id)])  # type: ignore[list-item]
    assert alice.skills.retrieve(skill.id).name == "private-skill"


def test_skills_survive_a_restart(server_factory: Any, server: Any, alice: openai.OpenAI, storage: Path) -> None:
    uploaded = skill_zip("kept-skill")
    skill = alice.skills.create(files=("s.zip", uploaded, "application/zip"))
    restarted = server_factory(config(storage), health_key=ALICE)
    with openai_client(restarted) as again:
        assert again.skills.retrieve(skill.id).name == "kept-skill"
        assert again.skills.content.retrieve(skill.id).read() == uploaded


# --- skills in the prompt -------------------------------------------------------------------------


def shell_with(skill_id: str, version: Any = None) -> dict[str, Any]:
    reference: dict[str, Any] = {"type": "skill_reference", "skill_id": skill_id}
    if version is not None:
        reference["version"] = version
    return {"type": "shell", "environment": {"type": "container_auto", "skills": [reference]}}


def system_of(text: str) -> str:
    messages = json.loads(text)["messages"]
    assert messages[0]["role"] == "system", messages
    return str(messages[0]["content"])


def test_responses_shell_skills_reach_the_system_prompt(alice: openai.OpenAI) -> None:
    skill = alice.skills.create(files=("s.zip", skill_zip("prompt-skill"), "application/zip"))
    alice.skills.versions.create(skill.id, files=("s.zip", skill_zip("prompt-skill", "The second version."), "application/zip"))
    inline = {"type": "inline", "name": "inline-one", "description": "Inline described.",
              "source": {"type": "base64", "media_type": "application/zip", "data": base64.b64encode(skill_zip("inline-one")).decode()}}  # fmt: skip
    response = alice.responses.create(
        model="echo",
        input="hi",
        instructions="Be brief.",
        tools=[shell_with(skill.id), {"type": "shell", "environment": {"type": "container_auto", "skills": [inline]}}],  # type: ignore[list-item]
    )
    system = system_of(response.output_text)
    assert system.startswith("Be brief.\n\n# Skills")
    assert f"- prompt-skill: {DESCRIPTION} (folder: skills/prompt-skill" in system  # the default version: 1
    assert "- inline-one: Inline described." in system
    assert [tool.type for tool in response.tools] == ["shell", "shell"]
    latest = alice.responses.create(model="echo", input="hi", tools=[shell_with(skill.id, "latest")])  # type: ignore[list-item]
    assert "The second version." in system_of(latest.output_text)
    local = {"type": "shell", "environment": {"type": "local", "skills": [{"name": "here", "description": "Local one.", "path": "/opt/skills/here"}]}}
    assert "- here: Local one. (folder: /opt/skills/here" in system_of(alice.responses.create(model="echo", input="hi", tools=[local]).output_text)  # type: ignore[list-item]


def test_responses_skill_errors(alice: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        alice.responses.create(model="echo", input="hi", tools=[shell_with("skill_missing")])  # type: ignore[list-item]
    assert caught.value.body["param"] == "tools[0].environment.skills[0].skill_id"  # type: ignore[index]
    skill = alice.skills.create(files=("s.zip", skill_zip("versioned"), "application/zip"))
    with pytest.raises(openai.NotFoundError, match="no version '9'"):
        alice.responses.create(model="echo", input="hi", tools=[shell_with(skill.id, "9")])  # type: ignore[list-item]
    for odd in ("newest", "\u00b2", "9" * 30):  # not ASCII digits, or more than SQLite's integers hold
        with pytest.raises(openai.BadRequestError, match="positive integer or 'latest'"):
            alice.responses.create(model="echo", input="hi", tools=[shell_with(skill.id, odd)])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError, match="Hosted tool 'shell' is not supported"):
        alice.responses.create(model="echo", input="hi", tools=[{"type": "shell"}])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError, match="not a zip"):
        bad = {"type": "inline", "name": "x", "description": "y", "source": {"type": "base64", "media_type": "application/zip", "data": "aGVsbG8="}}
        alice.responses.create(model="echo", input="hi", tools=[{"type": "shell", "environment": {"type": "container_auto", "skills": [bad]}}])  # type: ignore[list-item]


def test_messages_container_skills_reach_the_system_prompt(claude_alice: Any, alice: openai.OpenAI) -> None:
    import anthropic

    skill = alice.skills.create(files=("s.zip", skill_zip("messages-skill"), "application/zip"))
    message = claude_alice.beta.messages.create(
        model="echo",
        max_tokens=50,
        system="You help.",
        messages=[{"role": "user", "content": "hi"}],
        container={"skills": [{"type": "custom", "skill_id": skill.id, "version": "latest"}]},
        betas=["skills-2025-10-02", "code-execution-2025-08-25"],
    )
    system = system_of(message.content[0].text)
    assert system.startswith("You help.\n\n# Skills") and f"- messages-skill: {DESCRIPTION}" in system
    counted = claude_alice.messages.count_tokens(model="echo", messages=[{"role": "user", "content": "hi"}])
    with_skill = claude_alice.messages.count_tokens(
        model="echo", messages=[{"role": "user", "content": "hi"}], extra_body={"container": {"skills": [{"type": "custom", "skill_id": skill.id}]}}
    )
    assert with_skill.input_tokens > counted.input_tokens
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude_alice.beta.messages.create(
            model="echo", max_tokens=5, messages=[{"role": "user", "content": "hi"}], container={"skills": [{"type": "custom", "skill_id": "skill_nope"}]}
        )
    assert caught.value.body["type"] == "error"
    with pytest.raises(anthropic.BadRequestError, match="not available on this server"):
        claude_alice.beta.messages.create(
            model="echo", max_tokens=5, messages=[{"role": "user", "content": "hi"}], container={"skills": [{"type": "anthropic", "skill_id": "pptx"}]}
        )


# --- a real model ------------------------------------------------------------------------------------


@pytest.mark.real_model
def test_real_model_prompt_holds_the_skill(server_factory: Any, tmp_path: Path) -> None:
    real = server_factory(config(tmp_path / "db.sqlite3", chat_model_toml("smol")), health_key=ALICE)
    with openai_client(real) as client:
        skill = client.skills.create(files=("s.zip", skill_zip(), "application/zip"))
        plain = client.responses.create(model="smol", input="Say hi.", max_output_tokens=1)
        attached = client.responses.create(model="smol", input="Say hi.", max_output_tokens=1, tools=[shell_with(skill.id)])  # type: ignore[list-item]
        folder = "skills/quarterly-brief"
        section = f"{HEADER}\n\n- quarterly-brief: {DESCRIPTION} (folder: {folder}; instructions: {folder}/SKILL.md)"
        spelled = client.responses.create(model="smol", input="Say hi.", max_output_tokens=1, instructions=section)
        assert plain.usage is not None and attached.usage is not None and spelled.usage is not None
        # The model saw exactly the section, as if it had been the instructions.
        assert attached.usage.input_tokens == spelled.usage.input_tokens
        assert attached.usage.input_tokens > plain.usage.input_tokens + 40
        assert any(t.type == "shell" for t in attached.tools)
