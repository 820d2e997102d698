"""A real HTTP server on 127.0.0.1 for download tests, with misbehaviour on request.

Each path serves a ``Route``: its bytes, optionally a fixed error status, a connection dropped after some
bytes, Range requests ignored, or a delay before answering. Every request is logged so tests can check
what the client asked for (a ``Range`` header after a drop, how many GETs).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes
    status: int = 200  # anything but 200: always answer this status with a short text body
    drop_after: int | None = None  # send this many body bytes, then close the connection...
    drops: int = 1  # ...on this many requests
    ignore_range: bool = False  # answer 200 with the whole body even when asked for a range
    delay: float = 0.0  # seconds to wait before answering
    redirect: str | None = None  # answer 302 to this path (a path redirecting to itself loops)
    stall: bool = False  # accept the request and never answer (until the server closes)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


class ArchiveServer:
    """``with ArchiveServer() as server: server.add("/x.tar.gz", data); server.url("/x.tar.gz")``."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._lock = threading.RLock()  # re-entrant: wait_for_gets's predicate calls gets() holding it
        self._arrived = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def add(self, path: str, body: bytes, **misbehaviour) -> str:
        self.routes[path] = Route(body, **misbehaviour)
        return self.url(path)

    def gets(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path == path]

    def wait_for_gets(self, path: str, count: int = 1, timeout: float = 60) -> bool:
        """Wait until ``count`` GETs of ``path`` have arrived; False if ``timeout`` passed first."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.gets(path)) >= count, timeout)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._closing.set()  # stalled requests end
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up: expected here
            super().handle_error(request, client_address)


def _handler_for(server: ArchiveServer):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            with server._lock:
                server.requests.append(Request("GET", self.path, dict(self.headers.items())))
                server._arrived.notify_all()
                route = server.routes.get(self.path)
                drop = route is not None and route.drop_after is not None and route.drops > 0
                if drop:
                    route.drops -= 1
            if route is None:
                return self._text(404, "Not Found")
            time.sleep(route.delay)
            if route.stall:
                server._closing.wait()
                return
            if route.redirect is not None:
                self.send_response(302)
                self.send_header("Location", route.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if route.status != 200:
                return self._text(route.status, "error")
            body, start = route.body, 0
            wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if wanted and not route.ignore_range:
                start = int(wanted[1])
                if start >= len(body):
                    return self._text(416, "Range Not Satisfiable")
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("ETag", '"v1"')
            self.end_headers()
            if drop:
                self.wfile.write(body[start : start + route.drop_after])
                self.close_connection = True
                return
            self.wfile.write(body[start:])

        def _text(self, status: int, text: str):
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # keep test output clean
            pass

    return Handler
