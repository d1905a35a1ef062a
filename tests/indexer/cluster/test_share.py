"""Shares and rebalancing (``indexer.cluster.share``): pure, checked with Hypothesis.

The last test plays whole clusters: nodes with any holding, acting in any order, each releasing
its excess and claiming only unowned resources, converge in two rounds to every resource owned
exactly once and no node above its share.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indexer.cluster.share import Rebalance, fair_share, plan_rebalance

names = st.text("abcdefgh0123", min_size=1, max_size=4)


@given(st.integers(0, 10_000), st.integers(1, 200))
def test_fair_share_covers_every_resource_and_is_the_least_that_does(n: int, nodes: int) -> None:
    share = fair_share(n, nodes)
    assert share * nodes >= n
    assert share == 0 or (share - 1) * nodes < n


def test_fair_share_refuses_nonsense() -> None:
    assert fair_share(0, 3) == 0
    assert fair_share(10, 3) == 4
    with pytest.raises(ValueError, match="live nodes"):
        fair_share(10, 0)
    with pytest.raises(ValueError, match="resources"):
        fair_share(-1, 3)
    with pytest.raises(ValueError, match="share"):
        plan_rebalance(["a"], -1)


@given(st.lists(names, max_size=30), st.integers(0, 40))
def test_plan_moves_exactly_to_the_share(mine: list[str], share: int) -> None:
    plan = plan_rebalance(mine, share)
    held = set(mine)
    assert set(plan.hand_back) <= held
    assert len(set(plan.hand_back)) == len(plan.hand_back)
    assert len(held) - len(plan.hand_back) == min(len(held), share)
    assert plan.take == max(0, share - len(held))
    assert not (plan.hand_back and plan.take)
    assert plan == plan_rebalance(reversed(mine), share)  # the same holding, the same moves


def test_plan_hands_back_the_last_by_name() -> None:
    assert plan_rebalance(["c", "a", "d", "b"], 2) == Rebalance(("c", "d"), 0)
    assert plan_rebalance(["a"], 3) == Rebalance((), 2)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[int, list[int], list[list[int]]]:
    """(nodes, the first owner of each resource (-1: none), the order nodes act in per round)."""
    n_nodes = draw(st.integers(1, 8))
    n = draw(st.integers(0, 60))
    owner = draw(st.lists(st.integers(-1, n_nodes - 1), min_size=n, max_size=n))
    order = st.permutations(list(range(n_nodes)))
    return n_nodes, owner, [draw(order), draw(order)]


@given(clusters())
def test_a_cluster_converges_in_two_rounds(case: tuple[int, list[int], list[list[int]]]) -> None:
    n_nodes, owner, rounds = case
    share = fair_share(len(owner), n_nodes)
    for order in rounds:
        for node in order:
            mine = [f"r{i:03}" for i, o in enumerate(owner) if o == node]
            plan = plan_rebalance(mine, share)
            for name in plan.hand_back:
                owner[int(name[1:])] = -1
            free = [i for i, o in enumerate(owner) if o == -1][: plan.take]
            for i in free:  # a claim is create-if-absent: only unowned resources
                owner[i] = node
            held = sum(1 for o in owner if o == node)
            assert held <= share
    assert -1 not in owner
    for node in range(n_nodes):
        assert sum(1 for o in owner if o == node) <= share
