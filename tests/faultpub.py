"""Faulty publishers for the fault-injection battery: real HTTP on 127.0.0.1, one fault each.

A ``FaultPublisher`` serves a ``ChainBuilder`` chain over ipnisync (a stdlib ``http.server`` in
threads, ``tests.httpstub.StubServer``, so the test owns every socket) and breaks one chosen
block, the *target* (a CID, or ``"head"`` for the signed head), in one of these ways:

- ``refuse``: the publisher goes away when the target is asked for: its listening socket is
  closed (every later connection is refused) and this connection is reset.  ``closed_port()``
  is a publisher that refuses from the start.
- ``reset``: the response head and half the body, then a TCP RST (``SO_LINGER`` 0, close).
- ``500``: ``500 Internal Server Error``.
- ``drip``: the right bytes, one every ``DRIP_EVERY`` seconds (slower than the fetcher's
  timeout: the test configures a short one).
- ``mismatch``: the bytes of another valid block (``decoy``) for the target's CID (for the
  head: a head signed by another key).
- ``oversize``: a body of twice ``max_block`` bytes, with its ``Content-Length``;
  ``oversize_stream``: the same without a length (read until the connection closes).
- ``bad_redirect``: a 302 whose ``Location`` does not parse (``http://[::1``): the client's
  URL library raised an untyped ``ValueError`` on it before it was translated.
- ``bug``: nothing on the wire; ``buggy_factory`` wraps the real fetcher factory and raises an
  unexpected exception (a bug) when the target is fetched: the one fake, at the fetcher seam.

Every thread is bounded: a drip stops when the client hangs up, after the body, or on ``close``.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Self

from sync import Link, PeerId, PrivateKey, load_advertisement, load_entry_chunk
from sync.errors import BadCid
from sync.ipnisync.fetch import BlockFetcher, SchemaKind
from sync.ipnisync.head import SignedHead
from sync.ipnisync.protocol import IPNI_PATH
from tests.builders import ChainBuilder, multihash
from tests.httpstub import StubServer

__all__ = [
    "ADS",
    "DRIP_EVERY",
    "WIRE_FAULTS",
    "BuggyFetcher",
    "FaultPublisher",
    "block_at",
    "buggy_factory",
    "close_all",
    "closed_port",
    "fault_chain",
    "fault_mhs",
]

DRIP_EVERY = 0.25  # seconds between two bytes of a dripped body
WIRE_FAULTS = (
    "refuse",
    "reset",
    "500",
    "drip",
    "mismatch",
    "oversize",
    "oversize_stream",
    "bad_redirect",
)
_MEDIA = "application/vnd.ipld.dag-json"
ADS, PER_AD, CHUNK = 3, 6, 2  # a bad publisher's chain: three ads of three entries chunks


def fault_mhs(base: int, ad: int) -> list[bytes]:
    """The multihashes of ad ``ad`` of the chain built from ``base``."""
    return [multihash(base + 100 * ad + j) for j in range(PER_AD)]


def fault_chain(key: PrivateKey, base: int, ads: int = ADS) -> ChainBuilder:
    """``ads`` ads signed by ``key``, each with its own context and ``CHUNK``-sized chunks."""
    chain = ChainBuilder(chunk_size=CHUNK)
    for a in range(ads):
        chain.add(key, fault_mhs(base, a), context_id=b"ctx-%d" % a)
    return chain


def block_at(chain: ChainBuilder, position: str, decoy: bool = False) -> Link:
    """The block a fault at ``position`` hits (or, ``decoy``, a valid one of the same kind).

    The walk's is the oldest ad (the third fetched, after a segment was spilled); a chunk's is
    in the middle ad, so the ads before and after it show what the fault costs.
    """
    if position in ("walk", "announce"):
        return chain.order[1 if decoy else 0][0]
    cid = chain.order[0 if decoy else 1][0]
    first = load_advertisement(cid, chain.blocks[cid]).entries
    if position == "first_chunk":
        return first
    nxt = load_entry_chunk(first, chain.blocks[first]).next
    assert nxt is not None
    return nxt


def closed_port() -> str:
    """The multiaddr of a 127.0.0.1 port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"/ip4/127.0.0.1/tcp/{port}/http"


