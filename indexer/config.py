"""The daemon's configuration: one TOML file, one frozen msgspec Struct per section.

Rules this module keeps:

- One source for every setting: the section Structs (``Server``, ``IngestConfig`` from
  ``indexer.ingest.settings``, ``Http``, ``Policy`` from ``indexer.policy``, ``P2p``,
  ``Cluster``, ``StoreConfig``), each field with its default and a
  ``msgspec.Meta(description=...)``.  ``TEMPLATE`` (what ``indexer init`` writes: every
  setting, commented, at its default) and ``markdown_table()`` (the README's table) are
  generated from them; nothing else restates a default.
- A missing file, section or key means the default (``load_config(path, required=True)``, for a
  file named on the command line, makes a missing file an error).  Decoding is strict
  (``forbid_unknown_fields``, no lax conversion but int to float): a TOML syntax error, an unknown
  key, a value of the wrong type, an ``[http]`` deadline, rate or cap that is not positive, a
  policy entry that is not a peer ID, or a ``[p2p]`` peer entry that is not a multiaddr ending in
  ``/p2p/<peer id>`` is ONE ``ConfigError`` line naming the file and the key.
- Secrets stay out of this file: the admin token is read from ``$INDEXER_ADMIN_TOKEN`` or from the
  file ``admin_token_file`` names (``indexer.security``), never from a key here.
"""

from __future__ import annotations

import json
import re
import textwrap
import tomllib
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import msgspec

from indexer.cluster.ownership import DEFAULT_TTL
from indexer.errors import ConfigError
from indexer.ingest.settings import IngestConfig
from indexer.policy import Policy
from store import Tuning
from sync.announce.message import ANNOUNCE_TOPIC
from sync.announce.peeraddrs import parse_peer_addrs
from sync.errors import BadMultiaddr
from sync.net.httpmessage import Limits

__all__ = [
    "CONFIG_FILE",
    "DB_DIR",
    "TEMPLATE",
    "Cluster",
    "Config",
    "ConfigError",
    "Http",
    "P2p",
    "Server",
    "StoreConfig",
    "etcd_endpoints",
    "load_config",
    "markdown_table",
    "render_template",
    "store_nodes",
]


