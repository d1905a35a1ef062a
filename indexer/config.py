"""The daemon's configuration: a commented TOML file, and defaults that need no file at all.

Rules this module keeps:

- Every setting has a default; a missing file, section or key means the default.  An unknown
  key or a value of the wrong type is a ``ConfigError`` naming it (never ignored silently), and
  so is an ``[http]`` deadline, rate or connection cap that is not positive.
- ``TEMPLATE`` is what ``indexer init`` writes: every setting, commented, at its default.
- Secrets stay out of this file: the admin token is read from ``$INDEXER_ADMIN_TOKEN`` or from the
  file ``admin_token_file`` names (``indexer.security``), never from a key here.
- The policy: ``allow``/``deny`` lists of publishers and of providers (``"*"`` = everyone; deny
  wins), and ``publish_for``: which publishers may publish on behalf of which providers.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from indexer.errors import ConfigError
from sync import BadPeerId, PeerId

__all__ = ["TEMPLATE", "Config", "ConfigError", "Policy", "load_config"]


@dataclass(frozen=True)
class Policy:
    allow_publishers: tuple[str, ...] = ("*",)
    deny_publishers: tuple[str, ...] = ()
    allow_providers: tuple[str, ...] = ("*",)
    deny_providers: tuple[str, ...] = ()
    publish_for: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @staticmethod
    def _listed(peer: PeerId, names: tuple[str, ...]) -> bool:
        return "*" in names or str(peer) in names

    def publisher_allowed(self, publisher: PeerId) -> bool:
        return self._listed(publisher, self.allow_publishers) and not self._listed(
            publisher, self.deny_publishers
        )

    def provider_allowed(self, provider: PeerId) -> bool:
        return self._listed(provider, self.allow_providers) and not self._listed(
            provider, self.deny_providers
        )

    def may_publish(self, publisher: PeerId, provider: PeerId) -> bool:
        """The walker's policy: may ``publisher`` publish for ``provider``?"""
        if not self.provider_allowed(provider):
            return False
        return publisher == provider or self.publishes_for(publisher, provider)

    def publishes_for(self, publisher: PeerId, provider: PeerId) -> bool:
        """Is ``publisher`` listed as publishing on behalf of ``provider``?"""
        return self._listed(provider, self.publish_for.get(str(publisher), ()))


@dataclass(frozen=True)
class Config:
    find_addr: str = "127.0.0.1:3000"
    ingest_addr: str = "127.0.0.1:3001"
    admin_addr: str = "127.0.0.1:3002"
    p2p_addr: str = "/ip4/127.0.0.1/tcp/3003"  # "" disables libp2p (and gossipsub)
    topic: str = "/indexer/ingest/mainnet"
    admin_token_file: str = ""  # the admin token's file; $INDEXER_ADMIN_TOKEN wins
    segment: int = 2000
    depth_limit: int = 0
    max_block: int = 4 << 20
    fetch_timeout: float = 30.0
    sync_timeout: float = 7200.0
    slow_sync_after: float = 30.0
    max_slow_syncs: int = 256
    stall_after: float = 5.0
    poll_interval: float = 0.0
    max_syncs: int = 32
    max_workers: int = 32
    compact_idle: float = 60.0
    announce_rate: float = 10.0
    announce_burst: float = 20.0
    source_rate: float = 50.0
    source_burst: float = 100.0
    max_pending_publishers: int = 10_000
    refuse_private_addrs: bool = False
    head_timeout: float = 10.0
    body_timeout: float = 10.0
    min_transfer_rate: float = 16384.0
    send_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_find_connections: int = 1024
    max_ingest_connections: int = 256
    max_admin_connections: int = 64
    policy: Policy = field(default_factory=Policy)


