"""Sending announces over HTTP, as go-libipni's ``announce/httpsender`` does.

Rules this module keeps:

- ``PUT`` to each indexer URL; a URL with no path gets ``/announce``.  The body is the CBOR tuple
  with ``Content-Type: application/octet-stream`` by default, or the JSON form with
  ``application/json``.  200 and 204 are success.
- Every address in the message must already carry ``/p2p/<publisher>`` (``Message.create``
  adds it): over HTTP that is how the indexer learns who the publisher is.
- One failing indexer does not stop the others: each URL gets its own ``AnnounceResult``; network
  failures are reported as results, never raised (the caller logs them and carries on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
import trio

from sync.announce.message import Message

__all__ = ["AnnounceResult", "announce_url", "send_http_announce"]

DEFAULT_PATH = "/announce"


@dataclass(frozen=True, slots=True)
class AnnounceResult:
    url: str
    ok: bool
    status: int | None = None
    error: str | None = None


def announce_url(url: str) -> str:
    """``url`` with ``/announce`` as its path when it has none."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"announce URL must be http(s)://host[:port][/path], not {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path=DEFAULT_PATH)
    return urlunsplit(parts)


async def send_http_announce(
    client: httpx.AsyncClient, urls: Sequence[str], message: Message, *, as_json: bool = False
) -> list[AnnounceResult]:
    """Announce ``message`` to every URL concurrently; one result per URL, in order."""
    body = message.to_json() if as_json else message.to_cbor()
    content_type = "application/json" if as_json else "application/octet-stream"
    results: list[AnnounceResult | None] = [None] * len(urls)

    async def one(i: int, url: str) -> None:
        try:
            target = announce_url(url)
            response = await client.put(
                target, content=body, headers={"content-type": content_type}
            )
        except (httpx.HTTPError, ValueError) as exc:
            results[i] = AnnounceResult(url, False, error=f"{type(exc).__name__}: {exc}")
            return
        ok = response.status_code in (200, 204)
        error = None if ok else f"{response.status_code}: {response.text.strip()[:200]}"
        results[i] = AnnounceResult(target, ok, response.status_code, error)

    async with trio.open_nursery() as nursery:
        for i, url in enumerate(urls):
            nursery.start_soon(one, i, url)
    return [r for r in results if r is not None]
