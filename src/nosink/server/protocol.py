"""uvicorn's h11 protocol with a deadline for each request's headers (slow-header, "slowloris", clients).

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 past ``limit_concurrency``
once a request's headers have arrived, but it waits for ever for headers that come slowly, or not at all, and
each such connection holds an open file. Here every request's headers must be complete within
``header_timeout_s`` of their first byte (of the connection's opening, for its first request): a connection
past it is answered 408 in OpenAI's error format if part of a request came, and closed either way. A request
that is not HTTP gets uvicorn's 400, but as JSON in the same format rather than plain text.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _error_body(message: str, code: int) -> str:
    """An error in OpenAI's format, as the application's own errors are."""
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})


def _request_timeout(header_timeout_s: float) -> bytes:
    """The raw 408 answer, written below h11 (whose state machine sends no answer before a request)."""
    body = _error_body(f"the request headers did not arrive within {header_timeout_s:g} s", 408)
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return (head + body).encode()


class _HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus: a request's headers must be complete within ``header_timeout_s``."""

    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # these bytes begin, or go on with, a request's headers
            self._arm()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are complete (or the request was refused)
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request that is not HTTP, as JSON in OpenAI's format instead of plain text."""
        body = _error_body(f"{msg.rstrip('.')}: not a valid HTTP/1.1 request", 400).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        """The headers are late: 408 if part of a request came (nothing to answer otherwise), then close."""
        self._header_timer = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:
            self.transport.write(_request_timeout(self.header_timeout_s))
        self.transport.close()


def h11_with_header_timeout(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class whose connections get ``header_timeout_s`` seconds for each request's headers."""
    return type("NosinkH11Protocol", (_HeaderDeadlineProtocol,), {"header_timeout_s": header_timeout_s})
