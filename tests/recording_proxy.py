"""A logging reverse proxy for recording what a real client sends.

Put it between a client (a coding-agent CLI, an SDK) and an upstream server:
every request is forwarded unchanged, and its method, path, query, headers
(without credentials) and body (parsed as JSON where it is JSON) are written
to `out_dir` as one numbered JSON file each, with the upstream's status. The
upstream's answer, streamed or not, goes back to the client as it arrives.

As a library (tests)::

    with RecordingProxy("http://127.0.0.1:8000", tmp_path) as proxy:
        run_client(base_url=proxy.base_url)
    recorded = proxy.records()

As a script::

    python tests/recording_proxy.py --upstream http://127.0.0.1:8000 --out DIR [--port 9000]
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import httpx

# Never written to disk: credentials, and hop-by-hop headers that describe
# the connection rather than the request.
SECRET_HEADERS = {"authorization", "x-api-key", "cookie", "proxy-authorization", "openai-api-key"}
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}


def recorded_headers(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() not in SECRET_HEADERS}


def parsed_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


class RecordingProxy:
    """Forwards to `upstream` and records each request into `out_dir`."""

    def __init__(self, upstream: str, out_dir: str | Path, port: int = 0, timeout: float = 900) -> None:
        self.upstream = upstream.rstrip("/")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.client = httpx.Client(timeout=timeout)
        self.count = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path
                split = urlsplit(path)
                with proxy.lock:
                    proxy.count += 1
                    number = proxy.count
                record: dict[str, Any] = {
                    "method": self.command,
                    "path": split.path,
                    "query": dict(parse_qsl(split.query, keep_blank_values=True)),
                    "headers": recorded_headers(self.headers),
                    "body": parsed_body(raw),
                }
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                request = proxy.client.build_request(self.command, proxy.upstream + path, headers=headers, content=raw)
                try:
                    response = proxy.client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    record["status"] = None
                    record["error"] = repr(exc)
                    proxy._write(number, record)
                    self.send_error(502, "upstream unreachable")
                    return
                record["status"] = response.status_code
                proxy._write(number, record)
                try:
                    self.send_response(response.status_code)
                    for key, value in response.headers.items():
                        if key.lower() not in HOP_HEADERS and key.lower() != "content-length":
                            self.send_header(key, value)
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for chunk in response.iter_raw():
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away; so does the upstream request
                finally:
                    response.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

        return Handler

    def _write(self, number: int, record: dict[str, Any]) -> None:
        name = f"{number:03d}-{record['method']}-{record['path'].strip('/').replace('/', '_') or 'root'}.json"
        (self.out_dir / name).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def records(self) -> list[dict[str, Any]]:
        """What was recorded so far, in order."""
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.out_dir.glob("[0-9][0-9][0-9]-*.json"))]

    def start(self) -> Self:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(10)
        self.client.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="where to forward, e.g. http://127.0.0.1:8000")
    parser.add_argument("--out", required=True, help="folder for the recorded requests")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    args = parser.parse_args()
    proxy = RecordingProxy(args.upstream, args.out, args.port).start()
    print(f"recording proxy on {proxy.base_url} -> {proxy.upstream}, writing to {args.out}", flush=True)
    try:
        assert proxy.thread is not None
        proxy.thread.join()
    except KeyboardInterrupt:
        proxy.stop()


if __name__ == "__main__":
    main()
