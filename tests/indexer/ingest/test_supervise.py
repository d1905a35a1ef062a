"""``survivable``: a failure is the served task's to record; a cancellation ends the task, alone.

The last test is the shape that made ``test_faults`` fail now and then at its shutdown: a worker
resumes from a fetch as the shutdown cancels, opens the nursery that writes a block's progress
in a thread while the next block is fetched, and that fetch fails at once (an injected bug),
while the progress writer is cancelled as it starts.  The nursery's group holds the failure AND
a ``Cancelled`` (a cancel scope inside a cancelled one leaves ``Cancelled`` to the outer one).
Re-raising the whole group let the outer cancel scope strip the ``Cancelled`` and the failure
escape ``Ingester.run`` (the test saw the bug "at a later chunk" come out of its nursery).
"""

from __future__ import annotations

import pytest
import trio
from structlog.testing import capture_logs

from indexer.ingest.supervise import survivable
from sync.errors import FetchFailed


def test_a_failure_is_returned_and_a_group_reduced_to_its_cause() -> None:
    bug = RuntimeError("a bug")
    assert survivable(bug) is bug
    fetch = FetchFailed("publisher down")
    assert survivable(ExceptionGroup("g", [bug, ExceptionGroup("h", [fetch])])) is fetch
    with pytest.raises(KeyboardInterrupt):
        survivable(KeyboardInterrupt())


def test_a_group_with_an_exit_re_raises_only_the_exit_and_logs_the_rest() -> None:
    with capture_logs() as logs, pytest.raises(BaseExceptionGroup) as raised:
        survivable(BaseExceptionGroup("g", [RuntimeError("a bug"), KeyboardInterrupt()]))
    assert [type(e) for e in raised.value.exceptions] == [KeyboardInterrupt]
    assert [(e["event"], e["error"]) for e in logs] == [
        ("failure while cancelled", "RuntimeError: a bug")
    ]


async def test_a_failure_beside_a_cancellation_does_not_escape_the_cancelled_scope() -> None:
    outer = trio.CancelScope()

    async def worker() -> None:
        with outer:
            outer.cancel()  # the shutdown, as the worker resumes from a fetch
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.lowlevel.checkpoint)  # Cancelled when it starts
                    raise RuntimeError("the next block's fetch failed")  # with no checkpoint
            except BaseException as exc:
                assert isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 2
                survivable(exc)
                raise AssertionError("a cancelled task must not go on") from exc

    await worker()
    assert outer.cancelled_caught
