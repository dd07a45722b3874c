"""The front server's HTTP layer: a threaded WSGI server that keeps connections alive (HTTP/1.1).

werkzeug's development server answers every request with `Connection: close` and, after each response, drains the
socket for 10 ms, which would swallow a keep-alive client's next request. Clients (boto3) then pay a TCP connect and
close per call. This handler reads each request body fully before calling the app, buffers the response and sends
it with its length, so the connection can carry the next request. Request parsing (and moto's handling of header
names) stays werkzeug's and moto's own.
"""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import BaseWSGIServer, make_server

LOG = logging.getLogger("batch_emulator")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

IDLE_CONNECTION_SECONDS = 30.0
"""A kept-alive connection with no request for this long is closed (clients reconnect transparently)."""

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})
_NO_BODY_STATUSES = frozenset({204, 304})


class KeepAliveHandler(MotoRequestHandler):  # type: ignore[misc]
    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_SECONDS

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in one write; without NODELAY a small response still waits for the client's
        # delayed ACK (tens of milliseconds per request).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return

    def log(self, type: str, message: str, *args: Any) -> None:
        # werkzeug prints these to stderr; idle keep-alive connections time out routinely: debug level.
        LOG.debug("batch emulator front server %s: " + message, type, *args)

    def run_wsgi(self) -> None:
        environ: dict[str, Any] = self.make_environ()
        body: bytes = environ["wsgi.input"].read() if environ.get("wsgi.input_terminated") else self._read_body()
        environ.pop("wsgi.input_terminated", None)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        response: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            response[:] = [status, headers]
            return chunks.append

        chunks: list[bytes] = []
        try:
            result = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:  # the app's failure becomes a 500 for this request only, as werkzeug does
            LOG.exception("batch emulator: request %s %s failed", self.command, self.path)
            response[:] = ["500 Internal Server Error", [("Content-Type", "text/plain")]]
            chunks[:] = [b"Internal Server Error"]
            self.close_connection = True
        self._send(response[0], response[1], b"".join(chunks))

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: str, headers: list[tuple[str, str]], payload: bytes) -> None:
        code_text, _, message = status.partition(" ")
        code = int(code_text)
        self.send_response(code, message)
        declared: str | None = None
        for name, value in headers:
            if name.lower() == "content-length":
                declared = value
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if self.command == "HEAD" or code in _NO_BODY_STATUSES:
            if declared is not None and self.command == "HEAD":
                self.send_header("Content-Length", declared)
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(payload)))
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(payload)
        self.flush_headers()


def make_front_server(host: str, port: int, app: WsgiApp) -> BaseWSGIServer:
    """A threaded server on `host`:`port` (0: a free port); run it with `serve_forever`."""
    return make_server(host, port, app, threaded=True, request_handler=KeepAliveHandler)
