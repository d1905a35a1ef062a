"""The four invariants, checked on a database a crash (or a kill) left behind."""

from __future__ import annotations

from staging import StagingArea
from store import KV
from sync import Advertisement, Link, decode_node

__all__ = ["check_invariants"]


def check_invariants(kv: KV, chain: list[tuple[Link, set[bytes]]], publisher: bytes) -> None:
    staging = StagingArea(kv)
    done = [staging.done(cid.raw) is not None for cid, _ in chain]
    # 1. Done ads are a prefix of the chain (oldest first), and no ad beyond the first not-done
    #    one has left any index writes.
    first_open = done.index(False) if False in done else len(done)
    assert all(done[:first_open]) and not any(done[first_open:]), done
    indexed = {k[1:35] for k, _ in kv.scan(b"i")}
    for _, mhs in chain[first_open + 1 :]:
        assert not (mhs & indexed), "an ad newer than the one in progress has index writes"
    # 4. The cursor moved only with its stacks: every ad up to it is staged or done.
    cursor = staging.publisher(publisher).latest_scanned
    if cursor is not None:
        upto = [c.raw for c, _ in chain].index(cursor)
        assert all(staging.is_known(c.raw) for c, _ in chain[: upto + 1])
    # Staged ads decode (nothing half-written).
    for provider in staging.providers():
        for seq, _ in staging.stacks(provider):
            for _, ad in staging.entries(provider, seq):
                Advertisement.from_node(decode_node(ad.raw, Link(ad.cid).codec))