TEMPLATE = """\
# ipni-indexer configuration. Every setting is shown at its default; delete what you keep.

[server]
# find_addr = "127.0.0.1:3000"     # find API and delegated routing v1
# ingest_addr = "127.0.0.1:3001"   # PUT /announce, sync status
# admin_addr = "127.0.0.1:3002"    # admin API and /metrics
# p2p_addr = "/ip4/127.0.0.1/tcp/3003"  # libp2p host for gossipsub announces; "" disables
# topic = "/indexer/ingest/mainnet"
# admin_token_file = ""            # file holding the admin API's bearer token (relative: to the
#                                  # data directory); INDEXER_ADMIN_TOKEN in the environment wins.
#                                  # A token is required when admin_addr is not loopback.

[ingest]
# segment = 2000             # ads a sync walk keeps in memory before spilling to LevelDB
# depth_limit = 0            # 0: walk to the first known ad (a limit leaves older ads out)
# max_block = 4194304        # refuse blocks larger than this (bytes)
# fetch_timeout = 30.0       # seconds for one request to a publisher, body included
#                            # (so a block must arrive at >= max_block / fetch_timeout B/s)
# sync_timeout = 7200.0      # seconds a whole sync may take (storetheindex's SyncTimeout)
# slow_sync_after = 30.0     # a sync running longer gives its slot back to faster ones
# max_slow_syncs = 256       # slow syncs running at once (beyond, they keep their slot)
# stall_after = 5.0          # a sync silent this long yields to an announce of the same
#                            # publisher with other addresses (spoofed announces)
# poll_interval = 0.0        # re-check every known publisher this often; 0: never
# max_syncs = 32             # syncs at once at announced addresses, and as many again at
#                            # known publishers' verified addresses (more wait their turn)
# max_workers = 32           # providers whose ads are applied at once
# compact_idle = 60.0        # seconds between sweeps dropping keys of removed contexts
# announce_rate = 10.0       # announces per second per (source, publisher), after a burst
# announce_burst = 20.0
# source_rate = 50.0         # announces per second per source (IP or gossip peer)
# source_burst = 100.0
# max_pending_publishers = 10000
# refuse_private_addrs = false  # true: never dial a publisher at a loopback, private,
#                            # link-local or unique-local address, so announces cannot point the
#                            # indexer at internal services (SSRF); but publishers on a private
#                            # network can then not be indexed

[http]
# Each HTTP server (find, ingest, admin). No deadline restarts per byte.
# head_timeout = 10.0          # seconds for a whole request head (new connection: from accept)
# body_timeout = 10.0          # seconds for a request body, plus 1 s per min_transfer_rate bytes
# min_transfer_rate = 16384.0  # bytes/s; a response write gets send_timeout plus size / this
# send_timeout = 10.0          # seconds: a client that stops reading loses the connection
# idle_timeout = 60.0          # seconds a keep-alive connection may sit idle
# max_find_connections = 1024  # open connections per server (lowered to fit the open files
# max_ingest_connections = 256 # limit); at the cap the idlest is closed, else a new one gets 503
# max_admin_connections = 64

[policy]
# allow_publishers = ["*"]   # peer IDs, or "*" for everyone; deny wins
# deny_publishers = []
# allow_providers = ["*"]
# deny_providers = []
# [policy.publish_for]       # publishers allowed to publish for other providers
# "12D3KooW...publisher" = ["12D3KooW...provider"]
"""

_SECTIONS = {
    "server": {"find_addr", "ingest_addr", "admin_addr", "p2p_addr", "topic", "admin_token_file"},
    "ingest": {
        "segment",
        "depth_limit",
        "max_block",
        "fetch_timeout",
        "sync_timeout",
        "slow_sync_after",
        "max_slow_syncs",
        "stall_after",
        "poll_interval",
        "max_syncs",
        "max_workers",
        "compact_idle",
        "announce_rate",
        "announce_burst",
        "source_rate",
        "source_burst",
        "max_pending_publishers",
        "refuse_private_addrs",
    },
    "http": {
        "head_timeout",
        "body_timeout",
        "min_transfer_rate",
        "send_timeout",
        "idle_timeout",
        "max_find_connections",
        "max_ingest_connections",
        "max_admin_connections",
    },
}


def _typed(name: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise ConfigError(f"{name} must be a {kind.__name__}, not {value!r}")
    return value


def _peers(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a list of peer IDs")
    out = []
    for v in value:
        try:
            out.append(v if v == "*" else str(PeerId.parse(v)))
        except BadPeerId as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return tuple(out)


def load_config(path: Path | None) -> Config:
    """The configuration in ``path`` (None or a missing file: all defaults)."""
    if path is None or not path.exists():
        return Config()
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    unknown = doc.keys() - {*_SECTIONS, "policy"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}")
    defaults = Config()
    values: dict[str, Any] = {}
    for section, names in _SECTIONS.items():
        table = doc.get(section, {})
        if bad := table.keys() - names:
            raise ConfigError(f"{path}: unknown setting(s) {sorted(bad)} in [{section}]")
        for name, value in table.items():
            values[name] = _typed(f"{section}.{name}", value, getattr(defaults, name))
            if section == "http" and values[name] <= 0:
                raise ConfigError(f"{path}: http.{name} must be positive, not {value!r}")
    policy_doc = dict(doc.get("policy", {}))
    publish_for = policy_doc.pop("publish_for", {})
    policy_fields = {f.name for f in fields(Policy)} - {"publish_for"}
    if bad := policy_doc.keys() - policy_fields:
        raise ConfigError(f"{path}: unknown setting(s) {sorted(bad)} in [policy]")
    policy = Policy(
        **{k: _peers(f"policy.{k}", v) for k, v in policy_doc.items()},
        publish_for={
            _peers("policy.publish_for", [pub])[0]: _peers(f"policy.publish_for.{pub}", provs)
            for pub, provs in publish_for.items()
        },
    )
    return Config(**values, policy=policy)
