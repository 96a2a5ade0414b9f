"""Images in chat messages (a chat `image_url` part, a Responses
`input_image`, a Messages `image` block, also inside a `tool_result`), as
the adapters' ImageInput (adapters/base.py).

Each surface turns an image part into an `ImageSource` (where it is in the
request, and a data URL, base64 data, a Files API id or an http(s) URL),
placed in the backend message as `{"type": "image", "image": source}`
between the text parts, in order; `content_of` makes a message's content of
such parts (a plain string when it holds no image). Once the ChatRequest is
built, `resolve_images` loads the model if needed, refuses images for a
model that does not take them (400 naming the model and the part, never a
silent drop), then reads each image and puts its ImageInput in its place.

Reading an image: a data URL or base64 source (image/png, image/jpeg,
image/webp, image/gif; a media type that is not one of them, or that the
bytes contradict, is a 400), a file of this server's /v1/files store, or
an http(s) URL: this server's own /v1/files/{id}/content is read from the
store, any other is fetched only with `[server] fetch_remote_media`, through
the web_search tool's address guard (router/web_fetch.py). Each image is held
to `[limits] max_image_bytes`, its header to `max_image_pixels` (checked
before the pixels are decoded, so a decompression bomb costs nothing), and
a request to `max_images_per_request`. Decoding runs on a thread; the image
is flattened to RGB, scaled down to `MAX_EDGE` on its longest edge if
larger, and re-encoded as PNG, which every engine reads.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from modelyard.adapters.base import ChatRequest, ImageInput
from modelyard.router.deps import get_yard, owner_of
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.file_inputs import DATA_URL, decode_base64, file_not_found, own_file_id
from modelyard.router.limits import limits_for
from modelyard.router.streaming import until_disconnected
from modelyard.router.web_fetch import FetchError, GuardedClient, one_line
from starlette.requests import Request

if TYPE_CHECKING:
    from modelyard.router.registry import ModelEntry

log = logging.getLogger("modelyard.images")

IMAGE = "image"  # the type of an image part in a backend message
MAX_EDGE = 2048  # longest edge of the image an engine is sent; larger ones are scaled down
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
MEDIA_TYPES = frozenset(FORMATS.values())
ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
DETAILS = {"auto": "auto", "low": "low", "high": "high", "original": "high"}
ACCEPT = "image/png,image/jpeg,image/webp,image/gif;q=0.9"
KINDS = "PNG, JPEG, WebP or GIF"


@dataclass
class ImageSource:
    """One image part of a request, as its surface found it: exactly one of
    `url` (a data URL or an http(s) URL), `data` (base64, with its
    `media_type`) and `file_id`."""

    param: str  # where the part is in the request ("messages[1].content[0]", "messages.1.content.0")
    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    file_id: str | None = None
    detail: str = "auto"


def image_part(source: ImageSource) -> dict[str, Any]:
    return {"type": IMAGE, "image": source}


def detail_of(value: str | None, param: str) -> str:
    """OpenAI's `detail` as ImageInput's; "original" (of newer models) is the most there is, "high"."""
    if value is None:
        return "auto"
    if value not in DETAILS:
        raise invalid_request(f"{param}: detail must be one of 'auto', 'low' and 'high', not '{value}'.", param=param)
    return DETAILS[value]


def content_of(parts: list[dict[str, Any]], separator: str = "\n") -> str | list[dict[str, Any]]:
    """Text parts ({"type": "text", "text": ...}) and image parts as a
    message's content: the texts joined with `separator` when there is no
    image (what chat templates take), else the parts in order, neighbouring
    texts joined the same way."""
    if not any(p["type"] == IMAGE for p in parts):
        return separator.join(p["text"] for p in parts)
    out: list[dict[str, Any]] = []
    for part in parts:
        last = out[-1] if out else None
        if part["type"] != IMAGE and last is not None and last["type"] != IMAGE:
            last["text"] += separator + part["text"]
        else:
            out.append(dict(part))
    return out


def as_parts(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def joined(first: str | list[dict[str, Any]], second: str | list[dict[str, Any]], separator: str) -> str | list[dict[str, Any]]:
    """Two contents as one (consecutive user turns merged), `separator` between them."""
    if isinstance(first, str) and isinstance(second, str):
        return first + separator + second
    return content_of(as_parts(first) + as_parts(second), separator)


def text_only(content: str | list[dict[str, Any]], role: str) -> str:
    """The content of a message that cannot hold images (a system prompt, an assistant turn): images are a 400."""
    if isinstance(content, str):
        return content
    for part in content:
        if part["type"] == IMAGE:
            source: ImageSource = part["image"]
            raise invalid_request(
                f"{source.param}: images are taken in user messages and tool results, not in {role} messages.",
                param=source.param,
            )
    return "\n".join(p["text"] for p in content)


def sources_in(messages: list[dict[str, Any]]) -> list[tuple[list[dict[str, Any]], int, ImageSource]]:
    """Each image part still to read: its content list, its index there, its source."""
    found = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for number, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == IMAGE and isinstance(part.get("image"), ImageSource):
                    found.append((content, number, part["image"]))
    return found


async def resolve_images(request: Request, entry: ModelEntry, chat: ChatRequest) -> None:
    """Read the request's images into its messages, once the model is known to take them."""
    found = sources_in(chat.messages)
    if not found:
        return
    limits = limits_for(request)
    if len(found) > limits.max_images_per_request:
        where = found[limits.max_images_per_request][2].param
        raise APIError(
            400,
            f"The request has {len(found)} images; this server takes at most {limits.max_images_per_request} "
            "([limits] max_images_per_request).",
            param=where,
            code="limit_exceeded",
        )
    # Whether a model takes images is known once it has loaded (adapters report it in Ready.info).
    await until_disconnected(request, entry.load())
    if not entry.takes_images():
        source = found[0][2]
        raise invalid_request(
            f"The model '{entry.id}' does not take images: {source.param} is an image.",
            param=source.param,
            code="image_input_not_supported",
        )
    server = get_yard(request).generation.loaded.config.server
    for content, number, source in found:
        data, media_type = await image_bytes(request, source, int(limits.max_image_bytes), server.fetch_remote_media,
                                             server.remote_media_timeout)
        image = await asyncio.to_thread(decode, data, source, media_type, limits.max_image_pixels)
        content[number] = {"type": IMAGE, "image": image}
    log.debug("read %d image(s) for %s", len(found), entry.id)


