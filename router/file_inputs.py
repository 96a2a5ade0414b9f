"""Files attached to a request (a chat `file` part, a Responses
`input_file`, a Messages `document`) as the text the model reads.

Each surface finds its file parts and describes each as an `Attachment`
(a Files API id, inline base64 data, or inline text) with a callback that
puts the file's text where the part was; `attach` resolves them in order
and calls back. A file becomes a block

    <file name="notes.txt">
    ...
    </file>

holding a bounded preview of its text (UTF-8 text, JSON, CSV, Markdown,
source code; the text of a PDF), cut at `[limits] max_file_chars` per file
and `max_file_chars_per_request` for all of a request's files, and saying
so when it was cut. A binary file (an image for a text model, a zip, ...)
becomes its name, type and size only. Decoding and PDF parsing run on a
thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import io
import logging
import mimetypes
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from modelyard.router.deps import get_yard, owner_of
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.limits import limits_for
from modelyard.schemas.config import LimitsConfig
from starlette.requests import Request

log = logging.getLogger("modelyard.files")

DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[^;,]*)*);base64,(?P<data>.*)$", re.DOTALL
)
OUR_CONTENT_PATH = re.compile(r"^/v1/files/(?P<id>[^/]+)/content$")
TEXT_TYPES = {
    "application/json", "application/xml", "application/javascript", "application/x-javascript",
    "application/ecmascript", "application/x-yaml", "application/yaml", "application/toml", "application/x-toml",
    "application/sql", "application/x-sh", "application/x-python", "application/csv", "application/x-ndjson",
    "application/ld+json", "application/x-tex", "application/x-httpd-php", "application/graphql",
}  # fmt: skip
# Source files mimetypes does not know, or calls binary.
TEXT_SUFFIXES = (
    ".md", ".markdown", ".py", ".rs", ".go", ".ts", ".tsx", ".jsx", ".toml", ".yaml", ".yml", ".ini",
    ".cfg", ".rst", ".sh", ".sql", ".kt", ".swift", ".rb", ".php", ".lua", ".jsonl", ".log", ".env",
)  # fmt: skip
PDF = "application/pdf"
PDF_MAGIC = b"%PDF-"
GENERIC = "application/octet-stream"
UTF8_MAX = 4  # bytes a character can take


@dataclass
class Attachment:
    """One file part of a request, as its surface found it: `file_id` (the
    Files API), or `data` (base64, with its `media_type`), or `text`."""

    param: str  # where the part is in the request, for errors
    file_id: str | None = None
    filename: str | None = None
    data: str | None = None
    text: str | None = None
    media_type: str | None = None
    context: str | None = None  # Anthropic's document `context`


# What a surface found: each attachment with the callback that puts its text where the part was.
Found = list[tuple[Attachment, Callable[[str], None]]]


def file_parts_of(
    messages: list[Any], kind: type, role: str = "user"
) -> Iterator[tuple[int, int, Any, Callable[[Any], None]]]:
    """Each part of type `kind` in the content lists of the messages of
    `role`: the message's index, the part's, the part, and a function that
    replaces the part."""
    for index, message in enumerate(messages):
        if message.role != role or isinstance(message.content, str):
            continue
        content: list[Any] = message.content
        for number, part in enumerate(content):
            if isinstance(part, kind):
                yield index, number, part, partial(content.__setitem__, number)


@dataclass
class Resolved:
    name: str
    media_type: str
    size: int  # bytes of the whole file
    content: bytes | str  # all of it, or (from the store) at most what a preview can show


def from_data_url(url: str, param: str, filename: str | None = None) -> Attachment:
    """An OpenAI `file_data` (a data URL). Bare base64, which some clients send, counts as a file of unknown type."""
    match = DATA_URL.match(url)
    if match is None:
        if url.startswith("data:"):
            raise invalid_request(f"{param} is not a base64 data URL (data:<media type>;base64,<data>).", param=param)
        return Attachment(param, filename=filename, data=url)
    return Attachment(param, filename=filename, data=match["data"], media_type=match["mime"])


def own_file_id(url: str, request: Request, *, relative: bool = False) -> str | None:
    """The file id of a URL naming this server's /v1/files/{id}/content
    (with `relative`, its bare path too), else None."""
    parts = urlsplit(url)
    match = OUR_CONTENT_PATH.match(parts.path)
    ours = {request.url.netloc, request.headers.get("host", "")}
    schemes = ("", "http", "https") if relative else ("http", "https")
    if match is None or parts.scheme not in schemes or ((parts.netloc or not relative) and parts.netloc not in ours):
        return None
    return match["id"]


def file_id_of_url(url: str, param: str, request: Request) -> str:
    """The file id of a `file_url` naming this server's /v1/files/{id}/content; any other URL is refused."""
    found = own_file_id(url, request, relative=True)
    if found is None:
        raise invalid_request(
            f"{param}: this server does not fetch files from URLs; a file_url must be this server's "
            f"{request.base_url}v1/files/<file id>/content (or send file_id or file_data).",
            param=param,
            code="invalid_file_url",
        )
    return found


