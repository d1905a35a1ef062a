"""How many resources (providers, publishers) a node should own, and what to do to get there.

Pure and sans-I/O: the ownership loop reads the live nodes and the owners from etcd, asks these
functions, then claims and releases.  Rules they keep:
- A node's share is ``ceil(resources / live nodes)``: the shares add up to at least the
  resources, so every resource can be owned, and a node is never asked to hold more than that.
- A node above its share hands back exactly the excess (the same ones each time for the same
  holding: the last by resource name); a node below it takes at most the difference, and only
  resources nobody owns (claiming is a create-if-absent: it never takes one from a live owner).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Rebalance", "fair_share", "plan_rebalance"]


def fair_share(n_resources: int, live_nodes: int) -> int:
    """The most resources one of ``live_nodes`` nodes should own: ``ceil(n / nodes)``."""
    if n_resources < 0:
        raise ValueError(f"resources must be >= 0, not {n_resources}")
    if live_nodes < 1:
        raise ValueError(f"live nodes must be >= 1 (this node is live), not {live_nodes}")
    return -(-n_resources // live_nodes)


@dataclass(frozen=True)
class Rebalance:
    """What one node does: release ``hand_back`` (sorted), then claim up to ``take`` more."""

    hand_back: tuple[str, ...]
    take: int


def plan_rebalance(mine: Iterable[str], share: int) -> Rebalance:
    """The moves that bring a node holding ``mine`` to its ``share``."""
    if share < 0:
        raise ValueError(f"share must be >= 0, not {share}")
    held = sorted(set(mine))
    if len(held) > share:
        return Rebalance(tuple(held[share:]), 0)
    return Rebalance((), share - len(held))
