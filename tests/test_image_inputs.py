"""Image inputs on the three text APIs (chat `image_url`, Responses
`input_image`, Messages `image` blocks, also in a `tool_result`), through a
real server whose models are the scripted backend: one that takes images
and echoes what it was sent (so the decoded image parts can be checked, in
order with the text), one that does not (the 400 naming the model and the
part, after the model was loaded on demand), and an upstream model that
passes images on to another server. Bad images (truncated, a 30000x30000
decompression bomb, wrong media types, too large, too many) are refused
with 400 through the official SDKs; remote URLs are refused while
`[server] fetch_remote_media` is off, and a loopback URL while it is on."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import io
import json
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpcore
import openai
import pytest
from modelyard.router.errors import APIError
from modelyard.router.image_inputs import fetch_image
from modelyard.router.web_fetch import GuardedClient
from PIL import Image

from tests.conftest import local_http, scripted_model_toml
from tests.ui_browser import browser_unavailable

if TYPE_CHECKING:
    import anthropic

CONFIG = (
    "[limits]\nmax_images_per_request = 3\nmax_image_bytes = \"600KiB\"\n\n"
    + scripted_model_toml("eye", options="images = true\necho = true\n")
    + scripted_model_toml("blind", load="lazy", options="echo = true\n")
)
FETCHING = "[server]\nfetch_remote_media = true\n\n" + scripted_model_toml("eye", options="images = true\necho = true\n")


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG)


@pytest.fixture(scope="module")
def fetching(server_factory: Any) -> Any:
    return server_factory(FETCHING)


def picture(width: int, height: int, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    color: Any = (200, 30, 30, 0) if mode == "RGBA" else (200, 30, 30)
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, fmt)
    return buffer.getvalue()


def noise(width: int, height: int) -> bytes:
    """A PNG of random-looking pixels: it hardly compresses."""
    image = Image.frombytes("RGB", (width, height), hashlib.shake_256(b"noise").digest(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb() -> bytes:
    """A PNG whose header claims 30000x30000 pixels (900 million, 2.7 GB as RGB) in a few dozen bytes."""
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", row) + png_chunk(b"IEND", b"")


def echoed(text: str | None) -> dict[str, Any]:
    assert text is not None
    seen: dict[str, Any] = json.loads(text)
    return seen


def image_seen(width: int, height: int, detail: str = "auto") -> dict[str, Any]:
    return {"type": "image", "width": width, "height": height, "detail": detail, "mode": "RGB"}


def without_hash(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in part.items() if k != "png_sha256"} for part in content]


def chat_error(client: openai.OpenAI, model: str, content: list[dict[str, Any]]) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])  # type: ignore[misc,list-item]
    return caught.value


def image_url_part(url: str, detail: str | None = None) -> dict[str, Any]:
    image: dict[str, Any] = {"url": url}
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


# --- chat completions --------------------------------------------------------------


def test_chat_image_parts_reach_the_model_in_order_with_the_text(client: openai.OpenAI) -> None:
    small, wide = picture(10, 8), picture(40, 20, "JPEG")
    completion = client.chat.completions.create(
        model="eye",
        messages=[
            {"role": "system", "content": "You look at pictures."},
            {"role": "user", "content": [
                {"type": "text", "text": "first"},
                image_url_part(data_url(small), "low"),
                {"type": "text", "text": "between"},
                image_url_part(data_url(wide, "image/jpeg"), "high"),
                {"type": "text", "text": "last"},
            ]},
        ],
    )
    message = echoed(completion.choices[0].message.content)["messages"][1]
    assert message["role"] == "user"
    assert without_hash(message["content"]) == [
        {"type": "text", "text": "first"},
        image_seen(10, 8, "low"),
        {"type": "text", "text": "between"},
        image_seen(40, 20, "high"),
        {"type": "text", "text": "last"},
    ]
    # The PNG the model gets is the router's re-encoding: the same pixels as the image sent.
    expected = io.BytesIO()
    Image.open(io.BytesIO(small)).convert("RGB").save(expected, "PNG")
    assert message["content"][1]["png_sha256"] == hashlib.sha256(expected.getvalue()).hexdigest()


def test_chat_webp_gif_and_transparency_become_rgb(client: openai.OpenAI) -> None:
    content = [
        image_url_part(data_url(picture(6, 5, "WEBP"), "image/webp")),
        image_url_part(data_url(picture(7, 3, "GIF", "P"), "image/gif")),
        image_url_part(data_url(picture(4, 4, "PNG", "RGBA"))),
    ]
    completion = client.chat.completions.create(model="eye", messages=[{"role": "user", "content": content}])  # type: ignore[misc,list-item]
    parts = without_hash(echoed(completion.choices[0].message.content)["messages"][0]["content"])
    assert parts == [image_seen(6, 5), image_seen(7, 3), image_seen(4, 4)]


def test_chat_large_image_is_scaled_to_2048_on_its_longest_edge(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="eye", messages=[{"role": "user", "content": [image_url_part(data_url(picture(3000, 1500)))]}],  # type: ignore[misc,list-item]
    )
    parts = echoed(completion.choices[0].message.content)["messages"][0]["content"]
    assert without_hash(parts) == [image_seen(2048, 1024)]


def test_chat_text_only_content_stays_a_string(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="eye", messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
    )
    assert echoed(completion.choices[0].message.content)["messages"][0]["content"] == "a\nb"


def test_chat_model_without_images_names_the_model_and_the_part(client: openai.OpenAI, server: Any) -> None:
    assert server.health()["models"]["blind"]["status"] == "unloaded"  # loaded on demand to learn what it takes
    error = chat_error(client, "blind", [{"type": "text", "text": "look"}, image_url_part(data_url(picture(2, 2)))])
    assert error.body["message"] == "The model 'blind' does not take images: messages[0].content[1] is an image."  # type: ignore[index]
    assert error.body["param"] == "messages[0].content[1]"  # type: ignore[index]
    assert server.health()["models"]["blind"]["status"] == "loaded"


@pytest.mark.parametrize(
    ("data", "media_type", "words"),
    [
        (noise(64, 64)[:6000], "image/png", "truncated or corrupt"),
        (bomb(), "image/png", "max_image_pixels"),
        (picture(5, 5), "image/jpeg", "the image is image/png, not image/jpeg"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", "images of type 'image/svg+xml' are not supported"),
        (b"plain text, not an image", "image/png", "not a PNG, JPEG, WebP or GIF image"),
        (picture(60, 60, "BMP"), "image/png", "not a PNG, JPEG, WebP or GIF image"),
        (picture(4020, 20), "image/png", "the image is 4020x20; its longer side may be at most 200 times its shorter one"),
    ],
    ids=["truncated", "bomb", "mismatched-type", "svg", "not-an-image", "bmp", "strip"],
)
def test_chat_bad_images_are_400s_naming_the_part(client: openai.OpenAI, data: bytes, media_type: str, words: str) -> None:
    error = chat_error(client, "eye", [{"type": "text", "text": "x"}, image_url_part(data_url(data, media_type))])
    assert words in error.message and error.body["param"] == "messages[0].content[1]"  # type: ignore[index]


def test_chat_bad_data_urls_and_details(client: openai.OpenAI) -> None:
    error = chat_error(client, "eye", [image_url_part("data:image/png;base64,@@@@")])
    assert "not valid base64" in error.message
    error = chat_error(client, "eye", [image_url_part("data:image/png,rawbytes")])
    assert "not a base64 data URL" in error.message
    error = chat_error(client, "eye", [image_url_part("ftp://example.com/cat.png")])
    assert "base64 data URL or an http(s) URL" in error.message
    error = chat_error(client, "eye", [image_url_part(data_url(picture(2, 2)), "ultra")])
    assert error.body["param"] == "messages[0].content[0].image_url.detail"  # type: ignore[index]


def test_chat_limits_on_bytes_and_count(client: openai.OpenAI) -> None:
    big = noise(512, 512)
    assert len(big) > 600 * 1024
    error = chat_error(client, "eye", [image_url_part(data_url(big))])
    assert "max_image_bytes" in error.message and error.code == "image_too_large"
    error = chat_error(client, "eye", [image_url_part(data_url(picture(2, 2)))] * 4)
    assert "at most 3" in error.message and error.body["param"] == "messages[0].content[3]"  # type: ignore[index]


def test_remote_urls_are_refused_while_fetching_is_off(client: openai.OpenAI, server: Any) -> None:
    error = chat_error(client, "eye", [image_url_part("https://example.com/cat.png")])
    assert "fetch_remote_media is off" in error.message and error.code == "invalid_image_url"
    # This server's own file URL is no remote URL: it is read from the store.
    file_id = client.files.create(file=("own.png", picture(7, 7)), purpose="vision").id
    own = f"{server.base_url}/v1/files/{file_id}/content"
    completion = client.chat.completions.create(model="eye", messages=[{"role": "user", "content": [image_url_part(own)]}])  # type: ignore[misc,list-item]
    assert without_hash(echoed(completion.choices[0].message.content)["messages"][0]["content"]) == [image_seen(7, 7)]


PUBLIC_IP = "93.184.216.34"  # stands for a public web server; PublicToLocal leads it to the local image host
CAT = picture(3, 3)


class ImageHost(http.server.ThreadingHTTPServer):
    """Images and not-images over HTTP on 127.0.0.1."""

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server_address[1]}{path}"


class ImageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("location", self.path.split("=", 1)[1])
            self.end_headers()
            return
        if self.path == "/loop":
            self.send_response(302)
            self.send_header("location", "/loop")
            self.end_headers()
            return
        kinds = {"/cat.png": ("image/png", CAT), "/cat.bin": ("application/octet-stream", CAT),
                 "/page.html": ("text/html", b"<p>no image</p>")}
        if self.path == "/endless.png":  # no content-length, more bytes than any cap: the reader must stop
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.end_headers()
            try:
                for _ in range(4096):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass  # the client hung up, as it should
            return
        if self.path not in kinds:
            self.send_response(404)
            self.end_headers()
            return
        kind, body = kinds[self.path]
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageHost]:
    httpd = ImageHost(("127.0.0.1", 0), ImageHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


class PublicToLocal(httpcore.AsyncNetworkBackend):
    """Connects PUBLIC_IP to 127.0.0.1 and fails the test for any other address the guard lets through."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        assert host == PUBLIC_IP, f"the guard let a connection to {host}:{port} through"
        return await self.inner.connect_tcp("127.0.0.1", port, **kwargs)