def guess_type(name: str, given: str | None) -> str:
    if given and given.lower() != GENERIC:
        return given.lower()
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or GENERIC


def is_binary_type(media_type: str, name: str) -> bool:
    """A type known not to be text (application/octet-stream is not known: it is sniffed)."""
    return media_type != GENERIC and not is_text_type(media_type, name)


def is_text_type(media_type: str, name: str) -> bool:
    if media_type.startswith("text/") or media_type in TEXT_TYPES:
        return True
    if media_type.endswith(("+json", "+xml", "+yaml")):
        return True
    return name.lower().endswith(TEXT_SUFFIXES)


async def resolve(attachment: Attachment, request: Request, chars: int, whole: bool = False) -> Resolved:
    """The file's name, type, size and content; from the store, at most what a preview of `chars` characters needs."""
    if attachment.file_id is not None:
        store = get_yard(request).files
        owner = owner_of(request)
        stored = await store.get(owner, attachment.file_id) if store is not None else None
        if stored is None:
            raise file_not_found(attachment.file_id, attachment.param)
        name = attachment.filename or stored.filename
        media_type = guess_type(name, stored.content_type)
        limit: int | None = chars * UTF8_MAX + UTF8_MAX  # text: what the preview can show
        if chars <= 0:
            limit = 0  # the request's budget is spent: only the name is shown
        elif media_type == PDF or whole:
            limit = None  # parsed whole
        elif is_binary_type(media_type, name):
            limit = len(PDF_MAGIC)  # only its name, type and size are shown (unless it is a PDF after all)
        content = await store.read(owner, attachment.file_id, limit)
        if content is None:
            raise file_not_found(attachment.file_id, attachment.param)
        return Resolved(name, media_type, stored.bytes, content)
    name = attachment.filename or "file"
    if attachment.text is not None:
        size = len(attachment.text.encode("utf-8"))
        return Resolved(name, attachment.media_type or "text/plain", size, attachment.text)
    assert attachment.data is not None
    data = await asyncio.to_thread(decode_base64, attachment.data, attachment.param)
    return Resolved(name, guess_type(name, attachment.media_type), len(data), data)


def file_not_found(file_id: str, param: str) -> APIError:
    return APIError(404, f"No file with id '{file_id}' was found.", param=param, code="file_not_found")


def decode_base64(data: str, param: str, what: str = "file") -> bytes:
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        message = f"{param}: the {what} data is not valid base64."
        raise invalid_request(message, param=param, code="invalid_base64") from None


# --- previews ----------------------------------------------------------------


