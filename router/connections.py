"""uvicorn's h11 protocol with the two limits it lacks: a deadline for a
request's headers, and a cap on open connections.

uvicorn has a keep-alive timeout (idle between requests) but none for a
client that opens a connection and sends its headers a byte at a time (or
never finishes `GE`): such a connection was held for as long as the client
liked. Here a connection must send complete headers within `header_timeout`
seconds of opening, or of the end of its previous response; otherwise it is
closed. A connection past `max_connections` gets a 503 in OpenAI's error
shape and is closed at once, before it can send anything.
"""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("modelyard.connections")

OVER_CAPACITY = json.dumps(
    {
        "error": {
            "message": "The server has too many open connections; try again in a moment.",
            "type": "server_error",
            "param": None,
            "code": "too_many_connections",
        }
    }
).encode()


class LimitedH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    max_connections: int = 512
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("refused a connection: %d open, the limit is %d ([server] max_connections)", len(self.connections) - 1, self.max_connections)
            transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
                b"connection: close\r\ncontent-length: " + str(len(OVER_CAPACITY)).encode() + b"\r\n\r\n" + OVER_CAPACITY
            )
            transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()  # the headers are in (or the connection is done with)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request on this keep-alive connection has its own deadline.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.debug("closed a connection that sent no complete request headers within %.1fs", self.header_timeout)
            self.transport.close()


def limited_protocol(header_timeout: float, max_connections: int) -> type[LimitedH11Protocol]:
    """The protocol class for uvicorn.Config(http=...), with these limits."""
    return type(
        "LimitedH11Protocol", (LimitedH11Protocol,), {"header_timeout": header_timeout, "max_connections": max_connections}
    )
