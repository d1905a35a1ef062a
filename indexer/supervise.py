"""What a task that serves many (a sync handler, a provider's worker) does with a failure.

Rules this module keeps:

- Cancellation and interpreter exits always propagate: anything that is not an ``Exception``
  (``trio.Cancelled``, ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``...), bare or
  anywhere inside an exception group, is re-raised by ``survivable`` with its traceback.
- Everything else is a failure of the one publisher or provider being served: ``survivable``
  returns it (an exception group is reduced to its first leaf, a ``SyncError`` preferred, so the
  record names the real cause), the caller logs it and records it where an operator looks, and
  the task goes on.  Nothing here decides transient vs permanent: ``sync.errors.retry_of`` does.
- ``Backoff`` is the restart delay of a supervised task: exponential, capped, reset by success.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync import SyncError

__all__ = ["Backoff", "describe", "survivable"]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def survivable(exc: BaseException) -> BaseException:
    """``exc`` reduced to the failure to record; re-raises it if it must end the task."""
    leaves = _leaves(exc)
    if not all(isinstance(leaf, Exception) for leaf in leaves):
        raise exc
    for leaf in leaves:
        if isinstance(leaf, SyncError):
            return leaf
    return leaves[0]


def describe(exc: BaseException) -> str:
    """One line for logs and records: ``ClassName: message``."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class Backoff:
    base: float = 1.0
    cap: float = 300.0
    failures: int = 0

    def next(self) -> float:
        """The delay before the next restart (and counts one more failure)."""
        self.failures += 1
        return float(min(self.cap, self.base * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0