def pdf_text(data: bytes, name: str, chars: int, param: str) -> tuple[str, bool]:
    """The text of a PDF's pages, up to `chars` characters, and whether it was cut."""
    from pypdf import PdfReader  # imported on first use: a PDF is rare, the import takes ~0.1 s

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            message = f"The file '{name}' is an encrypted PDF; send it unencrypted."
            raise invalid_request(message, param=param, code="invalid_file")
        pages: list[str] = []
        total = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            pages.append(text)
            total += len(text) + 1
            if total > chars:
                break
    except APIError:
        raise
    except Exception as exc:  # pypdf raises many types (PdfReadError, ValueError, KeyError, ...) on broken files
        raise invalid_request(
            f"The file '{name}' could not be read as a PDF ({type(exc).__name__}: {str(exc)[:200]}).",
            param=param,
            code="invalid_file",
        ) from None
    text = "\n".join(pages).strip()
    return text[:chars], len(text) > chars


def decoded(content: bytes | str, size: int, textual: bool) -> tuple[str, bool] | None:
    """Bytes as text, and whether they are only the start of the file. Bytes
    that are not UTF-8 are None, unless the file's type says text (a
    Windows-1252 CSV, say): then the odd bytes become U+FFFD."""
    if isinstance(content, str):
        return content, False
    cut = len(content) < size
    try:
        return content.decode("utf-8"), cut
    except UnicodeDecodeError as exc:
        if cut and exc.start >= len(content) - UTF8_MAX:  # a character cut at the end of what was read
            return decoded(content[: exc.start], size, textual)
        return (content.decode("utf-8", errors="replace"), cut) if textual else None


def looks_binary(text: str) -> bool:
    return "\x00" in text[:8192]


def preview(file: Resolved, chars: int, context: str | None, param: str) -> tuple[str, int]:
    """The file as the model reads it, with at most `chars` characters of
    its text, and how many characters of its text that is."""
    attributes = f'name="{html.escape(file.name)}"'
    if context:
        attributes += f' context="{html.escape(context)}"'
    body: str | None = None
    cut = False
    if chars <= 0 and (file.media_type == PDF or not is_binary_type(file.media_type, file.name)):
        body, cut = "", True  # the request's attached files already fill its limit: nothing is read or parsed
    elif isinstance(file.content, bytes) and (file.media_type == PDF or file.content.startswith(PDF_MAGIC)):
        if len(file.content) < file.size:  # a PDF that was only sniffed: read it whole
            raise ReadWhole
        body, cut = pdf_text(file.content, file.name, chars, param)
    elif not is_binary_type(file.media_type, file.name):
        text = decoded(file.content, file.size, is_text_type(file.media_type, file.name))
        if text is not None and not looks_binary(text[0]):
            body, cut = text
            cut = cut or len(body) > chars
            body = body[:chars]
    if body is None:
        return (
            f'<file {attributes} type="{html.escape(file.media_type)}" bytes="{file.size}">\n'
            "(a binary file: only its name, type and size are shown to this model)\n</file>"
        ), 0
    body = body.replace("</file>", "</ file>")  # the file's own text cannot close its block early
    if cut:
        note = f"[truncated: only the first {len(body):,} characters of this {file.size:,}-byte file are shown]"
        if not body:
            note = "[left out: the request's attached files already fill the server's limit]"
        return f'<file {attributes} truncated="true">\n{body}\n{note}\n</file>', len(body)
    return f"<file {attributes}>\n{body}\n</file>", len(body)


class ReadWhole(Exception):
    """A file read in part turned out to be a PDF."""


async def attach(request: Request, found: Found) -> list[str]:
    """Resolve each attachment, in order, and hand its text to its callback.
    Returns the files' names (ChatRequest.attached_files)."""
    if not found:
        return []
    limits: LimitsConfig = limits_for(request)
    left = limits.max_file_chars_per_request
    names: list[str] = []
    for attachment, put in found:
        chars = min(limits.max_file_chars, left)
        file = await resolve(attachment, request, chars)
        try:
            text, shown = await asyncio.to_thread(preview, file, chars, attachment.context, attachment.param)
        except ReadWhole:
            file = await resolve(attachment, request, chars, whole=True)
            text, shown = await asyncio.to_thread(preview, file, chars, attachment.context, attachment.param)
        left -= shown
        names.append(file.name)
        put(text)
    log.debug("attached %d file(s) to the prompt: %s", len(names), ", ".join(names))
    return names
