"""The ipnisync wire constants both sides share (go-libipni ``dagsync/ipnisync``).

Rules: constants only, no I/O; the publisher's ``routes`` and the indexer's ``fetch`` and
``maurl`` read them from here, so the client side never imports the server's module.
"""

from __future__ import annotations

from sync.model.cid import DAG_CBOR, DAG_JSON

__all__ = ["BLOCK_CACHE", "HEAD_CACHE", "IPNI_PATH", "MEDIA_TYPES"]

IPNI_PATH = "/ipni/v1/ad"
"""The path prefix of every ipnisync route, and the libp2p HTTP protocol ID (``ProtocolID``)."""

HEAD_CACHE = (("cache-control", "no-cache, no-store, must-revalidate"),)
"""A head changes: never cache it."""

BLOCK_CACHE = (("cache-control", "public, max-age=29030400, immutable"),)
"""A block is named by its hash: cache it forever."""

MEDIA_TYPES = {DAG_JSON: "application/vnd.ipld.dag-json", DAG_CBOR: "application/vnd.ipld.dag-cbor"}
"""The media type a block is served with, by its CID's codec."""
