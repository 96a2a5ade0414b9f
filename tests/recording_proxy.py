"""A logging reverse proxy for recording what a real client sends.

Put it between a client (Claude Code, Codex, an SDK) and an upstream server:
every request is recorded (method, path, headers, JSON body) and forwarded
to the upstream; the answer streams back unchanged, its status and raw bytes
kept too. Each request is an `Exchange` in `proxy.exchanges`; `records()`
gives them as plain dicts (the query split off, credentials left out), and
with `out_dir` each is also written to a numbered JSON file when it ends.

As a library (tests)::

    with RecordingProxy("http://127.0.0.1:8000") as proxy:
        run_client(base_url=proxy.base_url)
    recorded = proxy.records()

As a script::

    python -m tests.recording_proxy --upstream http://127.0.0.1:PORT --out DIR [--port 8899]
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import httpx

# Hop-by-hop headers (and the length, which a streamed answer cannot know).
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "accept-encoding"}
# Header values a recording must not keep.
SECRET_HEADERS = {"authorization", "x-api-key", "cookie", "proxy-authorization", "openai-api-key"}


@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0
    answer: bytes = b""
    done: threading.Event = field(default_factory=threading.Event)

    def sanitized(self) -> dict[str, Any]:
        """The request as sent, credentials redacted (tests/data/codex)."""
        headers = {k: ("REDACTED" if k in SECRET_HEADERS else v) for k, v in self.headers.items()}
        return {"method": self.method, "path": self.path, "headers": headers, "body": self.body, "status": self.status}

    def record(self) -> dict[str, Any]:
        """The request with its query split off and credentials left out (tests/data/claude-code)."""
        split = urlsplit(self.path)
        headers = {k: v for k, v in self.headers.items() if k not in SECRET_HEADERS}
        return {
            "method": self.method,
            "path": split.path,
            "query": dict(parse_qsl(split.query, keep_blank_values=True)),
            "headers": headers,
            "body": self.body,
            "status": self.status,
        }


class RecordingProxy:
    """A proxy on 127.0.0.1:`port` (0: a free one) in front of `upstream`."""

    def __init__(
        self,
        upstream: str,
        out_dir: str | Path | None = None,
        port: int = 0,
        rewrite: Callable[[Any], Any] | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.out = Path(out_dir) if out_dir is not None else None
        # Changes a JSON body before it is forwarded (the recording keeps what the client sent).
        self.rewrite = rewrite
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=httpx.Timeout(connect=10, read=None, write=60, pool=10))
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _forward(self) -> None:
                proxy.forward(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._client.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def requests_to(self, path: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.path.split("?")[0].endswith(path)]

    def records(self) -> list[dict[str, Any]]:
        """What was recorded so far, in order, as `Exchange.record` gives it."""
        with self._lock:
            return [exchange.record() for exchange in self.exchanges]

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in handler.headers.items()}
        exchange = Exchange(handler.command, handler.path, headers, body)
        with self._lock:
            self.exchanges.append(exchange)
            number = len(self.exchanges)
        upstream_headers = {k: v for k, v in headers.items() if k not in HOP_HEADERS}
        if self.rewrite is not None and isinstance(body, dict):
            raw = json.dumps(self.rewrite(json.loads(raw))).encode()
        try:
            request = self._client.build_request(handler.command, self.upstream + handler.path, headers=upstream_headers, content=raw)
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            exchange.status = 502
            handler.send_response(502)
            handler.send_header("content-length", "0")
            handler.end_headers()
            exchange.answer = str(exc).encode()
            exchange.done.set()
            return
        exchange.status = response.status_code
        try:
            handler.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() not in HOP_HEADERS and name.lower() != "content-encoding":
                    handler.send_header(name, value)
            handler.send_header("transfer-encoding", "chunked")
            handler.end_headers()
            for chunk in response.iter_raw():
                exchange.answer += chunk
                handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                handler.wfile.flush()
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; the upstream stream is closed below
        finally:
            response.close()
            exchange.done.set()
            if self.out is not None:
                self.out.mkdir(parents=True, exist_ok=True)
                record = {**exchange.sanitized(), "answer": exchange.answer.decode("utf-8", "replace")}
                (self.out / f"{number:03d}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=8899)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    proxy = RecordingProxy(args.upstream, args.out, args.port)
    print(f"recording proxy on {proxy.base_url} -> {proxy.upstream}, writing {args.out}", flush=True)
    try:
        proxy.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.server.server_close()
        proxy._client.close()


if __name__ == "__main__":
    main()
