"""What a task that serves many (a sync handler, a provider's worker) does with a failure.

Rules this module keeps:

- Cancellation and interpreter exits always propagate: anything that is not an ``Exception``
  (``trio.Cancelled``, ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``...), bare or
  anywhere inside an exception group, is re-raised by ``survivable`` with its traceback, and
  only it: the failures beside it in the group are logged, not re-raised (the task is ending;
  the work they failed is still staged and is retried on the next start).  Re-raised
  with them, a ``Cancelled`` would be caught by its cancel scope and the failures escape it
  (a worker's shutdown while a block fetch failed and its progress write was cancelled).
- Everything else is a failure of the one publisher or provider being served: ``survivable``
  returns it (an exception group is reduced to its first leaf, a ``SyncError`` preferred, so the
  record names the real cause), the caller logs it and records it where an operator looks, and
  the task goes on.  Nothing here decides transient vs permanent: ``sync.errors.retry_of`` does.
- ``backoff`` is the delay before a retry: exponential in the failures so far, capped.
"""

from __future__ import annotations

import structlog

from sync import SyncError

__all__ = ["backoff", "describe", "survivable"]

log = structlog.get_logger(__name__)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def survivable(exc: BaseException) -> BaseException:
    """``exc`` reduced to the failure to record; re-raises it if it must end the task."""
    leaves = _leaves(exc)
    if not all(isinstance(leaf, Exception) for leaf in leaves):
        if isinstance(exc, BaseExceptionGroup):
            failures, ending = exc.split(Exception)
            assert ending is not None
            for failure in _leaves(failures) if failures is not None else []:
                log.warning("failure while cancelled", error=describe(failure), exc_info=failure)
            raise ending
        raise exc
    for leaf in leaves:
        if isinstance(leaf, SyncError):
            return leaf
    return leaves[0]


def describe(exc: BaseException) -> str:
    """One line for logs and records: ``ClassName: message``."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def backoff(base: float, cap: float, failures: int) -> float:
    """The delay before retrying after ``failures`` failures in a row: ``base`` doubled each
    time, at most ``cap`` (a worker's restarts and a staged ad's retries both use it)."""
    return float(min(cap, base * 2 ** (failures - 1)))
