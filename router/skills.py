"""The Skills API: /v1/skills, its versions and their zips, in OpenAI's shapes
and, for a request with an `anthropic-version` header (the anthropic SDK's
`beta.skills`), in Anthropic's (its errors too, router/errors.py).

An upload (multipart `files`: one zip, or `files[]`, the files of one folder
named by their paths) is checked by router/skill_archive.py in a thread and
stored by router/skill_store.py. Skills belong to the API key that created
them: any other key gets 404, as for an unknown id.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from modelyard.router.deps import get_yard, owner_of
from modelyard.router.errors import APIError, anthropic_request, invalid_request
from modelyard.router.skill_archive import ArchiveLimits, Manifest, is_zip, read_skill_zip, refused, zip_folder
from modelyard.router.skill_store import Page, Skill, SkillStore, SkillVersion, UnknownCursor
from modelyard.router.wire_values import rfc3339, whole_number
from modelyard.schemas import skills as sk
from starlette.datastructures import UploadFile

router = APIRouter()
ENDPOINT = "/v1/skills"
FILES_SCHEMA = {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": 500}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": FILES_SCHEMA,
                        "default": {"type": "boolean"},
                        "display_name": {"type": "string"},
                    },
                    "required": ["files"],
                }
            }
        },
    }
}
OPENAI_LIMIT, ANTHROPIC_LIMIT = 100, 1000


def store_of(request: Request) -> SkillStore:
    store: SkillStore = get_yard(request).skills
    return store.checked()


def is_anthropic_request(request: Request) -> bool:
    return anthropic_request(request.scope)


def limits_of(request: Request) -> ArchiveLimits:
    return ArchiveLimits.of(get_yard(request).generation.loaded.config.storage)


def skill_not_found(skill_id: str) -> APIError:
    return APIError(404, f"No skill with id '{skill_id}' was found.", param="skill_id", code="skill_not_found")


def version_not_found(skill_id: str, version: str) -> APIError:
    return APIError(404, f"The skill '{skill_id}' has no version '{version}'.", param="version", code="skill_version_not_found")


def iso(timestamp: float) -> str:
    return rfc3339(timestamp) or ""


# --- rendering ------------------------------------------------------------------


def render_skill(skill: Skill, anthropic: bool) -> dict[str, Any]:
    if anthropic:
        return {
            "id": skill.id,
            "type": "skill",
            "display_name": skill.display_name,
            "display_title": skill.display_name,  # the skills-2025-10-02 beta's name for it
            "latest_version_id": skill.latest_version_id,
            "latest_version": str(skill.latest_version) if skill.latest_version is not None else None,
            "source": {"type": "custom"},
            "created_at": iso(skill.created_at),
            "updated_at": iso(skill.updated_at),
        }
    return sk.SkillResource(
        id=skill.id,
        name=skill.name,
        description=skill.description,
        created_at=int(skill.created_at),
        default_version=str(skill.default_version) if skill.default_version is not None else None,
        latest_version=str(skill.latest_version) if skill.latest_version is not None else None,
    ).model_dump(mode="json")


def render_version(version: SkillVersion, anthropic: bool) -> dict[str, Any]:
    if anthropic:
        return {
            "id": version.id,
            "type": "skill_version",
            "skill_id": version.skill_id,
            "version": str(version.version),
            "name": version.name,
            "description": version.description,
            "directory": version.name,
            "created_at": iso(version.created_at),
        }
    return sk.SkillVersionResource(
        id=version.id,
        skill_id=version.skill_id,
        version=str(version.version),
        created_at=int(version.created_at),
        name=version.name,
        description=version.description,
    ).model_dump(mode="json")


def render_page(page: Page, render: Any, anthropic: bool) -> dict[str, Any]:
    data = [render(item, anthropic) for item in page.items]
    if anthropic:
        return {"data": data, "has_more": page.has_more, "next_page": page.items[-1].id if page.has_more else None}
    ids = [item.id for item in page.items]
    return {"object": "list", "data": data, "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None, "has_more": page.has_more}


# --- uploads --------------------------------------------------------------------


async def read_upload(request: Request) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """The uploaded files (name, bytes) and the form's other fields."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid_request("Send the skill as multipart/form-data: `files` (a zip) or `files[]` (a folder's files).", param="files")
    limits = limits_of(request)
    async with request.form(max_files=limits.max_entries + 1, max_fields=50) as form:
        files: list[tuple[str, bytes]] = []
        fields: dict[str, str] = {}
        total = 0
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in ("files", "files[]"):
                    raise invalid_request(f"Unexpected file field '{key}': upload the skill as `files` or `files[]`.", param=key)
                total += value.size or 0
                if total > limits.max_bytes:
                    raise refused(f"the upload is over {limits.max_bytes} bytes (skill_max_bytes).")
                files.append((value.filename or "", await value.read()))
            else:
                fields[key] = value
    if not files:
        raise invalid_request("Missing required parameter: 'files' (a zip, or the files of the skill's folder).", param="files")
    return files, fields


