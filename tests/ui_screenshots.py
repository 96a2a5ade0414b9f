"""Screenshots of the web UI's four tabs, for the docs.

    .venv/bin/python -m tests.ui_screenshots            # writes docs/ui-{chat,embeddings,images,speech}.png
    .venv/bin/python -m tests.ui_screenshots --out /tmp/shots --base-url http://127.0.0.1:1234

Without --base-url it starts its own server with the models of
tests/test_ui.py (two SmolLM2 chat models, MiniLM, the Piper voice, the tiny
random Stable Diffusion pipeline) and stops it afterwards. The browser is
Debian's Chromium, as in the tests. The chat screenshot shows a conversation
put into the page's history (so the Markdown in it is always the same),
followed by a real reply streamed from SmolLM2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.conftest import REPO, ServerProcess
from tests.ui_browser import browser_unavailable, launched_browser, ui_page

HISTORY_ANSWER = """Use `open()` in a `with` block, so the file is closed for you:

```python
from pathlib import Path

def count_lines(path: str) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for _ in handle)

print(count_lines("notes.txt"))
```

A few ways to read it:

- `handle.read()`: the whole file as one string
- `handle.readlines()`: a list of lines
- `Path(path).read_text()`: the same as `read()`, in one call

| Method | Memory | Good for |
| --- | --- | --- |
| iterate the handle | one line at a time | large files |
| `read()` | the whole file | small files |
"""

HISTORY = {
    "current": "docs",
    "chats": [
        {
            "id": "docs",
            "title": "How do I read a file in Python?",
            "created": 0,
            "messages": [
                {"role": "user", "content": "How do I read a file in Python?"},
                {
                    "role": "assistant",
                    "model": "smollm2",
                    "reasoning": "They want the idiomatic way: a `with` block, then the options.",
                    "content": HISTORY_ANSWER,
                    "seconds": 2.1,
                    "usage": {"prompt_tokens": 31, "completion_tokens": 142, "total_tokens": 173},
                },
            ],
        },
        {"id": "older", "title": "Capital of France", "created": 0, "messages": []},
    ],
}
SETTINGS = {
    "system": "You are a helpful assistant. Answer briefly.",
    "temperature": 0.3,
    "top_p": 0.95,
    "max_tokens": 96,
}


def take(browser: Any, base_url: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    storage = {"modelyard.chats.v1": json.dumps(HISTORY), "modelyard.chatSettings.v1": json.dumps(SETTINGS)}
    written = []
    with ui_page(browser, base_url, storage=storage) as page:
        page.emulate_media(color_scheme="light")
        page.fill("#chat-input", "Thanks! What is a context manager, in one sentence?")
        page.click("#chat-send")
        page.wait_for_selector(".msg-assistant.pending", state="detached", timeout=120_000)
        # Tall enough for the whole conversation, reasoning block included.
        page.set_viewport_size({"width": 1280, "height": 1180})
        page.locator("details.reasoning:not([hidden]) summary").first.click()
        page.locator("#chat-log").evaluate("(log) => { log.scrollTop = 0; }")
        written.append(shot(page, out / "ui-chat.png"))
        page.set_viewport_size({"width": 1280, "height": 800})

        page.click("#tab-embeddings")
        page.click("#emb-run")
        page.wait_for_selector("#emb-table")
        written.append(shot(page, out / "ui-embeddings.png"))

        page.click("#tab-images")
        if page.locator("#img-model option").count():
            page.fill("#img-prompt", "a lighthouse at dusk, oil painting")
            page.select_option("#img-size", "128x128")
            page.fill("#img-n", "3")
            page.fill("#img-seed", "42")
            page.click("#img-run")
            page.wait_for_selector("#img-result img >> nth=2", timeout=120_000)
            page.wait_for_function("[...document.querySelectorAll('#img-result img')].every((i) => i.complete)")
        written.append(shot(page, out / "ui-images.png"))

        page.click("#tab-speech")
        if page.locator("#tts-model option").count():
            page.wait_for_selector("body[data-voices-loaded='true']")
            page.click("#tts-run")
            page.wait_for_selector("#tts-audio")
            page.wait_for_function("document.getElementById('tts-audio').readyState >= 1")
        written.append(shot(page, out / "ui-speech.png"))
        assert page.outside.blocked == [], page.outside.blocked
    return written


def shot(page: Any, path: Path) -> Path:
    page.mouse.move(0, 0)  # no hover effects
    page.screenshot(path=str(path))
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--base-url", help="an already running server (default: start one)")
    args = parser.parse_args(argv)
    reason = browser_unavailable()
    if reason:
        print(f"cannot take screenshots: {reason}", file=sys.stderr)
        return 1
    server = None
    base_url = args.base_url
    if base_url is None:
        from tests.test_ui import config_text

        config = Path(tempfile.mkdtemp(prefix="modelyard-ui-")) / "config.toml"
        config.write_text(config_text())
        server = ServerProcess(["-c", str(config)], {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}).start()
        server.wait_for(
            lambda h: all(m["status"] in ("loaded", "failed") for m in h["models"].values()),
            timeout=300,
            what="every model to load",
        )
        base_url = server.base_url
    try:
        with launched_browser() as browser:
            for path in take(browser, base_url.rstrip("/"), args.out):
                print(path)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
