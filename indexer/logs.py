"""Structured logging for every long-running command (structlog), with levels per logger.

Rules: logs go to stderr (stdout is for command output, so ``--json`` output stays parseable);
JSON lines when stderr is not a terminal, coloured key=value lines when it is.

Levels are kept per logger name (``structlog.get_logger("admin")``: the name is its first
argument; "root" without one) in ``LOG_LEVELS`` and checked by a processor on every call, so
``POST /config/log/level`` changes them while the daemon runs (``indexer.admin.loglevel``): a
rule is a regular expression over names (``re.fullmatch``) and a level; the last rule matching
a name wins, else the level ``configure_logging`` was given.  The names are those of loggers
used since start (``names``), go-log's subsystems.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["LEVELS", "LOG_LEVELS", "LogLevels", "configure_logging"]

# go-log's level names (storetheindex's), and Python's.
LEVELS = {
    "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
    "warning": logging.WARNING, "error": logging.ERROR, "dpanic": logging.CRITICAL,
    "panic": logging.CRITICAL, "fatal": logging.CRITICAL, "critical": logging.CRITICAL,
}  # fmt: skip
_METHOD_LEVELS = {
    "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
    "warn": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR,
    "critical": logging.CRITICAL, "fatal": logging.CRITICAL, "msg": logging.INFO,
}  # fmt: skip


class LogLevels:
    """The default level, the rules set at run time, and the logger names seen."""

    def __init__(self, default: int = logging.INFO) -> None:
        self.default = default
        self.rules: list[tuple[re.Pattern[str], int]] = []
        self.names: set[str] = set()
        self._cache: dict[str, int] = {}
        self._lock = threading.Lock()

    def reset(self, default: int) -> None:
        """Back to one level for every logger, no rule."""
        with self._lock:
            self.default, self.rules, self._cache = default, [], {}

    def set(self, pattern: str, level: int) -> list[str]:
        """Add a rule; the names seen so far that it matches.  ``re.error`` for a bad one."""
        compiled = re.compile(pattern)
        with self._lock:
            self.rules.append((compiled, level))
            self._cache = {}
            return sorted(n for n in self.names if compiled.fullmatch(n))

    def level_of(self, name: str) -> int:
        level = self._cache.get(name)
        if level is None:
            level = self.default
            for pattern, rule in self.rules:
                if pattern.fullmatch(name):
                    level = rule
            self._cache[name] = level
        return level

    def filter(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        """The structlog processor: drop a call below its logger's level."""
        name = getattr(logger, "name", "root")
        if _METHOD_LEVELS.get(method, logging.INFO) < self.level_of(name):
            raise structlog.DropEvent
        return event


LOG_LEVELS = LogLevels()


class _NamedPrintLogger:
    """structlog's ``PrintLogger`` with a name, printing to ``sys.stderr`` as it is now (a
    logger cached on first use never holds a stream that was replaced since)."""

    def __init__(self, name: str = "root") -> None:
        self.name = name

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _NamedFactory:
    def __init__(self, levels: LogLevels) -> None:
        self.levels = levels

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        logger = _NamedPrintLogger(args[0] if args and isinstance(args[0], str) else "root")
        self.levels.names.add(logger.name)
        return logger


def configure_logging(
    level: int = logging.INFO,
    *,
    json: bool | None = None,
    cache: bool = True,
    reported: frozenset[str] = frozenset(),
) -> None:
    """Configure structlog for a process; ``cache=False`` for a test inside a shared process
    (a cached logger keeps this configuration for good, blind to ``capture_logs``).
    ``reported``: events a command says itself, in its own words (``indexer ingest``'s last
    line names each failed sync), so their log lines would only say them twice."""
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    LOG_LEVELS.reset(level)

    def unreported(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if event.get("event") in reported:
            raise structlog.DropEvent
        return event

    structlog.configure(
        processors=[
            LOG_LEVELS.filter,
            *([unreported] if reported else []),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=_NamedFactory(LOG_LEVELS),
        cache_logger_on_first_use=cache,
    )
