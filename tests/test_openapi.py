"""The OpenAPI document says what the server answers: 400 (never 422) in
the API's error shape, every error status of each route, the SSE answers of
streaming routes and the media types of audio and image routes.

No model is needed: the document comes from a real server whose config
has none. (tests/test_fuzz.py checks the answers of a server with models
against the same document.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import local_http

STREAMING = [
    ("post", "/v1/chat/completions"),
    ("post", "/v1/completions"),
    ("post", "/v1/responses"),
    ("post", "/v1/messages"),
    ("post", "/v1/audio/speech"),
    ("post", "/v1/audio/transcriptions"),
]
MODEL_ROUTES = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/images/generations",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/audio/speech",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
]
OPENAI_ERROR = "#/components/schemas/ErrorResponse"
ANTHROPIC_ERROR = "#/components/schemas/AnthropicErrorResponse"


@pytest.fixture(scope="module")
def document(server_factory: Any) -> dict[str, Any]:
    server = server_factory('[storage]\npath = "responses.sqlite3"\n')
    response = local_http.get(f"{server.base_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "delete", "patch"):
                yield method, path, operation


def error_ref(operation: dict[str, Any], status: str) -> str:
    response = operation["responses"][status]
    ref: str = response["content"]["application/json"]["schema"]["$ref"]
    return ref


def test_no_422_anywhere(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        assert "422" not in operation["responses"], (method, path)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas


def test_every_v1_post_lists_400_with_the_error_schema(document: dict[str, Any]) -> None:
    posts = [(path, op) for method, path, op in operations(document) if method == "post" and path.startswith("/v1/")]
    assert len(posts) >= len(MODEL_ROUTES)
    for path, operation in posts:
        if "requestBody" not in operation:
            continue  # load/unload take no body: nothing to validate
        expected = ANTHROPIC_ERROR if path.startswith("/v1/messages") else OPENAI_ERROR
        assert error_ref(operation, "400") == expected, path


def test_model_routes_list_their_error_statuses(document: dict[str, Any]) -> None:
    for path in MODEL_ROUTES:
        operation = document["paths"][path]["post"]
        statuses = set(operation["responses"])
        assert {"400", "401", "404", "413", "429", "500", "503", "504"} <= statuses, (path, statuses)
        for status in statuses - {"200"}:
            assert error_ref(operation, status).endswith("ErrorResponse"), (path, status)


def test_error_schemas_are_the_api_shapes(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    openai_error = schemas["ErrorResponse"]
    assert openai_error["required"] == ["error"]
    detail = schemas[openai_error["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
    assert set(detail["properties"]) == {"message", "type", "param", "code"}
    anthropic_error = schemas["AnthropicErrorResponse"]
    assert set(anthropic_error["properties"]) == {"type", "error", "request_id"}


def test_admin_and_lookup_statuses(document: dict[str, Any]) -> None:
    reload_statuses = set(document["paths"]["/admin/reload"]["post"]["responses"])
    assert {"401", "403", "500"} <= reload_statuses
    model_card = document["paths"]["/v1/models/{model_id}"]["get"]["responses"]
    assert "404" in model_card and "400" not in model_card  # nothing in it to validate
    assert "409" in document["paths"]["/v1/models/{model_id}/unload"]["post"]["responses"]
    # Liveness is open to all, but a key that is presented must be valid: only 401.
    for path in ("/health", "/ready"):
        assert set(document["paths"][path]["get"]["responses"]) == {"200", "401"}, path


def test_streaming_routes_list_event_stream(document: dict[str, Any]) -> None:
    for method, path in STREAMING:
        content = document["paths"][path][method]["responses"]["200"]["content"]
        assert "text/event-stream" in content, path
    chat = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert "application/json" in chat  # the non-streaming answer stays documented
    assert "text/event-stream" not in document["paths"]["/v1/embeddings"]["post"]["responses"]["200"]["content"]


def test_binary_routes_list_their_media_types(document: dict[str, Any]) -> None:
    speech = document["paths"]["/v1/audio/speech"]["post"]["responses"]["200"]["content"]
    assert {"audio/mpeg", "audio/wav", "audio/flac", "audio/pcm"} <= set(speech)
    assert speech["audio/mpeg"]["schema"] == {"type": "string", "format": "binary"}
    for path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
        operation = document["paths"][path]["post"]
        assert {"application/json", "text/plain", "application/x-subrip", "text/vtt"} <= set(operation["responses"]["200"]["content"])
        upload = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert upload["required"] == ["file"] and upload["properties"]["file"]["format"] == "binary"
    assert "stream" not in upload["properties"]  # translations do not stream, as at OpenAI
    image = document["paths"]["/v1/images/files/{name}"]["get"]["responses"]["200"]["content"]
    assert {"image/png", "image/jpeg", "image/webp"} <= set(image)
