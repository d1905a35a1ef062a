"""``ClusterBackend``: the ``IndexBackend`` on a Redis Cluster protocol server (Valkey, Redis), via
coredis, which runs natively under trio (anyio).  The key layout is ``store/cluster/keys.py``.

Rules this module keeps:

- Index entries are ``SADD i<mh> <vk>``, pipelined per chunk: idempotent, add-only, not fenced.
  A chunk returns once every touched primary has passed it to a replica: after the chunk, a
  barrier write on each of those primaries is followed by ``WAIT`` (a primary's replication
  stream is ordered, so a replica that has the barrier has the chunk).  Without it, a failover
  could lose index entries of an ad whose done marker survived.
- Every other write is one Lua script in the provider's slot (``{p:<provider>}``), followed by
  ``WAIT <wait_replicas> <wait_ms>`` on the same connection (coredis ``ensure_replication``); a
  replica that did not acknowledge is ``NotReplicated``.  Each script bumps the provider's write
  counter, so a replayed no-op still gives ``WAIT`` a write to wait for.  A fenced script checks
  ``epoch == token`` (as canonical decimal strings, exact for any int64) before writing anything;
  ``commit_ad`` also checks that the ad is not done and that the previous ad is.
- A publisher's state (cursor, newest accepted announce) is written by the same script in the
  publisher's slot (``{pub:<publisher>}``), its epoch check against the publisher's epoch
  (``set_publisher_epoch`` is ``SET_EPOCH`` there), then ``WAIT`` like every control write.
- Value keys are allocated per provider (``keys.py``: short ID + the provider's counter): no
  global counter, no lock.
- Third-party exceptions are translated here (``translated``): connection failures, timeouts,
  ``CLUSTERDOWN``, ``TRYAGAIN``, redirections that did not settle, ``READONLY`` (a demoted
  primary) and the I/O errors under them are ``StoreUnavailable`` (transient); a replica that did
  not acknowledge is ``NotReplicated``; any other server error is ``StoreRejected`` (permanent).
  Every operation is retried on ``StoreUnavailable`` with backoff for at most ``retry_for``
  seconds (each is idempotent), then the error is raised; before each retry the slot layout is
  read again (after a failover, coredis's pipelines would go on to the dead primary).
- ``providers`` (and ``publishers``, by ``{pub:*}a``) is a ``SCAN MATCH {p:*}r COUNT scan_count``
  over every primary of the layout (never ``KEYS``: a scan is bounded batches that do not block
  the server), the keys de-duplicated (a scan may return a key twice) and filtered to exact
  registry keys, then their records read in pipelined batches of ``scan_count``. A transient
  failure restarts the listing.
- Lookups are two pipelined round trips (``SMEMBERS``, then the value records not cached).  A
  value record read is cached for at most ``record_ttl`` seconds (and dropped at once when this
  backend writes it): another node's removal of a context is served for at most that bound.
  Short IDs are immutable once claimed and cached for good.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import coredis
import coredis.exceptions as cx
import msgspec
import trio
from coredis.commands.script import Script
from coredis.connection import TCPLocation

from store.cluster import keys
from store.cluster.protocol import (
    AdCommit,
    Announce,
    CommitOutcome,
    DoneMark,
    PutValue,
    RemoveValue,
    ValueWrite,
)
from store.errors import (
    AdOutOfOrder,
    NotReplicated,
    StoreError,
    StoreFenced,
    StoreRejected,
    StoreUnavailable,
)
from store.index import ProviderRecord, ValueRecord

__all__ = [
    "COMMIT",
    "EPOCH_CHECK",
    "ClusterBackend",
    "open_cluster",
    "parse_url",
    "translate",
    "translated",
]

T = TypeVar("T")
VK = 8
CACHE_LIMIT = 100_000

# Every write of a provider: KEYS[1] epoch, [2] done(ad), [3] done(previous), [4] latest,
# [5] the write counter, [6..] written keys.  ARGV[1] token ('' unfenced), [2] 'a' (an ad's final
# writes) or 'w', [3] '1' when there is a previous ad, [4] the done record, [5] the ad's CID,
# [i] (i >= 6) the write of KEYS[i]: 'S' .. value, or 'D' (delete).
EPOCH_CHECK = """
if ARGV[1] ~= '' then
  local epoch = redis.call('GET', KEYS[1]) or '0'
  if epoch ~= ARGV[1] then return {'fenced', epoch} end
