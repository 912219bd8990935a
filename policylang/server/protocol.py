"""uvicorn's HTTP/1.1 protocol (httptools) with a deadline on the request head, and the
ASGI TLS extension.

uvicorn times out an idle keep-alive connection, but not a connection that opened and
then sends its request line and headers slowly (or never): each such *half-open*
connection is kept for ever, and enough of them exhaust the worker (slowloris). Here a
connection must deliver a complete request head within ``header_timeout`` seconds of
connecting, or of the first byte of each later request on a kept-alive connection; it is
closed otherwise. (Slow *bodies* are timed out by the service's body reader, see
:class:`policylang.server.app.BodyLimitMiddleware`.)

Over TLS, every request's scope carries the ASGI TLS extension
(``scope["extensions"]["tls"]``) with ``client_cert_chain``: the peer's certificate as
PEM, the one the TLS handshake verified (``serve --client-ca``). The service's
authentication (:mod:`policylang.server.auth`) reads the caller from it.

Inline answers (docs/server.md#inline-answers): when the app has the decision routes'
fast path (:mod:`policylang.server.fastpath`), a single decision (``POST
/access/v1/evaluation`` or ``POST /v1/decide``) whose head and body arrive in the same
read is answered right there, in the parser's callback, by the fast path's own
synchronous handler: no ASGI request cycle, no task, no event, no coroutine, the head and
body in one write, the same bytes uvicorn's cycle would write. Everything else takes
uvicorn's ordinary way, which is also taken, with the body received so far, by a
candidate whose body has not arrived whole by the end of the read (so the body
deadline, 408, applies to it as before), and by any request that does not meet every
condition of :meth:`HeaderTimeoutProtocol._inline_handler` (no request before it still
being answered, a Content-Length within the body cap, no ``Expect``, no
``Transfer-Encoding``, no upgrade, the concurrency limit not reached, no query string),
and by every request when uvicorn writes an access log (the log line is its own).

``protocol_class(header_timeout)`` returns the class to hand to ``uvicorn.Config(http=…)``.
"""

from __future__ import annotations

import ssl
from typing import Any

from uvicorn.protocols.http.httptools_impl import HEADER_VALUE_RE, STATUS_LINE, HttpToolsProtocol

from .fastpath import FastPath, request_headers

__all__ = ["HeaderTimeoutProtocol", "protocol_class", "DEFAULT_HEADER_TIMEOUT"]

