"""The config file: one Struct per section, the generated template, strict decoding, policy."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from indexer.config import (
    TEMPLATE,
    Config,
    ConfigError,
    Http,
    Server,
    etcd_endpoints,
    load_config,
    markdown_table,
    store_nodes,
)
from indexer.ingest.settings import IngestConfig
from indexer.policy import Policy
from store import Tuning
from sync.announce.peeraddrs import parse_peer_addrs
from sync.walk.entries import EntriesBudget
from tests.builders import key

README = Path(__file__).parents[2] / "README.md"

# The defaults as they were when they lived in four copies (Config, TEMPLATE, _SECTIONS and
# IngestConfig): the Structs that replaced them must not have changed a single value.
BEFORE = {
    "server.admin_addr": "127.0.0.1:3002",
    "server.admin_token_file": "",
    "server.find_addr": "127.0.0.1:3000",
    "server.ingest_addr": "127.0.0.1:3001",
    "server.p2p_addr": "/ip4/127.0.0.1/tcp/3003",
    "server.topic": "/indexer/ingest/mainnet",
    "ingest.announce_burst": 20.0,
    "ingest.announce_rate": 10.0,
    "ingest.compact_idle": 60.0,
    "ingest.depth_limit": 0,
    "ingest.fetch_timeout": 30.0,
    "ingest.max_block": 4194304,
    "ingest.max_pending_publishers": 10000,
    "ingest.max_slow_syncs": 256,
    "ingest.max_syncs": 32,
    "ingest.max_workers": 32,
    "ingest.poll_interval": 0.0,
    "ingest.refuse_private_addrs": False,
    "ingest.segment": 2000,
    "ingest.slow_sync_after": 30.0,
    "ingest.source_burst": 100.0,
    "ingest.source_rate": 50.0,
    "ingest.stall_after": 5.0,
    "ingest.sync_timeout": 7200.0,
    # IngestConfig's own, not in the file before:
    "ingest.max_entry_blocks": 1000000,
    "ingest.entries_budget.max_idle": 256,
    "ingest.entries_budget.seconds": 120.0,
    "ingest.entries_budget.seconds_per_multihash": 0.01,
    "ingest.retry_base": 1.0,
    "ingest.retry_max": 300.0,
    "ingest.max_attempts": 5,
    "ingest.prefetch": 4,
    "ingest.decode_processes": 1,
    "ingest.decode_min_bytes": 65536,
    "ingest.max_slow_workers": 256,
    "ingest.history": 4096,
    "ingest.first_sync_depth": 0,
    "ingest.resend_direct_announce": False,
    "ingest.freeze_at_percent": 95.0,  # issue 13
    "http.body_timeout": 10.0,
    "http.head_timeout": 10.0,
    "http.idle_timeout": 60.0,
    "http.max_admin_connections": 64,
    "http.max_find_connections": 1024,
    "http.max_ingest_connections": 256,
    "http.min_transfer_rate": 16384.0,
    "http.send_timeout": 10.0,
    "policy.allow_publishers": ("*",),
    "policy.deny_publishers": (),
    "policy.allow_providers": ("*",),
    "policy.deny_providers": (),
    "policy.publish_for": {},
    # Silent providers (storetheindex's PollInterval, DeactivateAfter, PollStopAfter): issue 13.
    "ingest.poll_silent_after": 86400.0,
    "ingest.deactivate_after": 604800.0,
    "ingest.remove_after": 1209600.0,
    # [cluster], new with scale-out (issue 12): empty store and etcd keep the single node.
    "p2p.bootstrap_peers": (),
    "p2p.bootstrap_min_peers": 4,
    "p2p.peering_peers": (),
    "cluster.store": "",
    "cluster.etcd": "",
    "cluster.node": "",
    "cluster.root": "/ipni",
    "cluster.lease_ttl": 10,
    "cluster.interval": 1.0,
    "cluster.record_ttl": 1.0,
    "cluster.wait_replicas": 1,
    # [store], new with issue 14: LevelDB's memory, at the values the store was opened with.
    "store.write_buffer_mib": 64,
    "store.block_cache_mib": 256,
    "store.max_open_files": 1000,
    "store.table_file_mib": 8,
    "store.compress": True,
}


def flat(value: msgspec.Struct, prefix: str = "") -> dict[str, Any]:
    """Every setting of ``value`` as ``section.key``: value."""
    out: dict[str, Any] = {}
    for name in value.__struct_fields__:
        item = getattr(value, name)
        if isinstance(item, msgspec.Struct):
            out |= flat(item, f"{prefix}{name}.")
        else:
            out[f"{prefix}{name}"] = item
    return out


def test_the_defaults_are_the_values_they_were() -> None:
    defaults = flat(Config())
    assert defaults == BEFORE
    assert all(type(defaults[k]) is type(v) for k, v in BEFORE.items())  # 0.0 stays a float


def test_no_file_and_the_commented_template_both_mean_defaults(tmp_path: Path) -> None:
    assert load_config(None) == Config()
    assert load_config(tmp_path / "missing.toml") == Config()
    path = tmp_path / "config.toml"
    path.write_text(TEMPLATE)
    assert load_config(path) == Config()
    # Every setting the template mentions exists, uncommented, with its default.
    uncommented = "\n".join(
        line.replace("# ", "", 1) if line.startswith("# ") and " = " in line else line
        for line in TEMPLATE.splitlines()
        if "publish_for" not in line and "12D3KooW" not in line
    )
    path.write_text(uncommented)
    assert load_config(path) == Config()


def test_the_generated_template_names_every_key_once_and_parses_back_to_the_defaults(
    tmp_path: Path,
) -> None:
    setting = re.compile(r"# ([a-z0-9_]+) = (.*)")
    table = re.compile(r"# (\[[a-z_.]+\])")
    lines, section, seen = [], "", []
    for line in TEMPLATE.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        if m := setting.fullmatch(line):
            seen.append(f"{section}.{m[1]}")
            lines.append(f"{m[1]} = {m[2]}")
        elif m := table.fullmatch(line):
            lines.append(m[1])  # a table of the user's own keys: empty, its default
        else:
            lines.append(line)
    assert sorted(seen) == sorted(k for k in BEFORE if k != "policy.publish_for")
    path = tmp_path / "all.toml"
    path.write_text("\n".join(lines))
    assert load_config(path) == Config()
    assert flat(msgspec.convert(msgspec.toml.decode(path.read_bytes()), Config)) == BEFORE


def _other(value: Any) -> Any:
    """A valid value of the same type that is not ``value``."""
    if isinstance(value, bool):
        return not value
    return value + 1 if isinstance(value, int) else value * 2 + 1.5


@pytest.mark.parametrize("name", IngestConfig.__struct_fields__)
def test_every_ingest_setting_is_read_from_the_file(tmp_path: Path, name: str) -> None:
    """What the daemon hands the ingester as it is: no field of IngestConfig is out of reach."""
    default = getattr(IngestConfig(), name)
    path = tmp_path / "c.toml"
    if isinstance(default, EntriesBudget):
        path.write_text("[ingest.entries_budget]\nmax_idle = 7\nseconds = 1\n")
        assert load_config(path).ingest.entries_budget == EntriesBudget(max_idle=7, seconds=1.0)
        return
    value = _other(default)
    literal = str(value).lower() if isinstance(value, bool) else repr(value)
    path.write_text(f"[ingest]\n{name} = {literal}\n")
    config = load_config(path)
    assert getattr(config.ingest, name) == value and value != default
    assert config == msgspec.structs.replace(
        Config(), ingest=msgspec.structs.replace(IngestConfig(), **{name: value})
    )


def test_settings_and_policy(tmp_path: Path) -> None:
    pub, prov, bad = key(0).peer_id(), key(1).peer_id(), key(2).peer_id()
    path = tmp_path / "c.toml"
    path.write_text(
        f'[server]\nfind_addr = "127.0.0.1:4000"\n[ingest]\npoll_interval = 5\n'
        f'[policy]\ndeny_publishers = ["{bad}"]\n'
        f'[policy.publish_for]\n"{pub.to_cid()}" = ["{prov}"]\n'
    )
    config = load_config(path)
    assert config.server.find_addr == "127.0.0.1:4000" and config.ingest.poll_interval == 5.0
    assert config.server == Server(find_addr="127.0.0.1:4000") and config.http == Http()
    policy = config.policy
    assert policy.publish_for == {str(pub): (str(prov),)}  # a CID of a peer ID: its peer ID
    assert policy.publisher_allowed(pub) and not policy.publisher_allowed(bad)
    assert policy.may_publish(pub, prov) and policy.may_publish(prov, prov)
    assert not policy.may_publish(prov, pub)
    assert not Policy(deny_providers=(str(prov),)).may_publish(prov, prov)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # An unknown key, in every section and at the top.
        ("[server]\nfind = 1\n", 'unknown key "server.find"'),
        ("[ingest]\nretyr_max = 1\n", 'unknown key "ingest.retyr_max"'),
        ("[ingest.entries_budget]\nmax_idel = 1\n", 'unknown key "ingest.entries_budget.max_idel"'),
        ("[http]\nheader_timeout = 1\n", 'unknown key "http.header_timeout"'),
        ('[policy]\nallow = ["*"]\n', 'unknown key "policy.allow"'),
        ("[nope]\n", 'unknown key "nope"'),
        ("segment = 1\n", 'unknown key "segment"'),  # a setting outside its section
        ('[server]\n"a\\nb" = 1\n', r'unknown key "server.a\\nb"$'),  # still one line
        # A value of the wrong type, in every section.
        ("[server]\nfind_addr = 3000\n", "server.find_addr: expected str, got int$"),
        ('[ingest]\nsegment = "big"\n', "ingest.segment: expected int, got str$"),
        ("[ingest]\nmax_syncs = 1.5\n", "ingest.max_syncs: expected int, got float$"),
        ("[ingest]\nmax_syncs = true\n", "ingest.max_syncs: expected int, got bool$"),
        ('[ingest]\nrefuse_private_addrs = "yes"\n', "ingest.refuse_private_addrs: expected bool"),
        (
            '[ingest.entries_budget]\nseconds = "1"\n',
            "ingest.entries_budget.seconds: expected float",
        ),
        ("[http]\nidle_timeout = false\n", "http.idle_timeout: expected float, got bool$"),
        ('[policy]\nallow_publishers = "*"\n', "policy.allow_publishers: expected array, got str$"),
        ("[policy]\ndeny_providers = [1]\n", r"policy.deny_providers\[0\]: expected str, got int$"),
        ('[policy.publish_for]\n"x" = "y"\n', "policy.publish_for: expected array, got str$"),
        ("ingest = 1\n", "ingest: expected object, got int$"),
        # Values of the right type that are not allowed.
        ("[http]\nsend_timeout = 0\n", "http.send_timeout: expected float > 0.0, got 0$"),
        (
            "[http]\nmax_admin_connections = -1\n",
            "http.max_admin_connections: expected int >= 1, got -1$",
        ),
        ("[ingest.entries_budget]\nmax_idle = 0\n", "ingest.entries_budget: an entries budget"),
        ("[store]\nblock_cache_mib = 0\n", "store.block_cache_mib: expected int >= 1, got 0$"),
        ("[store]\nmax_open_files = 10\n", "store.max_open_files: expected int >= 64, got 10$"),
        ("[store]\ntable_file_mib = 0\n", "store.table_file_mib: expected int >= 1, got 0$"),
        ("[store]\ncompress = 1\n", "store.compress: expected bool, got int$"),
        ('[policy]\nallow_publishers = ["not-a-peer"]\n', "policy.allow_publishers: "),
        ('[policy.publish_for]\n"x" = []\n', "policy.publish_for: "),
        (f'[policy.publish_for]\n"{key(0).peer_id()}" = ["y"]\n', "policy.publish_for.12D3KooW"),
        ("this is not toml", "cannot read it as TOML"),
    ],
)
def test_bad_files_are_one_line_errors_naming_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    line = str(caught.value)
    assert line.startswith(f"{path}: ") and "\n" not in line, line
    assert re.search(message, line.removeprefix(f"{path}: ")), line


def test_a_file_that_must_exist(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(tmp_path / 'x.toml'))}: no such file$"
    ):
        load_config(tmp_path / "x.toml", required=True)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(tmp_path, required=True)  # a directory
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(tmp_path / "bad.toml")


def test_the_store_section_is_how_leveldb_is_opened(tmp_path: Path) -> None:
    assert Config().store.tuning() == Tuning()  # the defaults are the store's own
    path = tmp_path / "config.toml"
    path.write_text("[store]\nwrite_buffer_mib = 4\nblock_cache_mib = 8\nmax_open_files = 200\n")
    tuning = load_config(path).store.tuning()
    assert (tuning.write_buffer_size, tuning.lru_cache_size) == (4 << 20, 8 << 20)
    assert tuning.max_open_files == 200
    assert tuning.block_size == Tuning().block_size  # what the section does not name stays
    assert (tuning.max_file_size, tuning.compression) == (Tuning().max_file_size, "snappy")
    path.write_text("[store]\ntable_file_mib = 2\ncompress = false\n")
    tuning = load_config(path).store.tuning()
    assert (tuning.max_file_size, tuning.compression) == (2 << 20, None)
    assert tuning.lru_cache_size == Tuning().lru_cache_size


def test_the_readme_table_is_the_generated_one() -> None:
    text = README.read_text()
    begin, end = "<!-- config-table: begin -->\n", "<!-- config-table: end -->"
    assert begin in text and end in text, "README.md needs the configuration table markers"
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == markdown_table(), (
        "README.md's configuration table is stale; regenerate it with .venv/bin/python -c "
        "'from indexer.config import markdown_table as t; print(t(), end=\"\")'"
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('store = "redis://127.0.0.1:7000"', '"store" and "etcd" go together'),
        ('etcd = "http://127.0.0.1:2379"', '"store" and "etcd" go together'),
        ('store = "redis://h"\netcd = "http://h:1"', "store: not host:port: 'h'"),
        ('store = "http://h:1"\netcd = "http://h:1"', "store: not a redis:// URL"),
        ('store = "h:1"\netcd = "ftp://h:1"', "etcd: not http://host:port"),
        ("lease_ttl = 0", "cluster.lease_ttl"),
    ],
)
def test_a_bad_cluster_section_is_one_line_naming_it(
    tmp_path: Path, section: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[cluster]\n{section}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert str(path) in str(refused.value)


def test_a_cluster_section_with_both_urls_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[cluster]\nstore = "redis://a:1,b:2"\netcd = "a:3,http://b:4"\nnode = "n1"\n')
    cluster = load_config(path).cluster
    assert store_nodes(cluster.store) == [("a", 1), ("b", 2)]
    assert etcd_endpoints(cluster.etcd) == ["http://a:3", "http://b:4"]


_PEER = "12D3KooWGhufNmZHF3sv48aQeS13ng5XVJZ9E6qy2Ms4VzqeUsHk"


@pytest.mark.parametrize("name", ["bootstrap_peers", "peering_peers"])
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("not a multiaddr", "not a multiaddr"),
        ("/ip4/127.0.0.1/tcp/4001", "not <transport multiaddr>/p2p/<peer id>"),
        (f"/p2p/{_PEER}", "not <transport multiaddr>/p2p/<peer id>"),
        (f"/ip4/127.0.0.1/tcp/4001/p2p/{_PEER}/tcp/1", "not <transport multiaddr>/p2p/"),
    ],
)
def test_a_bad_p2p_peer_entry_is_one_line_naming_the_key(
    tmp_path: Path, name: str, entry: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    good = f"/ip4/127.0.0.1/tcp/4001/p2p/{_PEER}"
    path.write_text(f"[p2p]\n{name} = {json.dumps([good, entry])}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    line = str(refused.value)
    assert line.startswith(f"{path}: p2p.{name}: ") and "\n" not in line, line
    assert message in line and repr(entry) in line, line


def test_p2p_peer_entries_load_and_group_by_peer(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    addrs = [f"/ip4/127.0.0.1/tcp/4001/p2p/{_PEER}", f"/ip4/127.0.0.2/tcp/4002/p2p/{_PEER}"]
    path.write_text(f"[p2p]\nbootstrap_min_peers = 0\npeering_peers = {json.dumps(addrs)}\n")
    config = load_config(path)
    assert config.p2p.peering_peers == tuple(addrs) and config.p2p.bootstrap_min_peers == 0
    [peer] = parse_peer_addrs(config.p2p.peering_peers)
    assert str(peer.peer_id) == _PEER
    assert peer.addrs == ("/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.2/tcp/4002")