async def public_names(host: str, port: int) -> list[str]:
    table = {"images.test": [PUBLIC_IP], "internal.test": ["10.1.2.3"]}
    if host not in table:
        raise OSError(-2, "Name or service not known")
    return table[host]


def fetched(url: str, limit: int = 1 << 20) -> tuple[bytes, str | None]:
    """fetch_image through the real guard, with a resolver that knows images.test as a public address."""

    async def go() -> tuple[bytes, str | None]:
        client = GuardedClient(allow_private=False, timeout=5, accept="image/*", resolver=public_names,
                               network_backend=PublicToLocal())
        async with client:
            return await fetch_image(url, "messages[0].content[0]", limit, 5, client=client)

    return asyncio.run(go())


def test_remote_fetch_follows_redirects_through_the_guard(image_host: ImageHost) -> None:
    assert fetched(image_host.url("/cat.png", "images.test")) == (CAT, "image/png")
    assert fetched(image_host.url("/redirect?to=/cat.bin", "images.test")) == (CAT, None)  # octet-stream: sniffed
    refusals = [
        (image_host.url("/redirect?to=" + image_host.url("/cat.png"), "images.test"), "127.0.0.1 is a loopback address"),
        (image_host.url("/cat.png", "internal.test"), "internal.test (10.1.2.3) is a private address"),
        (image_host.url("/loop", "images.test"), "redirected more than 5 times"),
        (image_host.url("/page.html", "images.test"), "images of type 'text/html' are not supported"),
        (image_host.url("/missing.png", "images.test"), "answered HTTP 404"),
        (image_host.url("/endless.png", "images.test"), "max_image_bytes"),
    ]
    for url, says in refusals:
        with pytest.raises(APIError) as refused:
            fetched(url)
        assert refused.value.status == 400 and says in refused.value.message, (url, refused.value.message)
        assert refused.value.param == "messages[0].content[0]"


