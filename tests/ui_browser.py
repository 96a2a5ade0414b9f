"""A real headless Chromium (Debian's `chromium` package) driven by Playwright
for Python, for the web UI tests and screenshots.

Playwright's own browser downloads are never used: the browser is the system
one (`/usr/bin/chromium`, or $MODELYARD_CHROMIUM). Each launch gets a fresh,
temporary user-data-dir (Playwright makes one per launch and removes it at
close), and each test a fresh browser context (its own localStorage).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = os.environ.get("MODELYARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}


def browser_unavailable() -> str | None:
    """Why the UI tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


# Chromium's fake microphone (a beeping test signal), for the transcribe tab's
# recording; a page still needs the "microphone" permission to open it.
FAKE_MICROPHONE_ARGS = ["--use-fake-device-for-media-stream"]


@contextmanager
def launched_browser(extra_args: list[str] | None = None) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        args = CHROMIUM_ARGS + (extra_args or [])
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class OutsideRequests:
    """Every request the page makes that does not go to `origin` is aborted
    and remembered: the UI must work with no network beyond the server."""

    def __init__(self, origin: str) -> None:
        self.origin = origin.rstrip("/")
        self.blocked: list[str] = []

    def install(self, context: Any) -> None:
        def route(route: Any) -> None:
            url = route.request.url
            if url == self.origin or url.startswith(self.origin + "/"):
                route.continue_()
            else:
                self.blocked.append(url)
                route.abort()

        context.route("**/*", route)


@contextmanager
def ui_page(
    browser: Any,
    base_url: str,
    *,
    storage: dict[str, str] | None = None,
    permissions: list[str] | None = None,
    path: str = "/ui/",
) -> Iterator[Any]:
    """A page in a fresh context, opened at `path` and ready (the model list
    fetched). `storage` is put in localStorage before the page's scripts run;
    `permissions` are granted to the context (none: every prompt is denied).
    The page carries `.console_errors` and `.outside` (blocked requests)."""
    context = browser.new_context(
        viewport=VIEWPORT, base_url=base_url, accept_downloads=True, permissions=permissions or []
    )
    outside = OutsideRequests(base_url)
    outside.install(context)
    if storage:
        import json

        context.add_init_script(
            "if (!sessionStorage.getItem('__seeded')) {"
            f" const items = {json.dumps(storage)};"
            " for (const [k, v] of Object.entries(items)) localStorage.setItem(k, v);"
            " sessionStorage.setItem('__seeded', '1'); }"
        )
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.console_errors = errors
    page.outside = outside
    try:
        open_ui(page, path)
        yield page
    finally:
        context.close()


def open_ui(page: Any, path: str = "/ui/") -> None:
    page.goto(path)
    page.wait_for_selector("body[data-ready='true']")
