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

``protocol_class(header_timeout)`` returns the class to hand to ``uvicorn.Config(http=…)``.
"""

from __future__ import annotations

import ssl
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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

    # One timer per connection, not one per request: a head records when it began and its
    # completion clears that; the timer, when it fires, closes the connection if a head
    # begun ``header_timeout`` ago is still incomplete, waits on to the deadline of a head
    # begun since, or (no head in progress) lapses, to be armed by the next head.

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tls = _tls_extension(transport)
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
        super().on_headers_complete()

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