def test_fetching_on_still_refuses_loopback_addresses(fetching: Any, image_host: ImageHost) -> None:
    assert local_http.get(image_host.url("/cat.png")).status_code == 200  # the image is there to be had
    with openai.OpenAI(base_url=f"{fetching.base_url}/v1", api_key="x", max_retries=0) as client:
        error = chat_error(client, "eye", [image_url_part(image_host.url("/cat.png"))])
        assert "could not be fetched" in error.message and "loopback address" in error.message
        error = chat_error(client, "eye", [image_url_part("http://localhost:1/cat.png")])
        assert "loopback address" in error.message


# --- Responses ---------------------------------------------------------------------


def test_responses_input_image_by_data_url_and_file_id(client: openai.OpenAI) -> None:
    file_id = client.files.create(file=("cat.png", picture(12, 9)), purpose="vision").id
    response = client.responses.create(
        model="eye",
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "compare"},
            {"type": "input_image", "image_url": data_url(picture(5, 4)), "detail": "auto"},
            {"type": "input_image", "file_id": file_id, "detail": "low"},
        ]}],
    )
    message = echoed(response.output_text)["messages"][0]
    assert without_hash(message["content"]) == [
        {"type": "text", "text": "compare"}, image_seen(5, 4), image_seen(12, 9, "low"),
    ]
    # The next turn's history (previous_response_id) still holds the image, before the new text.
    follow = client.responses.create(model="eye", previous_response_id=response.id, input="and now?")
    later = echoed(follow.output_text)["messages"]
    assert without_hash(later[0]["content"])[1] == image_seen(5, 4)
    assert later[-1] == {"role": "user", "content": "and now?"}


