"""The web_search tool's back end (router/web_search.py, router/web_fetch.py):
the local FTS5 index over a real folder and its watcher, SearXNG and Brave
against a fake HTTP server on 127.0.0.1, and page fetches through the address
guard. The guard's refusals run with a network backend that fails the test if
it is ever asked to connect, so a broken guard sends nothing anywhere; the
redirect cases use a made-up public address that this test's backend leads
to the local server."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpcore
import httpx
import pytest
from modelyard.router import web_search as web_search_module
from modelyard.router.agent_tools import SearchSource
from modelyard.router.web_fetch import (
    FetchClient,
    FetchFailed,
    FetchRefused,
    address_refusal,
    fetch_text,
)
from modelyard.router.web_search import (
    BraveSearch,
    LocalSearch,
    ProviderError,
    SearxngSearch,
    provider_for,
    read_document,
    web_search,
    with_pages,
)
from modelyard.schemas.config import SearchConfig

from tests.conftest import free_port

PUBLIC_IP = "93.184.216.34"  # stands for a public web server; PublicToLocal leads it to 127.0.0.1
HUGE = 50 * 1024 * 1024
ARTICLE = "".join(
    f"<p>Paragraph {n} explains the light transport equation and how a path tracer estimates it by sampling "
    "random directions at each bounce of the ray.</p>" for n in range(12)
)
PAGE = (
    "<html><head><title>Path tracing explained</title></head><body><header><ul>"
    + "".join(f"<li><a href='/s{n}'>Section {n}</a></li>" for n in range(30))
    + f"</ul></header><article><h1>Path tracing</h1>{ARTICLE}</article><footer>Copyright Example</footer></body></html>"
)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


# --- a fake web: SearXNG, Brave and pages ------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeWeb

    def log_message(self, *args: Any) -> None:
        pass

    def send(self, status: int, body: bytes | str, content_type: str = "application/json", **headers: str) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        args = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.seen.append((url.path, args, dict(self.headers)))
        path = url.path
        if path.endswith("-hang/search") or path == "/hang":
            self.server.release.wait(30)
            return self.send(200, "{}")
        if path == "/searx/search":
            results = [{"url": f"https://example.org/{n}", "title": f"Result {n} for {args.get('q')}", "content": f"snippet {n}"}
                       for n in range(8)]
            return self.send(200, json.dumps({"query": args.get("q"), "results": [{"title": "no url"}, *results]}))
        if path == "/searx-500/search":
            return self.send(500, "oops", "text/plain")
        if path == "/searx-junk/search":
            return self.send(200, "<html>not json{")
        if path == "/searx-list/search":
            return self.send(200, "[1, 2]")
        if path == "/searx-noresults/search":
            return self.send(200, json.dumps({"results": "none"}))
        if path == "/brave/res/v1/web/search":
            if self.headers.get("X-Subscription-Token") != "brave-key":
                return self.send(401, json.dumps({"type": "ErrorResponse"}))
            if args.get("q") == "nothing":
                return self.send(200, json.dumps({"type": "search", "query": {"original": "nothing"}}))
            results = [{"title": "<strong>Ray</strong> tracing", "url": "https://example.org/ray",
                        "description": "All about <strong>rays</strong> &amp; paths", "type": "search_result"},
                       {"title": "Second", "url": "https://example.net/two", "description": "more"}]
            return self.send(200, json.dumps({"type": "search", "web": {"type": "search", "results": results}}))
        if path == "/page.html":
            return self.send(200, PAGE, "text/html; charset=utf-8")
        if path == "/notes.md":
            return self.send(200, "# Ray notes\n\nRays bounce.\n", "text/markdown")
        if path == "/latin1.txt":
            return self.send(200, "café au lait".encode("latin-1"), "text/plain; charset=iso-8859-1")
        if path == "/long.txt":
            return self.send(200, "word " * 5000, "text/plain")
        if path == "/image.png":
            return self.send(200, b"\x89PNG\r\n\x1a\n", "image/png")
        if path == "/missing":
            return self.send(404, "no", "text/plain")
        if path == "/redirect":
            return self.send(302, "", "text/plain", Location=args["to"])
        if path == "/loop":
            return self.send(302, "", "text/plain", Location="/loop")
        if path == "/huge.txt":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(HUGE))
            self.end_headers()
            try:
                for _ in range(HUGE // 65536):
                    self.wfile.write(b"x" * 65536)
                self.server.huge_outcome = "sent all"
            except OSError:
                self.server.huge_outcome = "client closed"
            return None
        return self.send(404, "{}")


class FakeWeb(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.release = threading.Event()
        self.huge_outcome: str | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.seen]


@pytest.fixture(scope="module")
def web() -> Iterator[FakeWeb]:
    server = FakeWeb()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


# --- the address guard ----------------------------------------------------------------------


class NoConnect(httpcore.AsyncNetworkBackend):
    """Fails the test if the guard lets a connection through."""

    async def connect_tcp(self, host: str, port: int, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise AssertionError(f"the guard let a connection to {host}:{port} through")


class PublicToLocal(httpcore.AsyncNetworkBackend):
    """Connects PUBLIC_IP to the fake web on 127.0.0.1 and nothing else, recording what it was asked for."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.asked: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        self.asked.append((host, port))
        assert host == PUBLIC_IP, f"the guard let a connection to {host}:{port} through"
        return await self.inner.connect_tcp("127.0.0.1", port, **kwargs)