#: seconds a client has to send a complete request line and headers
DEFAULT_HEADER_TIMEOUT = 10.0


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes a connection whose request head is not complete
    ``header_timeout`` seconds after it started, and adds the ASGI TLS extension."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    _head_timer: Any = None
    #: when the request head in progress began (loop time), None between heads
    _head_since: float | None = None
    _tls: dict | None = None
    #: the app's fast path (None: no inline answers on this connection)
    _fast: Any = None
    #: the inline handler of the request whose body is arriving, and its body so far
    _inline: Any = None
    _inline_body: list | None = None

    # One timer per connection, not one per request: a head records when it began and its
    # completion clears that; the timer, when it fires, closes the connection if a head
    # begun ``header_timeout`` ago is still incomplete, waits on to the deadline of a head
    # begun since, or (no head in progress) lapses, to be armed by the next head.

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tls = _tls_extension(transport)
        # (with an access log, every request takes uvicorn's way: its log line is uvicorn's)
        self._fast = None if self.access_log else fast_path_of(self.app)
        self._begin()

    def connection_lost(self, exc) -> None:
        self._head_since = None
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope.setdefault("extensions", {})["tls"] = self._tls  # type: ignore[typeddict-item]
        if self._head_since is None:  # a later request on a kept-alive connection
            self._begin()

    def on_headers_complete(self) -> None:
        self._head_since = None
        if self._fast is not None:
            handler = self._inline_handler()
            if handler is not None:  # answered in on_message_complete, or promoted
                self._inline = handler
                self._inline_body = []
                return
        super().on_headers_complete()

    # -- inline answers (see the module docstring) ---------------------------------

    def _inline_handler(self):
        """The fast path's handler for the request whose head just completed, when it can
        be answered inline; None for uvicorn's ordinary way."""
        handler = self._fast.inline.get(self.url)  # the raw target: no query, no %-escapes
        if handler is None or self.expect_100_continue or self.root_path or self.transport.is_closing():
            return None
        parser = self.parser
        if parser.get_method() != b"POST" or parser.should_upgrade():
            return None
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.pipeline:
            return None  # an earlier request is still being answered: answers keep their order
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            return None  # uvicorn's 503
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                if length is not None:
                    return None
                length = value
            elif name == b"transfer-encoding":
                return None
            elif name == b"x-request-id" and HEADER_VALUE_RE.search(value):
                return None
        if length is None or not length.isdigit() or int(length) > self._fast.max_body:
            return None  # no length, or beyond the cap: the body reader answers (413)
        return handler

    def on_body(self, body: bytes) -> None:
        if self._inline is not None:
            self._inline_body.append(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        handler = self._inline
        if handler is None:
            return super().on_message_complete()
        parts = self._inline_body
        self._inline = self._inline_body = None
        self._answer(handler, parts[0] if len(parts) == 1 else b"".join(parts))

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._inline is not None and self.parser is not None and not self.transport.is_closing():
            self._promote()

    def _promote(self) -> None:
        """The body of an inline candidate did not arrive in the read that completed its
        head: hand the request to uvicorn's ordinary way, with the body received so far
        (its body reader then waits for the rest under the body deadline)."""
        parts = self._inline_body
        self._inline = self._inline_body = None
        HttpToolsProtocol.on_headers_complete(self)
        if parts and self.cycle is not None:
            for part in parts:
                HttpToolsProtocol.on_body(self, part)

    def _answer(self, handler, body: bytes) -> None:
        """Answer one request inline: the bytes uvicorn's cycle writes for the fast
        path's answer (status line, default headers, Content-Length, Content-Type,
        X-Request-ID, ``connection: close`` when the connection is not kept), in one write."""
        parser = self.parser
        rid, ctype = request_headers(self.headers)
        status, out = handler(ctype, body)
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += (name, b": ", value, b"\r\n")
        content += (b"content-length: %d\r\ncontent-type: application/json\r\nx-request-id: " % len(out),
                    rid, b"\r\n")
        if not keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", out)
        transport = self.transport
        transport.write(b"".join(content))
        self.server_state.total_requests += 1
        if not keep_alive:
            transport.close()
        elif not transport.is_closing():
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)

    def _begin(self) -> None:
        """A request head begins now (the first at the connection's start)."""
        if self.header_timeout and self.header_timeout > 0:
            since = self._head_since = self.loop.time()
            if self._head_timer is None:
                self._head_timer = self.loop.call_at(since + self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        since = self._head_since
        if since is None:  # no head in progress: the next one arms the timer again
            return
        deadline = since + self.header_timeout
        if self.loop.time() < deadline:  # a head begun after the one the timer was armed for
            self._head_timer = self.loop.call_at(deadline, self._head_timed_out)
            return
        if self.transport is not None and not self.transport.is_closing():
            self.logger.debug("closing a connection whose request head did not arrive in %ss",
                              self.header_timeout)
            self.transport.close()


def fast_path_of(app) -> Any:
    """The decision routes' fast path in front of ``app`` (through uvicorn's own
    wrappers: proxy headers, message logging), or None."""
    for _ in range(8):
        if app is None:
            return None
        front = getattr(app, "_front", None)
        if isinstance(front, FastPath):
            return front
        app = getattr(app, "app", None)
    return None


def _tls_extension(transport) -> dict | None:
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    chain: list[str] = []
    try:
        der = sslobj.getpeercert(binary_form=True)
    except (ValueError, ssl.SSLError):
        der = None
    if der:
        chain.append(ssl.DER_cert_to_PEM_cert(der))
    return {"client_cert_chain": chain, "client_cert_name": None, "client_cert_error": None,
            "tls_version": None, "cipher_suite": None, "server_cert": None}


_classes: dict[float, type] = {}


def protocol_class(header_timeout: float = DEFAULT_HEADER_TIMEOUT) -> type:
    """The protocol class with this head deadline (one class per value, made once)."""
    cls = _classes.get(header_timeout)
    if cls is None:
        cls = type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": float(header_timeout)})
        _classes[header_timeout] = cls
    return cls
