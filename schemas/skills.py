"""Skills API wire types: OpenAI's /v1/skills objects, and the request
fields that attach skills to a Responses shell tool or an Anthropic
Messages container.

Anthropic's answers on the same routes (with an `anthropic-version` header)
are built in router/skills.py from the same stored records; their shape is
the anthropic SDK's BetaSkill / BetaSkillVersion.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from modelyard.schemas.openai import Lenient, Strict
from pydantic import BaseModel, Field

# --- OpenAI's objects ---------------------------------------------------------


class SkillResource(BaseModel):
    id: str
    object: Literal["skill"] = "skill"
    name: str
    description: str
    created_at: int
    default_version: str | None
    latest_version: str | None


class SkillList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SkillResource]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeletedSkill(BaseModel):
    id: str
    object: Literal["skill.deleted"] = "skill.deleted"
    deleted: bool = True


class SkillVersionResource(BaseModel):
    object: Literal["skill.version"] = "skill.version"
    id: str
    skill_id: str
    version: str
    created_at: int
    name: str
    description: str


class SkillVersionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SkillVersionResource]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeletedSkillVersion(BaseModel):
    id: str
    object: Literal["skill.version.deleted"] = "skill.version.deleted"
    deleted: bool = True
    version: str


class SetDefaultVersion(Strict):
    default_version: str | int


# --- skills attached to a Responses shell tool --------------------------------


class SkillReference(Strict):
    type: Literal["skill_reference"]
    skill_id: str = Field(min_length=1, max_length=64)
    version: str | int | None = None  # a version number or "latest"; omitted: the skill's default


class InlineSkillSource(Strict):
    type: Literal["base64"]
    media_type: Literal["application/zip"]
    data: str = Field(min_length=1)


class InlineSkill(Strict):
    type: Literal["inline"]
    name: str
    description: str
    source: InlineSkillSource


class LocalSkill(Strict):
    name: str
    description: str
    path: str


class ContainerAuto(Lenient):
    type: Literal["container_auto"]
    file_ids: list[str] | None = None
    memory_limit: Any = None
    network_policy: Any = None
    skills: list[Annotated[SkillReference | InlineSkill, Field(discriminator="type")]] | None = Field(
        default=None, max_length=200
    )


class LocalEnvironment(Strict):
    type: Literal["local"]
    skills: list[LocalSkill] | None = Field(default=None, max_length=200)


class ContainerReference(Strict):
    type: Literal["container_reference"]
    container_id: str


class ShellToolParam(Strict):
    """The hosted shell tool. This server runs no shell yet: the tool is not
    offered to the model; the skills of its environment reach the prompt."""

    type: Literal["shell"]
    environment: Annotated[ContainerAuto | LocalEnvironment | ContainerReference, Field(discriminator="type")] | None = None
    allowed_callers: Any = None


# --- skills attached to an Anthropic Messages container -----------------------


class ContainerSkill(Strict):
    type: Literal["anthropic", "custom"]
    skill_id: str = Field(min_length=1)
    version: str | int | None = None  # a version id, a version number or "latest"; omitted: latest


class ContainerParams(Strict):
    id: str | None = None
    skills: list[ContainerSkill] | None = Field(default=None, max_length=8)