def test_responses_image_in_a_function_call_output(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="eye",
        input=[
            {"role": "user", "content": "take a screenshot"},
            {"type": "function_call", "call_id": "c1", "name": "shot", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": [
                {"type": "input_text", "text": "here"}, {"type": "input_image", "image_url": data_url(picture(3, 2))},
            ]},
        ],
    )
    tool = echoed(response.output_text)["messages"][-1]
    assert tool["role"] == "tool" and without_hash(tool["content"]) == [{"type": "text", "text": "here"}, image_seen(3, 2)]


def test_responses_errors(client: openai.OpenAI) -> None:
    image = {"type": "input_image", "image_url": data_url(picture(2, 2)), "detail": "auto"}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="blind", input=[{"role": "user", "content": [{"type": "input_text", "text": "x"}, image]}])  # type: ignore[list-item]
    assert caught.value.body["message"] == "The model 'blind' does not take images: input[0].content[1] is an image."  # type: ignore[index]
    assert caught.value.body["param"] == "input[0].content[1]"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="eye", input=[{"role": "user", "content": [{"type": "input_image", "detail": "auto"}]}])  # type: ignore[list-item,typeddict-item]
    assert "needs one of image_url and file_id" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        truncated = {"type": "input_image", "image_url": data_url(noise(64, 64)[:6000]), "detail": "auto"}
        client.responses.create(model="eye", input=[{"role": "user", "content": [truncated]}])  # type: ignore[list-item]
    assert "truncated or corrupt" in caught.value.message and caught.value.body["param"] == "input[0].content[0]"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="eye", input=[{"role": "user", "content": [{"type": "input_image", "file_id": "file-nope", "detail": "auto"}]}])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="eye", instructions="x", input=[
            {"role": "developer", "content": [image]}, {"role": "user", "content": "hi"},  # type: ignore[list-item]
        ])
    assert "images are taken in user messages" in caught.value.message


