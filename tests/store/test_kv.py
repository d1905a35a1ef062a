"""The LevelDB adapter, on a real database in tmp_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from store import KV, StoreClosed, StoreLocked, StoreNotFound


def test_batches_scans_and_reopen(tmp_path: Path) -> None:
    with KV(tmp_path / "db") as kv:
        kv.write_batch([(b"p/1", b"a"), (b"p/2", b"b"), (b"q/1", b"c")], sync=True)
        kv.write_batch([(b"p/1", None), (b"p/3", b"d")])
        assert list(kv.scan(b"p/")) == [(b"p/2", b"b"), (b"p/3", b"d")]
        assert [k for k, _ in kv.scan(b"p/", reverse=True)] == [b"p/3", b"p/2"]
    with KV(tmp_path / "db", create=False) as kv:
        assert kv.get(b"q/1") == b"c" and kv.get(b"p/1") is None


def test_missing_database_is_not_created_when_asked(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound):
        KV(tmp_path / "nothing", create=False)


def test_use_after_close(tmp_path: Path) -> None:
    kv = KV(tmp_path / "db")
    kv.close()
    with pytest.raises(StoreClosed):
        kv.get(b"x")


def test_a_second_process_gets_a_clear_lock_error(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with KV(path):
        code = (
            "import sys; from store import KV, StoreLocked\n"
            f"try:\n    KV({str(path)!r})\nexcept StoreLocked as e:\n    print(e); sys.exit(3)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
    assert out.returncode == 3, out.stderr
    assert "in use by another process" in out.stdout
    KV(path).close()  # the lock went with the first handle


def test_same_process_second_open_is_locked(tmp_path: Path) -> None:
    with KV(tmp_path / "db"), pytest.raises(StoreLocked):
        KV(tmp_path / "db")
