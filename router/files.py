"""The Files API: POST /v1/files, GET /v1/files, GET /v1/files/{file_id},
GET /v1/files/{file_id}/content, DELETE /v1/files/{file_id}.

One store (router/file_store.py) serves two APIs on the same paths: a
request with an `anthropic-version` header (the Anthropic SDK's
`client.beta.files`) gets Anthropic's objects, parameters and errors;
any other gets OpenAI's. Each file belongs to the API key that uploaded
it: to any other key it does not exist (404 on every route).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from modelyard.router import file_upload
from modelyard.router.config import LoadedConfig
from modelyard.router.deps import get_yard, owner_of
from modelyard.router.errors import APIError, anthropic_request, invalid_request
from modelyard.router.file_store import FileStore, StoredFile, TooLarge, content_type_of
from modelyard.router.response_service import storage_folder, storage_path
from modelyard.router.wire_values import rfc3339, whole_number
from modelyard.schemas import files as wire

log = logging.getLogger("modelyard.files")
router = APIRouter()
FILES = "/v1/files"
# CreateFileRequest.purpose in OpenAI's spec.
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
ANTHROPIC_PURPOSE = "user_data"  # what an upload through Anthropic's API is, to OpenAI's
OPENAI_TTL = (3600, 2592000)  # expires_after[seconds], FileExpirationAfter
ANTHROPIC_TTL = (3600, 7776000)  # expires_in_seconds
OPENAI_LIMIT = (1, 10000, 10000)  # least, most, default
ANTHROPIC_LIMIT = (1, 1000, 20)
PAGE_PREFIX = "page_"
MAX_LISTED_IDS = 100  # the anthropic SDK's documented bound
# Served on the server's own origin (the web UI's): a stored HTML or SVG file
# opened in a browser must not run as our page, nor be sniffed into one.
CONTENT_HEADERS = {"x-content-type-options": "nosniff", "content-security-policy": "sandbox"}
MULTIPART = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(PURPOSES), "description": "OpenAI: required."},
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {"type": "integer"},
                        "expires_in_seconds": {"type": "integer", "description": "Anthropic's expiry."},
                    },
                }
            }
        },
    }
}


def store_for(loaded: LoadedConfig) -> FileStore:
    """The file store of a config's `[storage]` (read once: changing it needs a restart)."""
    storage = loaded.config.storage
    directory = storage_folder(loaded, storage.files_dir, "files")
    return FileStore(storage_path(loaded), directory, int(storage.max_file_bytes), int(storage.max_bytes_per_key))


@contextlib.asynccontextmanager
async def serving(store: FileStore) -> AsyncIterator[FileStore | None]:
    """The store, open and swept every minute, for the server's lifetime (None when it cannot open)."""
    try:
        await store.open()
    except Exception:
        log.exception("the file store at %s could not be opened: the Files API answers 503", store.directory)
        yield None
        return
    sweeper = asyncio.create_task(store.sweep_forever(), name="file-sweeper")
    try:
        yield store
    finally:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        await store.close()


def store_of(request: Request) -> FileStore:
    store = get_yard(request).files
    if store is None:
        raise APIError(503, "The file store is not open yet; try again in a moment.")
    return store


def not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", param="id", code="file_not_found")


def openai_object(stored: StoredFile) -> dict[str, Any]:
    return wire.OpenAIFile(
        id=stored.id,
        bytes=stored.bytes,
        created_at=stored.created_at,
        expires_at=stored.expires_at,
        filename=stored.filename,
        purpose=stored.purpose,
    ).model_dump()


def anthropic_object(stored: StoredFile) -> dict[str, Any]:
    return {
        "id": stored.id,
        "type": "file",
        "filename": stored.filename,
        "mime_type": stored.content_type,
        "size_bytes": stored.bytes,
        "created_at": rfc3339(stored.created_at),
        "expires_at": rfc3339(stored.expires_at),
        "downloadable": True,
    }


def shaped(request: Request, stored: StoredFile) -> dict[str, Any]:
    return anthropic_object(stored) if anthropic_request(request.scope) else openai_object(stored)


def integer(value: str | None, param: str, least: int, most: int) -> int | None:
    if value is None:
        return None
    number = whole_number(value)
    if number is None or not least <= number <= most:
        raise invalid_request(f"Invalid '{param}': give an integer between {least} and {most}; got '{value}'.", param=param)
    return number


def ttl_of(fields: dict[str, str], anthropic: bool, minimum: int, default: int | None) -> int | None:
    """The upload's time to live in seconds, from the fields of its API."""
    least, most = ANTHROPIC_TTL if anthropic else OPENAI_TTL
    least = min(least, minimum)
    if anthropic:
        return integer(fields.get("expires_in_seconds"), "expires_in_seconds", least, most) or default
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return default
    if anchor != "created_at":
        raise invalid_request(
            "Invalid 'expires_after[anchor]': the only supported anchor is 'created_at'.", param="expires_after.anchor"
        )
    if seconds is None:
        raise invalid_request("Missing required parameter: 'expires_after[seconds]'.", param="expires_after.seconds")
    return integer(seconds, "expires_after.seconds", least, most)


