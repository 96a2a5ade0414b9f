"""The `web_search` tool's providers and the one call the tool loop makes.

A provider (`SearchProvider`) turns a query into `SearchSource`s. Three ship:
`LocalSearch` (a folder of Markdown, text and HTML files in an SQLite FTS5
index, offline), `SearxngSearch` (a SearXNG instance's JSON API) and
`BraveSearch` (the Brave Search API). `web_search()` wraps any of them so that
a provider fault (down, slow, junk, no key) is an error outcome the model is
told about, never an exception; it filters by domain, caps the count and, with
`fetch_pages`, replaces the top results' snippets by their pages' text
(router/web_fetch.py, behind its address guard).

Local results are named `local:<path relative to the folder>` (percent-encoded,
"/" between folders), e.g. `local:notes/ray%20tracing.md`: a stable URL string
for the wire formats' citations that does not show where the folder is on disk.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import quote

import httpx
from modelyard.router.agent_tools import SearchOutcome, SearchSource
from modelyard.router.storage import SqliteThread
from modelyard.router.web_fetch import (
    FetchClient,
    FetchError,
    fetch_text,
    html_to_text,
    markdown_title,
    one_line,
)
from modelyard.schemas.config import SearchConfig
from watchfiles import awatch

log = logging.getLogger("modelyard.web_search")

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
TEXT_SUFFIXES = frozenset({".txt", ".text"})
INDEXED_SUFFIXES = MARKDOWN_SUFFIXES | HTML_SUFFIXES | TEXT_SUFFIXES
MAX_INDEXED_BYTES = 4 * 1024 * 1024  # of one file; the rest is not indexed
MAX_QUERY_TERMS = 32
SNIPPET_TOKENS = 48  # FTS5 allows at most 64
BRAVE_API = "https://api.search.brave.com/res/v1"


class ProviderError(Exception):
    """A provider could not answer; the message is one line for the model."""


class SearchProvider(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def search(self, query: str, max_results: int) -> list[SearchSource]: ...


def match_expression(query: str) -> str | None:
    """An FTS5 query matching any of `query`'s words, or None when it has none.

    Each word becomes a quoted string: \\w+ holds no double quote, and inside
    quotes FTS5 reads NEAR, AND, OR, NOT, `*`, `-`, `:` and `^` as plain text,
    so no query a model writes is an FTS5 syntax error. bm25 ranks documents
    that match more (and rarer) words first."""
    terms = list(dict.fromkeys(word.lower() for word in re.findall(r"\w+", query)))[:MAX_QUERY_TERMS]
    return " OR ".join(f'"{term}"' for term in terms) or None


class LocalSearch(SqliteThread):
    """A folder's Markdown, text and HTML files (recursively, hidden ones left
    out) in an in-memory FTS5 index, brought up to date at start-up and after
    every change watchfiles reports: each pass compares every file's mtime and
    size with the index's and re-reads only the files that changed."""

    name = "local"
    thread_name = "local-search"

    def __init__(self, folder: Path, *, debounce_ms: int = 400) -> None:
        super().__init__(Path(":memory:"))  # one connection, one thread: the in-memory database lives as long as it
        self.folder = folder
        self.debounce_ms = debounce_ms
        self._stop = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self.syncs = 0  # index passes done (the start-up one included)

    async def start(self) -> None:
        if not self.folder.is_dir():
            raise ProviderError(f"the search folder {self.folder} is not a folder")
        await self._open_db()
        self._stop.clear()
        self._watcher = asyncio.create_task(self._watch(), name="local-search-watch")
        await asyncio.sleep(0)  # the watcher task now holds its inotify watch: nothing changed after this is missed
        await self._run(self._sync)

    async def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        await super().close()

    async def search(self, query: str, max_results: int) -> list[SearchSource]:
        if self._executor is None:
            raise ProviderError("the local search index is not started")
        expression = match_expression(query)
        if expression is None:
            return []
        rows: list[tuple[str, str, str]] = await self._run(self._query, expression, max_results)
        return [SearchSource(url="local:" + quote(path), title=title, text=text) for path, title, text in rows]

    def _setup(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE files (path TEXT PRIMARY KEY, stamp TEXT NOT NULL, doc INTEGER NOT NULL)")
        db.execute("CREATE VIRTUAL TABLE docs USING fts5(path UNINDEXED, title, body, tokenize = 'porter unicode61 remove_diacritics 2')")

    def _query(self, expression: str, limit: int) -> list[tuple[str, str, str]]:
        rows: list[tuple[str, str, str]] = self._conn().execute(
            f"SELECT path, title, snippet(docs, 2, '', '', ' … ', {SNIPPET_TOKENS}) FROM docs WHERE docs MATCH ? "
            "ORDER BY bm25(docs, 0.0, 4.0, 1.0) LIMIT ?", (expression, limit),
        ).fetchall()
        return rows

    async def _watch(self) -> None:
        try:
            async for _changes in awatch(self.folder, stop_event=self._stop, debounce=self.debounce_ms):
                try:
                    await self._run(self._sync)
                except Exception:
                    log.exception("re-indexing %s failed", self.folder)
        except Exception:
            log.exception("watching %s for changes failed: the search index stays as it is", self.folder)

    def _files(self) -> dict[str, tuple[Path, str]]:
        """relative POSIX path -> (path, "mtime_ns:size") of every file to index."""
        root = self.folder.resolve()
        found: dict[str, tuple[Path, str]] = {}
        for here, folders, names in os.walk(root):
            folders[:] = [f for f in folders if not f.startswith(".")]
            for name in names:
                path = Path(here, name)
                if name.startswith(".") or path.suffix.lower() not in INDEXED_SUFFIXES:
                    continue
                try:
                    if path.is_symlink() and not path.resolve().is_relative_to(root):
                        continue  # a link out of the folder: not the folder's document
                    stat = path.stat()
                except OSError:
                    continue
                found[path.relative_to(root).as_posix()] = (path, f"{stat.st_mtime_ns}:{stat.st_size}")
        return found

    def _sync(self) -> None:
        db = self._conn()
        known = {path: (stamp, doc) for path, stamp, doc in db.execute("SELECT path, stamp, doc FROM files")}
        found = self._files()
        db.execute("BEGIN")
        try:
            for relative in known.keys() - found.keys():
                self._forget(db, relative, known[relative][1])
            for relative, (path, stamp) in found.items():
                if relative in known and known[relative][0] == stamp:
                    continue
                if relative in known:
                    self._forget(db, relative, known[relative][1])
                document = read_document(path)
                if document is not None:
                    cursor = db.execute("INSERT INTO docs (path, title, body) VALUES (?, ?, ?)", (relative, *document))
                    db.execute("INSERT INTO files (path, stamp, doc) VALUES (?, ?, ?)", (relative, stamp, cursor.lastrowid))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.syncs += 1

    @staticmethod
    def _forget(db: sqlite3.Connection, relative: str, doc: int) -> None:
        db.execute("DELETE FROM docs WHERE rowid = ?", (doc,))
        db.execute("DELETE FROM files WHERE path = ?", (relative,))


def read_document(path: Path) -> tuple[str, str] | None:
    """(title, text) of a file to index: title from the first Markdown heading, the HTML <title>, or the file name."""
    try:
        with path.open("rb") as file:
            text = file.read(MAX_INDEXED_BYTES).decode("utf-8", errors="replace")
    except OSError as exc:
        log.warning("cannot read %s for the search index: %s", path, exc)
        return None
    suffix = path.suffix.lower()
    title = ""
    if suffix in HTML_SUFFIXES:
        title, text = html_to_text(text)
    elif suffix in MARKDOWN_SUFFIXES:
        title = markdown_title(text)
    return title or path.name, text


class HttpProvider:
    """A search API asked over HTTP with one pooled client."""

    name = "search provider"
    status_hints: ClassVar[dict[int, str]] = {}  # what an HTTP status likely means, for the model and the operator

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout, headers={"Accept": "application/json"})

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def get_json(self, url: str, params: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        await self.start()
        assert self._http is not None
        try:
            response = await self._http.get(url, params=params, headers=headers)
        except httpx.TimeoutException:
            raise ProviderError(f"{self.name} did not answer within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise ProviderError(f"cannot reach {self.name}: {one_line(exc) or type(exc).__name__}") from None
        if response.status_code != 200:
            hint = self.status_hints.get(response.status_code)
            raise ProviderError(f"{self.name} answered HTTP {response.status_code}" + (f" ({hint})" if hint else ""))
        try:
            answer = response.json()
        except ValueError:
            raise ProviderError(f"{self.name} answered with something that is not JSON") from None
        if not isinstance(answer, dict):
            raise ProviderError(f"{self.name}'s answer is not a JSON object")
        return answer


def plain(text: Any) -> str:
    """A result field as plain text: highlighting tags dropped, entities decoded (non-strings: "")."""
    return html.unescape(re.sub(r"<[^>]{0,200}>", "", text)).strip() if isinstance(text, str) else ""


def sources_of(results: Any, snippet_key: str, provider: str) -> list[SearchSource]:
    if not isinstance(results, list):
        raise ProviderError(f"{provider}'s answer has no list of results")
    sources = []
    for result in results:
        url = result.get("url") if isinstance(result, dict) else None
        if isinstance(url, str) and url.strip():
            sources.append(SearchSource(url=url.strip(), title=plain(result.get("title")) or url.strip(),
                                        text=plain(result.get(snippet_key))))
    return sources


class SearxngSearch(HttpProvider):
    name = "SearXNG"
    status_hints: ClassVar[dict[int, str]] = {403: "is json in its search.formats setting?"}

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(timeout)
        self.url = url.rstrip("/")

    async def search(self, query: str, max_results: int) -> list[SearchSource]:
        answer = await self.get_json(f"{self.url}/search", {"q": query, "format": "json"})
        return sources_of(answer.get("results"), "content", self.name)[:max_results]


class BraveSearch(HttpProvider):
    name = "Brave Search"
    status_hints: ClassVar[dict[int, str]] = {
        401: "the API key was refused", 403: "the API key may not use this endpoint", 422: "the request was refused",
        429: "rate limit or quota reached",
    }

    def __init__(self, api_key_env: str, timeout: float, *, base_url: str = BRAVE_API) -> None:
        super().__init__(timeout)
        self.api_key_env = api_key_env
        self.base_url = base_url.rstrip("/")

    async def search(self, query: str, max_results: int) -> list[SearchSource]:
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ProviderError(f"no Brave Search API key: the environment variable {self.api_key_env} is not set")
        answer = await self.get_json(f"{self.base_url}/web/search", {"q": query, "count": min(max_results, 20)},
                                     {"X-Subscription-Token": key})
        web = answer.get("web")
        if web is None:
            return []  # Brave leaves `web` out when nothing matched
        if not isinstance(web, dict):
            raise ProviderError("Brave Search's answer has no web results object")
        return sources_of(web.get("results"), "description", self.name)[:max_results]


def provider_for(config: SearchConfig, config_dir: Path) -> SearchProvider:
    """The provider `[agent.search]` names (a local folder is relative to the config file's folder)."""
    if config.provider == "local":
        assert config.folder, "the config check requires a folder"
        return LocalSearch(config_dir / Path(config.folder).expanduser())
    if config.provider == "searxng":
        assert config.url, "the config check requires a url"
        return SearxngSearch(config.url, config.timeout)
    if config.provider == "brave":
        return BraveSearch(config.api_key_env, config.timeout)
    raise ValueError("no search provider is configured ([agent.search] provider)")


def normal_domain(domain: str) -> str:
    domain = domain.strip().lower()
    if "//" in domain:
        domain = domain.split("//", 1)[1]
    return domain.split("/", 1)[0].split(":", 1)[0].removeprefix("*.").strip(".")


def host_allowed(url: str, domains: Sequence[str]) -> bool:
    """Whether `url`'s host is one of `domains` or a subdomain of one."""
    try:
        parsed = httpx.URL(url)
        hosts = {parsed.host.lower().rstrip("."), parsed.raw_host.decode("ascii").lower().rstrip(".")} - {""}
    except (httpx.InvalidURL, UnicodeDecodeError, TypeError):
        return False
    return any(host == d or host.endswith("." + d) for host in hosts for d in domains)


async def web_search(provider: SearchProvider, config: SearchConfig, query: str, *,
                     allowed_domains: Sequence[str] = (), blocked_domains: Sequence[str] = ()) -> SearchOutcome:
    """Run one search; a provider fault becomes `SearchOutcome(error=...)`, never an exception. With
    `allowed_domains` only results from those (and their subdomains) are kept; `blocked_domains` are dropped."""
    started = time.monotonic()
    domains = [d for d in (normal_domain(d) for d in allowed_domains) if d]
    blocked = [d for d in (normal_domain(d) for d in blocked_domains) if d]
    try:
        async with asyncio.timeout(config.timeout):
            # Ask for more when filtering, so that the filter leaves some.
            wanted = min(20, config.max_results * 3) if domains or blocked else config.max_results
            found = await provider.search(query, wanted)
        if not isinstance(found, list) or not all(isinstance(s, SearchSource) for s in found):
            raise ProviderError(f"{provider.name} returned something other than a list of results")
    except TimeoutError:
        return SearchOutcome(query=query, error=f"{provider.name} did not answer within {config.timeout:g}s",
                             duration=time.monotonic() - started)
    except ProviderError as exc:
        return SearchOutcome(query=query, error=one_line(exc), duration=time.monotonic() - started)
    except Exception as exc:
        log.warning("search provider %s failed", provider.name, exc_info=True)
        return SearchOutcome(query=query, error=f"{provider.name} failed: {one_line(exc) or type(exc).__name__}",
                             duration=time.monotonic() - started)
    sources, seen = [], set()
    for source in found:
        if source.url in seen or (domains and not host_allowed(source.url, domains)) or host_allowed(source.url, blocked):
            continue
        seen.add(source.url)
        sources.append(SearchSource(url=source.url, title=source.title, text=source.text[: config.max_page_chars]))
        if len(sources) == config.max_results:
            break
    if config.fetch_pages > 0:
        sources = await with_pages(sources, config, domains, blocked=blocked)
    return SearchOutcome(query=query, sources=tuple(sources), duration=time.monotonic() - started)


async def with_pages(sources: list[SearchSource], config: SearchConfig, domains: list[str],
                     client: FetchClient | None = None, blocked: Sequence[str] = ()) -> list[SearchSource]:
    """`sources` with the first `fetch_pages` web results' text replaced by their page's; a failed fetch keeps
    the snippet, and so does a page that redirected out of `domains` or into `blocked`."""
    web = [n for n, s in enumerate(sources) if s.url.lower().startswith(("http://", "https://"))][: config.fetch_pages]
    if not web:
        return sources
    http = client or FetchClient(config)
    try:
        pages = await asyncio.gather(*(fetch_text(sources[n].url, config, client=http) for n in web), return_exceptions=True)
    finally:
        if client is None:
            await http.aclose()
    fetched = list(sources)
    for n, page in zip(web, pages):
        if isinstance(page, FetchError):
            log.info("fetching %s for web_search: %s", sources[n].url, page.reason)
        elif isinstance(page, BaseException):
            log.warning("fetching %s for web_search failed", sources[n].url, exc_info=page)
        elif page.text and not (domains and not host_allowed(page.final_url, domains)) and not host_allowed(page.final_url, blocked):
            fetched[n] = SearchSource(url=sources[n].url, title=sources[n].title or page.title, text=page.text)
    return fetched
