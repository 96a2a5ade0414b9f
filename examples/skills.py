"""The Skills API through the official OpenAI SDK: upload a skill (a folder
with a SKILL.md), add a version, download it, attach it to a response, and
delete it.

Shows: `client.skills.create(files=...)` with a zip, `client.skills.versions.create`
with a folder's files (`files[]`, each named by its path), `client.skills.list`,
`client.skills.content.retrieve`, and a Responses `shell` tool whose
environment references the skill. This server runs no shell yet: the skill's
name and description reach the model's system prompt, so the model knows the
skill exists (docs/compatibility.md, "Skills").

Run it against a running server (`make serve` serves the embedded default
config at http://localhost:1234/v1):

    .venv/bin/python examples/skills.py

Environment: MODELYARD_BASE_URL (default http://localhost:1234/v1) and
MODELYARD_API_KEY (default "not-needed"; set it when the server has
[[auth.keys]]).
"""

from __future__ import annotations

import io
import os
import sys
import zipfile

import openai

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")
SKILL_MD = """---
name: haiku-writer
description: Writes a haiku (three lines of 5, 7 and 5 syllables) about any topic.
---
# Writing a haiku
1. Pick one image from the topic.
2. Write three lines: 5, 7 and 5 syllables.
"""


def skill_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("haiku-writer/SKILL.md", SKILL_MD)
    return buffer.getvalue()


def main() -> int:
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, timeout=120)
    uploaded = skill_zip()
    skill = client.skills.create(files=("haiku-writer.zip", uploaded, "application/zip"))
    print(f"created {skill.id}: {skill.name} (version {skill.default_version})")
    try:
        version = client.skills.versions.create(
            skill.id,
            files=[("haiku-writer/SKILL.md", SKILL_MD.replace("any topic", "any topic, in English").encode())],
            default=True,
        )
        print(f"version {version.version}: {version.description}")
        print("listed:", [s.name for s in client.skills.list(limit=100) if s.id == skill.id])
        first = client.skills.versions.content.retrieve("1", skill_id=skill.id).read()
        print(f"version 1 zip: {len(first)} bytes, same as uploaded: {first == uploaded}")

        response = client.responses.create(
            model="smollm2",
            input="Which skill would you use to write a short poem? Answer with its name.",
            tools=[{"type": "shell", "environment": {"type": "container_auto", "skills": [{"type": "skill_reference", "skill_id": skill.id}]}}],
            max_output_tokens=32,
        )
        print(f"reply: {response.output_text.strip()}")
        print(f"prompt tokens with the skill: {response.usage.input_tokens if response.usage else '?'}")
    finally:
        deleted = client.skills.delete(skill.id)
        print(f"deleted: {deleted.deleted}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
