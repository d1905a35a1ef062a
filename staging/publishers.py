"""A publisher's records in the staging area: its cursors, last sync, last error, announces.

Functions over the ``KV`` (``StagingArea`` exposes each as a method of the same name); they
keep no state of their own, and take the time from their caller.

Rules this module keeps:

- A publisher's ``P`` record holds ``latest_scanned`` (moved only by ``commit_walk``, in the walk's
  synced batch), its addresses, last sync time and last error; ``p`` holds ``latest_processed``
  (moved by ``finish`` with each ad's last writes).
- ``record_announce`` makes an accepted announce durable (a synced write) before it is answered;
  ``announces`` lists every one recorded (``StagingArea.unsynced_announces``: those whose head is
  neither staged nor done, what a restarted daemon replays).  ``clear_announce`` drops the
  record once a sync of it was attempted, only if no newer announce replaced it, so replay at
  start-up is bounded by what is still to do.
- State of publishers that never synced is not made durable (``set_publisher_error`` writes only
  for a publisher with a record), so junk announces leave nothing on disk once tried.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from staging import keys
from staging.records import AnnounceRecord, PublisherRecord, decode, encode
from store import KV

__all__ = [
    "announces",
    "clear_announce",
    "has_publisher",
    "known_publishers",
    "latest_processed",
    "publisher",
    "record_announce",
    "set_publisher_error",
]


def _peer_of(key: bytes) -> bytes:
    """The peer ID bytes of a ``P`` or ``A`` key (its length byte, then the ID)."""
    return key[2 : 2 + key[1]]


def publisher(kv: KV, peer: bytes) -> PublisherRecord:
    """The publisher's record (an empty one when it never synced)."""
    key = keys.publisher(peer)
    raw = kv.get(key)
    return PublisherRecord() if raw is None else decode(raw, PublisherRecord, key)


def known_publishers(kv: KV) -> list[tuple[bytes, list[str]]]:
    """Every publisher (peer ID bytes) with a record, and the addresses of its last sync."""
    return [(_peer_of(key), decode(raw, PublisherRecord, key).addrs) for key, raw in kv.scan(b"P")]


def has_publisher(kv: KV, peer: bytes) -> bool:
    """True when the publisher has a durable record (it synced successfully at least once)."""
    return kv.get(keys.publisher(peer)) is not None


def set_publisher_error(kv: KV, peer: bytes, error: str | None, now: float) -> bool:
    """Record the last sync's error on a known publisher (True); an unknown one is skipped."""
    key = keys.publisher(peer)
    raw = kv.get(key)
    if raw is None:
        return False
    prior = decode(raw, PublisherRecord, key)
    kv.put(key, encode(msgspec.structs.replace(prior, last_sync=now, last_error=error)))
    return True


def latest_processed(kv: KV, peer: bytes) -> bytes | None:
    return kv.get(b"p" + keys.peer(peer))


def record_announce(kv: KV, peer: bytes, head: bytes, addrs: Sequence[str], now: float) -> None:
    """Make an accepted announce durable (synced) before it is acknowledged."""
    record = AnnounceRecord(head, list(addrs), now)
    kv.write_batch([(keys.announce(peer), encode(record))], sync=True)


def announces(kv: KV) -> list[tuple[bytes, AnnounceRecord]]:
    """Every recorded announce, by publisher."""
    return [(_peer_of(key), decode(raw, AnnounceRecord, key)) for key, raw in kv.scan(b"A")]


def clear_announce(kv: KV, peer: bytes, head: bytes, addrs: Sequence[str]) -> bool:
    """Drop the publisher's announce record if it is still this one (True if dropped)."""
    key = keys.announce(peer)
    raw = kv.get(key)
    if raw is None:
        return False
    record = decode(raw, AnnounceRecord, key)
    if record.head != head or record.addrs != list(addrs):
        return False
    kv.delete(key)
    return True
