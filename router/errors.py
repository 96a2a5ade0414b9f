"""Every error the API returns is made here.

Route code raises `APIError`; the registry layer raises the typed
exceptions of router/model_errors.py, which `api_error_from` maps to status
codes and bodies (here only); handlers turn both into OpenAI's
`{"error": {...}}` body. Unexpected
exceptions are logged with their request id and answered with a message
that names the id, never with the exception text.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from modelyard.router.model_errors import (
    ModelBusy,
    ModelError,
    ModelLoadFailed,
    ModelNotFound,
    ModelTimedOut,
    NoModelConfigured,
    WorkerFailed,
    WrongModality,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("modelyard")

STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "timeout_error",
}


class ClientGone(Exception):
    """The client disconnected before its answer was ready; nobody is left to answer."""


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = headers

    def body(self, path: str = "", request_id: str | None = None, anthropic: bool | None = None) -> dict[str, Any]:
        """The error body in the shape of the API at `path` (of Anthropic's API when `anthropic`)."""
        if is_anthropic(path) if anthropic is None else anthropic:
            body: dict[str, Any] = {
                "type": "error",
                "error": {"type": ANTHROPIC_TYPES.get(self.status, "api_error"), "message": self.message},
            }
            if request_id:
                body["request_id"] = request_id
            return body
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, path: str = "", request_id: str | None = None, anthropic: bool | None = None) -> JSONResponse:
        return JSONResponse(self.body(path, request_id, anthropic), status_code=self.status, headers=self.headers)


# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors).
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


