"""A sans-I/O walk over an advertisement's entries: an EntryChunk chain or an IPLD HAMT set.

The walk never fetches anything.  ``next_block()`` names the block it needs, the caller fetches
it and hands the raw bytes to ``feed``, which returns that block's multihashes.  ``progress`` is
the state after the last fed block: persist it in the same write batch as that block's
multihashes, and ``EntriesWalk(root, progress=...)`` continues exactly there.

Rules this module keeps:

- ``feed`` only accepts the link ``next_block()`` returned (anything else is a ``ValueError``: a
  programmer error), hashes the raw bytes with ``check_block`` before decoding, and validates
  every multihash as one whole multihash (``SchemaError`` otherwise) before returning any.
- The root's shape picks the kind, as storetheindex does: a map with a ``hamt`` key is an IPLD
  HAMT root, anything else must be an EntryChunk.  A chunk's ``Next`` must be a chunk; a HAMT's
  links must be HAMT nodes.  The kind is kept in ``EntriesProgress.hamt``.
- HAMT layout, as go-ipld-adl-hamt's ``schema.ipldsch``: the root is ``{hashAlg: Int, bucketSize:
  Int, hamt: HashMapNode}`` (exactly those keys); a node is the tuple ``[map Bytes, data
  [Element]]``; an element is a link to another node or a non-empty bucket ``[[key Bytes, value
  Any], ...]``.  ``map`` is a bitfield of ``2**bitWidth`` bits, so its length is a power of two,
  and it has exactly one set bit per data element.  Keys are the multihashes; values are ignored
  (IPNI writes ``true``; storetheindex reads only the keys).  Keys are not re-hashed: placement
  is not checked, so ``hashAlg`` may be any Int.
- A HAMT is walked depth-first: a node's children are pushed so its first child comes next, and
  ``pending`` (a stack, next block last) holds at most depth x fan-out links.  A chain holds at
  most one.
- Limits: at most ``max_blocks`` blocks are ever fed.  The walk raises ``ChainTooLong`` as soon as
  the blocks done plus the links pending exceed it, so ``pending`` never outgrows the limit.  A
  chain cannot revisit a block (a block cannot contain its own hash).
- A HAMT is a tree (a node's place fixes the hash prefix of the keys under it), so a node that
  links one child twice, or links a node already pending or visited, is malformed:
  ``RepeatedLink``, raised when that node is fed (none of its multihashes is returned).  This
  stops the amplification of a few blocks into many fetches (one child linked 256 times per
  level).  The links seen are kept for one run of the walk (~100 bytes per HAMT node); a walk
  resumed from its progress starts them afresh from its pending links, so a node visited before
  the interruption is not recognised after it -- the block budget below still bounds that.
- Budget (``EntriesBudget``), so an ad costs blocks and time in proportion to what it yields:
  ``next_block`` raises ``EntriesOverBudget`` (a ``ChainTooLong``) rather than ask for a block
  when the blocks done exceed the multihashes yielded by ``max_idle`` or more (both counters are
  in the persisted progress, so the rule holds across resumes: no wire change), or when this
  run has lasted more than ``seconds + seconds_per_multihash`` x the multihashes it yielded, on
  the injected clock (``time.monotonic``; a fake in tests).  A legit HAMT's interior nodes
  yield nothing, but a run of them is at most its height, and it typically has fewer nodes than
  keys (tested: bucketSize 1, bitWidth 3 stays within its height); a chunk yields its entries.
  Multihashes are counted as yielded, repeats included: the cost is linear in what the publisher
  serves.  The deadline is checked between blocks: one fetch may overrun it by at most the
  fetcher's own timeout.
- ``parse_block`` does ``feed``'s checking and decoding of a chain block or root ahead of time
  (a prefetcher does it while the previous ad is written), and ``parse_encoded`` from a body
  still gzip-encoded, in another process (sorting a chunk's entries, the bytes not kept);
  ``feed`` takes either result in place of the bytes, for the link it was made for.
- ``NO_ENTRIES`` as the root is an empty walk.  Errors are the ``sync.errors`` types
  (``HashMismatch``, ``UnknownCodec``, ``DecodeError``, ``SchemaError``, ``RepeatedLink``,
  ``ChainTooLong``, ``EntriesOverBudget``), all ``Retry.NEVER`` but ``HashMismatch``
  (``LIMITED``); no third-party exception escapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from sync.errors import (
    BadCid,
    ChainTooLong,
    DecodeError,
    EntriesOverBudget,
    RepeatedLink,
    SchemaError,
)
from sync.model.blocks import decode_chunk_fast, decode_node
from sync.model.cid import Link, check_block, check_multihash
from sync.model.fields import check_keys, describe
from sync.model.schema import NO_ENTRIES, EntryChunk
from sync.net.gzipbody import EncodedBody

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_MAX_BLOCKS",
    "EntriesBudget",
    "EntriesProgress",
    "EntriesWalk",
    "ParsedBlock",
    "parse_block",
    "parse_encoded",
]

DEFAULT_MAX_BLOCKS = 1_000_000


class EntriesBudget(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an ad's entries may cost beyond what they yield (see the module rules).

    A msgspec Struct: it decodes strictly from the daemon's config (``[ingest.entries_budget]``).
    """

    max_idle: Annotated[
        int,
        msgspec.Meta(
            description="blocks done may exceed the multihashes yielded by less than this"
        ),
    ] = 256
    seconds: Annotated[
        float,
        msgspec.Meta(description="seconds one run of the walk may take before it yields anything"),
    ] = 120.0
    seconds_per_multihash: Annotated[
        float,
        msgspec.Meta(
            description="more seconds per multihash yielded in this run "
            "(a 16,384-entry chunk earns 164 s)"
        ),
    ] = 0.01

    def __post_init__(self) -> None:
        if self.max_idle < 1 or self.seconds < 0 or self.seconds_per_multihash < 0:
            raise ValueError("an entries budget needs max_idle >= 1 and non-negative times")


