"""Fetch a web page as text for the `web_search` tool, without letting a URL
reach into the server's own network (server-side request forgery).

The guard sits where connections are made: `FetchClient` is an httpx client
whose connection pool has a network backend (`GuardedBackend`) that resolves
the host itself, refuses unless every address it resolves to is public, and
then connects to one of exactly those addresses. The check and
the connect use the same answer, so a name that resolves to a public address
for the check and a private one a moment later (DNS rebinding) never gets a
second lookup. TLS still verifies the certificate against the host name in
the URL (httpcore passes it as the server name), and connections are pooled
per host name, never per address. Redirects are followed by hand, at most
`MAX_REDIRECTS`, each hop going through the same guard; env proxies and
.netrc are ignored (`trust_env=False`): a proxy would resolve names out of
the guard's sight.

Tests swap the resolver and the inner network backend (`FetchClient`'s
`resolver` and `network_backend`) so that a made-up public address can lead to
a local test server, and a redirect from it to a private address can be shown
to be refused for real.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from modelyard.schemas.config import SearchConfig

MAX_REDIRECTS = 5
TEXT_TYPES = frozenset({"text/html", "text/plain", "text/markdown", "application/xhtml+xml"})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "modelyard-web-search/0.1 (+https://github.com/modelyard)"

# (host, port) -> the addresses it resolves to, as strings.
Resolver = Callable[[str, int], Awaitable[list[str]]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges refused by name as well as by ipaddress's flags, whose lists have
# changed between Python patch releases (3.11.10 fixed several).
NON_PUBLIC = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "::/96", "100::/64", "2001::/23", "2001:db8::/32", "2002::/16", "fc00::/7",
    "fe80::/10", "fec0::/10", "ff00::/8",
))
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # an IPv4 address behind a NAT64 gateway: judge that address


class FetchError(Exception):
    """A page could not be had; `reason` is one line for the model."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FetchRefused(FetchError):
    """The fetch is not allowed: scheme, address or content type."""


class FetchFailed(FetchError):
    """The fetch was allowed but did not work: resolution, connection, HTTP status, time, redirects."""


@dataclass(frozen=True)
class FetchedPage:
    url: str
    final_url: str  # after redirects
    title: str
    text: str
    truncated: bool  # the body passed fetch_max_bytes, or the text max_page_chars