def is_anthropic(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


SHARED_PATHS = ("/v1/files", "/v1/skills")  # served to both SDKs: Anthropic's is the one sending anthropic-version


def anthropic_request(scope: Any) -> bool:
    """Whether a request (its ASGI scope) is answered in Anthropic's shape."""
    path: str = scope.get("path", "")
    if is_anthropic(path):
        return True
    if any(path == shared or path.startswith(shared + "/") for shared in SHARED_PATHS):
        return any(name == b"anthropic-version" for name, _ in scope.get("headers", []))
    return False


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def response_not_found(response_id: str, param: str | None = None) -> APIError:
    """A stored response this caller cannot see: none by that id, or another key's."""
    return APIError(404, f"No response with id '{response_id}' was found.", param=param, code="response_not_found")


def model_not_found(name: str) -> APIError:
    return APIError(
        404,
        f"The model '{name}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def internal_error(request_id: str | None) -> APIError:
    ref = f" (request id {request_id})" if request_id else ""
    return APIError(500, f"The server had an error while processing your request{ref}. The details are in the server log.")


def from_call_failure(model_id: str, kind: str, message: str, param: str | None) -> APIError:
    """Map a typed failure reported by a worker to an API error."""
    if kind == "invalid_request":
        return APIError(400, message, param=param)
    if kind == "load_failed":
        return APIError(500, f"The model '{model_id}' failed to load: {message}", code="model_load_failed")
    if kind == "worker_crashed":
        return APIError(500, message, code="worker_crashed")
    if kind == "not_found":
        return APIError(404, message, param=param, code="not_found")
    if kind == "upstream_error":
        return APIError(502, message, code="upstream_error")
    if kind == "upstream_timeout":
        return APIError(504, message, code="upstream_timeout")
    if kind == "upstream_unavailable":
        return APIError(503, message, code="upstream_unavailable", headers={"retry-after": "1"})
    if kind == "upstream_busy":
        return APIError(429, message, code="upstream_busy", headers={"retry-after": "1"})
    if kind == "internal":
        # The worker logged the traceback; don't leak its text.
        return APIError(500, f"The model '{model_id}' failed while serving the request. The details are in the server log.", code="backend_error")
    return APIError(500, f"The model '{model_id}' failed: {message}", code="backend_error")


def api_error_from(exc: BaseException) -> APIError | None:
    """The API error for an exception of the route or registry layer, or
    None for an unexpected one (which the caller logs and answers with
    `internal_error`)."""
    if isinstance(exc, APIError):
        return exc
    if not isinstance(exc, ModelError):
        return None
    if isinstance(exc, ModelBusy):
        return APIError(
            429,
            f"The model '{exc.model_id}' is busy: {exc.inflight} requests are in progress or waiting. Retry shortly.",
            code="queue_full",
            headers={"retry-after": "1"},
        )
    if isinstance(exc, ModelTimedOut):
        return APIError(
            504,
            f"The request took longer than this model's request_timeout ({exc.timeout:g}s) and was stopped.",
            code="timeout",
        )
    if isinstance(exc, ModelLoadFailed):
        return from_call_failure(exc.model_id, "load_failed", exc.message, None)
    if isinstance(exc, WorkerFailed):
        return from_call_failure(exc.model_id, exc.kind, exc.message, exc.param)
    if isinstance(exc, ModelNotFound):
        return model_not_found(exc.model_id)
    if isinstance(exc, NoModelConfigured):
        return APIError(404, f"No {exc.modality} model is configured on this server.", param="model", code="model_not_found")
    if isinstance(exc, WrongModality):
        article = "an" if exc.needs[0] in "aeiou" else "a"
        return APIError(
            400,
            f"The model '{exc.model_id}' is a {exc.has} model and cannot be used with {exc.endpoint}, "
            f"which needs {article} {exc.needs} model.",
            param="model",
            code="model_modality_mismatch",
        )
    return APIError(500, f"The model '{exc.model_id}' failed: {exc.message}", code="backend_error")


# pydantic puts union branches into error locations: a type ("str",
# "list[int]") or, for tagged unions, the tag ("user", "json_schema").
UNION_TYPE_PART = re.compile(r"^(str|int|float|bool|dict|list|none|[\w-]+\[.*\])$")
UNION_TAGS = {
    "system", "developer", "user", "assistant", "tool", "function",
    "text", "image_url", "input_audio", "file", "refusal", "json_object", "json_schema",
}  # fmt: skip


def param_of(loc: tuple[Any, ...]) -> str | None:
    """OpenAI-style parameter path (`messages[0].content`) of a pydantic error location."""
    out = ""
    previous: Any = None
    for part in loc:
        if part in ("body", "query", "path") and previous is None:
            pass
        elif isinstance(part, int):
            out += f"[{part}]"
        elif UNION_TYPE_PART.match(str(part)) or (
            part in UNION_TAGS and (isinstance(previous, int) or previous == "response_format")
        ):
            pass
        else:
            out += ("." if out else "") + str(part)
        previous = part
    return out or None


# pydantic's error types for a value of the wrong JSON type, and what OpenAI
# calls the type it expected ("Invalid type for 'stream': expected a boolean").
EXPECTED_TYPES = {
    "bool_type": "a boolean",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "dict_type": "an object",
    "model_type": "an object",
    "list_type": "an array",
}


def json_type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def describe_validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    if not errors:
        return invalid_request("Invalid request body.")
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    param = param_of(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    if kind == "json_invalid":
        return invalid_request(
            "We could not parse the JSON body of your request. The body must be valid JSON.", code="invalid_json"
        )
    if kind == "extra_forbidden":
        return invalid_request(f"Unrecognized request argument supplied: {param}", param=param)
    if kind == "missing":
        if not loc:
            return invalid_request("The request needs a JSON body.")
        return invalid_request(f"Missing required parameter: '{param}'.", param=param)
    if kind == "model_attributes_type" or (kind.endswith("_type") and not loc):
        return invalid_request("The request body must be a JSON object.")
    message = err.get("msg", "invalid value")
    same_param = [e for e in errors if param_of(tuple(e.get("loc", ()))) == param]
    if param and kind in EXPECTED_TYPES and len(same_param) == 1:
        got = json_type_of(err.get("input"))
        return invalid_request(
            f"Invalid type for '{param}': expected {EXPECTED_TYPES[kind]}, but got {got} instead.",
            param=param,
            code="invalid_type",
        )
    if param and len(same_param) > 1:
        # Every branch of a union failed: pydantic's first message names one arbitrary branch.
        message = "it is none of the accepted types (see the API reference)"
    return invalid_request(f"Invalid value for '{param}': {message}." if param else f"{message}.", param=param)


def describe_anthropic_validation_error(exc: RequestValidationError) -> APIError:
    """Anthropic's wording, which is pydantic's own (its API validates with
    pydantic too): `messages.1.role: Input should be 'user' or 'assistant'`,
    `context_management: Extra inputs are not permitted`."""
    errors = exc.errors()
    err = errors[0] if errors else {}
    if err.get("type") == "json_invalid" or len(err.get("loc", ())) <= 1:
        return describe_validation_error(exc)  # the body itself: missing, not JSON, not an object
    parts = [str(p) for p in err.get("loc", ())[1:] if not UNION_TYPE_PART.match(str(p))]
    path = ".".join(parts)
    message = err.get("msg", "invalid value")
    return invalid_request(f"{path}: {message}" if path else message, param=path or None)


def install(app: FastAPI) -> None:
    def respond(request: Request, error: APIError) -> JSONResponse:
        return error.response(
            request.url.path, request.scope.get("state", {}).get("request_id"), anthropic_request(request.scope)
        )

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return respond(request, exc)

    async def on_model_error(request: Request, exc: Exception) -> JSONResponse:
        error = api_error_from(exc)
        assert error is not None
        return respond(request, error)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        if anthropic_request(request.scope):
            return respond(request, describe_anthropic_validation_error(exc))
        return respond(request, describe_validation_error(exc))

    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            message = f"Unknown request URL: {request.method} {request.url.path}."
            return respond(request, APIError(404, message, code="unknown_url"))
        if exc.status_code == 405:
            return respond(request, APIError(405, f"Method {request.method} is not allowed for {request.url.path}."))
        return respond(request, APIError(exc.status_code, str(exc.detail), headers=exc.headers))

    async def on_client_gone(request: Request, exc: Exception) -> Response:
        # 499 (nginx's "client closed request"): only the access log sees it.
        return Response(status_code=499)

    app.add_exception_handler(ClientGone, on_client_gone)
    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(ModelError, on_model_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