async def manifest_of(request: Request, files: list[tuple[str, bytes]], anthropic: bool) -> tuple[Manifest, bytes]:
    """The skill an upload holds and its zip (as uploaded, or made from the folder's files)."""
    limits = limits_of(request)

    def check() -> tuple[Manifest, bytes]:
        if len(files) == 1 and is_zip(files[0][1]):
            data = files[0][1]
            return read_skill_zip(data, limits, anthropic=anthropic), data
        data = zip_folder(files, limits)
        return read_skill_zip(data, limits, anthropic=anthropic, built=True), data

    return await asyncio.to_thread(check)


def form_bool(fields: dict[str, str], name: str) -> bool:
    value = fields.get(name, "false").strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise invalid_request(f"Invalid value for '{name}': expected a boolean, got '{value[:40]}'.", param=name)
    return value in ("true", "1")


# --- skills ---------------------------------------------------------------------


@router.post(ENDPOINT, response_model=sk.SkillResource, openapi_extra=UPLOAD_BODY)
async def create_skill(request: Request) -> Response:
    store = store_of(request)
    anthropic = is_anthropic_request(request)
    files, fields = await read_upload(request)
    manifest, data = await manifest_of(request, files, anthropic)
    display_name = (fields.get("display_name") or fields.get("display_title") or "").strip() or manifest.name
    if len(display_name) > 255 or "\n" in display_name:
        raise invalid_request("display_name must be one line of at most 255 characters.", param="display_name")
    skill, _ = await store.create(owner_of(request), display_name, manifest, data)
    return JSONResponse(render_skill(skill, anthropic))