end
"""
COMMIT = (
    EPOCH_CHECK
    + """
if ARGV[2] == 'a' then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('INCR', KEYS[5])
    return {'already'}
  end
  if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then return {'order'} end
end
for i = 6, #KEYS do
  local op = ARGV[i]
  if string.sub(op, 1, 1) == 'S' then
    redis.call('SET', KEYS[i], string.sub(op, 2))
  else
    redis.call('DEL', KEYS[i])
  end
end
if ARGV[2] == 'a' then
  redis.call('SET', KEYS[2], ARGV[4])
  redis.call('SET', KEYS[4], ARGV[5])
end
redis.call('INCR', KEYS[5])
return {'ok'}
"""
)

# KEYS[1] epoch, [2] the write counter; ARGV[1] the new epoch (canonical decimal).
SET_EPOCH = """
local cur = redis.call('GET', KEYS[1]) or '0'
local new = ARGV[1]
local lower = (#new < #cur) or (#new == #cur and new < cur)
if lower then return {'fenced', cur} end
if new ~= cur then redis.call('SET', KEYS[1], new) end
redis.call('INCR', KEYS[2])
return {'ok', new}
"""

# KEYS[1] the allocation, [2] the provider's counter, [3] the write counter; ARGV[1] the short ID.
ALLOCATE = """
local vk = redis.call('GET', KEYS[1])
if not vk then
  local n = redis.call('INCR', KEYS[2])
  if n > 4294967295 then return redis.error_reply('value keys of this provider exhausted') end
  vk = ARGV[1] .. string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256)
  redis.call('SET', KEYS[1], vk)
end
redis.call('INCR', KEYS[3])
return vk
"""

_TRANSIENT: tuple[type[BaseException], ...] = (
    cx.ConnectionError,  # ProtocolError, BusyLoadingError too
    cx.ClusterDownError,
    cx.TryAgainError,
    cx.AskError,  # MovedError too: a redirection the client did not settle
    cx.ClusterError,
    cx.ClusterRoutingError,
    cx.ReadOnlyError,
    TimeoutError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)

# The client's own errors that a retry cannot fix (a bug: keys of two slots in one request).
_PERMANENT_CLUSTER = (cx.ClusterCrossSlotError, cx.ClusterTransactionError, cx.ClusterResponseError)

_enc = msgspec.msgpack.Encoder()
_value_dec = msgspec.msgpack.Decoder(ValueRecord)
_provider_dec = msgspec.msgpack.Decoder(ProviderRecord)
_done_dec = msgspec.msgpack.Decoder(DoneMark)
_announce_dec = msgspec.msgpack.Decoder(Announce)


def _leaf(exc: BaseException) -> BaseException:
    """The first non-group exception of a group (coredis runs task groups inside)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def translate(exc: BaseException) -> StoreError | None:
    """The store error a third-party exception stands for (None: not the client's)."""
    leaf = _leaf(exc)
    if isinstance(leaf, StoreError):
        return leaf
    if isinstance(leaf, cx.ReplicationError):
        return NotReplicated(str(leaf))
    if isinstance(leaf, _TRANSIENT) or (
        isinstance(leaf, cx.RedisClusterError) and not isinstance(leaf, _PERMANENT_CLUSTER)
    ):  # "cannot be connected", a layout that did not settle: the cluster is not there yet
        return StoreUnavailable(f"{type(leaf).__name__}: {leaf}")
    if isinstance(leaf, cx.RedisError):
        return StoreRejected(f"{type(leaf).__name__}: {leaf}")
    return None


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Raise the store error a client exception stands for; anything else passes unchanged."""
    try:
        yield
    except StoreError:
        raise
    except (Exception, BaseExceptionGroup) as exc:
        error = translate(exc)
        if error is None:
            raise
        raise error from exc


def parse_url(url: str) -> list[tuple[str, int]]:
    """``redis://h:p,h:p,...`` (or bare ``h:p,...``) as (host, port) pairs."""
    rest = url.split("://", 1)[1] if "://" in url else url
    out = []
    for item in rest.strip("/").split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"not host:port: {item!r} in {url!r}")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError(f"no node in {url!r}")
    return out


def _ops(provider: bytes, values: Sequence[ValueWrite]) -> list[tuple[bytes, bytes | None]]:
    out: list[tuple[bytes, bytes | None]] = []
    for v in values:
        key = keys.value(provider, v.vk)
        if isinstance(v, PutValue):
            out.append((key, _enc.encode(ValueRecord(provider, v.context_id, v.metadata))))
        else:
            out += [(key, None), (keys.alloc(provider, v.context_id), None)]
    return out


