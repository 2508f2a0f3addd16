"""uvicorn's httptools protocol with the request head bounded: its size, its header count, and
the time a client may take to send it.

uvicorn bounds none of them with httptools (h11 has one size limit, answered with 400), and
httptools keeps a header being received in memory however long it grows: a 64 MiB header
stalled the loop for seconds and tripled the process's memory, and connections that send their
headers a byte at a time (slowloris) were held open forever. Here a head past
``max_header_size`` bytes or ``max_headers`` fields is answered 431 and the connection closed:
a head that arrives whole in one read is measured as httptools parses it, one still arriving
as soon as a chunk takes it over the limit, so at most one read (256 KiB) more than the limit
is ever held. A head not complete within ``header_timeout`` seconds of its first byte (or of
the connection) is answered 408 and closed.
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ...runtime.logging import get_logger
from .disconnect import abandon_handler
from .settings import HttpSettings

log = get_logger(__name__)

TOO_LARGE = "The request's header fields are larger than the service accepts."
TOO_MANY = "The request has more header fields than the service accepts."


class _HeadRefusedError(Exception):
    """Raised in a parser callback: httptools stops, and uvicorn calls send_400_response."""


def bounded_protocol(limits: HttpSettings) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn, with the head limits of the settings ``limits``."""
    # Named like the class it extends: it is uvicorn's httptools protocol, with limits.
    return type("HttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limits: HttpSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0  # received while in the head, the start of the body included
        self._head_parsed = 0  # of the current head, as parsed: request target and fields
        self._refusal: tuple[int, str] | None = None
        self._head_started = 0.0  # loop time of the current head's first byte
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_begins()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        cycle = self.cycle
        unfinished = cycle is not None and not cycle.response_complete
        super().connection_lost(exc)
        if unfinished:  # the client gave up waiting: stop what it was waiting for
            abandon_handler(cycle.scope)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_header_size:
            self._refuse(431, TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begins()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_parsed += len(url)
        if self._head_parsed > self.limits.max_header_size:
            self._stop_parsing(431, TOO_LARGE)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_parsed += len(name) + len(value) + 4  # with ": " and the line's end
        if self._head_parsed > self.limits.max_header_size:
            self._stop_parsing(431, TOO_LARGE)
        if len(self.headers) > self.limits.max_headers:
            self._stop_parsing(431, TOO_MANY)

    def _stop_parsing(self, status: int, detail: str) -> NoReturn:
        self._refusal = (status, detail)
        raise _HeadRefusedError

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(*self._refusal)

    def _head_begins(self) -> None:
        # One timer per connection, not one armed and cancelled per request: when it fires,
        # it looks at the head being received then, and sets itself again for that head's
        # time limit if it has one. A busy keep-alive connection costs a timer per
        # header_timeout, not two timer operations per request.
        self._in_head = True
        self._head_parsed = 0
        self._head_started = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(
                self._head_started + self.limits.header_timeout, self._check_head
            )

    def _check_head(self) -> None:
        self._head_timer = None
        if not self._in_head:
            return  # the next head sets the timer again
        due = self._head_started + self.limits.header_timeout
        if self.loop.time() >= due:
            self._refuse(408, "The request's header fields did not arrive in time.")
        else:
            self._head_timer = self.loop.call_at(due, self._check_head)

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` (a problem+json body) and close, whatever has been received."""
        if self.transport.is_closing():
            return
        self._in_head = False
        log.info("request_head_refused", status=status, detail=detail, client=self.client)
        title = {408: "Request Timeout", 431: "Request Header Fields Too Large"}[status]
        body = (
            f'{{"type":"about:blank","title":"{title}","status":{status},"detail":"{detail}"}}'
        ).encode()
        head = (
            f"HTTP/1.1 {status} {title}\r\ncontent-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()