def page_args(anthropic: bool, limit: str | None, order: str | None, after: str | None, page: str | None) -> tuple[int, str, str | None]:
    top = ANTHROPIC_LIMIT if anthropic else OPENAI_LIMIT
    if limit is None:
        count = 20
    else:
        least, number = (1 if anthropic else 0), whole_number(limit)
        if number is None or not least <= number <= top:
            raise invalid_request(f"Invalid value for 'limit': expected an integer from {least} to {top}.", param="limit")
        count = number
    if order not in (None, "asc", "desc"):
        raise invalid_request(f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.", param="order", code="invalid_value")
    return count, order or "desc", page if anthropic and page else after


async def paged(listing: Any, anthropic: bool, cursor: str | None, *args: Any) -> Page:
    try:
        page: Page = await listing(*args)
    except UnknownCursor:
        param = "page" if anthropic else "after"
        raise invalid_request(f"Invalid value for '{param}': no item with id '{cursor}' in this list.", param=param) from None
    return page


@router.get(ENDPOINT, response_model=sk.SkillList)
async def list_skills(
    request: Request, limit: str | None = None, order: str | None = None, after: str | None = None, page: str | None = None, source: str | None = None
) -> Response:
    store = store_of(request)
    anthropic = is_anthropic_request(request)
    count, direction, cursor = page_args(anthropic, limit, order, after, page)
    if source not in (None, "custom"):
        return JSONResponse(render_page(Page([], False), render_skill, anthropic))  # no Anthropic-made skills here
    listing = await paged(store.list, anthropic, cursor, owner_of(request), count, direction, cursor)
    return JSONResponse(render_page(listing, render_skill, anthropic))


async def owned_skill(request: Request, skill_id: str) -> Skill:
    skill = await store_of(request).get(skill_id, owner_of(request))
    if skill is None:
        raise skill_not_found(skill_id)
    return skill


@router.get(ENDPOINT + "/{skill_id}", response_model=sk.SkillResource)
async def get_skill(skill_id: str, request: Request) -> Response:
    return JSONResponse(render_skill(await owned_skill(request, skill_id), is_anthropic_request(request)))


@router.post(ENDPOINT + "/{skill_id}", response_model=sk.SkillResource)
async def set_default_version(skill_id: str, body: sk.SetDefaultVersion, request: Request) -> Response:
    await owned_skill(request, skill_id)
    _, version = await owned_version(request, skill_id, str(body.default_version))
    skill = await store_of(request).set_default(skill_id, owner_of(request), version)
    if skill is None:
        raise skill_not_found(skill_id)
    return JSONResponse(render_skill(skill, is_anthropic_request(request)))


@router.delete(ENDPOINT + "/{skill_id}", response_model=sk.DeletedSkill)
async def delete_skill(skill_id: str, request: Request) -> Response:
    if not await store_of(request).delete(skill_id, owner_of(request)):
        raise skill_not_found(skill_id)
    if is_anthropic_request(request):
        return JSONResponse({"id": skill_id, "type": "skill_deleted"})
    return JSONResponse(sk.DeletedSkill(id=skill_id).model_dump(mode="json"))


async def zip_answer(request: Request, skill: Skill, version: SkillVersion) -> Response:
    store = store_of(request)
    data = await store.read_zip(version)
    if data is None:
        found = await store.version(skill.id, owner_of(request), str(version.version))
        if found is None or found[1] is None:  # deleted while it was being read
            raise skill_not_found(skill.id)
        raise APIError(500, f"The zip of version {version.version} of skill '{skill.id}' is missing from the skills folder.")
    disposition = f'attachment; filename="{version.name}.zip"'
    return Response(data, media_type="application/zip", headers={"content-disposition": disposition})


@router.get(ENDPOINT + "/{skill_id}/content", response_class=Response)
async def get_skill_content(skill_id: str, request: Request) -> Response:
    skill, version = await owned_version(request, skill_id, "default")
    return await zip_answer(request, skill, version)


# --- versions -------------------------------------------------------------------


async def owned_version(request: Request, skill_id: str, ref: str) -> tuple[Skill, SkillVersion]:
    found = await store_of(request).version(skill_id, owner_of(request), ref.strip())
    if found is None:
        raise skill_not_found(skill_id)
    skill, version = found
    if version is None:
        raise version_not_found(skill_id, ref)
    return skill, version


@router.post(ENDPOINT + "/{skill_id}/versions", response_model=sk.SkillVersionResource, openapi_extra=UPLOAD_BODY)
async def create_version(skill_id: str, request: Request) -> Response:
    store = store_of(request)
    anthropic = is_anthropic_request(request)
    skill = await owned_skill(request, skill_id)
    files, fields = await read_upload(request)
    make_default = form_bool(fields, "default")
    manifest, data = await manifest_of(request, files, anthropic)
    if anthropic and manifest.name != skill.name:
        raise refused(f"the name in SKILL.md is '{manifest.name}'; every version of this skill must be named '{skill.name}'.")
    version = await store.add_version(skill_id, owner_of(request), manifest, data, make_default)
    if version is None:
        raise skill_not_found(skill_id)
    return JSONResponse(render_version(version, anthropic))


@router.get(ENDPOINT + "/{skill_id}/versions", response_model=sk.SkillVersionList)
async def list_versions(
    skill_id: str, request: Request, limit: str | None = None, order: str | None = None, after: str | None = None, page: str | None = None
) -> Response:
    store = store_of(request)
    anthropic = is_anthropic_request(request)
    await owned_skill(request, skill_id)
    count, direction, cursor = page_args(anthropic, limit, order, after, page)
    listing = await paged(store.versions, anthropic, cursor, skill_id, count, direction, cursor)
    return JSONResponse(render_page(listing, render_version, anthropic))


@router.get(ENDPOINT + "/{skill_id}/versions/{version}", response_model=sk.SkillVersionResource)
async def get_version(skill_id: str, version: str, request: Request) -> Response:
    _, found = await owned_version(request, skill_id, version)
    return JSONResponse(render_version(found, is_anthropic_request(request)))


@router.delete(ENDPOINT + "/{skill_id}/versions/{version}", response_model=sk.DeletedSkillVersion)
async def delete_version(skill_id: str, version: str, request: Request) -> Response:
    _, found = await owned_version(request, skill_id, version)
    await store_of(request).delete_version(skill_id, found)
    if is_anthropic_request(request):
        return JSONResponse({"id": found.id, "type": "skill_version_deleted"})
    return JSONResponse(sk.DeletedSkillVersion(id=found.id, version=str(found.version)).model_dump(mode="json"))


@router.get(ENDPOINT + "/{skill_id}/versions/{version}/content", response_class=Response)
async def get_version_content(skill_id: str, version: str, request: Request) -> Response:
    skill, found = await owned_version(request, skill_id, version)
    return await zip_answer(request, skill, found)