DB_DIR = "db"  # the LevelDB directory inside a daemon's data directory
CONFIG_FILE = "config.toml"  # the config file a data directory may hold (no --config given)


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Server(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the daemon listens (the CLI's --find-addr, --ingest-addr, ... override these)."""

    find_addr: Annotated[str, _doc("HOST:PORT of the find API and delegated routing v1")] = (
        "127.0.0.1:3000"
    )
    ingest_addr: Annotated[str, _doc("HOST:PORT of PUT /announce and the sync status")] = (
        "127.0.0.1:3001"
    )
    admin_addr: Annotated[str, _doc("HOST:PORT of the admin API and /metrics")] = "127.0.0.1:3002"
    p2p_addr: Annotated[
        str, _doc('multiaddr of the libp2p host for gossipsub announces; "" disables it')
    ] = "/ip4/127.0.0.1/tcp/3003"
    topic: Annotated[str, _doc("the gossipsub topic announces arrive on")] = ANNOUNCE_TOPIC
    admin_token_file: Annotated[
        str,
        _doc(
            "file holding the admin API's bearer token (relative: to the data directory); "
            "INDEXER_ADMIN_TOKEN in the environment wins. A token is required when admin_addr "
            "is not loopback"
        ),
    ] = ""


def _positive(text: str) -> msgspec.Meta:
    return msgspec.Meta(gt=0, description=text)


_LIMITS = Limits()  # the server's own defaults: the [http] section's


class Http(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Each HTTP server (find, ingest, admin). No deadline restarts per byte."""

    head_timeout: Annotated[
        float, _positive("seconds for a whole request head (new connection: from accept)")
    ] = _LIMITS.head_timeout
    body_timeout: Annotated[
        float, _positive("seconds for a request body, plus 1 s per min_transfer_rate bytes")
    ] = _LIMITS.body_timeout
    min_transfer_rate: Annotated[
        float, _positive("bytes/s; a response write gets send_timeout plus size / this")
    ] = float(_LIMITS.min_rate)
    send_timeout: Annotated[
        float, _positive("seconds: a client that stops reading loses the connection")
    ] = _LIMITS.send_timeout
    idle_timeout: Annotated[float, _positive("seconds a keep-alive connection may sit idle")] = (
        _LIMITS.idle_timeout
    )
    max_find_connections: Annotated[
        int,
        _positive(
            "open connections of the find server (lowered to fit the open files limit); at "
            "the cap the idlest is closed, else a new one gets 503"
        ),
    ] = 1024
    max_ingest_connections: Annotated[
        int, _positive("open connections of the ingest server (same rule)")
    ] = 256
    max_admin_connections: Annotated[
        int, _positive("open connections of the admin server (same rule)")
    ] = 64


class P2p(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Gossipsub connectivity of the libp2p host (storetheindex's Bootstrap and Peering)."""

    bootstrap_peers: Annotated[
        tuple[str, ...],
        _doc(
            "multiaddrs ending in /p2p/<peer id> (pubsub nodes on the announce topic) the host "
            "dials at start and every 30 s while it has fewer than bootstrap_min_peers "
            "connections; a failed dial is logged. storetheindex's default list is mainnet's; "
            "ours is empty"
        ),
    ] = ()
    bootstrap_min_peers: Annotated[
        int,
        msgspec.Meta(
            ge=0, description="connections below which the bootstrap peers are dialled; 0: never"
        ),
    ] = 4
    peering_peers: Annotated[
        tuple[str, ...],
        _doc(
            "multiaddrs ending in /p2p/<peer id> kept connected: dialled at start and redialled "
            "5 s after they drop, the delay growing to 10 min while dials fail"
        ),
    ] = ()

    def checked(self) -> P2p:
        """The section itself if every entry is a peer address, else ``ValueError`` naming it."""
        for name in ("bootstrap_peers", "peering_peers"):
            try:
                parse_peer_addrs(getattr(self, name))
            except BadMultiaddr as exc:
                raise ValueError(f"p2p.{name}: {exc}") from None
        return self


class Cluster(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Scale-out (docs/scale-out.md): many nodes on a Redis Cluster and etcd. Empty: one node."""

    store: Annotated[
        str,
        _doc(
            'the index: any nodes of a Redis Cluster-protocol cluster, "redis://h:p,h:p"; '
            '"" keeps the embedded LevelDB (one node)'
        ),
    ] = ""
    etcd: Annotated[
        str, _doc('ownership: etcd client URLs, "http://h:p,http://h:p" (required with store)')
    ] = ""
    node: Annotated[str, _doc('this node\'s name in the cluster ("": its peer ID)')] = ""
    root: Annotated[str, _doc("the etcd key prefix of this cluster's ownership")] = "/ipni"
    lease_ttl: Annotated[
        int, msgspec.Meta(ge=1, description="seconds: a node silent this long loses its claims")
    ] = DEFAULT_TTL
    interval: Annotated[
        float, _positive("seconds between rebalancing and announce checks of each node")
    ] = 1.0
    record_ttl: Annotated[
        float,
        msgspec.Meta(
            ge=0, description="seconds find may serve a value record another node removed"
        ),
    ] = 1.0
    wait_replicas: Annotated[
        int,
        msgspec.Meta(ge=0, description="replicas each control write waits for (WAIT); 0: none"),
    ] = 1

    def checked(self) -> Cluster:
        """The section itself if it is usable, else ``ValueError`` naming the key."""
        if bool(self.store) != bool(self.etcd):
            raise ValueError('cluster: "store" and "etcd" go together (both, or neither)')
        if self.store:
            try:
                store_nodes(self.store)
                etcd_endpoints(self.etcd)
            except ValueError as exc:
                raise ValueError(f"cluster: {exc}") from None
        return self


def store_nodes(url: str) -> list[tuple[str, int]]:
    """``redis://h:p,h:p`` (or ``h:p,h:p``) as (host, port) pairs; ``ValueError`` if not."""
    rest = url.split("://", 1)[1] if "://" in url else url
    if "://" in url and not url.startswith(("redis://", "valkey://")):
        raise ValueError(f"store: not a redis:// URL: {url!r}")
    out = []
    for item in rest.strip("/").split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"store: not host:port: {item.strip()!r}")
        out.append((host.strip("[]"), int(port)))
    return out


def etcd_endpoints(urls: str) -> list[str]:
    """``http://h:p,http://h:p`` (a bare ``h:p`` means http) as endpoint URLs."""
    out = []
    for item in (u.strip() for u in urls.split(",")):
        url = item if "://" in item else f"http://{item}"
        host, sep, port = url.split("://", 1)[1].rstrip("/").rpartition(":")
        if not url.startswith(("http://", "https://")) or not sep or not host or not port.isdigit():
            raise ValueError(f"etcd: not http://host:port: {item!r}")
        out.append(url.rstrip("/"))
    return out


_TUNING = Tuning()  # the store's own defaults: the [store] section's


class StoreConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The embedded LevelDB's memory and tables (read at start; a reload needs a restart)."""

    write_buffer_mib: Annotated[
        int,
        _positive(
            "MiB of LevelDB's memtable (write buffer): RAM up to twice this (the one written "
            "and the one being flushed); smaller flushes more often, and stalls big batches"
        ),
    ] = _TUNING.write_buffer_size >> 20
    block_cache_mib: Annotated[
        int,
        _positive(
            "MiB of LevelDB's LRU cache of 16 KiB blocks read with a copy (compressed tables, or "
            "tables past the 1,000 LevelDB maps): RAM up to this once reads have filled it"
        ),
    ] = _TUNING.lru_cache_size >> 20
    max_open_files: Annotated[
        int,
        msgspec.Meta(
            ge=64,
            description=(
                "LevelDB tables kept open, each a mapping or a file descriptor (descriptors kept "
                "out of the HTTP servers' share); a compressed table, or one past the 1,000 "
                "LevelDB maps, also holds its index block and bloom filter in RAM (about 30 KiB "
                "per MiB of table); a table not open is reopened to read it"
            ),
        ),
    ] = _TUNING.max_open_files
    table_file_mib: Annotated[
        int,
        _positive(
            "MiB per LevelDB table: fewer, larger tables stay within max_open_files and the "
            "1,000 tables LevelDB memory-maps (an index of 50M multihashes is 2.6 GB); larger "
            "ones make each compaction step, and the write it stalls, longer"
        ),
    ] = _TUNING.max_file_size >> 20
    compress: Annotated[
        bool,
        _doc(
            "snappy-compress LevelDB's tables: about a fifth less disk for the index, paid in "
            "CPU by every compaction and every lookup past the block cache (uncompressed "
            "tables are read straight from their memory mapping): false for a big index, "
            "where it cut ingest's CPU by 40% at 5M multihashes"
        ),
    ] = _TUNING.compression is not None

    def tuning(self) -> Tuning:
        """The ``store.KV`` options these settings make (the rest at the store's defaults)."""
        return Tuning(
            write_buffer_size=self.write_buffer_mib << 20,
            lru_cache_size=self.block_cache_mib << 20,
            max_open_files=self.max_open_files,
            max_file_size=self.table_file_mib << 20,
            compression="snappy" if self.compress else None,
        )


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole file: one field per section."""

    server: Server = msgspec.field(default_factory=Server)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    http: Http = msgspec.field(default_factory=Http)
    policy: Policy = msgspec.field(default_factory=Policy)
    p2p: P2p = msgspec.field(default_factory=P2p)
    cluster: Cluster = msgspec.field(default_factory=Cluster)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)


def load_config(path: Path | None, *, required: bool = False) -> Config:
    """The configuration in ``path`` (None, or a missing file unless ``required``: defaults)."""
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: cannot read it as TOML: {exc}") from None
    try:
        config = msgspec.convert(doc, Config)
        config.cluster.checked()
        config.p2p.checked()
        return msgspec.structs.replace(config, policy=config.policy.normalized())
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {_explain(str(exc), doc)}") from None
    except ValueError as exc:  # a policy entry that is not a peer ID (it names the key)
        raise ConfigError(f"{path}: {exc}") from None


_AT = re.compile(r"(?P<msg>.*?)(?: - at `\$(?P<at>[^`]*)`)?", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>.*)`", re.DOTALL)


def _explain(message: str, doc: dict[str, Any]) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.ingest.segment``` as a line naming the key."""
    match = _AT.fullmatch(message)
    assert match is not None  # the pattern matches any string
    msg, at = match["msg"], match["at"] or ""
    key = at.removeprefix(".").replace("[...]", "")
    if unknown := _UNKNOWN.fullmatch(msg):
        return f"unknown key {json.dumps('.'.join(filter(None, (key, unknown['name']))))}"
    msg = msg.replace("`", "")
    msg = msg[:1].lower() + msg[1:]
    value = _lookup(doc, key)
    if " got " not in msg and isinstance(value, bool | int | float | str):
        msg += f", got {_toml(value)}"
    return f"{key}: {msg}" if key else msg


def _lookup(doc: Any, key: str) -> Any:
    """The value at ``key`` (``None``: not a plain path, or nothing there)."""
    if not key or "[" in key:
        return None
    for part in key.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _toml(value: Any) -> str:
    """``value`` as a TOML literal (the types the sections use)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict) and not value:
        return "{}"
    raise TypeError(f"no TOML literal for {value!r}")


class _Field(msgspec.Struct, frozen=True):
    name: str
    default: Any
    description: str
    example: str


def _fields(cls: type[msgspec.Struct]) -> list[_Field]:
    out = []
    for info in msgspec.structs.fields(cls):
        default = info.default_factory() if info.default is msgspec.NODEFAULT else info.default
        metas = [m for m in get_args(info.type)[1:] if isinstance(m, msgspec.Meta)]
        meta = metas[0] if get_origin(info.type) is Annotated and metas else msgspec.Meta()
        # A section's description is its Struct's docstring (first line).
        description = meta.description or (type(default).__doc__ or "").partition("\n")[0]
        if not description:
            raise TypeError(f"{cls.__name__}.{info.name} has no description")
        example = (meta.extra or {}).get("example", "")
        out.append(_Field(info.name, default, description, example))
    return out


def _comment(text: str, *, prefix: str = "# ") -> list[str]:
    text = text[:1].upper() + text[1:]
    text = text if text.endswith(".") else text + "."
    return textwrap.wrap(text, width=96, initial_indent=prefix, subsequent_indent=prefix)


def _section(name: str, cls: type[msgspec.Struct], doc: str | None) -> list[str]:
    lines = [f"[{name}]", *(_comment(doc) if doc else []), ""]
    tables: list[str] = []
    for f in _fields(cls):
        if isinstance(f.default, msgspec.Struct):  # a sub-table, after the section's keys
            tables += _section(f"{name}.{f.name}", type(f.default), f.description)
        elif isinstance(f.default, dict):  # a table of the user's keys: an example, commented
            tables += [*_comment(f.description), f"# [{name}.{f.name}]", f"# {f.example}", ""]
        else:
            lines += [*_comment(f.description), f"# {f.name} = {_toml(f.default)}", ""]
    return lines + tables


def render_template() -> str:
    """Every setting, commented, at its default, each with its description: ``TEMPLATE``."""
    lines = [
        "# ipni-indexer configuration. Every setting is shown at its default: uncomment and",
        "# change the ones to set. An unknown key or a wrong type stops the daemon (exit 2).",
        "",
    ]
    for f in _fields(Config):
        lines += _section(f.name, type(f.default), f.description)
    return "\n".join(lines).rstrip("\n") + "\n"


def _rows(prefix: str, cls: type[msgspec.Struct]) -> list[str]:
    rows: list[str] = []
    for f in _fields(cls):
        if isinstance(f.default, msgspec.Struct):
            rows += _rows(f"{prefix}{f.name}.", type(f.default))
        else:
            rows.append(f"| `{prefix}{f.name}` | `{_toml(f.default)}` | {f.description} |")
    return rows


def markdown_table() -> str:
    """The README's table of every key (``section.key``), its default and its description."""
    rows = ["| key | default | what |", "| --- | --- | --- |"]
    for f in _fields(Config):
        rows += _rows(f"{f.name}.", type(f.default))
    return "\n".join(rows) + "\n"


TEMPLATE = render_template()
