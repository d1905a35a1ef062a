"""A stdlib HTTP server on 127.0.0.1 in a daemon thread: a test's fake or slowed publisher."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable

__all__ = ["StubServer"]


class StubServer:
    """Answers every GET with ``do_get(handler)``; ``addr`` is its ``/http`` multiaddr."""

    def __init__(self, do_get: Callable[[http.server.BaseHTTPRequestHandler], None]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                do_get(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.addr = f"/ip4/127.0.0.1/tcp/{self.server.server_address[1]}/http"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
