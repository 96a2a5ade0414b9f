"""Skills attached to a request, as a section of the model's system prompt.

A Responses request attaches skills to its shell tool's environment
(`skill_reference`s to uploaded skills, `inline` zips, or a `local`
environment's named folders); a Messages request to its `container`
(`{"type": "custom", "skill_id", "version"}`). This server runs no shell
yet, so the model cannot open a skill's files: it is told each skill's name,
description and folder, and can say which it would use.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from modelyard.router.deps import owner_of
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.skill_archive import is_zip, read_skill_zip
from modelyard.router.skill_requests import SkillRequest, version_ref
from modelyard.router.skills import limits_of, store_of
from modelyard.schemas import skills as sk

HEADER = (
    "# Skills\n\n"
    "These skills are available. A skill is a folder of instructions and files; its SKILL.md says how to use it. "
    "When a task matches a skill's description, follow that skill."
)


@dataclass(frozen=True)
class Attached:
    """One skill as the prompt names it."""

    name: str
    description: str
    folder: str


async def resolve(request: Request, wanted: SkillRequest) -> Attached:
    if wanted.local is not None:
        return Attached(wanted.local.name, wanted.local.description, wanted.local.path)
    if wanted.inline is not None:
        await check_inline(request, wanted.inline, wanted.param)
        return Attached(wanted.inline.name, wanted.inline.description, f"skills/{wanted.inline.name}")
    skill = wanted.reference
    assert skill is not None
    ref = version_ref(skill, wanted.param)
    found = await store_of(request).version(skill.skill_id, owner_of(request), ref)
    if found is None:
        raise APIError(404, f"No skill with id '{skill.skill_id}' was found.", param=f"{wanted.param}.skill_id", code="skill_not_found")
    _, version = found
    if version is None:
        raise APIError(
            404, f"The skill '{skill.skill_id}' has no version '{ref}'.", param=f"{wanted.param}.version", code="skill_version_not_found"
        )
    return Attached(version.name, version.description, f"skills/{version.name}")


async def check_inline(request: Request, skill: sk.InlineSkill, param: str) -> None:
    """An inline skill's zip gets the checks of an upload."""
    limits = limits_of(request)

    def check() -> None:
        try:
            data = base64.b64decode(skill.source.data, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_request("The inline skill's data is not valid base64.", param=f"{param}.source.data") from None
        if not is_zip(data):
            raise invalid_request("The inline skill's data is not a zip archive.", param=f"{param}.source.data")
        read_skill_zip(data, limits)

    await asyncio.to_thread(check)


async def skills_section(request: Request, wanted: list[SkillRequest]) -> str | None:
    """The system prompt's section naming the attached skills (None without any)."""
    if not wanted:
        return None
    attached = [await resolve(request, one) for one in wanted]
    lines = [f"- {a.name}: {a.description} (folder: {a.folder}; instructions: {a.folder}/SKILL.md)" for a in attached]
    return HEADER + "\n\n" + "\n".join(lines)


def with_section(messages: list[dict[str, Any]], section: str | None) -> list[dict[str, Any]]:
    """`messages` with `section` at the end of their leading system message (made if there is none)."""
    if section is None:
        return messages
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        first = {**messages[0], "content": messages[0]["content"] + "\n\n" + section}
        return [first, *messages[1:]]
    return [{"role": "system", "content": section}, *messages]
