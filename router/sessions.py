"""Sessions of the agentic runtime on the wire (the store: router/agent_sessions.py).

GET / DELETE /v1/sessions/{id}: a session by the id requests name as
`session_id`. The subset of OpenAI's Containers API that OpenAI-style clients
use after a Responses request ran code in a container (a container is a
session): GET / DELETE /v1/containers/{id}, GET /v1/containers/{id}/files,
GET /v1/containers/{id}/files/{file_id} and .../content. A container file's
id is its id in the Files API: /v1/files/{file_id}/content serves the same
bytes. Another key's session is answered as one that does not exist (404).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from modelyard.router.agent_plan import agent_runtime
from modelyard.router.agent_sessions import Session, SessionFile, SessionStore
from modelyard.router.deps import owner_of
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.files import file_response
from modelyard.router.files import store_of as file_store_of
from modelyard.router.wire_values import whole_number

router = APIRouter()
SESSIONS = "/v1/sessions"
CONTAINERS = "/v1/containers"
FILE_PAGE = (1, 100, 20)  # least, most, default `limit` of a container's file list


def store_of(request: Request) -> SessionStore:
    return agent_runtime(request).sessions


async def session_of(request: Request, session_id: str, container: bool = False) -> Session:
    session = await store_of(request).get(owner_of(request), session_id)
    if session is None:
        what = "container" if container else "session"
        raise APIError(404, f"No {what} found with id '{session_id}'.", param=f"{what}_id", code=f"{what}_not_found")
    return session


async def live_files(request: Request, session: Session) -> list[SessionFile]:
    """The session's files still in the file store (one may have been deleted or expired there)."""
    if not session.files:
        return []
    kept, _ = await file_store_of(request).list(session.owner, limit=len(session.files), descending=False,
                                                ids=[f.file_id for f in session.files])
    present = {f.id for f in kept}
    return [f for f in session.files if f.file_id in present]


@router.get(SESSIONS + "/{session_id}")
async def get_session(session_id: str, request: Request) -> JSONResponse:
    session = await session_of(request, session_id)
    return JSONResponse({
        "id": session.id,
        "object": "session",
        "created_at": int(session.created_at),
        "last_active_at": int(session.last_used),
        "expires_at": int(store_of(request).expires_at(session)),
        "files": [f.file_id for f in await live_files(request, session)],
        "messages": len(session.history),
    })  # fmt: skip


@router.delete(SESSIONS + "/{session_id}")
async def delete_session(session_id: str, request: Request) -> JSONResponse:
    if not await store_of(request).delete(owner_of(request), session_id):
        raise APIError(404, f"No session found with id '{session_id}'.", param="session_id", code="session_not_found")
    return JSONResponse({"id": session_id, "object": "session.deleted", "deleted": True})


def container_object(store: SessionStore, session: Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "object": "container",
        "name": session.id,
        "created_at": int(session.created_at),
        "status": "running",
        "expires_after": {"anchor": "last_active_at", "minutes": max(round(store.config.session_idle / 60), 1)},
        "last_active_at": int(session.last_used),
    }


def container_file(session: Session, file: SessionFile) -> dict[str, Any]:
    return {
        "id": file.file_id,
        "object": "container.file",
        "container_id": session.id,
        "created_at": file.created_at,
        "bytes": file.bytes,
        "path": file.path,
        "source": "assistant",
    }


@router.get(CONTAINERS + "/{container_id}")
async def get_container(container_id: str, request: Request) -> JSONResponse:
    session = await session_of(request, container_id, container=True)
    return JSONResponse(container_object(store_of(request), session))


@router.delete(CONTAINERS + "/{container_id}")
async def delete_container(container_id: str, request: Request) -> JSONResponse:
    if not await store_of(request).delete(owner_of(request), container_id):
        raise APIError(404, f"No container found with id '{container_id}'.", param="container_id",
                       code="container_not_found")
    return JSONResponse({"id": container_id, "object": "container.deleted", "deleted": True})


@router.get(CONTAINERS + "/{container_id}/files")
async def list_container_files(
    container_id: str,
    request: Request,
    limit: str | None = Query(None, description="Page size, 1-100 (default 20)."),
    order: str | None = Query(None, description="`asc` or `desc` (default) by creation."),
    after: str | None = Query(None, description="The file id the page starts after."),
) -> JSONResponse:
    session = await session_of(request, container_id, container=True)
    least, most, default = FILE_PAGE
    size = whole_number(limit) if limit is not None else default
    if size is None or not least <= size <= most:
        raise invalid_request(f"Invalid 'limit': give an integer between {least} and {most}; got '{limit}'.",
                              param="limit")
    if order not in (None, "asc", "desc"):
        raise invalid_request(f"Invalid value for 'order': '{order}'. Supported values are: 'asc' and 'desc'.",
                              param="order")
    files = await live_files(request, session)
    if order != "asc":
        files.reverse()
    if after is not None:
        ids = [f.file_id for f in files]
        if after not in ids:
            raise invalid_request(f"Invalid 'after': '{after}' is not a file of this container.", param="after")
        files = files[ids.index(after) + 1 :]
    page = files[:size]
    return JSONResponse({
        "object": "list",
        "data": [container_file(session, f) for f in page],
        "first_id": page[0].file_id if page else None,
        "last_id": page[-1].file_id if page else None,
        "has_more": len(files) > size,
    })  # fmt: skip


async def file_of(request: Request, container_id: str, file_id: str) -> tuple[Session, SessionFile]:
    session = await session_of(request, container_id, container=True)
    for file in await live_files(request, session):
        if file.file_id == file_id:
            return session, file
    raise file_not_found(container_id, file_id)


def file_not_found(container_id: str, file_id: str) -> APIError:
    return APIError(404, f"No file '{file_id}' found in container '{container_id}'.", param="file_id",
                    code="file_not_found")


@router.get(CONTAINERS + "/{container_id}/files/{file_id}")
async def get_container_file(container_id: str, file_id: str, request: Request) -> JSONResponse:
    session, file = await file_of(request, container_id, file_id)
    return JSONResponse(container_file(session, file))


@router.get(CONTAINERS + "/{container_id}/files/{file_id}/content", response_class=Response)
async def container_file_content(container_id: str, file_id: str, request: Request) -> Response:
    session, _ = await file_of(request, container_id, file_id)
    return await file_response(request, session.owner, file_id, missing=file_not_found(container_id, file_id))
