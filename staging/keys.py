"""The staging area's LevelDB key layout: every listing is a prefix scan.

::

    W <walk id:8>                       WalkRecord    a walk: open while spilling, then committed
    w <walk id:8> <provider> <pos:8>    StagedAd      one ad of a walk; pos 0 is the newest
    S <provider> <commit seq:8>         StackHeader   a committed stack: FIFO by commit seq
    T <provider> <commit seq:8>         StackState    its count, attempts, last error (read by key)
    k <ad cid> <walk id:8>              KnownRecord   an ad staged by a walk (once it commits);
                                        empty once the ad is done (kept: see ``area``)
    d <ad cid>                          DoneRecord    the ad was processed (ok or with an error)
    e <ad cid>                          bytes         entries progress of a partly applied ad
    P <publisher>                       PublisherRecord  latest scanned, addresses, last error
    p <publisher>                       ad cid        the publisher's latest processed ad
    A <publisher>                       AnnounceRecord   the newest accepted announce
    F                                   8 bytes       frozen since (a float's bits; absent: not)
    C                                   8 bytes       the last commit seq
    I                                   8 bytes       the last walk id

``<provider>``, ``<publisher>`` and ``<ad cid>`` are bytes behind a one-byte length, so no one's
keys prefix another's.  Several walks may hold the same ad (two publishers, one chain): each has
its own ``k`` entry, and an ad is known when any committed walk holds it.  Integers are
big-endian, so key order is numeric order.
"""

from __future__ import annotations

__all__ = [
    "COMMIT_SEQ",
    "FROZEN",
    "WALK_ID",
    "announce",
    "done",
    "known",
    "known_prefix",
    "peer",
    "progress",
    "publisher",
    "stack",
    "stack_prefix",
    "stack_state",
    "staged",
    "staged_prefix",
    "u64",
    "walk",
]

COMMIT_SEQ = b"C"
FROZEN = b"F"
WALK_ID = b"I"


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def peer(raw: bytes) -> bytes:
    if not 0 < len(raw) < 256:
        raise ValueError("peer ID bytes must be 1..255 long")
    return bytes([len(raw)]) + raw


def walk(walk_id: int) -> bytes:
    return b"W" + u64(walk_id)


def staged_prefix(walk_id: int, provider: bytes) -> bytes:
    return b"w" + u64(walk_id) + peer(provider)


def staged(walk_id: int, provider: bytes, pos: int) -> bytes:
    return staged_prefix(walk_id, provider) + u64(pos)


def stack_prefix(provider: bytes | None = None) -> bytes:
    return b"S" + (peer(provider) if provider is not None else b"")


def stack(provider: bytes, seq: int) -> bytes:
    return stack_prefix(provider) + u64(seq)


def stack_state(provider: bytes, seq: int) -> bytes:
    return b"T" + peer(provider) + u64(seq)


def known_prefix(cid: bytes) -> bytes:
    return b"k" + peer(cid)


def known(cid: bytes, walk_id: int) -> bytes:
    return known_prefix(cid) + u64(walk_id)


def done(cid: bytes) -> bytes:
    return b"d" + cid


def progress(cid: bytes) -> bytes:
    return b"e" + cid


def publisher(raw: bytes) -> bytes:
    return b"P" + peer(raw)


def announce(raw: bytes) -> bytes:
    return b"A" + peer(raw)
