"""The cluster's key layout (Redis Cluster protocol: a key's slot is CRC16 of its hash tag).

::

    i <multihash>                 set of <vk:8>   index entry: the value keys of a multihash
    s <sid:4>                     <provider>      a provider's short ID, claimed with SET NX
    {p:<provider>}e               decimal         the provider's fence epoch (absent: 0)
    {p:<provider>}s               <sid:4>         the provider's short ID
    {p:<provider>}n               integer         the provider's last value-key counter
    {p:<provider>}c <context ID>  <vk:8>          the value key allocated to a context
    {p:<provider>}v <vk:8>        ValueRecord     a value record
    {p:<provider>}r               ProviderRecord  the registry record
    {p:<provider>}d <ad cid>      DoneMark        an ad's final writes were committed
    {p:<provider>}l               <ad cid>        the provider's latest committed ad
    {p:<provider>}w               integer         the provider's write counter (for ``WAIT``)
    {pub:<publisher>}e            decimal         the publisher's fence epoch (absent: 0)
    {pub:<publisher>}l            <ad cid>        the latest scanned ad (the publisher's cursor)
    {pub:<publisher>}a            Announce        the newest accepted announce
    {pub:<publisher>}w            integer         the publisher's write counter
    {b:<tag>}                     integer         a replication barrier (``WAIT`` behind it)

``<provider>`` in a hash tag is its base58 text (the peer ID's usual form), which holds no brace,
so every key of one provider is in one slot and no two providers' tags collide; a publisher's
keys are in its own ``{pub:...}`` slot, apart from the same peer ID's provider keys.  A value key is
``<sid:4><n:4>``: the provider's short ID (``sha256(salt, provider)[:4]``, the first salt whose
claim is free or already the provider's) and the provider's own counter, so no global counter
is needed and a value key names its provider: a lookup finds the value record's slot from it.

Registry records are listed by ``SCAN MATCH {p:*}r`` on every primary; the pattern also matches
keys whose own tail ends in ``}r`` (a context ID, a value key, an ad CID), so ``registry_owner``
keeps only keys that are exactly ``{p:<base58>}r``.  Publishers are listed the same way, by their
announce records (``SCAN MATCH {pub:*}a``, ``announce_owner``).
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Callable

import base58

__all__ = [
    "ANNOUNCE_MATCH",
    "REGISTRY_MATCH",
    "SLOTS",
    "alloc",
    "announce_owner",
    "barrier",
    "counter",
    "done",
    "epoch",
    "index",
    "latest",
    "provider_sid",
    "pub_announce",
    "pub_cursor",
    "pub_epoch",
    "pub_tag",
    "pub_writes",
    "registry",
    "registry_owner",
    "sid_candidate",
    "sid_claim",
    "slot_of",
    "tag",
    "value",
]

SLOTS = 16384


def tag(provider: bytes) -> bytes:
    """The hash-tagged prefix every key of ``provider`` starts with."""
    return b"{p:" + base58.b58encode(provider) + b"}"


def index(mh: bytes) -> bytes:
    return b"i" + mh


def sid_claim(sid: bytes) -> bytes:
    return b"s" + sid


def sid_candidate(provider: bytes, salt: int) -> bytes:
    return hashlib.sha256(bytes([salt]) + provider).digest()[:4]


def epoch(provider: bytes) -> bytes:
    return tag(provider) + b"e"


def provider_sid(provider: bytes) -> bytes:
    return tag(provider) + b"s"


def counter(provider: bytes) -> bytes:
    return tag(provider) + b"n"


def alloc(provider: bytes, context_id: bytes) -> bytes:
    return tag(provider) + b"c" + context_id


def value(provider: bytes, vk: bytes) -> bytes:
    return tag(provider) + b"v" + vk


def registry(provider: bytes) -> bytes:
    return tag(provider) + b"r"


REGISTRY_MATCH = b"{p:*}r"


def registry_owner(key: bytes) -> bytes | None:
    """The provider whose registry record ``key`` is (None: ``key`` is not a registry key)."""
    return _owner(key, b"{p:", b"r", tag)


def _owner(key: bytes, start: bytes, tail: bytes, tag_of: Callable[[bytes], bytes]) -> bytes | None:
    end = key.find(b"}")
    if not key.startswith(start) or end < 0 or key[end + 1 :] != tail:
        return None
    try:
        peer = base58.b58decode(key[len(start) : end])
    except ValueError:
        return None
    return peer if peer and tag_of(peer) == key[: end + 1] else None


def done(provider: bytes, ad: bytes) -> bytes:
    return tag(provider) + b"d" + ad


def latest(provider: bytes) -> bytes:
    return tag(provider) + b"l"


def pub_tag(publisher: bytes) -> bytes:
    """The hash-tagged prefix every key of ``publisher``'s state starts with."""
    return b"{pub:" + base58.b58encode(publisher) + b"}"


def pub_epoch(publisher: bytes) -> bytes:
    return pub_tag(publisher) + b"e"


def pub_cursor(publisher: bytes) -> bytes:
    return pub_tag(publisher) + b"l"


def pub_announce(publisher: bytes) -> bytes:
    return pub_tag(publisher) + b"a"


def pub_writes(publisher: bytes) -> bytes:
    return pub_tag(publisher) + b"w"


ANNOUNCE_MATCH = b"{pub:*}a"


def announce_owner(key: bytes) -> bytes | None:
    """The publisher whose announce record ``key`` is (None: ``key`` is not one)."""
    return _owner(key, b"{pub:", b"a", pub_tag)


def slot_of(key: bytes) -> int:
    """The key's hash slot, as a cluster computes it (``CLUSTER KEYSLOT``)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key, 0) % SLOTS


_BARRIER_TAGS: list[bytes] = []


def barrier(slot: int) -> bytes:
    """A key in ``slot`` for a replication barrier (the table is built once, ~0.2 s)."""
    if not _BARRIER_TAGS:
        table: list[bytes | None] = [None] * SLOTS
        missing, n = SLOTS, 0
        while missing:
            text = str(n).encode()
            s = binascii.crc_hqx(text, 0) % SLOTS
            if table[s] is None:
                table[s] = text
                missing -= 1
            n += 1
        _BARRIER_TAGS.extend(t for t in table if t is not None)
    return b"{" + _BARRIER_TAGS[slot] + b"}b"