# --- bytes --------------------------------------------------------------------


def media_type_of(given: str | None, param: str) -> str | None:
    """A declared media type as one of MEDIA_TYPES (None: not declared); another type is a 400."""
    if not given:
        return None
    media_type = ALIASES.get(given.lower(), given.lower())
    if media_type not in MEDIA_TYPES:
        raise invalid_request(
            f"{param}: images of type '{given}' are not supported; send image/png, image/jpeg, image/webp or image/gif.",
            param=param,
            code="invalid_image_format",
        )
    return media_type


def too_big(param: str, size: int | None, limit: int) -> APIError:
    have = f" ({size:,} bytes)" if size is not None else ""
    return APIError(
        400, f"{param}: the image{have} is larger than this server's limit of {limit:,} bytes ([limits] max_image_bytes).",
        param=param, code="image_too_large",
    )


def unbase64(data: str, param: str, limit: int) -> bytes:
    packed = "".join(data.split())
    if len(packed) // 4 * 3 > limit + 3:  # checked before decoding: base64 is 4 characters per 3 bytes
        raise too_big(param, len(packed) // 4 * 3, limit)
    raw = decode_base64(packed, param, "image")
    if len(raw) > limit:
        raise too_big(param, len(raw), limit)
    return raw


async def image_bytes(request: Request, source: ImageSource, limit: int, fetch_remote: bool,
                      timeout: float) -> tuple[bytes, str | None]:
    """The image's encoded bytes and the media type it was declared with (None: to be sniffed)."""
    param = source.param
    if source.file_id is not None:
        store = get_yard(request).files
        owner = owner_of(request)
        stored = await store.get(owner, source.file_id) if store is not None else None
        if stored is None:
            raise file_not_found(source.file_id, f"{param}.file_id")
        if stored.bytes > limit:
            raise too_big(param, stored.bytes, limit)
        content = await store.read(owner, source.file_id, None)
        if content is None:
            raise file_not_found(source.file_id, f"{param}.file_id")
        # An upload's type is what the client guessed (often application/octet-stream): only an image type is
        # held to; anything else is sniffed from the bytes.
        given = (stored.content_type or "").lower()
        declared = ALIASES.get(given, given)
        return content, declared if declared in MEDIA_TYPES else None
    if source.data is not None:
        media_type = media_type_of(source.media_type, param)
        return await asyncio.to_thread(unbase64, source.data, param, limit), media_type
    url = source.url or ""
    if url.startswith("data:"):
        match = DATA_URL.match(url)
        if match is None:
            raise invalid_request(f"{param}: not a base64 data URL (data:image/png;base64,...).", param=param,
                                  code="invalid_image_url")
        media_type = media_type_of(match["mime"], param)
        return await asyncio.to_thread(unbase64, match["data"], param, limit), media_type
    own = own_file_id(url, request)
    if own is not None:  # this server's /v1/files/{id}/content (a code interpreter's image, say): read from the store
        return await image_bytes(request, ImageSource(param, file_id=own, detail=source.detail), limit, fetch_remote, timeout)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        raise invalid_request(f"{param}: an image URL is a base64 data URL or an http(s) URL.", param=param,
                              code="invalid_image_url")
    if not fetch_remote:
        raise invalid_request(
            f"{param}: this server does not fetch images from URLs ([server] fetch_remote_media is off); "
            "send the image as a base64 data URL or upload it and send its file id.",
            param=param,
            code="invalid_image_url",
        )
    return await fetch_image(url, param, limit, timeout)


async def fetch_image(url: str, param: str, limit: int, timeout: float, *,
                      client: GuardedClient | None = None) -> tuple[bytes, str | None]:
    """GET an image through the address guard, each redirect checked (GuardedClient.followed)."""
    own = client is None
    client = client or GuardedClient(allow_private=False, timeout=timeout, accept=ACCEPT)

    def failed(why: str) -> APIError:
        return invalid_request(f"{param}: the image could not be fetched: {why}.", param=param, code="invalid_image_url")

    try:
        async with asyncio.timeout(timeout):
            async with client.followed(url) as response:
                if not 200 <= response.status_code < 300:
                    raise failed(f"{response.url} answered HTTP {response.status_code}")
                given = response.headers.get("content-type", "").split(";")[0].strip()
                media_type = media_type_of(given, param) if given.lower() != "application/octet-stream" else None
                length = response.headers.get("content-length", "")
                if length.isdigit() and int(length) > limit:
                    raise too_big(param, int(length), limit)
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise too_big(param, None, limit)  # leaving the block closes the connection
                return bytes(body), media_type
    except TimeoutError:
        raise failed(f"it did not load within {timeout:g}s ([server] remote_media_timeout)") from None
    except FetchError as exc:
        raise failed(exc.reason) from None
    except httpx.HTTPError as exc:
        raise failed(one_line(exc) or type(exc).__name__) from None
    finally:
        if own:
            await client.aclose()


# --- pixels -------------------------------------------------------------------


def too_many_pixels(param: str, size: tuple[int, int] | None, limit: int) -> APIError:
    have = f" is {size[0]}x{size[1]}, which" if size is not None else ""
    return APIError(
        400, f"{param}: the image{have} has more than this server's limit of {limit:,} pixels ([limits] max_image_pixels).",
        param=param, code="image_too_large",
    )


# A strip of an image (1,000,000 x 1) has nothing to see and can trip a
# projector's tiling; Qwen2-VL's processor draws the line at 200 as well.
MAX_ASPECT = 200

# Images decoded at once, over all requests: each may take hundreds of MB
# while it is expanded, and more at once would not finish sooner on a few cores.
DECODING = threading.BoundedSemaphore(2)


def decode(data: bytes, source: ImageSource, declared: str | None, max_pixels: int) -> ImageInput:
    """The image as RGB PNG, at most MAX_EDGE on its longest edge. CPU work: call it on a thread."""
    with DECODING:
        return _decode(data, source, declared, max_pixels)


def _decode(data: bytes, source: ImageSource, declared: str | None, max_pixels: int) -> ImageInput:
    from PIL import Image, UnidentifiedImageError

    param = source.param
    try:
        # Image.open reads the header only: the size is checked before any pixel is decoded.
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
            media_type = FORMATS[str(image.format)]
            if declared is not None and declared != media_type:
                raise invalid_request(
                    f"{param}: the image is {media_type}, not {declared} as its media type says.",
                    param=param, code="invalid_image_format",
                )
            if image.width * image.height > max_pixels:
                raise too_many_pixels(param, image.size, max_pixels)
            if max(image.size) > MAX_ASPECT * min(image.size):
                raise invalid_request(
                    f"{param}: the image is {image.width}x{image.height}; its longer side may be at most {MAX_ASPECT} "
                    "times its shorter one.", param=param, code="invalid_image",
                )
            if image.format == "JPEG":
                image.draft("RGB", (MAX_EDGE, MAX_EDGE))  # a large JPEG decodes at 1/2, 1/4 or 1/8 scale: less work
            image.load()
            if max(image.size) > MAX_EDGE and image.mode in ("RGB", "RGBA", "L", "LA"):
                # Scaled down before flattening: the copies flattening makes are then of the small image.
                image.thumbnail((MAX_EDGE, MAX_EDGE), Image.Resampling.LANCZOS)
            rgb = flattened(image)
    except APIError:
        raise
    except Image.DecompressionBombError:  # Pillow's own cap (twice Image.MAX_IMAGE_PIXELS), met before ours
        raise too_many_pixels(param, None, max_pixels) from None
    except UnidentifiedImageError:
        raise invalid_request(f"{param}: the data is not a {KINDS} image.", param=param, code="invalid_image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt: what Pillow's decoders raise
        raise invalid_request(
            f"{param}: the image could not be decoded; it is truncated or corrupt ({one_line(exc, 200)}).",
            param=param, code="invalid_image",
        ) from None
    if max(rgb.size) > MAX_EDGE:
        rgb.thumbnail((MAX_EDGE, MAX_EDGE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "PNG")
    return ImageInput(out.getvalue(), rgb.width, rgb.height, source.detail)


def flattened(image: Any) -> Any:
    """The first frame as RGB; transparency over white, as a page shows it (plain convert would make it black)."""
    from PIL import Image

    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