DEFAULT_BUDGET = EntriesBudget()

_Count = Annotated[int, msgspec.Meta(ge=0)]


class _Wire(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """The persisted form of ``EntriesProgress``: a msgpack array, version first."""

    version: Literal[1]
    pending: list[bytes]
    blocks_done: _Count
    multihashes_done: _Count
    hamt: bool


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Wire)


@dataclass(frozen=True, slots=True)
class EntriesProgress:
    """Where a walk stands: the links still to visit (a stack, next last) and what was done.

    ``hamt`` is True once the root turned out to be a HAMT (it is False before the root is fed).
    """

    pending: tuple[Link, ...]
    blocks_done: int = 0
    multihashes_done: int = 0
    hamt: bool = False

    def __post_init__(self) -> None:
        if self.blocks_done < 0 or self.multihashes_done < 0:
            raise ValueError("progress counters must be non-negative")
        if not self.hamt and len(self.pending) > 1:
            raise ValueError("an entry chunk chain has at most one pending link")
        if self.blocks_done == 0 and (self.hamt or self.multihashes_done):
            raise ValueError("no block done, yet a kind or multihashes are recorded")

    def encode(self) -> bytes:
        """Compact bytes (msgpack) for persisting next to the multihashes they account for."""
        wire = _Wire(
            1, [p.raw for p in self.pending], self.blocks_done, self.multihashes_done, self.hamt
        )
        return _encoder.encode(wire)

    @classmethod
    def decode(cls, raw: bytes) -> EntriesProgress:
        """The progress ``encode`` wrote; ``DecodeError`` for anything else."""
        try:
            wire = _decoder.decode(raw)
            pending = tuple(Link.from_bytes(p) for p in wire.pending)
            return cls(pending, wire.blocks_done, wire.multihashes_done, wire.hamt)
        except (msgspec.DecodeError, BadCid, ValueError) as exc:
            raise DecodeError(f"not a valid entries progress record: {exc}") from None


@dataclass(frozen=True, eq=False)
class ParsedBlock:
    """A chain block or root, hash-checked and decoded (``parse_block``), for ``feed``.

    ``raw`` is None for a block decoded in another process (``parse_encoded``), whose bytes
    were not sent back: ``body`` is what was received then, and ``data()`` decodes it again.
    """

    link: Link
    raw: bytes | None
    node: EntryChunk | dict[str, Any]
    body: EncodedBody | None = None

    def data(self) -> bytes:
        """The block's bytes (the ones its hash was checked on)."""
        if self.raw is not None:
            return self.raw
        assert self.body is not None, "a ParsedBlock keeps its bytes or its body"
        return self.body.decode()


def parse_block(link: Link, raw: bytes) -> ParsedBlock:
    """Check ``raw`` against ``link`` and decode it as an EntryChunk (validated) or HAMT root."""
    check_block(link, raw)
    node = _chunk_or_root(link, raw)
    if isinstance(node, EntryChunk):
        node.validate()
    return ParsedBlock(link, raw, node)


