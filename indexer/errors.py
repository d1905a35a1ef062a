"""Typed errors of the ``indexer`` package (the daemon, its services and the CLI).

The tree::

    IndexerError
    ├── CliError        bad command-line input or an unusable file: one line, exit 2
    ├── CommandFailed   the daemon refused or could not do what a command asked: one line, exit 1
    ├── ConfigError     the configuration file is unreadable or has a bad setting (names it)
    ├── BadRequest      an admin API request answered with its ``status`` (4xx) and a message:
    │                   control flow inside ``indexer.admin.handlers``, never leaves it
    ├── UnknownPeer     neither staging nor the registry knows this peer (the admin API's 404)
    ├── BadFilter       an IPIP-484 filter parameter that cannot be applied (the routing 400)
    ├── ClusterError    the ownership service (etcd, ``indexer.cluster``) failed or refused
    │   ├── EtcdUnavailable no endpoint answered within the call's deadline (down, frozen,
    │   │                   no leader, 5xx); the last failure is in the message
    │   ├── EtcdBadResponse an endpoint answered what is not the v3 JSON gateway's (junk, shape)
    │   ├── EtcdRefused     etcd answered an error of its own (``code``: the gRPC code)
    │   │   └── LeaseNotFound  the lease named does not exist (expired or revoked)
    │   ├── LeaseLost       this node's lease expired, was revoked or could not be renewed in
    │   │                   time: every claim it holds is void, no fenced write may follow
    │   └── NotOwner        another node owns the provider or publisher (or this node handed it
    │                       back): this node leaves it alone until it can claim it
    └── SyncAborted     the ingester ended a sync; the next announce or poll tries again
        ├── SyncTimedOut    it ran past ``sync_timeout``
        └── SyncPreempted   it received nothing for ``stall_after`` seconds (or, as the
                            fallback at unverified addresses, ran ``slow_sync_after``) while an
                            announce of the same publisher with other addresses waited

Errors of lower packages (``sync.SyncError``, ``store.StoreError``...) are reported by the CLI as
one line each; nothing reaches the user as a traceback.
"""

from __future__ import annotations

__all__ = [
    "BadFilter",
    "BadRequest",
    "CliError",
    "ClusterError",
    "CommandFailed",
    "ConfigError",
    "EtcdBadResponse",
    "EtcdRefused",
    "EtcdUnavailable",
    "IndexerError",
    "LeaseLost",
    "LeaseNotFound",
    "NotOwner",
    "SyncAborted",
    "SyncPreempted",
    "SyncTimedOut",
    "UnknownPeer",
]


class IndexerError(Exception):
    """Base class of every error raised by the ``indexer`` package."""


class CliError(IndexerError):
    """Bad command-line input; the CLI prints the message on one line and exits 2."""


class CommandFailed(IndexerError):
    """The daemon refused or could not do it; the CLI prints the message on one line, exits 1."""


class ConfigError(IndexerError):
    """The configuration file is unreadable or has a bad setting."""


class BadRequest(IndexerError):
    """An admin API request refused: answered with ``status`` and the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UnknownPeer(IndexerError):
    """Neither staging nor the registry knows this peer."""


class BadFilter(IndexerError):
    """A filter parameter that cannot be applied (the routing handler answers 400)."""


class ClusterError(IndexerError):
    """The ownership service (etcd) failed, answered wrongly or refused."""


class EtcdUnavailable(ClusterError):
    """No etcd endpoint answered within the call's deadline (the call may have been applied)."""


class EtcdBadResponse(ClusterError):
    """An endpoint answered something that is not the etcd v3 JSON gateway's answer."""


class EtcdRefused(ClusterError):
    """etcd answered an error of its own: ``code`` is its gRPC status code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd refused (code {code}): {message}")
        self.code = code


class LeaseNotFound(EtcdRefused):
    """The lease named does not exist at etcd: it expired or was revoked."""


class LeaseLost(ClusterError):
    """This node's lease is gone or may be: every claim it holds is void."""


class NotOwner(ClusterError):
    """Another node owns the provider or publisher; this node leaves it alone for now."""


class SyncAborted(IndexerError):
    """The ingester ended a sync (nothing of it was staged; the cursor did not move)."""


class SyncTimedOut(SyncAborted):
    """A sync ran past the whole-sync deadline (``sync_timeout``)."""


class SyncPreempted(SyncAborted):
    """A stalled (or slow fallback) sync gave way to an announce with other addresses."""