def names(table: dict[str, list[str]], calls: list[str] | None = None) -> Callable[[str, int], Awaitable[list[str]]]:
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise OSError(-2, "Name or service not known")
        return table[host]
    return resolve


TEST_NAMES = {"public.test": [PUBLIC_IP], "internal.test": ["10.1.2.3"], "mixed.test": [PUBLIC_IP, "10.0.0.1"]}


@pytest.fixture(scope="module")
def guarded() -> None:
    """The guarded backend is what FetchClient's connections go through (it replaces a private part of httpx),
    checked with a name only the test resolver knows, before any test hands a private address to a fetch."""
    async def go() -> None:
        async with FetchClient(SearchConfig(), resolver=names(TEST_NAMES), network_backend=NoConnect()) as client:
            with pytest.raises(AssertionError, match=f"the guard let a connection to {PUBLIC_IP}:80 through"):
                await fetch_text("http://public.test/", SearchConfig(), client=client)
    run(go())


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "0.1.2.3", "255.255.255.255", "224.0.0.1", "240.0.0.1", "198.18.0.1", "192.0.0.8", "192.0.2.1",
    "::1", "::", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "fe80::1", "fc00::1", "fd12::1",
    "ff02::1", "2002:7f00:1::", "2001:db8::1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "fec0::1",
])
def test_guard_refuses_non_public_addresses(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", [PUBLIC_IP, "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_guard_lets_public_addresses_through(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://localhost:8080/admin", "localhost (127.0.0.1) is a loopback address"),
    ("http://10.0.0.1/", "a private address"),
    ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "a loopback address"),
    ("http://100.64.1.1/", "a non-public address"),
    ("http://0.0.0.0/", "an unspecified address"),
    ("http://2130706433/", "2130706433 (127.0.0.1) is a loopback address"),  # 127.0.0.1 as one number
    ("https://internal.test/", "internal.test (10.1.2.3) is a private address"),
    ("https://mixed.test/", "mixed.test (10.0.0.1) is a private address"),
])
def test_fetch_refuses_private_hosts(guarded: None, url: str, says: str) -> None:
    async def system_or_test(host: str, port: int) -> list[str]:
        if host in TEST_NAMES:
            return TEST_NAMES[host]
        from modelyard.router.web_fetch import system_resolver
        return await system_resolver(host, port)

    async def go() -> None:
        async with FetchClient(SearchConfig(), resolver=system_or_test, network_backend=NoConnect()) as client:
            with pytest.raises(FetchRefused) as refused:
                await fetch_text(url, SearchConfig(), client=client)
        assert says in refused.value.reason and "not allowed" in refused.value.reason
    run(go())


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "gopher://example.org/", "not a url", "http://"])
def test_fetch_refuses_other_schemes(guarded: None, url: str) -> None:
    with pytest.raises(FetchRefused):
        run(fetch_text(url, SearchConfig()))


