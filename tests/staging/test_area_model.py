"""Hypothesis state machine: the staging area against a plain list model, with reopen steps."""

from __future__ import annotations

import shutil
import tempfile
from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from staging import Entry, StagedAd, StagingArea
from store import KV

PROVIDERS = [b"\x00\x05prov1", b"\x00\x05prov2", b"\x00\x05prov3"]
PUBLISHER = b"\x00\x04pubA"


class StagingModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.kv = KV(self.dir)
        self.area = StagingArea(self.kv)
        # provider -> FIFO of stacks; a stack is a list of cids, newest first (pops from the end)
        self.model: dict[bytes, deque[list[bytes]]] = {p: deque() for p in PROVIDERS}
        self.done: set[bytes] = set()
        self.abandoned: set[bytes] = set()
        self.counter = 0
        self.last: dict[bytes, Entry] = {}  # the entry last popped, per provider

    def teardown(self) -> None:
        self.kv.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _cids(self, n: int) -> list[bytes]:
        out = []
        for _ in range(n):
            self.counter += 1
            out.append(b"cid-" + self.counter.to_bytes(4, "big"))
        return out

    def _spill(self, counts: dict[bytes, int]) -> tuple[int, int, dict[bytes, list[bytes]]]:
        base = self.area.commit_seq()
        walk = self.area.begin_walk(PUBLISHER, ["/ip4/127.0.0.1/tcp/1/http"], b"head")
        lists = {p: self._cids(n) for p, n in counts.items()}
        items = [
            (p, pos, StagedAd(cid=cid, raw=b"raw" + cid))
            for p, cids in lists.items()
            for pos, cid in enumerate(cids)
        ]
        self.area.spill(walk, items)
        return walk, base, lists

    @rule(counts=st.dictionaries(st.sampled_from(PROVIDERS), st.integers(0, 4), max_size=3))
    def commit_walk(self, counts: dict[bytes, int]) -> None:
        walk, base, lists = self._spill(counts)
        kept = self.area.commit_walk(walk, {p: len(c) for p, c in lists.items()}, base_seq=base)
        assert kept == {p: len(c) for p, c in lists.items()}
        for p, cids in sorted(lists.items()):
            if cids:
                self.model[p].append(cids)

    @rule(counts=st.dictionaries(st.sampled_from(PROVIDERS), st.integers(1, 3), max_size=2))
    def crash_mid_walk(self, counts: dict[bytes, int]) -> None:
        _, _, lists = self._spill(counts)
        for cids in lists.values():
            self.abandoned.update(cids)
        self.reopen()
        self.area.cleanup_open_walks()

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def pop(self, data: st.DataObject) -> None:
        provider = data.draw(st.sampled_from([p for p, s in self.model.items() if s]))
        entry = self.area.next_entry(provider)
        assert entry is not None
        if (last := self.last.get(provider)) is not None:  # the worker's read, by key
            assert self.area.next_after(last) == entry
        stacks = self.model[provider]
        expected = stacks[0].pop()
        if not stacks[0]:
            stacks.popleft()
        assert entry.ad.cid == expected
        self.area.finish(entry, ok=True)
        self.done.add(expected)
        self.last[provider] = entry

    @rule()
    def reopen(self) -> None:
        self.kv.close()
        self.kv = KV(self.dir)
        self.area = StagingArea(self.kv)

    @invariant()
    def listing_matches_model(self) -> None:
        assert self.area.providers() == sorted(p for p, s in self.model.items() if s)
        for provider, stacks in self.model.items():
            listed = [
                [ad.cid for _, ad in self.area.entries(provider, seq)]
                for seq, _ in self.area.stacks(provider)
            ]
            assert listed == [list(reversed(s)) for s in stacks]

    @invariant()
    def known_means_staged_or_done(self) -> None:
        for stacks in self.model.values():
            for stack in stacks:
                assert all(self.area.is_known(cid) for cid in stack)
        assert all(self.area.is_known(cid) for cid in self.done)
        assert not any(self.area.is_known(cid) for cid in self.abandoned)


StagingModel.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestStagingModel = StagingModel.TestCase
