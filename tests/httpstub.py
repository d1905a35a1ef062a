"""Stdlib HTTP servers on 127.0.0.1 in daemon threads: a test's fake or slowed publisher."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Callable

import httpx

__all__ = ["SlowProxy", "StubServer"]


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


class SlowProxy(StubServer):
    """Forwards GETs to ``target``, sleeping ``delay`` seconds before every block (not the head).

    Requests are answered one at a time, so fetching ahead in parallel gains nothing: a test
    that must catch an ingest mid-way does not depend on how fast the indexer has become.  With
    ``pass_only``, a block whose CID is not in it (an entry chunk, when it names the ads) waits
    until ``release()``: the test decides when the ingest may go on, no timing window involved.
    """

    def __init__(self, target: str, delay: float, pass_only: frozenset[str] | None = None) -> None:
        self.delayed = 0
        self.held = 0  # requests that waited for ``release()``
        self.released = threading.Event()
        if pass_only is None:
            self.released.set()
        one_at_a_time = threading.Lock()
        client = self.client = httpx.Client(timeout=10)  # keep-alive; used under the lock

        def forward(request: http.server.BaseHTTPRequestHandler) -> None:
            block = not request.path.endswith("/head")
            if block and pass_only is not None and request.path.rsplit("/", 1)[-1] not in pass_only:
                self.held += 1
                self.released.wait(60)
            with one_at_a_time:
                if block:
                    self.delayed += 1
                    time.sleep(delay)
                reply = client.get(target + request.path)
            request.send_response(reply.status_code)
            request.send_header("content-type", reply.headers.get("content-type", ""))
            request.send_header("content-length", str(len(reply.content)))
            request.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                request.wfile.write(reply.content)

        super().__init__(forward)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        super().close()
        self.client.close()
