"""Fetching ipnisync blocks from a publisher: the indexer side of go-libipni ``ipnisync/sync.go``.

Rules this module keeps:

- Addresses become an ``Endpoint`` (``pubaddr.py``, go-libipni ``maurl.ToURL``).
- ``refuse_private=True`` (the daemon's ``ingest.refuse_private_addrs``): addresses that are not
  public are dropped before anything is dialled (``pubaddr.refusal``), and every TCP connection
  of the HTTP client, redirects included, resolves its host first and dials only the public
  addresses it resolved to (checked and dialled by IP, so DNS cannot answer differently between
  the two).  Nothing left to dial is ``AddressRefused``; an address refused at connect time
  moves on to the next one, like a connection failure.  Through a proxy from the environment
  (``HTTP_PROXY``/``HTTPS_PROXY``, the operator's choice) the proxy resolves and dials the
  publisher: only the address check above applies then.
- HTTP addresses are preferred; libp2p ones are used (HTTP over ``/http/1.1`` streams) only when
  there are none, and only with a libp2p host, else ``BadMultiaddr``.  Over libp2p the
  ipnisync path is looked up first in the publisher's ``/.well-known/libp2p/protocols`` (the
  ``/ipni/v1/ad`` protocol's ``path``, as go-libp2p's ``NamespacedClient``); a publisher with no
  such document (404, 405, 406) is asked at ``/ipni/v1/ad``, one whose document lists no
  ``/ipni/v1/ad`` is ``FetchFailed``.  The lookup is retried until it succeeds once.  A
  connection failure moves on to the publisher's next HTTP address, and the one that answered
  is kept.
- Legacy HTTP publishers (go-libipni ``ipnisync.Syncer.fetch``): over plain HTTP (not libp2p), a
  403 or 404 under ``<base>/ipni/v1/ad`` is retried once at ``<base>`` (the root of the
  address's ``http-path``); the first 200 there makes the fetcher use the root for every later
  request to that publisher (the fetcher's life: one worker's or one sync's).  A 404 at the root
  too is ``BlockNotFound``, a 403 ``FetchFailed``.
- ``head()`` returns ``None`` on 204; the head's signature must verify and its signer must be the
  publisher (``SignatureError``).  ``block()`` returns the raw bytes: the caller checks the hash.
  ``block(link, kind)`` sends go-libipni's ``Ipni-Cid-Schema-Type: Advertisement|EntryChunk``.
- Bodies are capped (4 MiB by default, the head at 64 KiB): a body is streamed (gzip decoded
  here, output-limited) and reading stops past the cap with ``BlockTooLarge``; a
  ``Content-Length`` over the cap is refused before the body is read.  The client's own raw cap
  (twice ours) is a backstop: its ``ResponseTooLarge`` is reported as ``BlockTooLarge``.
  ``block_encoded`` hands a gzip body over still encoded (bounded by that raw cap alone), as an
  ``EncodedBody`` whose ``decode()`` applies our cap with the same errors, wherever it runs (a
  decode process: ``indexer.ingest.offload``).
- Errors: connect errors, timeouts (a total deadline per request, as Go's ``Client.Timeout``),
  broken transfers and unexpected statuses (5xx, 3xx loops, 204 for a block) are
  ``FetchFailed``; 404 is ``BlockNotFound``.  No httpcore, h11, trio, ssl or libp2p exception
  escapes.
- One keep-alive ``httpclient.HttpClient`` per fetcher (redirects followed and proxies taken
  from the environment, as Go's client does): over TCP for http(s), over ``/http/1.1`` streams
  (``p2phttp.libp2p_client``) for libp2p.  Either is an ``Opener`` ("open a GET; status,
  headers, body chunks"), so status, caps and gzip are one code.  Importing this module does not
  import py-libp2p; building a ``Libp2pFetcher`` does.
"""

from __future__ import annotations

import contextlib
import functools
import json
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, Self, runtime_checkable

import multiaddr
import structlog
import trio

from sync.errors import (
    AddressRefused,
    BadMultiaddr,
    BlockNotFound,
    BlockTooLarge,
    FetchFailed,
    ResponseTooLarge,
    SignatureError,
    TransportFailed,
)
from sync.ipnisync.head import SignedHead
from sync.ipnisync.maurl import address_range, publisher_endpoint
from sync.ipnisync.protocol import IPNI_PATH
from sync.model.cid import Link
from sync.model.peer import PeerId
from sync.net.gzipbody import EncodedBody, GzipDecoder
from sync.net.httpclient import HttpClient, Opener, ResponseLike

