"""Reading a multipart/form-data upload as it arrives. For POST /v1/files the
`file` part goes straight to a temporary file of the file store (never whole
in memory; parsing and writing run on the store's I/O threads); for audio
to transcribe (`receive_in_memory`) it is kept in memory, under a limit
checked as it grows. The other fields (at most a few small ones) are kept,
each name with all of its values (`timestamp_granularities[]` comes once per value)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from collections.abc import AsyncIterator
from typing import Protocol

from modelyard.router.errors import APIError, ClientGone, invalid_request
from modelyard.router.file_store import FileStore, TooLarge, Upload
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

MAX_FIELDS = 16
MAX_FIELD_BYTES = 4096
MAX_HEADER_BYTES = 8192
MAX_FILENAME_BYTES = 255
ENVELOPE_BYTES = 64 * 1024  # what a multipart body may carry beyond its file: boundaries, headers, fields


class Sink(Protocol):
    """Where the file part's bytes go: a file store Upload, or a MemoryUpload."""

    limit: int

    def write(self, data: bytes) -> None: ...


class MemoryUpload:
    """A file part kept in memory, up to `limit` bytes (TooLarge past it)."""

    def __init__(self, limit: int, too_large: str) -> None:
        self.limit = limit
        self.too_large = too_large
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        if len(self.data) + len(data) > self.limit:
            raise TooLarge(self.too_large)
        self.data += data


@dataclass
class Received:
    fields: dict[str, str] = field(default_factory=dict)  # each name's last value
    values: dict[str, list[str]] = field(default_factory=dict)  # each name's values, in order
    filename: str | None = None
    part_type: str | None = None  # the file part's own Content-Type
    file_complete: bool = False


