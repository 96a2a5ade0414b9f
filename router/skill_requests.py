"""The skills a request attaches, read from its body (no lookup yet):
a Responses shell tool's environment, a Messages request's container.
router/skill_prompt.py resolves them for the system prompt."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelyard.router.errors import APIError, invalid_request
from modelyard.router.wire_values import whole_number
from modelyard.schemas import skills as sk

if TYPE_CHECKING:
    from modelyard.router.skill_store import SkillStore


@dataclass(frozen=True)
class SkillRequest:
    """A skill a request attaches: `skill` (a reference or an inline skill) or `local` (already named)."""

    param: str
    reference: sk.SkillReference | sk.ContainerSkill | None = None
    inline: sk.InlineSkill | None = None
    local: sk.LocalSkill | None = None


def shell_skills(tool: sk.ShellToolParam, param: str, model: str) -> list[SkillRequest]:
    """The skills of a Responses shell tool; a shell tool without any is refused (no shell runs here)."""
    environment = tool.environment
    where = f"{param}.environment.skills"
    found: list[SkillRequest] = []
    if isinstance(environment, sk.ContainerAuto):
        for index, skill in enumerate(environment.skills or []):
            if isinstance(skill, sk.SkillReference):
                found.append(SkillRequest(f"{where}[{index}]", reference=skill))
            else:
                found.append(SkillRequest(f"{where}[{index}]", inline=skill))
    elif isinstance(environment, sk.LocalEnvironment):
        found = [SkillRequest(f"{where}[{i}]", local=skill) for i, skill in enumerate(environment.skills or [])]
    if not found:
        raise invalid_request(
            f"Hosted tool 'shell' is not supported with {model}: this server runs no shell; a shell tool is accepted "
            "only to attach skills (environment.skills).",
            param="tools",
        )
    return found


def container_skills(container: sk.ContainerParams | str | None) -> list[SkillRequest]:
    """The skills of a Messages request's container."""
    if not isinstance(container, sk.ContainerParams):
        return []
    found = []
    for index, skill in enumerate(container.skills or []):
        param = f"container.skills.{index}"
        if skill.type == "anthropic":
            raise invalid_request(
                f"{param}.type: Anthropic's own skills ('{skill.skill_id}') are not available on this server; "
                "upload the skill (POST /v1/skills) and attach it as type 'custom'.",
                param=param,
            )
        found.append(SkillRequest(param, reference=skill))
    return found


def version_ref(skill: sk.SkillReference | sk.ContainerSkill, param: str) -> str:
    version = skill.version
    if version is None:
        return "default" if isinstance(skill, sk.SkillReference) else "latest"
    text = str(version).strip()
    number = whole_number(text)
    if isinstance(skill, sk.SkillReference) and not (text == "latest" or (number is not None and number > 0)):
        raise invalid_request(f"Invalid skill version '{text}': use a positive integer or 'latest'.", param=f"{param}.version")
    return text


async def skill_zip(wanted: SkillRequest | bytes, owner: str, store: SkillStore | None) -> bytes | None:
    """The zip of an attached skill, to unpack in a session (router/agent_sessions.py): an inline skill's data, an
    uploaded one's stored zip (404 if `owner` has no such skill or version); None for a `local` environment's
    skill (it is on the client's machine) or a reference without a skill store."""
    if isinstance(wanted, bytes):
        return wanted
    if wanted.inline is not None:
        try:
            return base64.b64decode(wanted.inline.source.data, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_request("The inline skill's data is not valid base64.",
                                  param=f"{wanted.param}.source.data") from None
    skill = wanted.reference
    if skill is None or store is None:
        return None
    found = await store.checked().version(skill.skill_id, owner, version_ref(skill, wanted.param))
    if found is None or found[1] is None:
        raise APIError(404, f"No skill with id '{skill.skill_id}' (or not that version) was found.",
                       param=f"{wanted.param}.skill_id", code="skill_not_found")
    data: bytes | None = await store.read_zip(found[1])
    return data
