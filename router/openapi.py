"""The OpenAPI document (`GET /openapi.json`) as the server really answers.

FastAPI documents a 422 for every route with a body; this server answers
400 in OpenAI's error shape instead (router/errors.py). `document()` takes
FastAPI's generated document and, in one pass over every operation:
drops 422 and its schemas, adds each error status the route can answer
with the error schema of its API (Anthropic's on /v1/messages), the
`text/event-stream` answers of streaming routes and the binary media types
of audio and image routes. Route modules declare only their 200 answers.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from modelyard.router.errors import is_anthropic
from modelyard.router.middleware import PROTECTED_PREFIXES
from modelyard.schemas import anthropic as an
from modelyard.schemas import openai as oa

OPENAI_ERROR = "ErrorResponse"
ANTHROPIC_ERROR = "AnthropicErrorResponse"

# What each error status means here; the body is always the API's error shape.
ERROR_STATUSES: dict[int, str] = {
    400: "Invalid request: a malformed body, a wrong type or value, or an unsupported parameter (`param` names it).",
    401: "No API key, or an unknown one (only when API keys are configured).",
    403: "The API key is not an admin key.",
    404: "No such model (`model_not_found`) or object for this caller.",
    409: "The model is busy (`model_busy`).",
    413: "The request body is larger than `[server] body_limit` (`request_too_large`); on POST /v1/files, the file "
    "is larger than `[storage] max_file_bytes` (`file_too_large`) or the key's files would exceed "
    "`[storage] max_bytes_per_key` (`storage_limit_exceeded`); on POST /v1/audio/transcriptions and "
    "/v1/audio/translations, the audio file is larger than `[limits] max_audio_bytes` (`file_too_large`).",
    429: "Too many requests: the API key's request limits, or the model's queue is full (`queue_full`); "
    "Retry-After says when to retry.",
    500: "The model failed while serving the request (`worker_crashed`, `backend_error`, `model_load_failed`) "
    "or an unexpected error (its request id is in the message).",
    503: "The server is starting or the model is not available yet; retry shortly.",
    504: "The request took longer than the model's `request_timeout`.",
}

# Routes that answer server-sent events when asked to (`stream: true`,
# speech's `stream_format: "sse"`, GET of a running background response).
STREAMING: dict[tuple[str, str], str] = {
    ("post", "/v1/chat/completions"): "`chat.completion.chunk` objects, then `data: [DONE]`.",
    ("post", "/v1/completions"): "`text_completion` chunks, then `data: [DONE]`.",
    ("post", "/v1/responses"): "Responses stream events (`response.created` ... `response.completed`).",
    ("get", "/v1/responses/{response_id}"): "The remaining stream events of a running background response.",
    ("post", "/v1/messages"): "Anthropic message stream events (`message_start` ... `message_stop`).",
    ("post", "/v1/audio/speech"): "`speech.audio.delta` and `speech.audio.done` events (`stream_format: \"sse\"`).",
    ("post", "/v1/audio/transcriptions"): "`transcript.text.delta` events, then `transcript.text.done` (`stream=true`).",
}

# Routes whose 200 answer is binary media rather than JSON.
BINARY: dict[tuple[str, str], tuple[str, ...]] = {
    ("post", "/v1/audio/speech"): ("audio/mpeg", "audio/ogg", "audio/aac", "audio/flac", "audio/wav", "audio/pcm"),
    ("get", "/v1/images/files/{name}"): ("image/png", "image/jpeg", "image/webp"),
    ("get", "/v1/skills/{skill_id}/content"): ("application/zip",),
    ("get", "/v1/skills/{skill_id}/versions/{version}/content"): ("application/zip",),
    ("get", "/v1/files/{file_id}/content"): ("application/octet-stream",),  # the type guessed from the file name
}

# Routes that refuse a request for a reason of their own, without a body or query to validate.
REFUSES = {
    ("post", "/admin/reload"),  # a server started without a config file
    ("post", "/v1/responses/{response_id}/cancel"),  # not a background response
}
ADMIN = {
    ("post", "/admin/reload"),
    ("post", "/v1/models/{model_id}/load"),
    ("post", "/v1/models/{model_id}/unload"),
}
MODEL_BUSY = {("post", "/v1/models/{model_id}/unload")}
# Open to anyone, but a key that is presented must be a valid one (it shows details).
KEY_OPTIONAL = {("get", "/health"), ("get", "/ready")}
METHODS = ("get", "put", "post", "delete", "patch", "options", "head")


def error_statuses(method: str, path: str, operation: dict[str, Any], fields: set[str]) -> list[int]:
    """Every error status the operation can answer; `fields` are its body's top-level fields."""
    statuses = {500, 503}
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    if has_body or any(p.get("in") == "query" for p in parameters) or (method, path) in REFUSES:
        statuses.add(400)
    if has_body:
        statuses.add(413)
    if path.startswith(PROTECTED_PREFIXES):
        statuses |= {401, 429}
    if (method, path) in ADMIN:
        statuses.add(403)
    if (method, path) in MODEL_BUSY:
        statuses.add(409)
    runs_model = "model" in fields or any(p.get("name") == "model" for p in parameters)
    if runs_model or any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    if runs_model:
        statuses.add(504)
    return sorted(statuses)


def body_fields(document: dict[str, Any], operation: dict[str, Any]) -> set[str]:
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", content.get("multipart/form-data", {})).get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = document.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[1], {})
    return set(schema.get("properties", {}))


def error_response(path: str, status: int) -> dict[str, Any]:
    name = ANTHROPIC_ERROR if is_anthropic(path) else OPENAI_ERROR
    return {
        "description": ERROR_STATUSES[status],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


def add_media(method: str, path: str, ok: dict[str, Any]) -> None:
    content = ok.setdefault("content", {})
    if (method, path) in BINARY:
        for media_type in BINARY[method, path]:
            content[media_type] = {"schema": {"type": "string", "format": "binary"}}
        # FastAPI's default for a bare Response class says nothing true.
        if content.get("application/json") == {"schema": {}}:
            del content["application/json"]
    if (method, path) in STREAMING:
        content["text/event-stream"] = {
            "schema": {"type": "string", "description": "Server-sent events: " + STREAMING[method, path]}
        }
        for other in [t for t in content if t.startswith("audio/")]:
            content[other].setdefault("schema", {"type": "string", "format": "binary"})


def add_error_schemas(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for name, model in ((OPENAI_ERROR, oa.ErrorResponse), (ANTHROPIC_ERROR, an.ErrorResponse)):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for sub_name, sub_schema in schema.pop("$defs", {}).items():
            schemas.setdefault(sub_name, sub_schema)
        schemas[name] = schema


def post_process(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's generated document, corrected in place to what the server answers."""
    add_error_schemas(document)
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if path.startswith(PROTECTED_PREFIXES):
                for status in error_statuses(method, path, operation, body_fields(document, operation)):
                    responses[str(status)] = error_response(path, status)
            elif (method, path) in KEY_OPTIONAL:
                responses["401"] = error_response(path, 401)
            add_media(method, path, responses.setdefault("200", {"description": "Successful Response"}))
    return document


def install(app: FastAPI) -> None:
    """Serve the corrected document at /openapi.json (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = post_process(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
