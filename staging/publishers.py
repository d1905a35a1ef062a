"""A publisher's records in the staging area: its cursors, last sync, last error, announces.

Rules this module keeps:

- A publisher's ``P`` record holds ``latest_scanned`` (moved only by ``commit_walk``, in the walk's
  synced batch), its addresses, last sync time and last error; ``p`` holds ``latest_processed``
  (moved by ``finish`` with each ad's last writes).
- ``record_announce`` makes an accepted announce durable (a synced write) before it is answered;
  ``unsynced_announces`` lists those whose head is neither staged nor done: what a restarted
  daemon replays.  ``clear_announce`` drops the record once a sync of it was attempted, only
  if no newer announce replaced it, so replay at start-up is bounded by what is still to do.
- State of publishers that never synced is not made durable (``set_publisher_error`` writes only
  for a publisher with a record), so junk announces leave nothing on disk once tried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from staging import keys
from staging.records import AnnounceRecord, PublisherRecord, decode, encode
from store import KV

__all__ = ["PublisherRecords"]


class PublisherRecords:
    """Part of ``StagingArea``: the publisher side of the staging keys."""

    kv: KV
    clock: Callable[[], float]

    def is_known(self, cid: bytes) -> bool:
        raise NotImplementedError

    def _get(self, key: bytes, kind: type[object]) -> object | None:
        raise NotImplementedError

    def publisher(self, publisher: bytes) -> PublisherRecord:
        record = self._get(keys.publisher(publisher), PublisherRecord)
        return record if isinstance(record, PublisherRecord) else PublisherRecord()

    def known_publishers(self) -> list[tuple[bytes, list[str]]]:
        """Every publisher (peer ID bytes) with a record, and the addresses of its last sync."""
        return [
            (key[2 : 2 + key[1]], decode(raw, PublisherRecord, key).addrs)
            for key, raw in self.kv.scan(b"P")
        ]

    def record_announce(self, publisher: bytes, head: bytes, addrs: Sequence[str]) -> None:
        """Make an accepted announce durable (synced) before it is acknowledged."""
        record = AnnounceRecord(head, list(addrs), self.clock())
        self.kv.write_batch([(keys.announce(publisher), encode(record))], sync=True)

    def unsynced_announces(self) -> list[tuple[bytes, AnnounceRecord]]:
        """Recorded announces whose head is not yet staged or done: to replay after a restart."""
        out = []
        for key, raw in self.kv.scan(b"A"):
            record = decode(raw, AnnounceRecord, key)
            if not self.is_known(record.head):
                out.append((key[2 : 2 + key[1]], record))
        return out

    def clear_announce(self, publisher: bytes, head: bytes, addrs: Sequence[str]) -> bool:
        """Drop the publisher's announce record if it is still this one (True if dropped)."""
        key = keys.announce(publisher)
        raw = self.kv.get(key)
        if raw is None:
            return False
        record = decode(raw, AnnounceRecord, key)
        if record.head != head or record.addrs != list(addrs):
            return False
        self.kv.delete(key)
        return True

    def has_publisher(self, publisher: bytes) -> bool:
        """True when the publisher has a durable record (it synced successfully at least once)."""
        return self.kv.get(keys.publisher(publisher)) is not None

    def set_publisher_error(self, publisher: bytes, error: str | None) -> bool:
        """Record the last sync's error on a known publisher (True); an unknown one is skipped."""
        raw = self.kv.get(keys.publisher(publisher))
        if raw is None:
            return False
        prior = decode(raw, PublisherRecord, keys.publisher(publisher))
        updated = msgspec.structs.replace(prior, last_sync=self.clock(), last_error=error)
        self.kv.put(keys.publisher(publisher), encode(updated))
        return True

    def latest_processed(self, publisher: bytes) -> bytes | None:
        return self.kv.get(b"p" + keys.peer(publisher))