def check_fields(fields: dict[str, str], anthropic: bool) -> str:
    """The purpose (OpenAI's field; implied on Anthropic's API); unknown fields are refused."""
    known = {"expires_in_seconds"} if anthropic else {"purpose", "expires_after[anchor]", "expires_after[seconds]"}
    for name in fields:
        if name not in known:
            raise invalid_request(f"Unrecognized request argument supplied: {name}", param=name)
    if anthropic:
        return ANTHROPIC_PURPOSE
    purpose = fields.get("purpose")
    if purpose is None:
        raise invalid_request("Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in PURPOSES:
        raise invalid_request(
            f"Invalid value for 'purpose': '{purpose}'. Supported values are: {', '.join(repr(p) for p in PURPOSES)}.",
            param="purpose",
        )
    return purpose


@router.post(FILES, response_model=wire.OpenAIFile, openapi_extra=MULTIPART)
async def create_file(request: Request) -> JSONResponse:
    store = store_of(request)
    storage = get_yard(request).generation.loaded.config.storage
    anthropic = anthropic_request(request.scope)
    owner = owner_of(request)
    upload, received = await file_upload.receive(request, store, owner)
    try:
        purpose = check_fields(received.fields, anthropic)
        ttl = ttl_of(received.fields, anthropic, storage.min_file_ttl_seconds, storage.default_file_ttl_seconds)
    except BaseException:  # nothing of a refused upload stays on disk, whatever refused it
        await store.io(upload.abort)
        raise
    assert received.filename is not None
    content_type = content_type_of(received.filename, received.part_type)
    try:
        stored = await store.commit(upload, owner, received.filename, purpose, ttl, content_type)
    except TooLarge as exc:
        raise APIError(413, str(exc), code="storage_limit_exceeded") from None
    return JSONResponse(shaped(request, stored))


@router.get(FILES, response_model=wire.ListFilesResponse)
async def list_files(
    request: Request,
    purpose: str | None = Query(None, description="OpenAI: only files of this purpose."),
    limit: str | None = Query(None, description="Page size: OpenAI 1-10000 (default 10000), Anthropic 1-1000 (20)."),
    order: str | None = Query(None, description="OpenAI: `asc` or `desc` (default) by creation."),
    after: str | None = Query(None, description="OpenAI: the id the page starts after."),
    after_id: str | None = Query(None, description="Anthropic: the id the page starts after."),
    before_id: str | None = Query(None, description="Anthropic: the id the page ends before."),
    page: str | None = Query(None, description="Anthropic: the `next_page` cursor of the previous page."),
) -> JSONResponse:
    store = store_of(request)
    owner = owner_of(request)
    if anthropic_request(request.scope):
        least, most, default = ANTHROPIC_LIMIT
        size = integer(limit, "limit", least, most) or default
        # The anthropic SDK sends a list as `ids[]=...`; plain `ids=...` is taken too.
        ids = request.query_params.getlist("ids") + request.query_params.getlist("ids[]") or None
        if ids is not None and len(ids) > MAX_LISTED_IDS:
            raise invalid_request(f"Invalid 'ids': at most {MAX_LISTED_IDS} file ids per request.", param="ids")
        if page is not None:
            if not page.startswith(PAGE_PREFIX):
                raise invalid_request(f"Invalid 'page': '{page}' is not a page cursor of this server.", param="page")
            after_id = page[len(PAGE_PREFIX) :]
        files, more = await store.list(owner, limit=size, descending=True, after=after_id, before=before_id, ids=ids)
        data = [anthropic_object(f) for f in files]
        return JSONResponse({
            "data": data,
            "first_id": files[0].id if files else None,
            "last_id": files[-1].id if files else None,
            "has_more": more,
            "next_page": f"{PAGE_PREFIX}{files[-1].id}" if more and files and before_id is None else None,
        })  # fmt: skip
    least, most, default = OPENAI_LIMIT
    size = integer(limit, "limit", least, most) or default
    if order not in (None, "asc", "desc"):
        raise invalid_request(f"Invalid value for 'order': '{order}'. Supported values are: 'asc' and 'desc'.", param="order")
    files, more = await store.list(owner, limit=size, descending=order != "asc", after=after, purpose=purpose)
    return JSONResponse({
        "object": "list",
        "data": [openai_object(f) for f in files],
        "first_id": files[0].id if files else None,
        "last_id": files[-1].id if files else None,
        "has_more": more,
    })  # fmt: skip


@router.get(FILES + "/{file_id}", response_model=wire.OpenAIFile)
async def retrieve_file(file_id: str, request: Request) -> JSONResponse:
    stored = await store_of(request).get(owner_of(request), file_id)
    if stored is None:
        raise not_found(file_id)
    return JSONResponse(shaped(request, stored))


async def file_response(
    request: Request, owner: str, file_id: str, headers: dict[str, str] | None = None, missing: APIError | None = None
) -> Response:
    """The bytes of `owner`'s file, streamed from disk, or a 404 (`missing`, by default the Files API's)."""
    store = store_of(request)
    opened = await store.open_content(owner, file_id)
    if opened is None:
        raise missing or not_found(file_id)
    stored, handle = opened
    return StreamingResponse(
        store.chunks(handle),
        media_type=stored.content_type,
        headers={"content-length": str(stored.bytes), **CONTENT_HEADERS, **(headers or {})},
    )


@router.get(FILES + "/{file_id}/content", response_class=Response)
async def file_content(file_id: str, request: Request) -> Response:
    return await file_response(request, owner_of(request), file_id)


@router.delete(FILES + "/{file_id}", response_model=wire.DeleteFileResponse)
async def delete_file(file_id: str, request: Request) -> JSONResponse:
    if not await store_of(request).delete(owner_of(request), file_id):
        raise not_found(file_id)
    if anthropic_request(request.scope):
        return JSONResponse({"id": file_id, "type": "file_deleted"})
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})