@dataclass
class ClusterBackend:
    """The ``IndexBackend`` on a Redis Cluster; made by ``open_cluster``."""

    client: coredis.RedisCluster[bytes]
    wait_replicas: int = 1
    wait_ms: int = 100
    retry_for: float = 20.0
    record_ttl: float = 1.0
    clock: Callable[[], float] = time.monotonic
    scan_count: int = 1000  # keys a SCAN step asks for, and records read per pipeline
    _commit: Script[bytes] = field(init=False, repr=False)
    _set_epoch: Script[bytes] = field(init=False, repr=False)
    _allocate: Script[bytes] = field(init=False, repr=False)
    _sids: dict[bytes, bytes] = field(default_factory=dict, init=False, repr=False)
    _own_sid: dict[bytes, bytes] = field(default_factory=dict, init=False, repr=False)
    _records: dict[bytes, tuple[float, ValueRecord | None]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        self._commit = self.client.register_script(COMMIT)
        self._set_epoch = self.client.register_script(SET_EPOCH)
        self._allocate = self.client.register_script(ALLOCATE)

    # --- plumbing ----------------------------------------------------------------------------

    async def _do(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op``, translated, retrying a transient failure for at most ``retry_for`` s."""
        deadline = trio.current_time() + self.retry_for
        delay = 0.05
        while True:
            try:
                with translated():
                    return await op()
            except StoreUnavailable:
                if trio.current_time() + delay > deadline:
                    raise
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)
            await self._refresh_layout()

    async def _refresh_layout(self) -> None:
        """Read the cluster's slot layout again (after a failover the client's is stale, and
        coredis refreshes it only after errors its pipelines do not report)."""
        try:
            with translated():
                await self.client.connection_pool.cluster_layout.initialize()
        except StoreUnavailable:
            pass  # the next try fails (or not) on its own; the layout is read again after it

    @contextlib.contextmanager
    def _replicated(self) -> Iterator[None]:
        if self.wait_replicas <= 0:
            yield
            return
        with self.client.ensure_replication(self.wait_replicas, self.wait_ms):
            yield

    async def _script(self, script: Script[bytes], key_list: list[bytes], args: list[bytes]) -> Any:
        async def run() -> Any:
            with self._replicated():
                return await script(keys=key_list, args=args)

        return await self._do(run)

    async def _write(
        self,
        provider: bytes,
        token: int | None,
        ops: list[tuple[bytes, bytes | None]],
        commit: AdCommit | None = None,
    ) -> bytes:
        """One fenced (or unfenced) script of the provider's writes; its status."""
        done = keys.done(provider, commit.ad) if commit else keys.epoch(provider)
        previous = commit.previous if commit else None
        key_list = [
            keys.epoch(provider),
            done,
            keys.done(provider, previous) if previous is not None else done,
            keys.latest(provider),
            keys.tag(provider) + b"w",
            *(k for k, _ in ops),
        ]
        args = [
            b"" if token is None else _token(token),
            b"a" if commit else b"w",
            b"1" if previous is not None else b"0",
            _enc.encode(commit.done) if commit else b"",
            commit.ad if commit else b"",
            *(b"D" if v is None else b"S" + v for _, v in ops),
        ]
        for key, _ in ops:
            if key.startswith(keys.tag(provider) + b"v"):
                self._records.pop(key[-VK:], None)
        reply = await self._script(self._commit, key_list, args)
        status = reply[0]
        if status == b"fenced":
            raise StoreFenced(provider, token or 0, int(reply[1]))
        if status == b"order":
            assert commit is not None and commit.previous is not None
            raise AdOutOfOrder(provider, commit.ad, commit.previous)
        assert isinstance(status, bytes)
        return status

    # --- value keys and index entries --------------------------------------------------------

    async def _sid(self, provider: bytes) -> bytes:
        """The provider's short ID, claimed now if it has none."""
        sid = self._own_sid.get(provider)
        if sid is not None:
            return sid
        own = keys.provider_sid(provider)
        sid = await self._do(lambda: self.client.get(own))
        if sid is None:
            claimed = await self._claim(provider)
            sid = await self._do(lambda: self._set_once(own, claimed))
        self._own_sid[provider] = sid
        self._sids[sid] = provider
        return sid

    async def _set_once(self, key: bytes, value: bytes) -> bytes:
        """``SET key value NX``, replicated; the value the key holds after it."""
        with self._replicated():
            if await self.client.set(key, value, condition=coredis.PureToken.NX):
                return value
            current = await self.client.get(key)
            if current == value:  # ours already (a retry): rewrite it so WAIT has a write
                await self.client.set(key, value)
            return value if current is None else current

    async def _claim(self, provider: bytes) -> bytes:
        for salt in range(256):
            sid = keys.sid_candidate(provider, salt)
            claim = keys.sid_claim(sid)
            holder = await self._do(functools.partial(self._set_once, claim, provider))
            if holder == provider:
                return sid
        raise StoreRejected("no free short ID for the provider in 256 tries")

    async def allocate(self, provider: bytes, context_id: bytes) -> bytes:
        sid = await self._sid(provider)
        key_list = [
            keys.alloc(provider, context_id),
            keys.counter(provider),
            keys.tag(provider) + b"w",
        ]
        vk = await self._script(self._allocate, key_list, [sid])
        assert isinstance(vk, bytes) and len(vk) == VK
        return vk

    async def allocated(self, provider: bytes, context_id: bytes) -> bytes | None:
        key = keys.alloc(provider, context_id)
        return await self._do(lambda: self.client.get(key))

    async def add_multihashes(self, vk: bytes, multihashes: Sequence[bytes]) -> None:
        if not multihashes:
            return
        index_keys = [keys.index(mh) for mh in multihashes]

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in index_keys:
                    pipe.sadd(key, [vk])
            await self._barrier(index_keys)

        await self._do(run)

    async def _barrier(self, written: Sequence[bytes]) -> None:
        """Wait until a replica of each primary ``written`` touched has passed those writes."""
        if self.wait_replicas <= 0:
            return
        layout = self.client.connection_pool.cluster_layout
        slots: dict[str, int] = {}
        for key in written:
            slot = keys.slot_of(key)
            slots.setdefault(layout.node_for_slot(slot).name, slot)
        with self._replicated():
            for slot in slots.values():
                await self.client.incr(keys.barrier(slot))

    # --- one provider's writes ---------------------------------------------------------------

    async def put_value(
        self,
        vk: bytes,
        provider: bytes,
        context_id: bytes,
        metadata: bytes,
        *,
        token: int | None = None,
    ) -> None:
        await self._write(provider, token, _ops(provider, [PutValue(vk, context_id, metadata)]))

    async def remove_value(
        self, vk: bytes, provider: bytes, context_id: bytes, *, token: int | None = None
    ) -> None:
        await self._write(provider, token, _ops(provider, [RemoveValue(vk, context_id)]))

    async def put_provider(
        self, provider: bytes, record: ProviderRecord, *, token: int | None = None
    ) -> None:
        await self._write(provider, token, [(keys.registry(provider), _enc.encode(record))])

    async def epoch(self, provider: bytes) -> int:
        key = keys.epoch(provider)
        raw = await self._do(lambda: self.client.get(key))
        return 0 if raw is None else int(raw)

    async def set_epoch(self, provider: bytes, token: int) -> None:
        key_list = [keys.epoch(provider), keys.tag(provider) + b"w"]
        reply = await self._script(self._set_epoch, key_list, [_token(token)])
        if reply[0] == b"fenced":
            raise StoreFenced(provider, token, int(reply[1]))

    async def commit_ad(self, commit: AdCommit, token: int) -> CommitOutcome:
        p = commit.provider
        ops = _ops(p, commit.values)
        if commit.record is not None:
            ops.append((keys.registry(p), _enc.encode(commit.record)))
        status = await self._write(p, token, ops, commit)
        return "already" if status == b"already" else "applied"

    # --- reads -------------------------------------------------------------------------------

    async def value(self, vk: bytes) -> ValueRecord | None:
        return (await self._values([vk], cached=False))[vk]

    async def provider(self, provider: bytes) -> ProviderRecord | None:
        key = keys.registry(provider)
        raw = await self._do(lambda: self.client.get(key))
        return None if raw is None else _provider_dec.decode(raw)

    async def providers(self) -> list[tuple[bytes, ProviderRecord]]:
        return await self._do(self._providers)

    async def _scan(
        self, match: bytes, owner_of: Callable[[bytes], bytes | None]
    ) -> list[tuple[bytes, bytes]]:
        """(key, owner) of every key ``match`` finds on every primary that ``owner_of`` keeps,
        each once, in owner byte order."""
        found: dict[bytes, bytes] = {}
        for primary in self.client.primaries:
            async with primary:
                cursor: int | None = None
                while cursor != 0:
                    cursor, batch = await primary.scan(
                        cursor or 0, match=match, count=self.scan_count
                    )
                    for key in batch:
                        owner = owner_of(key)
                        if owner is not None:
                            found[key] = owner
        return sorted(found.items(), key=lambda item: item[1])

    async def _providers(self) -> list[tuple[bytes, ProviderRecord]]:
        listed = await self._scan(keys.REGISTRY_MATCH, keys.registry_owner)
        out: list[tuple[bytes, ProviderRecord]] = []
        for at in range(0, len(listed), self.scan_count):
            chunk = listed[at : at + self.scan_count]
            async with self.client.pipeline(transaction=False) as pipe:
                pending = [pipe.get(key) for key, _ in chunk]
            for (_, provider), reply in zip(chunk, pending, strict=True):
                raw = await reply
                if raw is not None:  # removed since the scan
                    out.append((provider, _provider_dec.decode(raw)))
        return out

    async def publishers(self) -> list[bytes]:
        async def run() -> list[bytes]:
            return [p for _, p in await self._scan(keys.ANNOUNCE_MATCH, keys.announce_owner)]

        return await self._do(run)

    async def lookup(self, multihash: bytes) -> list[ValueRecord]:
        key = keys.index(multihash)
        members = await self._do(lambda: self.client.smembers(key))
        return (await self._resolve([members]))[0]

    async def lookup_many(self, multihashes: Sequence[bytes]) -> list[list[ValueRecord]]:
        if not multihashes:
            return []
        index_keys = [keys.index(mh) for mh in multihashes]

        async def run() -> list[set[bytes]]:
            async with self.client.pipeline(transaction=False) as pipe:
                pending = [pipe.smembers(key) for key in index_keys]
            return [await r for r in pending]

        return await self._resolve(await self._do(run))

    async def _resolve(self, sets: Sequence[set[bytes]]) -> list[list[ValueRecord]]:
        wanted = {vk for members in sets for vk in members}
        records = await self._values(sorted(wanted), cached=True)
        out = []
        for members in sets:
            found = [records[vk] for vk in sorted(members)]
            out.append([r for r in found if r is not None])
        return out

    async def _values(self, vks: Sequence[bytes], cached: bool) -> dict[bytes, ValueRecord | None]:
        """The value records of ``vks`` (None: gone), from the cache while fresh."""
        now = self.clock()
        out: dict[bytes, ValueRecord | None] = {}
        missing = []
        for vk in vks:
            hit = self._records.get(vk) if cached else None
            if hit is not None and hit[0] > now:
                out[vk] = hit[1]
            else:
                missing.append(vk)
        if not missing:
            return out
        await self._learn_sids({vk[:4] for vk in missing})
        known = [vk for vk in missing if vk[:4] in self._sids]
        out.update((vk, None) for vk in missing if vk[:4] not in self._sids)
        record_keys = [keys.value(self._sids[vk[:4]], vk) for vk in known]

        async def run() -> list[bytes | None]:
            async with self.client.pipeline(transaction=False) as pipe:
                pending = [pipe.get(key) for key in record_keys]
            return [await r for r in pending]

        raws = await self._do(run) if record_keys else []
        if len(self._records) + len(known) > CACHE_LIMIT:
            self._records.clear()
        expires = now + self.record_ttl
        for vk, raw in zip(known, raws, strict=True):
            record = None if raw is None else _value_dec.decode(raw)
            out[vk] = record
            if self.record_ttl > 0:
                self._records[vk] = (expires, record)
        return out

    async def _learn_sids(self, sids: set[bytes]) -> None:
        unknown = [sid for sid in sids if sid not in self._sids]
        if not unknown:
            return
        claim_keys = [keys.sid_claim(sid) for sid in unknown]

        async def run() -> list[bytes | None]:
            async with self.client.pipeline(transaction=False) as pipe:
                pending = [pipe.get(key) for key in claim_keys]
            return [await r for r in pending]

        for sid, provider in zip(unknown, await self._do(run), strict=True):
            if provider is not None:
                self._sids[sid] = provider

    async def done(self, provider: bytes, ad: bytes) -> DoneMark | None:
        key = keys.done(provider, ad)
        raw = await self._do(lambda: self.client.get(key))
        return None if raw is None else _done_dec.decode(raw)

    async def latest(self, provider: bytes) -> bytes | None:
        key = keys.latest(provider)
        return await self._do(lambda: self.client.get(key))

    # --- a publisher's state -----------------------------------------------------------------

    async def _publisher_write(
        self, publisher: bytes, token: int | None, key: bytes, value: bytes
    ) -> None:
        """``COMMIT`` as a plain write ('w': KEYS[2..4] unread, so the epoch key stands in)."""
        epoch = keys.pub_epoch(publisher)
        key_list = [epoch, epoch, epoch, epoch, keys.pub_writes(publisher), key]
        args = [b"" if token is None else _token(token), b"w", b"0", b"", b"", b"S" + value]
        reply = await self._script(self._commit, key_list, args)
        if reply[0] == b"fenced":
            raise StoreFenced(publisher, token or 0, int(reply[1]))

    async def publisher_epoch(self, publisher: bytes) -> int:
        key = keys.pub_epoch(publisher)
        raw = await self._do(lambda: self.client.get(key))
        return 0 if raw is None else int(raw)

    async def set_publisher_epoch(self, publisher: bytes, token: int) -> None:
        key_list = [keys.pub_epoch(publisher), keys.pub_writes(publisher)]
        reply = await self._script(self._set_epoch, key_list, [_token(token)])
        if reply[0] == b"fenced":
            raise StoreFenced(publisher, token, int(reply[1]))

    async def put_cursor(self, publisher: bytes, ad: bytes, *, token: int | None = None) -> None:
        await self._publisher_write(publisher, token, keys.pub_cursor(publisher), ad)

    async def cursor(self, publisher: bytes) -> bytes | None:
        key = keys.pub_cursor(publisher)
        return await self._do(lambda: self.client.get(key))

    async def put_announce(
        self, publisher: bytes, announce: Announce, *, token: int | None = None
    ) -> None:
        value = _enc.encode(announce)
        await self._publisher_write(publisher, token, keys.pub_announce(publisher), value)

    async def announce(self, publisher: bytes) -> Announce | None:
        key = keys.pub_announce(publisher)
        raw = await self._do(lambda: self.client.get(key))
        return None if raw is None else _announce_dec.decode(raw)

    async def aclose(self) -> None:
        """Nothing to release here: ``open_cluster`` closes the client."""


def _token(token: int) -> bytes:
    if not 0 <= token < 2**63:
        raise ValueError(f"a fencing token is a non-negative int64, not {token}")
    return str(token).encode()


@contextlib.asynccontextmanager
async def open_cluster(
    nodes: Sequence[tuple[str, int]],
    *,
    wait_replicas: int = 1,
    wait_ms: int = 100,
    retry_for: float = 20.0,
    record_ttl: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    scan_count: int = 1000,
    connect_timeout: float = 2.0,
    stream_timeout: float = 5.0,
) -> AsyncIterator[ClusterBackend]:
    """A ``ClusterBackend`` on the cluster that ``nodes`` (any of its nodes) belong to."""
    client: coredis.RedisCluster[bytes] = coredis.RedisCluster(
        startup_nodes=[TCPLocation(host, port) for host, port in nodes],
        decode_responses=False,
        connect_timeout=connect_timeout,
        stream_timeout=stream_timeout,
    )
    try:
        async with _opened(client, retry_for) as opened:
            yield ClusterBackend(
                opened,
                wait_replicas=wait_replicas,
                wait_ms=wait_ms,
                retry_for=retry_for,
                record_ttl=record_ttl,
                clock=clock,
                scan_count=scan_count,
            )
    except BaseExceptionGroup as group:
        # The client runs a task group around the body: a lone exception of the body (a
        # StoreFenced, a cancellation) comes out as it was raised, not wrapped in a group.
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, BaseExceptionGroup):
            raise
        raise leaf from leaf.__cause__


@contextlib.asynccontextmanager
async def _opened(
    client: coredis.RedisCluster[bytes], retry_for: float
) -> AsyncIterator[coredis.RedisCluster[bytes]]:
    async with contextlib.AsyncExitStack() as stack:
        deadline = trio.current_time() + retry_for
        while True:
            try:
                with translated():
                    await stack.enter_async_context(client)
                break
            except StoreUnavailable:
                if trio.current_time() > deadline:
                    raise
                await trio.sleep(0.2)
        yield client