if TYPE_CHECKING:
    from libp2p.abc import IHost

log = structlog.get_logger(__name__)

__all__ = [
    "CID_SCHEMA_HEADER",
    "FETCH_TIMEOUT",
    "MAX_BLOCK",
    "BlockFetcher",
    "EncodedFetcher",
    "HttpFetcher",
    "Libp2pFetcher",
    "ResponseTooLarge",
    "SchemaKind",
    "fetcher_factory",
    "open_fetcher",
]

MAX_BLOCK = 4 << 20
FETCH_TIMEOUT = 30.0  # seconds for one request, body included
CID_SCHEMA_HEADER = "Ipni-Cid-Schema-Type"
SchemaKind = Literal["Advertisement", "EntryChunk"]
_MAX_HEAD = 64 << 10
_ACCEPT_GZIP = {"accept-encoding": "gzip"}  # decoded here, output-limited


class BlockFetcher(Protocol):
    async def head(self) -> SignedHead | None: ...

    async def block(self, link: Link, kind: SchemaKind | None = None) -> bytes: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EncodedFetcher(BlockFetcher, Protocol):
    """A fetcher that can also hand a block's body over still gzip-encoded (``HttpFetcher``)."""

    async def block_encoded(
        self, link: Link, kind: SchemaKind | None = None, *, keep_gzip: bool = True
    ) -> EncodedBody: ...


def _max_raw(max_block: int) -> int:
    """The client's cap on raw body bytes: a backstop past ours (a gzip body may be a little
    larger than what it decodes to), so that ours, on decoded bytes, is the one that speaks."""
    return 2 * max_block + (64 << 10)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every fetcher: building one costs ~17 ms."""
    return ssl.create_default_context()


async def public_tcp_stream(host: str, port: int) -> trio.abc.Stream:
    """A TCP connection to one of the PUBLIC addresses ``host`` resolves to (``refuse_private``).

    ``AddressRefused`` when it resolves to none; resolver and connect errors are ``OSError``s,
    which the HTTP client reports as ``TransportFailed``.
    """
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
    public = [ip for ip in ips if address_range(ip) is None]
    if not public:
        shown = ", ".join(f"{ip} ({address_range(ip)})" for ip in ips[:4]) or "nothing"
        raise AddressRefused(f"{host} resolves to {shown}: refused by refuse_private_addrs")
    failure: OSError | None = None
    for ip in public:
        try:
            return await trio.open_tcp_stream(ip, port)
        except OSError as exc:
            failure = exc
    assert failure is not None
    raise failure


class HttpFetcher:
    """ipnisync over HTTP: one keep-alive client, the publisher's base URLs tried in order."""

    def __init__(
        self,
        publisher: PeerId,
        urls: Sequence[str],
        *,
        max_block: int = MAX_BLOCK,
        timeout: float = FETCH_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        opener: Opener | None = None,
        refuse_private: bool = False,
        legacy: bool = True,
    ) -> None:
        if not urls:
            raise BadMultiaddr(f"no HTTP address for publisher {publisher}")
        self.publisher = publisher
        self.max_block = max_block
        self._urls = [u.rstrip("/") for u in urls]
        self._legacy = legacy  # plain HTTP: the legacy root is tried on a 403 or 404
        self._at_root = False  # this publisher answered at the root: no IPNI path from now on
        self._client: Opener = opener or HttpClient(
            timeout=timeout,
            ssl_context=ssl_context or _tls_context(),
            headers=_ACCEPT_GZIP,
            max_body=_max_raw(max_block),
            connect=public_tcp_stream if refuse_private else trio.open_tcp_stream,
        )

    async def head(self) -> SignedHead | None:
        """The publisher's signed head, verified and signed by the publisher; None on 204."""
        got = await self._get("head", {}, min(_MAX_HEAD, self.max_block), allow_empty=True)
        if got is None:
            return None
        signed = SignedHead.decode(got.body)
        if (signer := signed.verify()) != self.publisher:
            raise SignatureError(f"head signed by {signer}, not by the publisher {self.publisher}")
        return signed

    async def block(self, link: Link, kind: SchemaKind | None = None) -> bytes:
        """The raw bytes served for ``link`` (not hash-checked here)."""
        return (await self.block_encoded(link, kind, keep_gzip=False)).body

    async def block_encoded(
        self, link: Link, kind: SchemaKind | None = None, *, keep_gzip: bool = True
    ) -> EncodedBody:
        """``block``'s body as it came (still gzip-encoded, if it was): its ``decode()`` is
        ``block``'s bytes, with the same cap and errors, wherever it runs."""
        headers = {CID_SCHEMA_HEADER: kind} if kind else {}
        got = await self._get(
            str(link), headers, self.max_block, allow_empty=False, keep_gzip=keep_gzip
        )
        assert got is not None
        return got

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _get(
        self,
        resource: str,
        headers: Mapping[str, str],
        cap: int,
        *,
        allow_empty: bool,
        keep_gzip: bool = False,
    ) -> EncodedBody | None:
        await self._prepare()
        failures: list[str] = []
        refused = 0
        for i, base in enumerate(list(self._urls)):
            try:
                body = await self._get_at(base, resource, headers, cap, allow_empty, keep_gzip)
            except ResponseTooLarge as exc:  # the client's backstop: ours to report
                raise BlockTooLarge(str(exc)) from None
            except (TransportFailed, AddressRefused) as exc:
                failures.append(str(exc))
                refused += isinstance(exc, AddressRefused)
                continue  # unreachable, refused, or broke off: try the next address
            if i:  # this address answered: try it first from now on
                self._urls.insert(0, self._urls.pop(i))
            return body
        failed = AddressRefused if refused == len(failures) else FetchFailed
        raise failed(f"fetch {resource} from {self.publisher} failed: {'; '.join(failures)}")

    async def _prepare(self) -> None:
        """Before each request: nothing over plain HTTP (``Libp2pFetcher`` finds its path)."""

    async def _get_at(
        self,
        base: str,
        resource: str,
        headers: Mapping[str, str],
        cap: int,
        allow_empty: bool,
        keep_gzip: bool,
    ) -> EncodedBody | None:
        """``resource`` from one address: under ``/ipni/v1/ad``, then (a legacy publisher) at
        the root of its path on a 403 or 404; a root that answers 200 is used from then on."""
        root = _root_of(base)
        if self._at_root and root is not None:
            paths = [root]
        elif self._legacy and root is not None:
            paths = [base, root]
        else:
            paths = [base]
        for n, path in enumerate(paths):
            url = f"{path}/{resource}"
            async with self._client.get(url, headers) as response:
                status = response.status
                if n + 1 < len(paths) and status in (403, 404):
                    await _drain(response)
                    continue  # go-libipni: retry without the IPNI path, for legacy HTTP
                body = await _body(response, url, cap, allow_empty, keep_gzip=keep_gzip)
            if path is root and status == 200 and not self._at_root:
                self._at_root = True
                log.info("legacy HTTP publisher: fetching without the IPNI path",
                         publisher=str(self.publisher), url=root)  # fmt: skip
            return body
        raise AssertionError("unreachable: the last path's answer is returned or raised")


