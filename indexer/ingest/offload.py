"""Decoding big entries blocks in worker processes, off the process that writes LevelDB.

A 16,384-entry chunk costs the process that fetched it ~13 ms of GIL-holding CPU before its
write can start: gunzip, hash check, decode, validation, and the store's sort of its entries.
That process also writes LevelDB, and one GIL serializes the two.  ``Offload`` sends a big body,
still gzip-encoded, to a worker process (trio-parallel) that does all of it
(``sync.walk.entries.parse_encoded``) and sends the ``ParsedBlock`` back.

Rules this module keeps:

- A body of at least ``min_bytes`` (as received) goes to a worker; a smaller one is decoded here
  (a round trip to a worker costs more than a small block's decode).  Either way the block is
  checked and decoded by the same code with the same cap, so the result and the errors are the
  same: the worker's errors come back as the same ``sync.errors`` classes.
- A worker that dies under a block (killed, out of memory, or a crash of a decoder's C code
  that the block caused; trio-parallel's ``BrokenWorkerError``) fails that block with
  ``DecoderDied`` (retried a limited number of times, a warning each time): never decoded here
  instead, so a block that crashes the decoder crashes only a worker, never the daemon.  The
  next block gets a new worker.  The cap bounds what any block can make a worker allocate
  (``sync.net.gzipbody``).  Any other failure that is not the block's (a ``SyncError``): no
  worker could be started (out of processes or descriptors), or a bug, is logged with its
  traceback and the block decoded here, so ingest goes on without workers rather than stall.
- At most ``processes`` blocks are in workers at once (a ``CapacityLimiter``); workers start on
  first use, exit after ``IDLE_TIMEOUT`` unused, and all are stopped when ``open_offload``'s
  block ends (the daemon's); a decode is not cancelled half-way (a worker's end cancels its
  prefetches): it finishes first, in tens of milliseconds for a block at the 4 MiB cap,
  rather than kill a process that the next block would have to start again.
- ``processes`` 0 is no worker: every block is decoded here (``Offload.inline``).
- Workers are spawned, not forked (no copy of LevelDB's or trio's state).  Each runs the
  parent's main script again, but not a package's ``__main__`` (``python -m indexer``), so a
  script entry point keeps its work under ``if __name__ == "__main__"`` (the ``indexer``
  console script does).  A worker whose parent dies (SIGKILL) reads the end of its pipe and
  exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
import trio
import trio_parallel

from sync import Link
from sync.errors import DecoderDied, SyncError
from sync.net.gzipbody import EncodedBody
from sync.walk.entries import ParsedBlock, parse_block, parse_encoded

__all__ = ["IDLE_TIMEOUT", "Offload", "open_offload"]

IDLE_TIMEOUT = 600.0  # seconds a worker process waits unused before it exits

log = structlog.get_logger("ingest")


@dataclass
class Offload:
    """Where entries blocks are decoded: here, or (big ones) in ``context``'s processes.

    ``decode`` runs in a worker (a module-level function, as the worker imports it by name);
    ``offloaded`` and ``died`` count the blocks decoded there and the workers lost under one.
    """

    context: trio_parallel.WorkerContext | None
    limiter: trio.CapacityLimiter | None
    min_bytes: int
    decode: Callable[[Link, EncodedBody], ParsedBlock] = parse_encoded
    offloaded: int = 0
    died: int = 0

    @classmethod
    def inline(cls) -> Offload:
        """No worker process: every block decoded in this one."""
        return cls(None, None, 0)

    async def warm(self) -> None:
        """Start the worker processes now (else the first big block waits for one: ~0.2 s)."""
        if self.context is None or self.limiter is None:
            return
        async with trio.open_nursery() as nursery:
            for _ in range(int(self.limiter.total_tokens)):
                nursery.start_soon(self._ready)

    async def _ready(self) -> None:
        assert self.context is not None
        await self.context.run_sync(_ready, limiter=self.limiter)

    async def parse(self, link: Link, body: EncodedBody) -> ParsedBlock:
        """``body`` (the block fetched for ``link``) checked and decoded (the rules above)."""
        if self.context is None or len(body.body) < self.min_bytes:
            return parse_block(link, body.decode())
        try:
            parsed: ParsedBlock = await self.context.run_sync(
                self.decode, link, body, limiter=self.limiter
            )
        except trio_parallel.BrokenWorkerError as exc:
            self.died += 1
            log.warning("decode process died under a block", block=str(link), error=str(exc))
            raise DecoderDied(f"{body.where}: the decode process died: {exc}") from None
        except SyncError:
            raise  # the block's own fault, as it would be here
        except Exception as exc:  # no worker could start, or a bug: decode it here
            log.error("decode process failed; decoding the block here", block=str(link),
                      exc_info=exc)  # fmt: skip
            return parse_block(link, body.decode())
        self.offloaded += 1
        return dataclasses.replace(parsed, body=body)  # its bytes, should they be needed again


def _ready() -> bool:
    return True  # a worker answering: its process is up and its imports done


@contextlib.asynccontextmanager
async def open_offload(processes: int, min_bytes: int) -> AsyncIterator[Offload]:
    """An ``Offload`` with up to ``processes`` worker processes, stopped when the block ends."""
    if processes < 1:
        yield Offload.inline()
        return
    async with trio_parallel.open_worker_context(idle_timeout=IDLE_TIMEOUT) as context:
        yield Offload(context, trio.CapacityLimiter(processes), min_bytes)
