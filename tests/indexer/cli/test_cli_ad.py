"""``indexer ad show``, run as a user runs it: the installed console script in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sync import DAG_CBOR, encode_block
from tests.builders import key, make_ad, make_chunk
from tests.vectors import DOC_AD, DOC_HEAD, NFT_AD, NFT_HEAD

INDEXER = shutil.which("indexer", path=str(Path(sys.executable).parent))


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    assert INDEXER, "the indexer console script is not installed in this venv"
    return subprocess.run(
        [INDEXER, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "kind", "checked"),
    [
        (NFT_AD, "advertisement", True),
        (DOC_AD, "advertisement", False),
        (NFT_HEAD, "signed-head", False),
        (DOC_HEAD, "signed-head", False),
    ],
)
def test_every_fixture_shows_valid(fixtures_dir: Path, name: str, kind: str, checked: bool) -> None:
    out = run("ad", "show", str(fixtures_dir / name), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["valid"] is True and report["error"] is None
    assert report["kind"] == kind and report["cid_checked"] is checked
    assert report["signer"]


def test_table_output(fixtures_dir: Path) -> None:
    out = run("ad", "show", str(fixtures_dir / NFT_AD))
    assert out.returncode == 0
    assert "QmQzqxhK82kAmKvARFZSkUVS6fo9sySaiogAnx5EnZ6ZmC" in out.stdout
    assert "transport-bitswap" in out.stdout and "valid" in out.stdout


def test_cid_mismatch_is_invalid_with_exit_1(fixtures_dir: Path, tmp_path: Path) -> None:
    raw = (fixtures_dir / NFT_AD).read_bytes()
    wrong = tmp_path / Path(NFT_AD).name
    wrong.write_bytes(raw.replace(b'"IsRm":false', b'"IsRm":true'))
    out = run("ad", "show", str(wrong), "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["valid"] is False and report["error"]["kind"] == "hash_mismatch"


def test_tampered_signed_field_is_invalid(fixtures_dir: Path) -> None:
    raw = (fixtures_dir / NFT_AD).read_bytes().replace(b'"IsRm":false', b'"IsRm":true')
    out = run("ad", "show", "-", "--json", stdin=raw)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["error"]["kind"] == "signature_error"
    assert report["fields"]["IsRm"] is True  # what was decoded is still shown
    table = run("ad", "show", "-", stdin=raw)
    assert table.returncode == 1 and "INVALID" in table.stdout


def test_stdin_dagcbor_entry_chunk_with_explicit_cid() -> None:
    cid, raw = encode_block(make_chunk(7).to_node(), DAG_CBOR)
    out = subprocess.run(
        [INDEXER or "indexer", "ad", "show", "-", "--cid", str(cid), "--json"],
        input=raw,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["kind"] == "entry-chunk" and report["codec"] == "dag-cbor"
    assert report["fields"]["EntryCount"] == 7 and report["cid_checked"] is True


def test_file_named_by_cid_is_checked(tmp_path: Path) -> None:
    cid, raw = encode_block(make_ad(key(0)).to_node())
    path = tmp_path / f"{cid}.json"
    path.write_bytes(raw)
    report = json.loads(run("ad", "show", str(path), "--json").stdout)
    assert report["cid_checked"] is True and report["cid"] == str(cid)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ad", "show", "/no/such/file"), "no such file"),
        (("ad", "show", "-", "--cid", "notacid"), "bad CID"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: tuple[str, ...], message: str) -> None:
    out = run(*args, stdin=b"")
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("garbage", [b"", b"not a block", b"{}", b"\xff\xfe"])
def test_garbage_is_reported_not_a_traceback(garbage: bytes) -> None:
    out = subprocess.run(
        [INDEXER or "indexer", "ad", "show", "-", "--json"],
        input=garbage,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 1 and b"Traceback" not in out.stderr
    assert json.loads(out.stdout)["valid"] is False
