"""A response body as it came off the wire, and decoding its gzip under a cap.

Rules this module keeps:

- Output is limited as it is made (``zlib``'s ``max_length``): a body that decodes past ``cap``
  stops with ``BlockTooLarge`` once ``cap + 1`` bytes are out, whatever its ratio, so a gzip
  bomb costs its cap, not its expansion.
- A body that is not gzip is ``FetchFailed`` ("bad gzip body"), one that ends before its gzip
  member does is ``FetchFailed`` ("truncated gzip body"); bytes after the member are ignored.
  No ``zlib.error`` escapes.
- ``EncodedBody`` is a plain value (picklable): a body can be decoded in another process
  (``indexer.ingest.offload``) with the same cap and the same errors as here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from sync.errors import BlockTooLarge, FetchFailed

__all__ = ["EncodedBody", "GzipDecoder", "gunzip"]


class GzipDecoder:
    """Decodes one gzip stream fed in pieces; ``where`` (a URL) names it in errors."""

    __slots__ = ("_cap", "_where", "_z", "size")

    def __init__(self, cap: int, where: str) -> None:
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._cap = cap
        self._where = where
        self.size = 0  # bytes decoded so far

    def feed(self, data: bytes) -> bytes:
        """The bytes ``data`` decodes to; ``BlockTooLarge`` once past the cap."""
        try:
            out = self._z.decompress(data, self._cap + 1 - self.size)
        except zlib.error as exc:
            raise FetchFailed(f"{self._where}: bad gzip body: {exc}") from None
        return self._count(out)

    def end(self) -> bytes:
        """The last decoded bytes; ``FetchFailed`` if the stream stopped short."""
        try:
            out = self._z.flush()
        except zlib.error as exc:
            raise FetchFailed(f"{self._where}: bad gzip body: {exc}") from None
        out = self._count(out)
        if not self._z.eof:
            raise FetchFailed(f"{self._where}: truncated gzip body")
        return out

    def _count(self, out: bytes) -> bytes:
        self.size += len(out)
        if self.size > self._cap:
            raise BlockTooLarge(f"{self._where}: response body over the {self._cap} byte cap")
        return out


def gunzip(body: bytes, cap: int, where: str) -> bytes:
    """``body`` decoded from gzip, at most ``cap`` bytes (the rules above)."""
    decoder = GzipDecoder(cap, where)
    head = decoder.feed(body)
    return head + decoder.end()


@dataclass(frozen=True, slots=True)
class EncodedBody:
    """A 200 response's body as received: gzip-encoded (``gzipped``) or as is; ``cap`` is the
    most it may decode to, ``where`` its URL (for errors)."""

    body: bytes
    gzipped: bool
    cap: int
    where: str

    def decode(self) -> bytes:
        """The body's bytes, decoded from gzip if it was encoded."""
        if not self.gzipped:
            return self.body
        return gunzip(self.body, self.cap, self.where)