def address_refusal(address: Address) -> str | None:
    """Why the guard will not connect to `address` ("a loopback address"), or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_refusal(embedded)
    for flag, words in (
        ("is_unspecified", "an unspecified address"), ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"), ("is_multicast", "a multicast address"),
        ("is_private", "a private address"), ("is_reserved", "a reserved address"),
    ):
        if getattr(address, flag):
            return words
    if any(address in network for network in NON_PUBLIC if network.version == address.version):
        return "a non-public address"
    return None if address.is_global else "a non-public address"


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, looked up off the event loop (the loop's resolver thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the address guard: every TCP connection
    is made to an address this backend resolved and checked itself."""

    def __init__(self, *, allow_private: bool, resolver: Resolver | None = None,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.allow_private = allow_private
        self.resolver = resolver or system_resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def checked_addresses(self, host: str, port: int) -> list[str]:
        try:
            literal = ipaddress.ip_address(host)
            answers = [str(literal)]
        except ValueError:
            try:
                answers = await self.resolver(host, port)
            except OSError as exc:
                raise FetchFailed(f"cannot resolve {host}: {exc.strerror or exc}") from None
        if not answers:
            raise FetchFailed(f"cannot resolve {host}: no addresses")
        if self.allow_private:
            return answers
        for answer in answers:  # one bad answer refuses the host: the connection could go to any of them
            try:
                why = address_refusal(ipaddress.ip_address(answer))
            except ValueError:
                why = "not an IP address"
            if why is not None:
                shown = host if host == answer else f"{host} ({answer})"
                raise FetchRefused(f"{shown} is {why}; fetching it is not allowed")
        return answers

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        addresses = await self.checked_addresses(host, port)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise FetchRefused("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool with the guarded backend. httpx
    takes no network backend, so the pool it made (private `_pool`, hence
    httpx < 1 in pyproject.toml) is replaced; tests/test_web_search.py checks
    that the guarded backend is the one connections go through."""

    def __init__(self, backend: GuardedBackend) -> None:
        super().__init__(trust_env=False)
        assert isinstance(self._pool, httpcore.AsyncConnectionPool)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), max_connections=20, max_keepalive_connections=5,
            keepalive_expiry=5.0, network_backend=backend,
        )


class GuardedClient(httpx.AsyncClient):
    """An httpx client whose every connection goes through the address guard,
    with redirects left to the caller (each hop through `checked_url`); the
    web_search tool's `FetchClient` and the image inputs' fetches
    (router/image_inputs.py) are both one. Requests are uncompressed: a size
    cap then bounds what is decoded, not just what is sent."""

    def __init__(self, *, allow_private: bool, timeout: float, accept: str, resolver: Resolver | None = None,
                 network_backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        backend = GuardedBackend(allow_private=allow_private, resolver=resolver, inner=network_backend)
        super().__init__(
            transport=GuardedTransport(backend), trust_env=False, follow_redirects=False, timeout=timeout,
            headers={"User-Agent": USER_AGENT, "Accept": accept, "Accept-Encoding": "identity"},
        )

    @asynccontextmanager
    async def followed(self, url: str) -> AsyncIterator[httpx.Response]:
        """A streamed GET of `url` past its redirects, each hop's URL checked:
        the first answer that is not a redirect (FetchFailed past MAX_REDIRECTS)."""
        current = checked_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            async with self.stream("GET", current) as response:
                if response.status_code in REDIRECTS and "location" in response.headers:
                    current = checked_url(response.headers["location"], base=current)
                    continue
                yield response
                return
        raise FetchFailed(f"{url} redirected more than {MAX_REDIRECTS} times")


class FetchClient(GuardedClient):
    """The web_search tool's guarded client; share one across fetches to
    reuse connections, and close it. Tests pass their own `resolver` and inner `network_backend`."""

    def __init__(self, config: SearchConfig, *, resolver: Resolver | None = None,
                 network_backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        super().__init__(
            allow_private=config.allow_private_addresses, timeout=config.timeout,
            accept="text/html,application/xhtml+xml,text/markdown,text/plain;q=0.9",
            resolver=resolver, network_backend=network_backend,
        )


async def fetch_text(url: str, config: SearchConfig, *, client: FetchClient | None = None) -> FetchedPage:
    """The page at `url` as text (HTML reduced to its main content, as Markdown), its title and final URL.

    Raises FetchRefused (not allowed) or FetchFailed (did not work), each with a one-line reason."""
    if client is not None and not isinstance(client, FetchClient):
        raise TypeError("fetch_text needs a FetchClient: it carries the address guard")
    own = client is None
    client = client or FetchClient(config)
    try:
        async with asyncio.timeout(config.timeout):
            final_url, content_type, charset, body, truncated = await _get(client, url, config.fetch_max_bytes)
    except TimeoutError:
        raise FetchFailed(f"the page did not load within {config.timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise FetchFailed(f"cannot fetch {url}: {one_line(exc) or type(exc).__name__}") from None
    finally:
        if own:
            await client.aclose()
    text = body.decode(charset or "utf-8", errors="replace")
    if content_type in HTML_TYPES:
        title, text = await asyncio.to_thread(html_to_text, text)
    else:
        title = markdown_title(text) if content_type == "text/markdown" else ""
    text = text.strip()
    if len(text) > config.max_page_chars:
        text, truncated = text[: config.max_page_chars], True
    return FetchedPage(url=url, final_url=final_url, title=title, text=text, truncated=truncated)


async def _get(client: FetchClient, url: str, max_bytes: int) -> tuple[str, str, str | None, bytes, bool]:
    """(final URL, content type, charset, body, truncated) of a GET, following redirects by hand."""
    async with client.followed(url) as response:
        current = response.url
        if not 200 <= response.status_code < 300:
            raise FetchFailed(f"{current} answered HTTP {response.status_code}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in TEXT_TYPES:
            raise FetchRefused(f"{current} is {content_type or 'of no content type'}, not a text or HTML page")
        body, truncated = bytearray(), False
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                del body[max_bytes:]
                truncated = True
                break  # leaving the block closes the connection: the rest is never read
        return str(current), content_type, _codec(response.charset_encoding), bytes(body), truncated


def checked_url(url: str, base: httpx.URL | None = None) -> httpx.URL:
    """`url` (relative to `base`, a redirect's) parsed, if it is http(s) with a host; else FetchRefused."""
    try:
        parsed = base.join(url) if base is not None else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchRefused(f"not a valid URL: {one_line(exc)}") from None
    if parsed.scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https URLs are fetched, not {parsed.scheme or 'this'}: {url[:200]}")
    if not parsed.host:
        raise FetchRefused(f"the URL has no host: {url[:200]}")
    return parsed


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return None  # an unknown charset: read as UTF-8


def html_to_text(html: str) -> tuple[str, str]:
    """(title, main text as Markdown) of an HTML document, with trafilatura; CPU work: call it off the loop."""
    import trafilatura
    from lxml import html as lxml_html
    from lxml.etree import ParserError

    title = ""
    try:  # as UTF-8 bytes with the encoding stated: lxml refuses a str with an XML encoding declaration
        tree = lxml_html.document_fromstring(html.encode("utf-8", "replace"), parser=lxml_html.HTMLParser(encoding="utf-8"))
        for tag in ("title", "h1"):
            element = tree.find(f".//{tag}")
            title = " ".join(element.text_content().split()) if element is not None else ""
            if title:
                break
    except (ParserError, ValueError):
        pass  # empty or not HTML at all
    text = trafilatura.extract(html, output_format="markdown", include_comments=False, include_tables=True)
    if not text:
        text = trafilatura.html2txt(html)  # too little for the main-content heuristics: all the visible text
    return title, text or ""


MARKDOWN_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def markdown_title(text: str) -> str:
    """A Markdown document's first heading, or ""."""
    match = MARKDOWN_HEADING.search(text)
    return match.group(1).strip() if match else ""


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """An exception's message on one line, at most `limit` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
