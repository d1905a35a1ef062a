"""Both ``KVStore`` backends against a dict model, driven by a Hypothesis state machine.

Every step applies the same operation to LevelDB, to ``MemoryKV`` and to the model, and every
read (get, prefix scans forward and reverse, from a start key) must agree across all three.
The model is written independently of ``store/protocol.py``: member sets are Python sets.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from store import KV, Add, AddEach, Discard, KVStore, MemoryKV, StoreError, Write

# Plain keys and member-set keys ("S" + a byte) never meet; members are 2 bytes.
plain_keys = st.lists(st.sampled_from([0x00, 0x01, 0x61, 0xFE, 0xFF]), max_size=3).map(bytes)
set_keys = st.sampled_from([b"S\x00", b"S\x01", b"S\xff"])
members = st.sampled_from([b"\x00\x00", b"\x00\xff", b"ab", b"\xff\xff"])
values = st.binary(max_size=4)
prefixes = st.lists(st.sampled_from([0x00, 0x53, 0x61, 0xFF]), max_size=2).map(bytes)
writes = st.one_of(
    st.tuples(plain_keys, values),
    st.tuples(plain_keys, st.none()),
    st.tuples(set_keys, st.builds(Add, members)),
    st.tuples(set_keys, st.builds(Discard, members, st.one_of(st.none(), plain_keys))),
    # (b"S", AddEach(m, suffixes)) adds m to the sets at b"S" + suffix: the same set keys
    st.tuples(
        st.just(b"S"),
        st.builds(AddEach, members, st.lists(st.sampled_from([b"\x00", b"\x01", b"\xff"]))),
    ),
)


class Model:
    def __init__(self) -> None:
        self.plain: dict[bytes, bytes] = {}
        self.sets: dict[bytes, set[bytes]] = {}

    def apply(self, batch: list[Write]) -> None:
        plain, sets = dict(self.plain), {k: set(v) for k, v in self.sets.items()}
        for key, op in batch:
            if isinstance(op, Add):
                sets.setdefault(key, set()).add(op.member)
            elif isinstance(op, AddEach):
                for suffix in op.suffixes:
                    sets.setdefault(key + suffix, set()).add(op.member)
            elif isinstance(op, Discard):
                if op.unless is None or op.unless not in plain:
                    sets.get(key, set()).discard(op.member)
            elif op is None:
                plain.pop(key, None)
            else:
                plain[key] = op
        self.plain, self.sets = plain, {k: v for k, v in sets.items() if v}

    def items(self) -> list[tuple[bytes, bytes]]:
        everything = dict(self.plain)
        everything.update((k, b"".join(sorted(v))) for k, v in self.sets.items())
        return sorted(everything.items())


def failing(batch: list[Write], at: int) -> Iterator[Write]:
    yield from batch[:at]
    raise RuntimeError("producer failed")


class KVMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="kv-model-"))
        self.stores: list[KVStore] = [KV(self.dir / "db"), MemoryKV()]
        self.model = Model()

    def teardown(self) -> None:
        for store in self.stores:
            store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(batch=st.lists(writes, max_size=8))
    def write_batch(self, batch: list[Write]) -> None:
        for store in self.stores:
            store.write_batch(iter(batch))
        self.model.apply(batch)

    @rule(batch=st.lists(writes, min_size=1, max_size=6), data=st.data())
    def failing_batch(self, batch: list[Write], data: st.DataObject) -> None:
        at = data.draw(st.integers(0, len(batch)))
        for store in self.stores:
            with pytest.raises(RuntimeError):
                store.write_batch(failing(batch, at))

    @rule(key=set_keys, value=st.binary(min_size=1, max_size=3).filter(lambda v: len(v) % 2))
    def not_a_member_set(self, key: bytes, value: bytes) -> None:
        for store in self.stores:
            store.put(key, value)
            with pytest.raises(StoreError):
                store.write_batch([(b"a", b"x"), (key, Add(b"zz"))])
            with pytest.raises(StoreError):  # the same through a bulk add, applied apart
                store.write_batch([(b"a", b"x"), (key[:1], AddEach(b"zz", [key[1:], b"\x02"]))])
            assert store.get(b"a") != b"x" or self.model.plain.get(b"a") == b"x"
            store.delete(key)
        self.model.sets.pop(key, None)

    @rule(key=st.one_of(plain_keys, set_keys))
    def get(self, key: bytes) -> None:
        expected = dict(self.model.items()).get(key)
        assert [store.get(key) for store in self.stores] == [expected, expected]

    @rule(prefix=prefixes, reverse=st.booleans(), start=st.one_of(st.none(), plain_keys))
    def scan(self, prefix: bytes, reverse: bool, start: bytes | None) -> None:
        expected = [(k, v) for k, v in self.model.items() if k.startswith(prefix)]
        if start is not None:
            expected = [(k, v) for k, v in expected if (k <= start if reverse else k >= start)]
        if reverse:
            expected.reverse()
        for store in self.stores:
            assert list(store.scan(prefix, reverse=reverse, start=start)) == expected

    @invariant()
    def everything_agrees(self) -> None:
        expected = self.model.items()
        assert [list(store.scan(b"")) for store in self.stores] == [expected, expected]


TestKVModel = KVMachine.TestCase
TestKVModel.settings = settings(max_examples=100, stateful_step_count=25, deadline=None)