# --- Messages ----------------------------------------------------------------------


def test_messages_base64_file_and_tool_result_images(claude: anthropic.Anthropic) -> None:
    file_id = claude.beta.files.upload(file=("dog.png", picture(9, 9), "image/png")).id
    message = claude.messages.create(
        model="eye",
        max_tokens=50,
        messages=[
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(picture(8, 6)).decode()}},
                {"type": "text", "text": "what is this?"},
                {"type": "image", "source": {"type": "file", "file_id": file_id}},
            ]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "the screen"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": base64.b64encode(picture(4, 3, "JPEG")).decode()}},
            ]}]},
        ],
    )
    assert message.content[0].type == "text"
    seen = echoed(message.content[0].text)["messages"]
    assert without_hash(seen[0]["content"]) == [image_seen(8, 6), {"type": "text", "text": "what is this?"}, image_seen(9, 9)]
    assert seen[2]["role"] == "tool" and without_hash(seen[2]["content"]) == [{"type": "text", "text": "the screen"}, image_seen(4, 3)]


def test_messages_errors_in_anthropic_shape(claude: anthropic.Anthropic, server: Any) -> None:
    import anthropic

    def refused(model: str, block: dict[str, Any]) -> anthropic.BadRequestError:
        with pytest.raises(anthropic.BadRequestError) as caught:
            claude.messages.create(model=model, max_tokens=5, messages=[{"role": "user", "content": [{"type": "text", "text": "x"}, block]}])  # type: ignore[list-item,misc]
        assert caught.value.body["type"] == "error"  # type: ignore[index]
        return caught.value

    png = base64.b64encode(picture(2, 2)).decode()
    error = refused("blind", {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}})
    assert error.body["error"]["message"] == "The model 'blind' does not take images: messages.0.content.1 is an image."  # type: ignore[index]
    error = refused("eye", {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(bomb()).decode()}})
    assert "messages.0.content.1" in error.message and "max_image_pixels" in error.message
    error = refused("eye", {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": png}})
    assert "the image is image/png, not image/gif" in error.message
    error = refused("eye", {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}})
    assert "fetch_remote_media is off" in error.message


# --- upstreams and /v1/models ------------------------------------------------------


def test_upstream_models_pass_images_on_as_data_urls(server: Any, server_factory: Any) -> None:
    relay = server_factory(
        '[[models]]\nid = "relay"\nmodality = "chat"\nbackend = "openai"\n[models.options]\n'
        f'upstreams = ["{server.base_url}/v1"]\nmodel = "eye"\n'
    )
    with openai.OpenAI(base_url=f"{relay.base_url}/v1", api_key="x", max_retries=0) as client:
        completion = client.chat.completions.create(
            model="relay",
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, image_url_part(data_url(picture(30, 10, "JPEG"), "image/jpeg"), "low")]}],
        )
        # The upstream (the "eye" server) read the relay's PNG data URL: the same size, the detail kept.
        parts = echoed(completion.choices[0].message.content)["messages"][0]["content"]
        assert without_hash(parts) == [{"type": "text", "text": "hi"}, image_seen(30, 10, "low")]
        assert "vision" in client.models.retrieve("relay").model_extra["capabilities"]  # type: ignore[index]


def test_models_list_says_which_models_take_images(client: openai.OpenAI) -> None:
    cards = {card.id: card.model_extra for card in client.models.list()}
    assert cards["eye"]["capabilities"] == ["chat", "vision"]  # type: ignore[index]
    assert cards["blind"]["capabilities"] == ["chat"]  # type: ignore[index]