def _root_of(base: str) -> str | None:
    """``base`` without its ``/ipni/v1/ad`` suffix (the legacy root); None when it has none."""
    return base[: -len(IPNI_PATH)] if base.endswith(IPNI_PATH) else None


async def _drain(response: ResponseLike) -> None:
    """Read an error body so the connection can be reused; past 64 KiB closing it is cheaper."""
    read = 0
    with contextlib.suppress(ResponseTooLarge):  # too big to drain: dropped
        async for chunk in response:
            read += len(chunk)
            if read > _MAX_HEAD:
                break


async def _body(
    response: ResponseLike, url: str, cap: int, allow_empty: bool, *, keep_gzip: bool = False
) -> EncodedBody | None:
    """A 200's body (decoded from gzip here unless ``keep_gzip``); None for an allowed 204."""
    status = response.status
    if status != 200:
        await _drain(response)
        if status == 404:
            raise BlockNotFound(f"{url}: 404 not found")
        if status == 204 and allow_empty:
            return None
        raise FetchFailed(f"{url}: unexpected HTTP status {status}")
    coding = response.headers.get("content-encoding", "identity").strip().lower()
    if coding not in ("identity", "gzip", "x-gzip"):
        raise FetchFailed(f"{url}: unsupported content-encoding {coding!r}")
    gzipped = coding != "identity"
    length = response.headers.get("content-length", "")
    if not gzipped and length.isdigit() and int(length) > cap:
        raise BlockTooLarge(f"{url}: response body over the {cap} byte cap ({length} bytes)")
    # Kept encoded, a gzip body is bounded by the client's raw cap (``_max_raw``) alone.
    gunzip = GzipDecoder(cap, url) if gzipped and not keep_gzip else None
    limit = _max_raw(cap) if gzipped and keep_gzip else cap
    body = bytearray()
    async for chunk in response:
        body += gunzip.feed(chunk) if gunzip else chunk
        if len(body) > limit:
            raise BlockTooLarge(f"{url}: response body over the {limit} byte cap")
    if gunzip is not None:
        body += gunzip.end()
    return EncodedBody(bytes(body), gzipped and keep_gzip, cap, url)


