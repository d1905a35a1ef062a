"""Background maintenance of the index: the compaction task the daemon runs beside the servers.

``run_compaction`` drives ``IndexStore.compact`` (``store/compaction.py``: a budgeted, resumable
sweep that drops the value keys a removed context left dangling) for as long as it runs.

Rules this module keeps:

- Each step runs in a worker thread (``trio.to_thread.run_sync``), so the event loop, and every
  find or routing request on it, goes on while a step reads and writes.  Reads take no lock in
  the store, so lookups never wait for a step either, whatever thread they run in.
- Steps follow each other at once while a sweep is under way (each one examines at most
  ``budget`` keys, then yields to the loop); when a step reports the sweep done, or that none was
  needed, the task sleeps ``idle`` seconds before looking again.
- Cancellation is honoured between steps: a running step is never abandoned, so the store is
  not closed under it; its cursor is durable, and the next start resumes the sweep.
- Errors from the store propagate: the caller's nursery decides what a failing index means.
"""

from __future__ import annotations

from typing import TypeVar

import trio

from store import IndexStore, KVStore

__all__ = ["run_compaction"]

_Backend = TypeVar("_Backend", bound=KVStore)


async def run_compaction(
    index: IndexStore[_Backend],
    *,
    budget: int = 10_000,
    idle: float = 60.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Compact ``index`` in steps of ``budget`` keys forever, sleeping ``idle`` s after a sweep."""
    if budget < 1:
        raise ValueError("budget must be at least 1")
    if idle < 0:
        raise ValueError("idle must not be negative")
    task_status.started()
    while True:
        progress = await trio.to_thread.run_sync(index.compact, budget)
        if progress.sweep_done:
            await trio.sleep(idle)
