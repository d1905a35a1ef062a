"""``indexer ingest`` opens LevelDB with the config's ``[store]`` settings, as the daemon does.

In-process (no publisher: the command resumes nothing, syncs nothing and exits), with the
store's real ``KV`` wrapped to record the options it was opened with.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import indexer.cli.ingest as ingest_cli
from indexer.cli.main import cli
from indexer.errors import CliError
from store import KV, Tuning

STORE = "[store]\nwrite_buffer_mib = 4\nblock_cache_mib = 8\nmax_open_files = 200\n"
DEFAULTS = Tuning()  # KV's own default
WANTED = Tuning(write_buffer_size=4 << 20, lru_cache_size=8 << 20, max_open_files=200)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Tuning]]:
    """The tunings ``indexer ingest`` opened LevelDB with; SIGINT's handler restored after."""
    seen: list[Tuning] = []

    def recording_kv(path: Path, create: bool = True, tuning: Tuning = DEFAULTS) -> KV:
        seen.append(tuning)
        return KV(path, create, tuning)

    monkeypatch.setattr(ingest_cli, "KV", recording_kv)
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, handler)  # the command ignores SIGINT outside trio.run


def run(*argv: str) -> None:
    cli.main(["ingest", *argv], standalone_mode=False)


def test_ingest_opens_leveldb_with_the_data_dirs_store_section(
    tmp_path: Path, opened: list[Tuning]
) -> None:
    data = tmp_path / "idx"
    data.mkdir()
    (data / "config.toml").write_text(STORE)
    run("--data-dir", str(data))
    assert opened == [WANTED]
    assert (data / "db" / "CURRENT").exists()


def test_ingest_opens_leveldb_with_the_named_configs_store_section(
    tmp_path: Path, opened: list[Tuning]
) -> None:
    (tmp_path / "other.toml").write_text(STORE)
    run("--data-dir", str(tmp_path / "idx"), "--config", str(tmp_path / "other.toml"))
    assert opened == [WANTED]
    run("--data-dir", str(tmp_path / "fresh"))  # no config file: the store's own defaults
    assert opened == [WANTED, Tuning()]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[store]\nblock_cache_mb = 8\n", 'unknown key "store.block_cache_mb"'),
        ("[store]\nmax_open_files = 10\n", "store.max_open_files: expected int >= 64, got 10"),
        (None, "no such file"),
    ],
)
def test_a_bad_config_stops_ingest_before_the_data_dir_is_touched(
    tmp_path: Path, opened: list[Tuning], text: str | None, message: str
) -> None:
    config = tmp_path / "bad.toml"
    if text is not None:
        config.write_text(text)
    with pytest.raises(CliError, match=f"^{re.escape(str(config))}: .*{re.escape(message)}"):
        run("--data-dir", str(tmp_path / "idx"), "--config", str(config))
    assert not (tmp_path / "idx").exists() and opened == []