class Libp2pFetcher(HttpFetcher):
    """ipnisync over libp2p (HTTP/1.1 on ``/http/1.1`` streams) through a py-libp2p host."""

    def __init__(
        self,
        host: IHost,
        publisher: PeerId,
        addrs: Sequence[str] = (),
        *,
        max_block: int = MAX_BLOCK,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo

        from sync.net.p2phttp import libp2p_client

        info = PeerInfo(ID(publisher.raw), [multiaddr.Multiaddr(a) for a in addrs])
        opener = libp2p_client(
            host, info, timeout=timeout, headers=_ACCEPT_GZIP, max_body=_max_raw(max_block)
        )
        base = f"http://{publisher}{IPNI_PATH}"
        super().__init__(publisher, [base], max_block=max_block, opener=opener, legacy=False)
        self._discovered = False

    async def _prepare(self) -> None:
        if not self._discovered:
            path = await self._protocol_path()
            self._urls = [f"http://{self.publisher}{path}"]
            self._discovered = True

    async def _protocol_path(self) -> str:
        """Where the publisher serves ipnisync: its ``/.well-known/libp2p/protocols`` entry for
        ``/ipni/v1/ad`` (go-libp2p's ``NamespacedClient``); ``/ipni/v1/ad`` itself when it
        serves no well-known document (404, 405, 406)."""
        from sync.net.p2phttp import WELL_KNOWN_PROTOCOLS

        url = f"http://{self.publisher}{WELL_KNOWN_PROTOCOLS}"
        try:
            async with self._client.get(url, {"accept": "application/json"}) as response:
                if response.status in (404, 405, 406):
                    await _drain(response)
                    return IPNI_PATH
                got = await _body(response, url, _MAX_HEAD, allow_empty=False)
        except ResponseTooLarge as exc:
            raise BlockTooLarge(str(exc)) from None
        except (TransportFailed, AddressRefused) as exc:
            raise FetchFailed(
                f"fetch {WELL_KNOWN_PROTOCOLS} from {self.publisher}: {exc}"
            ) from None
        assert got is not None
        try:
            meta = json.loads(got.body)
        except ValueError as exc:
            raise FetchFailed(f"{url}: not JSON: {exc}") from None
        entry = meta.get(IPNI_PATH) if isinstance(meta, dict) else None
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not path.startswith("/"):
            raise FetchFailed(f"{url}: the publisher offers no {IPNI_PATH} over libp2p HTTP")
        return path.rstrip("/") or ""


def open_fetcher(
    addrs: Sequence[str],
    publisher: PeerId,
    *,
    host: IHost | None = None,
    max_block: int = MAX_BLOCK,
    timeout: float = FETCH_TIMEOUT,
    refuse_private: bool = False,
) -> HttpFetcher:
    """A fetcher for the publisher at ``addrs``; use it as ``async with open_fetcher(...) as f``.

    Nothing is dialled here: connections open on the first request.  Raises ``BadMultiaddr``
    when no address is usable (libp2p-only addresses need a ``host``), ``AddressRefused`` when
    ``refuse_private`` refused every one.
    """
    endpoint = publisher_endpoint(addrs, publisher, refuse_private=refuse_private)
    if endpoint.urls:
        return HttpFetcher(
            publisher,
            endpoint.urls,
            max_block=max_block,
            timeout=timeout,
            refuse_private=refuse_private,
        )
    if host is None:
        raise BadMultiaddr(f"publisher {publisher} has only libp2p addresses: libp2p needs a host")
    return Libp2pFetcher(host, publisher, endpoint.libp2p, max_block=max_block, timeout=timeout)


def fetcher_factory(
    *,
    host: IHost | None = None,
    max_block: int = MAX_BLOCK,
    timeout: float = FETCH_TIMEOUT,
    refuse_private: bool = False,
) -> Callable[[PeerId, Sequence[str]], HttpFetcher]:
    """``open_fetcher`` with these settings, called as ``factory(publisher, addrs)``."""

    def factory(publisher: PeerId, addrs: Sequence[str]) -> HttpFetcher:
        return open_fetcher(
            addrs,
            publisher,
            host=host,
            max_block=max_block,
            timeout=timeout,
            refuse_private=refuse_private,
        )

    return factory