def parse_encoded(link: Link, body: EncodedBody) -> ParsedBlock:
    """``parse_block`` of ``body`` decoded (its cap and errors), with a chunk's entries sorted;
    neither the bytes nor the body are in the result (``raw`` None: the caller adds ``body``).

    Made to run in another process (``indexer.ingest.offload``): everything it takes and returns
    pickles, its errors are the same ``sync.errors`` classes, and sending the bytes back would
    cost the receiver more than the decode.  The sort is work taken off the process that
    writes: the entries are a set to the index, which writes them in key order.
    """
    node = parse_block(link, body.decode()).node
    if isinstance(node, EntryChunk) and len(node.entries) > 1:
        node = EntryChunk(tuple(sorted(node.entries)), node.next)
    return ParsedBlock(link, None, node)


class EntriesWalk:
    """Walks the entries behind ``root``, one block at a time, without doing any I/O."""

    __slots__ = (
        "_blocks",
        "_budget",
        "_clock",
        "_hamt",
        "_max",
        "_mhs",
        "_run_mhs",
        "_seen",
        "_stack",
        "_start",
    )

    def __init__(
        self,
        root: Link,
        *,
        progress: EntriesProgress | None = None,
        max_blocks: int = DEFAULT_MAX_BLOCKS,
        budget: EntriesBudget = DEFAULT_BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_blocks < 1:
            raise ValueError("max_blocks must be at least 1")
        start = () if root == NO_ENTRIES else (root,)
        if progress is None:
            progress = EntriesProgress(start)
        elif progress.blocks_done == 0 and progress.pending != start:
            raise ValueError(f"progress does not belong to a walk from {root}")
        self._stack = list(progress.pending)
        self._blocks = progress.blocks_done
        self._mhs = progress.multihashes_done
        self._hamt = progress.hamt
        self._max = max_blocks
        self._budget = budget
        self._clock = clock
        self._start = clock()
        self._run_mhs = 0
        self._seen = {link.raw for link in self._stack}  # HAMT links pending or visited

    def next_block(self) -> Link | None:
        """The next block to fetch and ``feed``; None once the walk is finished."""
        if not self._stack:
            return None
        if self._blocks + len(self._stack) > self._max:
            raise ChainTooLong(
                f"entries need more than {self._max} blocks "
                f"({self._blocks} done, {len(self._stack)} pending)"
            )
        budget = self._budget
        if self._blocks - self._mhs >= budget.max_idle:
            raise EntriesOverBudget(
                f"entries cost {self._blocks} blocks for {self._mhs} multihashes "
                f"(at most {budget.max_idle - 1} blocks more than multihashes)"
            )
        elapsed = self._clock() - self._start
        allowed = budget.seconds + budget.seconds_per_multihash * self._run_mhs
        if elapsed > allowed:
            raise EntriesOverBudget(
                f"entries took {elapsed:.0f} s for {self._run_mhs} multihashes "
                f"(at most {allowed:.0f} s for that many)"
            )
        return self._stack[-1]

    @property
    def finished(self) -> bool:
        return not self._stack

    @property
    def in_hamt(self) -> bool:
        """True once the root was a HAMT: the next blocks are HAMT nodes, not ``parse_block``'s
        kinds (a chain block or a root)."""
        return self._hamt

    @property
    def progress(self) -> EntriesProgress:
        """The state after the last fed block (persist it with that block's multihashes)."""
        return EntriesProgress(tuple(self._stack), self._blocks, self._mhs, self._hamt)

    def feed(
        self, link: Link, raw: bytes | None = None, parsed: ParsedBlock | None = None
    ) -> list[bytes]:
        """Check and decode the block ``next_block()`` asked for; return its multihashes.

        Give either its ``raw`` bytes, or ``parsed``: ``parse_block`` (or ``parse_encoded``)
        of them done earlier for this link, whose decoding is used unless the walk is inside a
        HAMT (its bytes, ``parsed.data()``, are then checked and decoded as a HAMT node).
        """
        expected = self.next_block()
        if expected is None or link != expected:
            raise ValueError(f"fed {link}, but the walk needs {expected}")
        if parsed is not None and parsed.link != link:
            raise ValueError(f"fed {link} with the parsed block of {parsed.link}")
        if (raw is None) == (parsed is None):
            raise ValueError("feed takes a block's raw bytes or its parsed block, not both")
        is_root = self._blocks == 0
        is_hamt = self._hamt
        if is_hamt:
            raw = parsed.data() if parsed is not None else raw
            assert raw is not None
            check_block(link, raw)
            mhs, children = _hamt_node(decode_node(raw, link.codec), "HashMapNode")
        else:
            if parsed is None:
                assert raw is not None
                parsed = parse_block(link, raw)
            node = parsed.node
            if isinstance(node, EntryChunk):
                mhs = list(node.entries)
                children = [] if node.next is None else [node.next]
            elif is_root:
                mhs, children = _hamt_root(node)
                is_hamt = True
            else:
                raise SchemaError("a chunk's Next links to a HAMT root, not to an EntryChunk")
        pending = len(self._stack) - 1 + len(children)
        if self._blocks + 1 + pending > self._max:
            raise ChainTooLong(
                f"entries need more than {self._max} blocks "
                f"({self._blocks + 1} done, {pending} pending)"
            )
        if is_hamt and children:
            self._check_tree(link, children)
        self._stack.pop()
        self._stack.extend(reversed(children))
        self._blocks += 1
        self._mhs += len(mhs)
        self._run_mhs += len(mhs)
        self._hamt = is_hamt
        return mhs

    def _check_tree(self, link: Link, children: list[Link]) -> None:
        """``RepeatedLink`` unless ``children`` are distinct and new to this run of the walk."""
        raws = {child.raw for child in children}
        if len(raws) != len(children):
            raise RepeatedLink(f"HAMT node {link} links a child more than once")
        if not raws.isdisjoint(self._seen):
            again = next(child for child in children if child.raw in self._seen)
            raise RepeatedLink(f"HAMT node {link} links {again}, already linked in this HAMT")
        self._seen |= raws


def _chunk_or_root(link: Link, raw: bytes) -> EntryChunk | dict[str, Any]:
    """The block as an EntryChunk, or as a decoded map when it has a ``hamt`` key."""
    fast = decode_chunk_fast(link.codec, raw)
    if fast is not None:
        return fast
    node = decode_node(raw, link.codec)
    if isinstance(node, dict) and "hamt" in node:
        return node
    return EntryChunk.from_node(node)


def _hamt_root(node: Any) -> tuple[list[bytes], list[Link]]:
    what = "HashMapRoot"
    root = check_keys(node, what, {"hashAlg", "bucketSize", "hamt"}, set())
    for name in ("hashAlg", "bucketSize"):
        if type(root[name]) is not int:
            raise SchemaError(f"{what}.{name} must be an int, got {describe(root[name])}")
    return _hamt_node(root["hamt"], f"{what}.hamt")


def _hamt_node(node: Any, what: str) -> tuple[list[bytes], list[Link]]:
    if type(node) is not list or len(node) != 2:
        raise SchemaError(f"{what} must be a list [map, data], got {describe(node)}")
    bitmap, data = node
    if type(bitmap) is not bytes:
        raise SchemaError(f"{what}.map must be bytes, got {describe(bitmap)}")
    if type(data) is not list:
        raise SchemaError(f"{what}.data must be a list, got {describe(data)}")
    size = len(bitmap)
    if size == 0 or size & (size - 1):
        raise SchemaError(f"{what}.map is {size} bytes, not a power of two")
    bits = int.from_bytes(bitmap, "big").bit_count()
    if bits != len(data):
        raise SchemaError(f"{what}.map has {bits} bits set for {len(data)} data elements")
    mhs: list[bytes] = []
    children: list[Link] = []
    for i, element in enumerate(data):
        if type(element) is Link:
            children.append(element)
        elif type(element) is list and element:
            for j, entry in enumerate(element):
                where = f"{what}.data[{i}][{j}]"
                if type(entry) is not list or len(entry) != 2:
                    raise SchemaError(f"{where} must be a list [key, value], got {describe(entry)}")
                mhs.append(_multihash(entry[0], f"{where}.key"))
        else:
            raise SchemaError(f"{what}.data[{i}] must be a link or a non-empty bucket")
    return mhs, children


def _multihash(key: Any, what: str) -> bytes:
    if type(key) is not bytes:
        raise SchemaError(f"{what} must be bytes, got {describe(key)}")
    try:
        check_multihash(key)
    except BadCid as exc:
        raise SchemaError(f"{what} is not a multihash: {exc}") from None
    return key