# --- the web UI --------------------------------------------------------------------


@pytest.mark.skipif(browser_unavailable() is not None, reason=str(browser_unavailable()))
def test_ui_attaches_images_for_models_that_take_them(server: Any) -> None:
    from tests.ui_browser import launched_browser, ui_page

    requests: list[dict[str, Any]] = []
    with launched_browser() as browser, ui_page(browser, server.base_url) as page:
        page.on("request", lambda r: requests.append(json.loads(r.post_data)) if r.url.endswith("/v1/chat/completions") else None)
        page.select_option("#chat-model", "blind")
        assert page.locator("#chat-attach").is_hidden()  # /v1/models says nothing of vision for it
        page.select_option("#chat-model", "eye")
        assert page.locator("#chat-attach").is_visible()
        page.set_input_files("#chat-image", files=[{"name": "red.png", "mimeType": "image/png", "buffer": picture(10, 8)}])
        page.wait_for_selector("#chat-attachments img")
        page.fill("#chat-input", "what is this?")
        page.click("#chat-send")
        page.wait_for_selector(".msg-assistant.pending", state="detached")
        assert page.locator(".msg-user .msg-images img").count() == 1 and page.locator("#chat-attachments img").count() == 0
        sent = requests[-1]["messages"][-1]
        assert sent["content"][0] == {"type": "text", "text": "what is this?"}
        assert sent["content"][1]["type"] == "image_url" and sent["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
        reply = page.locator(".msg-assistant .msg-body").last.inner_text()
        assert '"width": 10' in reply and '"height": 8' in reply, reply
        assert page.outside.blocked == [] and page.console_errors == []


def test_a_stored_file_that_is_not_an_image_and_a_streamed_request(client: openai.OpenAI) -> None:
    notes = client.files.create(file=("notes.txt", b"not a picture"), purpose="user_data").id
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="eye", input=[{"role": "user", "content": [{"type": "input_image", "file_id": notes, "detail": "auto"}]}])  # type: ignore[list-item]
    assert "not a PNG, JPEG, WebP or GIF image" in caught.value.message
    # A streamed request is refused before its stream starts: a plain 400, not an error event.
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="eye", stream=True, messages=[{"role": "user", "content": [image_url_part(data_url(bomb()))]}])  # type: ignore[list-item,misc]
    assert "max_image_pixels" in caught.value.message
    stream = client.chat.completions.create(model="eye", stream=True, messages=[{"role": "user", "content": [image_url_part(data_url(picture(2, 3)))]}])  # type: ignore[list-item,misc]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert without_hash(echoed(text)["messages"][0]["content"]) == [image_seen(2, 3)]


def test_previous_turns_images_count_toward_the_limit(client: openai.OpenAI) -> None:
    two = [{"type": "input_image", "image_url": data_url(picture(2, 2)), "detail": "auto"}] * 2
    first = client.responses.create(model="eye", input=[{"role": "user", "content": two}])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="eye", previous_response_id=first.id, input=[{"role": "user", "content": two}])  # type: ignore[list-item]
    assert "The request has 4 images" in caught.value.message and caught.value.body["param"] == "input[0].content[1]"  # type: ignore[index]


def test_messages_count_tokens_reads_the_images(claude: anthropic.Anthropic) -> None:
    import anthropic

    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(picture(2, 2)).decode()}}
    counted = claude.messages.count_tokens(model="eye", messages=[{"role": "user", "content": [{"type": "text", "text": "two words"}, image]}])  # type: ignore[list-item,misc]
    assert counted.input_tokens >= 2
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.count_tokens(model="blind", messages=[{"role": "user", "content": [image]}])  # type: ignore[list-item,misc]
    assert "does not take images: messages.0.content.0 is an image" in caught.value.message