def _rst(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultPublisher:
    """``chain`` served over ipnisync, with ``fault`` applied to the ``target`` block."""

    def __init__(
        self,
        chain: ChainBuilder,
        fault: str | None = None,
        target: Link | str | None = None,
        *,
        max_block: int,
        decoy: bytes | None = None,
    ) -> None:
        assert fault in (None, "bug", *WIRE_FAULTS), fault
        assert fault is None or target is not None
        assert fault != "mismatch" or decoy is not None
        self.chain, self.fault, self.target = chain, fault, "" if target is None else str(target)
        self.max_block, self.decoy = max_block, decoy
        self.hits: Counter[str] = Counter()  # requests by last path segment
        self.closing = threading.Event()
        self._gone = threading.Lock()
        self.gone = False  # a ``refuse`` publisher stopped listening
        self.stub = StubServer(self._get)
        self.addr = self.stub.addr

    def _get(self, request: http.server.BaseHTTPRequestHandler) -> None:
        name = request.path.rsplit("/", 1)[-1]
        self.hits[name] += 1
        if not request.path.startswith(IPNI_PATH + "/"):
            return self._send(request, 404, b"not found")
        if name == "head":
            signed = self.chain.signed_head()
            if signed is None:
                return self._send(request, 204, b"")
            return (
                self._break(request, signed)
                if self._broken(name)
                else self._send(request, 200, signed)
            )
        try:
            link = Link.parse(name)
        except BadCid:
            return self._send(request, 400, b"not a cid")
        raw = self.chain.block(link)
        if raw is None:
            return self._send(request, 404, b"cid not found")
        if self._broken(name):
            return self._break(request, raw)
        return self._send(request, 200, raw)

    def _broken(self, name: str) -> bool:
        return name == self.target and self.fault not in (None, "bug")

    def _break(self, request: http.server.BaseHTTPRequestHandler, raw: bytes) -> None:
        fault = self.fault
        request.close_connection = True
        if fault == "500":
            self._send(request, 500, b"internal error")
        elif fault == "mismatch":
            assert self.decoy is not None
            self._send(request, 200, self.decoy)
        elif fault in ("oversize", "oversize_stream"):
            body = b" " * (2 * self.max_block)
            self._send(request, 200, body, length=fault == "oversize")
        elif fault == "bad_redirect":
            request.send_response(302)
            request.send_header("location", "http://[::1")
            request.send_header("content-length", "0")
            request.end_headers()
        elif fault == "reset":
            self._head(request, 200, len(raw))
            request.wfile.write(raw[: len(raw) // 2])
            _rst(request.connection)
        elif fault == "drip":
            self._head(request, 200, len(raw))
            for i in range(len(raw)):
                if self.closing.wait(DRIP_EVERY):
                    break
                try:
                    request.wfile.write(raw[i : i + 1])
                except OSError:
                    break  # the client gave up
        elif fault == "refuse":
            with self._gone:  # at once: stop listening (connections are refused from now on)
                if not self.gone:
                    self.gone = True
                    self.stub.server.socket.shutdown(socket.SHUT_RD)  # Linux: listening stops
                    threading.Thread(target=self.stub.close, daemon=True).start()
            _rst(request.connection)  # and this one is reset

    @staticmethod
    def _head(request: http.server.BaseHTTPRequestHandler, status: int, length: int | None) -> None:
        request.send_response(status)
        request.send_header("content-type", _MEDIA)
        if length is not None:
            request.send_header("content-length", str(length))
        request.end_headers()

    def _send(
        self,
        request: http.server.BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        *,
        length: bool = True,
    ) -> None:
        self._head(request, status, len(body) if length else None)
        with contextlib.suppress(OSError):  # the client went away (a timeout, a cap)
            request.wfile.write(body)

    def close(self) -> None:
        self.closing.set()
        self.stub.close()


def close_all(pubs: Iterable[FaultPublisher]) -> None:
    """Close ``pubs`` at once: each close waits for its server's poll loop (up to 0.5 s)."""
    threads = [threading.Thread(target=pub.close) for pub in pubs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)


class BuggyFetcher:
    """A real fetcher that raises an unexpected exception (a bug) for what ``bugs`` names."""

    def __init__(
        self, inner: BlockFetcher, bugs: Mapping[str, Exception], publisher: PeerId
    ) -> None:
        self.inner, self.bugs, self.publisher = inner, bugs, publisher

    def _bug(self, name: str) -> None:
        if (exc := self.bugs.get(name)) is not None:  # at once: before any checkpoint
            raise type(exc)(*exc.args)

    async def head(self) -> SignedHead | None:
        self._bug(f"head of {self.publisher}")
        return await self.inner.head()

    async def block(self, link: Link, kind: SchemaKind | None = None) -> bytes:
        self._bug(str(link))
        return await self.inner.block(link, kind)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def buggy_factory(
    inner: Callable[[PeerId, list[str]], BlockFetcher],
    bugs: Mapping[str, Exception],
) -> Callable[[PeerId, list[str]], AbstractAsyncContextManager[BlockFetcher]]:
    """``inner``'s fetchers, raising ``bugs[str(cid)]`` when that CID is fetched and
    ``bugs[f"head of {publisher}"]`` when that publisher's signed head is."""

    def factory(publisher: PeerId, addrs: list[str]) -> AbstractAsyncContextManager[BlockFetcher]:
        return BuggyFetcher(inner(publisher, addrs), bugs, publisher)

    return factory
