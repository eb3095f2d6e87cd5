"""A real HTTP server on loopback for the source tests, with hostile routes.

Each route counts its hits, so a test can tell that a server was never contacted. The
server listens on 127.0.0.1 only; nothing in the tests ever connects elsewhere.
"""

from __future__ import annotations

import collections
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from testkit.waiting import SERVER_POLL_S

Route = Callable[[BaseHTTPRequestHandler], None]

TRICKLE_BYTES = 200
TRICKLE_GAP_S = 0.05
TRICKLE_HEADER_BYTES = 60_000  # under http.client's longest line: only a deadline ends it


class SourceServer:
    """Routes by path; ``hits[path]`` counts requests, ``conditional`` the 304s sent."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.conditional = 0
        self.requests: list[dict[str, str]] = []  # each request's headers, in order
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                server.hits[path] += 1
                server.requests.append(dict(self.headers.items()))
                route = server.routes.get(path)
                if route is None:
                    send(self, 404, b"not here", "text/plain")
                else:
                    route(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(SERVER_POLL_S,),
                                       daemon=True)

    def url(self, path: str) -> str:
        return self.origin + path

    def serve(
        self, path: str, body: bytes, content_type: str = "image/jpeg", etag: str | None = None
    ) -> None:
        def route(handler: BaseHTTPRequestHandler) -> None:
            if etag is not None and handler.headers.get("If-None-Match") == etag:
                self.conditional += 1
                handler.send_response(304)
                handler.send_header("ETag", etag)
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            extra = {"ETag": etag} if etag else {}
            send(handler, 200, body, content_type, extra)

        self.routes[path] = route

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        self.routes[path] = route

    def lying_length(self, path: str, length: int) -> None:
        """Claims ``length`` bytes and sends a JPEG's first bytes only."""

        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", str(length))
            handler.end_headers()
            handler.wfile.write(b"\xff\xd8\xff" + b"\0" * 1000)

        self.routes[path] = route

    def endless(self, path: str, chunk: bytes) -> None:
        """A chunked body that goes on until the client hangs up (bounded: 64 MiB)."""

        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            try:
                for _ in range((64 << 20) // len(chunk)):
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass

        self.routes[path] = route

    def trickle(self, path: str, head: bytes) -> None:
        """``head``, then one byte every TRICKLE_GAP_S, until the client hangs up."""

        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", str(len(head) + TRICKLE_BYTES))
            handler.end_headers()
            try:
                handler.wfile.write(head)
                handler.wfile.flush()
                for _ in range(TRICKLE_BYTES):
                    time.sleep(TRICKLE_GAP_S)  # the hostile source's pace, not a wait
                    handler.wfile.write(b"\0")
                    handler.wfile.flush()
            except OSError:
                pass

        self.routes[path] = route


    def trickle_headers(self, path: str) -> None:
        """A status line, then one header byte every TRICKLE_GAP_S until the client hangs up:
        each byte arrives well within any read timeout, so only a deadline over the whole
        fetch ends it."""

        def route(handler: BaseHTTPRequestHandler) -> None:
            try:
                handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                handler.wfile.flush()
                for _ in range(TRICKLE_HEADER_BYTES):
                    time.sleep(TRICKLE_GAP_S)  # the hostile source's pace, not a wait
                    handler.wfile.write(b"a")
                    handler.wfile.flush()
            except OSError:
                pass
            handler.close_connection = True

        self.routes[path] = route

    def encoded(self, path: str, body: bytes, encoding: str) -> None:
        """``body`` sent as it is with ``Content-Encoding: encoding`` (asked for or not)."""

        def route(handler: BaseHTTPRequestHandler) -> None:
            send(handler, 200, body, "image/jpeg", {"Content-Encoding": encoding})

        self.routes[path] = route


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str,
    extra: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (extra or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def running_tls(tmp_path: Path) -> Iterator[tuple[SourceServer, str, list[str]]]:
    """A loopback HTTPS server whose certificate names ``img.test``: the server, the
    certificate's file (to trust) and the SNI names it was asked for."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=img.test", "-addext", "subjectAltName=DNS:img.test"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(str(name)) and None
    def wrap(srv: SourceServer) -> None:  # before it serves: the swap must not race its loop
        srv.httpd.socket = context.wrap_socket(srv.httpd.socket, server_side=True)

    with running(wrap) as srv:
        yield srv, str(cert), names


@contextmanager
def running(prepare: Callable[[SourceServer], None] | None = None) -> Iterator[SourceServer]:
    server = SourceServer()
    if prepare is not None:
        prepare(server)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=10)