def check_filename(raw: bytes, disposition: bytes) -> str:
    if b"\\" in disposition or b"/" in raw:
        raise invalid_request("The file name must not contain path separators ('/' or '\\').", param="file")
    if b"\x00" in raw or any(byte < 0x20 or byte == 0x7F for byte in raw):
        raise invalid_request("The file name must not contain NUL or other control characters.", param="file")
    if not raw.strip():
        raise invalid_request("The file part needs a file name.", param="file")
    if len(raw) > MAX_FILENAME_BYTES:
        raise invalid_request(f"The file name is longer than {MAX_FILENAME_BYTES} bytes.", param="file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_request("The file name is not valid UTF-8.", param="file") from None


class FormReader:
    """MultipartParser callbacks; they run on an I/O thread, inside parser.write()."""

    def __init__(self, upload: Sink) -> None:
        self.upload = upload
        self.received = Received()
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.name: str | None = None
        self.is_file = False
        self.value = bytearray()
        self.header_bytes = 0
        self.field_parts = 0

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field_data,
            "on_header_value": self.header_value_data,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def part_begin(self) -> None:
        self.headers = {}
        self.name = None
        self.is_file = False
        self.value = bytearray()
        self.header_bytes = 0

    def _count_header(self, size: int) -> None:
        self.header_bytes += size
        if self.header_bytes > MAX_HEADER_BYTES:
            raise invalid_request("A part of the multipart body has headers that are too long.")

    def header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.header_field += data[start:end]

    def header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field = self.header_value = b""

    def headers_finished(self) -> None:
        disposition = self.headers.get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        try:
            self.name = options.get(b"name", b"").decode("utf-8")
        except UnicodeDecodeError:
            raise invalid_request("A multipart field name is not valid UTF-8.") from None
        if self.name == "file":
            if self.received.filename is not None:
                raise invalid_request("Send one 'file' part, not several.", param="file")
            self.received.filename = check_filename(options.get(b"filename", b""), disposition)
            part_type = self.headers.get(b"content-type")
            self.received.part_type = part_type.decode("latin-1").strip() if part_type else None
            self.is_file = True
        else:
            # Counted by part, not by name: a repeated name holds all its values.
            self.field_parts += 1
            if self.field_parts > MAX_FIELDS:
                raise invalid_request(f"The multipart body has more than {MAX_FIELDS} fields.")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.is_file:
            self.upload.write(data[start:end])
            return
        self.value += data[start:end]
        if len(self.value) > MAX_FIELD_BYTES:
            raise invalid_request(f"The field '{self.name}' is longer than {MAX_FIELD_BYTES} bytes.", param=self.name)

    def part_end(self) -> None:
        if self.is_file:
            self.received.file_complete = True
        if self.is_file or self.name is None:
            return
        try:
            value = self.value.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid_request(f"The field '{self.name}' is not valid UTF-8.", param=self.name) from None
        self.received.fields[self.name] = value
        self.received.values.setdefault(self.name, []).append(value)


def boundary_of(request: Request, expected: str = "with a 'file' part and a 'purpose' field") -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise invalid_request(f"Upload a file as multipart/form-data, {expected}.", code="invalid_content_type")
    return boundary


def check_complete(received: Received) -> None:
    if received.filename is None:
        raise invalid_request("Missing required parameter: 'file'.", param="file")
    if not received.file_complete:
        raise invalid_request("The multipart body ended inside the 'file' part.", param="file")


async def whole_body_within(request: Request, limit: int, too_large: str) -> AsyncIterator[bytes]:
    """The request body's chunks, refused (413) once they pass `limit` in
    all: the file part's own limit does not count what a client sends
    around it (the parser drops anything after the closing boundary)."""
    total = 0
    async for chunk in request.stream():
        if chunk:
            total += len(chunk)
            if total > limit:
                raise TooLarge(too_large)
            yield chunk


async def receive_in_memory(request: Request, limit: int, too_large: str, expected: str) -> tuple[bytes, Received]:
    """Read a whole upload whose file is kept in memory, refusing (413) a
    file over `limit` bytes as soon as it is over, before the rest arrives.
    Parsing runs on a thread: a file of several MB is many parser calls."""
    boundary = boundary_of(request, expected)
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit + ENVELOPE_BYTES:
        raise APIError(413, too_large, code="file_too_large", headers={"connection": "close"})
    upload = MemoryUpload(limit, too_large)
    reader = FormReader(upload)
    parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in whole_body_within(request, limit + ENVELOPE_BYTES, too_large):
            await asyncio.to_thread(parser.write, chunk)
        await asyncio.to_thread(parser.finalize)
    except TooLarge as exc:
        raise APIError(413, str(exc), code="file_too_large", headers={"connection": "close"}) from None
    except ClientDisconnect:
        raise ClientGone() from None
    except FormParserError as exc:  # a malformed body
        raise invalid_request(f"The multipart body could not be parsed: {exc}") from None
    check_complete(reader.received)
    return bytes(upload.data), reader.received


async def receive(request: Request, store: FileStore, owner: str) -> tuple[Upload, Received]:
    """Read the whole upload; the caller commits or aborts the returned Upload.
    On any error here the temporary file is already removed."""
    boundary = boundary_of(request)
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > store.max_file_bytes + ENVELOPE_BYTES:
        raise APIError(413, store.file_limit_message(), code="file_too_large", headers={"connection": "close"})
    upload = await store.start_upload(owner)
    reader = FormReader(upload)
    parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in whole_body_within(request, store.max_file_bytes + ENVELOPE_BYTES, store.file_limit_message()):
            await store.io(parser.write, chunk)
        await store.io(parser.finalize)
    except TooLarge as exc:
        await store.io(upload.abort)
        code = "file_too_large" if upload.limit == store.max_file_bytes else "storage_limit_exceeded"
        raise APIError(413, str(exc), code=code, headers={"connection": "close"}) from None
    except APIError:
        await store.io(upload.abort)
        raise
    except ClientDisconnect:
        await store.io(upload.abort)
        raise ClientGone() from None
    except FormParserError as exc:  # a malformed body
        await store.io(upload.abort)
        raise invalid_request(f"The multipart body could not be parsed: {exc}") from None
    except Exception:  # the disk or a bug: a 500 (logged by the error handler), never the storage path in a 400
        await store.io(upload.abort)
        raise
    except BaseException:  # cancelled: clean up without waiting
        store.io_later(upload.abort)
        raise
    try:
        check_complete(reader.received)
    except APIError:
        await store.io(upload.abort)
        raise
    return upload, reader.received
