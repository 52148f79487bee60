"""HTTP for the routes of ``app``: the standard library's ``ThreadingHTTPServer`` (one thread per
connection, HTTP/1.1 keep-alive), with JSON errors everywhere, bodies bounded by the upload limit.
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import sys
import traceback

from align_tf.serve.app import Response, error_response
from align_tf.serve.forms import ApiError

# An over-size body up to this is read and dropped, so the client reads the 413 on a clean
# connection; beyond it the connection is closed instead (reading it would be the attack).
DRAIN_MAX = 64 << 20


class Server(http.server.ThreadingHTTPServer):
    """Listens on ``(host, port)`` at once (port 0: any free one); ``service`` (an
    ``app.Service``) is attached once the index is loaded, before ``serve_forever``."""

    daemon_threads = True
    request_queue_size = 128  # many clients at once queue instead of being refused

    def __init__(self, address: tuple, access_log: bool = False):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.service, self.access_log = None, access_log
        super().__init__(address, Handler)

    def handle_error(self, request, client_address):
        # A client that hangs up (mid-upload, or before reading its answer) is no server error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def server_bind(self):
        # HTTPServer.server_bind also resolves the host's FQDN, a DNS query nobody needs here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class Handler(http.server.BaseHTTPRequestHandler):
    """Reads a request, asks the server's ``service``, writes its ``Response``."""

    protocol_version = "HTTP/1.1"
    server_version = "align_tf.serve"
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK (40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True
    timeout = 30  # seconds an idle keep-alive connection (or a stalled upload) is kept

    def do_GET(self):
        self._answer("GET")

    def do_HEAD(self):
        self._answer("GET", head=True)

    def do_POST(self):
        self._answer("POST")

    def do_PUT(self):
        self._answer("PUT")

    def do_DELETE(self):
        self._answer("DELETE")

    def do_PATCH(self):
        self._answer("PATCH")

    def _answer(self, method: str, head: bool = False) -> None:
        service = self.server.service
        try:  # a socket error here (a client gone mid-upload) ends this connection only
            body = self._read_body(method, service.max_upload)
        except ApiError as e:
            self._send(error_response(e.status, e.message), head)
            return
        try:
            response = service.handle(method, self.path, self.headers.get("Content-Type", ""),
                                      body)
        except Exception as e:  # noqa: BLE001  a bug of ours: answered, logged, still serving
            traceback.print_exc(file=sys.stderr)
            response = error_response(500, f"internal error: {type(e).__name__}: {e}")
        self._send(response, head)

    def _read_body(self, method: str, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # the body is left unread
            raise ApiError(411, "chunked bodies are not supported: send a Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            if method == "POST":
                self.close_connection = True
                raise ApiError(411, "a POST needs a Content-Length")
            return b""
        try:
            size = int(length)
            if size < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ApiError(400, f"bad Content-Length {length!r}") from None
        if size > limit:
            self._drop(size)
            raise ApiError(413, too_large(size, limit))
        body = self.rfile.read(size)
        if len(body) < size:
            self.close_connection = True
            raise ApiError(400, f"the body ended after {len(body)} of {size} bytes")
        return body

    def _drop(self, size: int) -> None:
        """Reads and forgets an over-size body (or closes the connection, if far over)."""
        if size > DRAIN_MAX:
            self.close_connection = True
            return
        while size > 0:
            chunk = self.rfile.read(min(size, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            size -= len(chunk)

    def handle_expect_100(self) -> bool:
        # A client that asks first (curl does for big uploads) is refused before it sends.
        limit = self.server.service.max_upload
        try:
            size = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            size = 0
        if size > limit:
            self.close_connection = True
            self._send(error_response(413, too_large(size, limit)))
            return False
        return super().handle_expect_100()

    def _send(self, response: Response, head: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(response.body)

    def send_error(self, code, message=None, explain=None):
        """The standard library's own refusals (a bad request line, headers too long, an
        unknown method) as one-line JSON too."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # a garbled request line: answer with headers
        text = message or self.responses.get(code, ("error",))[0]
        try:
            self._send(error_response(code, text), head=getattr(self, "command", "") == "HEAD")
        except OSError:
            pass  # the client is gone

    def log_message(self, format, *args):
        if self.server.access_log:
            super().log_message(format, *args)


def too_large(size: int, limit: int) -> str:
    return (f"the upload of {size} bytes is over the limit of {limit} bytes "
            f"({limit / (1 << 20):g} MB, --max_upload_mb)")