def test_fetch_connects_to_the_address_it_checked(guarded: None, web: FakeWeb) -> None:
    """One lookup per connection, and the connection is made to the answer that was checked: a resolver
    that would answer 127.0.0.1 the second time (DNS rebinding) is never asked again."""
    calls: list[str] = []
    answers = iter([[PUBLIC_IP], ["127.0.0.1"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    async def go() -> None:
        backend = PublicToLocal()
        async with FetchClient(SearchConfig(), resolver=rebinding, network_backend=backend) as client:
            page = await fetch_text(web.url("/notes.md", "public.test"), SearchConfig(), client=client)
        assert page.title == "Ray notes" and "Rays bounce." in page.text
        assert calls == ["public.test"] and backend.asked == [(PUBLIC_IP, web.port)]
        assert web.seen[-1][2]["Host"] == f"public.test:{web.port}"  # the name, not the address, is what the server sees
    run(go())


def test_redirects_are_checked_at_every_hop(guarded: None, web: FakeWeb) -> None:
    config = SearchConfig()

    async def fetch(url: str) -> Any:
        async with FetchClient(config, resolver=names(TEST_NAMES), network_backend=PublicToLocal()) as client:
            return await fetch_text(url, config, client=client)

    public = web.url("/page.html", "public.test")
    page = run(fetch(web.url(f"/redirect?to={public}", "public.test")))
    assert page.final_url == public and page.title == "Path tracing explained"

    for target, says in [(web.url("/secret"), "127.0.0.1 is a loopback address"),
                         (web.url("/secret", "internal.test"), "internal.test (10.1.2.3) is a private address"),
                         ("file:///etc/passwd", "only http and https")]:
        with pytest.raises(FetchRefused) as refused:
            run(fetch(web.url(f"/redirect?to={target}", "public.test")))
        assert says in refused.value.reason
    assert "/secret" not in web.paths()

    with pytest.raises(FetchFailed, match="Invalid URL in location header"):
        run(fetch(web.url("/redirect?to=http://a:bad/", "public.test")))
    with pytest.raises(FetchFailed, match="redirected more than 5 times"):
        run(fetch(web.url("/loop", "public.test")))


# --- what a fetch reads ----------------------------------------------------------------------

LOCAL = SearchConfig(allow_private_addresses=True, timeout=5)


def test_html_is_reduced_to_its_main_text_with_the_title(web: FakeWeb) -> None:
    page = run(fetch_text(web.url("/page.html"), LOCAL))
    assert page.title == "Path tracing explained" and not page.truncated
    assert "Paragraph 11 explains the light transport equation" in page.text
    assert "<p>" not in page.text and "Section 3" not in page.text  # the navigation is left out


def test_text_pages_and_their_charset(web: FakeWeb) -> None:
    assert run(fetch_text(web.url("/latin1.txt"), LOCAL)).text == "café au lait"
    markdown = run(fetch_text(web.url("/notes.md"), LOCAL))
    assert markdown.title == "Ray notes" and markdown.text.startswith("# Ray notes")


def test_non_text_pages_are_refused_and_errors_fail(web: FakeWeb) -> None:
    with pytest.raises(FetchRefused, match="image/png, not a text or HTML page"):
        run(fetch_text(web.url("/image.png"), LOCAL))
    with pytest.raises(FetchFailed, match="HTTP 404"):
        run(fetch_text(web.url("/missing"), LOCAL))
    with pytest.raises(FetchFailed, match="cannot fetch"):
        run(fetch_text(f"http://127.0.0.1:{free_port()}/", LOCAL))
    with pytest.raises(TypeError, match="needs a FetchClient"):
        run(fetch_text(web.url("/notes.md"), LOCAL, client=httpx.AsyncClient()))


def test_a_page_is_cut_at_fetch_max_bytes_and_the_rest_is_not_read(web: FakeWeb) -> None:
    config = SearchConfig(allow_private_addresses=True, fetch_max_bytes=1024, max_page_chars=100_000)
    page = run(fetch_text(web.url("/huge.txt"), config))
    assert page.truncated and page.text == "x" * 1024
    deadline = time.monotonic() + 30
    while web.huge_outcome is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert web.huge_outcome == "client closed"


def test_text_is_cut_at_max_page_chars(web: FakeWeb) -> None:
    page = run(fetch_text(web.url("/long.txt"), SearchConfig(allow_private_addresses=True, max_page_chars=100)))
    assert page.truncated and len(page.text) == 100


def test_a_page_that_hangs_times_out(web: FakeWeb) -> None:
    with pytest.raises(FetchFailed, match=r"did not load within 0.5s"):
        run(fetch_text(web.url("/hang"), SearchConfig(allow_private_addresses=True, timeout=0.5)))


# --- SearXNG and Brave ----------------------------------------------------------------------


def searched(provider: Any, config: SearchConfig, query: str, **kwargs: Any) -> Any:
    async def go() -> Any:
        await provider.start()
        try:
            return await web_search(provider, config, query, **kwargs)
        finally:
            await provider.close()
    return run(go())


def test_searxng_results_are_mapped_and_capped(web: FakeWeb) -> None:
    outcome = searched(SearxngSearch(web.url("/searx/"), 5), SearchConfig(max_results=3), "ray tracing")
    assert outcome.error is None
    assert [s.url for s in outcome.sources] == ["https://example.org/0", "https://example.org/1", "https://example.org/2"]
    assert outcome.sources[0] == SearchSource("https://example.org/0", "Result 0 for ray tracing", "snippet 0")
    path, args, _ = web.seen[-1]
    assert path == "/searx/search" and args == {"q": "ray tracing", "format": "json"}


@pytest.mark.parametrize("base, says", [
    ("/searx-hang", "SearXNG did not answer within 0.5s"),
    ("/searx-500", "SearXNG answered HTTP 500"),
    ("/searx-junk", "SearXNG answered with something that is not JSON"),
    ("/searx-list", "SearXNG's answer is not a JSON object"),
    ("/searx-noresults", "SearXNG's answer has no list of results"),
])
def test_searxng_faults_are_error_outcomes(web: FakeWeb, base: str, says: str) -> None:
    outcome = searched(SearxngSearch(web.url(base), 0.5), SearchConfig(timeout=0.5), "q")
    assert outcome.failed and outcome.error == says and outcome.sources == ()
    assert outcome.for_model(1000) == f"The search failed: {says}"


def test_a_provider_that_is_down_is_an_error_outcome() -> None:
    outcome = searched(SearxngSearch(f"http://127.0.0.1:{free_port()}", 2), SearchConfig(), "q")
    assert outcome.error is not None and outcome.error.startswith("cannot reach SearXNG")


def test_brave_reads_its_key_at_call_time(web: FakeWeb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_BRAVE_KEY", raising=False)
    brave = BraveSearch("TEST_BRAVE_KEY", 5, base_url=web.url("/brave/res/v1"))
    missing = searched(brave, SearchConfig(), "ray")
    assert missing.error == "no Brave Search API key: the environment variable TEST_BRAVE_KEY is not set"

    monkeypatch.setenv("TEST_BRAVE_KEY", "wrong")
    assert searched(brave, SearchConfig(), "ray").error == "Brave Search answered HTTP 401 (the API key was refused)"

    monkeypatch.setenv("TEST_BRAVE_KEY", "brave-key")
    outcome = searched(brave, SearchConfig(max_results=4), "ray")
    assert outcome.sources == (SearchSource("https://example.org/ray", "Ray tracing", "All about rays & paths"),
                               SearchSource("https://example.net/two", "Second", "more"))
    _, args, headers = web.seen[-1]
    assert args == {"q": "ray", "count": "4"} and headers["X-Subscription-Token"] == "brave-key"
    assert searched(brave, SearchConfig(), "nothing").sources == ()


# --- web_search() around any provider -------------------------------------------------------


class Canned:
    name = "canned"

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def search(self, query: str, max_results: int) -> Any:
        if isinstance(self.answer, BaseException):
            raise self.answer
        if self.answer == "hang":
            await asyncio.Event().wait()
        return self.answer


SOURCES = [SearchSource(f"https://{host}/{n}", f"title {n}", f"snippet {n}")
           for n, host in enumerate(["example.org", "docs.example.org", "example.org.evil.net", "other.net", "example.org"])]


def test_domains_filter_and_duplicates_are_dropped() -> None:
    outcome = run(web_search(Canned(SOURCES), SearchConfig(), "q", allowed_domains=["https://Example.org/", "*.nothing"]))
    assert [s.url for s in outcome.sources] == ["https://example.org/0", "https://docs.example.org/1", "https://example.org/4"]
    blocked = run(web_search(Canned(SOURCES), SearchConfig(), "q", blocked_domains=["example.org"]))
    assert [s.url for s in blocked.sources] == ["https://example.org.evil.net/2", "https://other.net/3"]
    doubled = run(web_search(Canned(SOURCES + SOURCES), SearchConfig(max_results=20), "q"))
    assert len(doubled.sources) == 5


@pytest.mark.parametrize("answer, says", [
    (RuntimeError("boom\nwith a traceback"), "canned failed: boom with a traceback"),
    (ProviderError("the index is gone"), "the index is gone"),
    ("hang", "canned did not answer within 0.5s"),
    ({"not": "a list"}, "canned returned something other than a list of results"),
    ([{"url": "x"}], "canned returned something other than a list of results"),
])
def test_provider_faults_never_raise(answer: Any, says: str) -> None:
    outcome = run(web_search(Canned(answer), SearchConfig(timeout=0.5), "q"))
    assert outcome.error == says


def test_fetched_pages_replace_snippets_and_a_failed_fetch_keeps_its_snippet(guarded: None, web: FakeWeb) -> None:
    sources = [SearchSource(web.url("/page.html"), "Path", "short snippet"),
               SearchSource(web.url("/image.png"), "Image", "image snippet"),
               SearchSource("local:notes.md", "Local", "local snippet"),
               SearchSource(web.url("/notes.md"), "Third", "not fetched: past fetch_pages")]
    config = SearchConfig(allow_private_addresses=True, fetch_pages=2, max_page_chars=300)
    outcome = run(web_search(Canned(sources), config, "q"))
    page, image, local, third = outcome.sources
    assert page.title == "Path" and page.text.startswith("# Path tracing") and len(page.text) == 300
    assert (image.text, local.text, third.text) == ("image snippet", "local snippet", "not fetched: past fetch_pages")

    async def guarded() -> list[SearchSource]:
        async with FetchClient(SearchConfig(), network_backend=NoConnect()) as client:
            return await with_pages(sources, SearchConfig(fetch_pages=2), [], client=client)
    assert run(guarded()) == sources  # without allow_private_addresses: refused, snippets kept


# --- the local index ----------------------------------------------------------------------


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    write(docs / "notes" / "ray.md", "intro line\n\n# Ray tracing\n\nRay tracing follows light paths through a scene; "
          "a bounding volume hierarchy speeds up intersection tests.\n")
    write(docs / "cooking.txt", "Bread needs flour, water, salt and yeast. Knead it and let it rise; the ray of sun helps.")
    write(docs / "garden guide.html", "<html><head><title>Gardening guide</title></head><body><h1>Tomatoes</h1>"
          "<p>Tomatoes need sun, water and a stake to climb.</p></body></html>")
    write(docs / ".hidden.md", "# Secret\n\nray tracing secret")
    write(docs / ".git" / "notes.md", "# Git\n\nray tracing in git")
    write(docs / "script.py", "# ray tracing in python")
    return docs


async def open_index(folder: Path) -> LocalSearch:
    index = LocalSearch(folder, debounce_ms=100)
    await index.start()
    return index


def test_local_search_ranks_titles_and_names(folder: Path) -> None:
    async def go() -> None:
        index = await open_index(folder)
        try:
            ray = await index.search("how does ray tracing work", 5)
            assert [s.url for s in ray] == ["local:notes/ray.md", "local:cooking.txt"]  # hidden, .git and .py left out
            assert ray[0].title == "Ray tracing" and "bounding volume hierarchy" in ray[0].text
            garden = await index.search("tomatoes", 5)
            assert [(s.url, s.title) for s in garden] == [("local:garden%20guide.html", "Gardening guide")]
            assert "<p>" not in garden[0].text and "stake to climb" in garden[0].text
            assert [s.title for s in await index.search("yeast", 5)] == ["cooking.txt"]
            assert await index.search("zeppelin", 5) == []
        finally:
            await index.close()
    run(go())


@pytest.mark.parametrize("query", [
    '"', '"unbalanced', "*", "ray*", "NEAR(", "NEAR(ray tracing", "-ray", "title:ray", ":", "^ray", "AND", "OR NOT",
    "(", ")", "'", "{title body}: ray", "", "   ", "🙂", 'ray"tracing', "ray AND (tracing OR", "x" * 5000,
])
def test_fts5_syntax_in_a_query_never_raises(folder: Path, query: str) -> None:
    async def go() -> list[SearchSource]:
        index = await open_index(folder)
        try:
            return await index.search(query, 5)
        finally:
            await index.close()
    found = run(go())
    if "ray" in query.lower():
        assert found and found[0].url == "local:notes/ray.md"


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the index never showed {what}")


def test_the_index_follows_the_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []

    def reading(path: Path) -> tuple[str, str] | None:
        read.append(path.name)
        return read_document(path)
    monkeypatch.setattr(web_search_module, "read_document", reading)

    async def urls(index: LocalSearch, query: str) -> list[str]:
        return [s.url for s in await index.search(query, 5)]

    async def go() -> None:
        index = await open_index(folder)
        try:
            assert sorted(read) == ["cooking.txt", "garden guide.html", "ray.md"]
            read.clear()
            write(folder / "new" / "zeppelin.md", "# Zeppelins\n\nA zeppelin is a rigid airship.")
            await eventually(lambda: has(index, "zeppelin", "local:new/zeppelin.md"), "the added file")
            assert (await index.search("airship", 5))[0].title == "Zeppelins"

            syncs = index.syncs
            write(folder / "cooking.txt", "Pasta needs semolina and eggs.")
            await eventually(lambda: has(index, "semolina", "local:cooking.txt"), "the changed file")
            assert await urls(index, "yeast") == [] and index.syncs > syncs
            assert set(read) == {"zeppelin.md", "cooking.txt"}  # the files that did not change are not read again

            (folder / "notes" / "ray.md").unlink()
            await eventually(lambda: gone(index, "tracing"), "the deleted file gone")
        finally:
            await index.close()

    async def has(index: LocalSearch, query: str, url: str) -> bool:
        return url in await urls(index, query)

    async def gone(index: LocalSearch, query: str) -> bool:
        return await urls(index, query) == []
    run(go())


def test_local_search_faults(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="is not a folder"):
        run(LocalSearch(tmp_path / "nowhere").start())
    outcome = run(web_search(LocalSearch(tmp_path), SearchConfig(), "q"))
    assert outcome.error == "the local search index is not started"


def test_provider_for_each_config(tmp_path: Path) -> None:
    local = provider_for(SearchConfig(provider="local", folder="docs"), tmp_path)
    assert isinstance(local, LocalSearch) and local.folder == tmp_path / "docs"
    searx = provider_for(SearchConfig(provider="searxng", url="http://127.0.0.1:8888/", timeout=3), tmp_path)
    assert isinstance(searx, SearxngSearch) and searx.url == "http://127.0.0.1:8888" and searx.timeout == 3
    brave = provider_for(SearchConfig(provider="brave", api_key_env="MY_KEY"), tmp_path)
    assert isinstance(brave, BraveSearch) and brave.api_key_env == "MY_KEY"
    with pytest.raises(ValueError, match="no search provider"):
        provider_for(SearchConfig(), tmp_path)
