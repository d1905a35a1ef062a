"""Recovery: how soon a restarted daemon writes to its index again (target: under 2 s).

Two data directories, each made offline (no daemon), then the real ``indexer daemon`` started on
it as a subprocess (``--no-p2p``, every HTTP server on ``127.0.0.1:0``), ``ROUNDS`` times:

- ``staged``: ``ADS`` ads (``BENCH_RECOVERY_ADS``, default 100k) staged over ``PROVIDERS``
  providers, through the staging package's own API (``StagingArea.begin_walk``, ``spill``,
  ``commit_walk``: what a sync leaves), and nothing indexed yet; made afresh each round.
- ``index``: an index of ``INDEX`` multihashes (``BENCH_RECOVERY_INDEX``, default 10M) written by
  ``bench.growth.build`` (ingest's write path), made once; each round stages a few more ads.

Every provider's stack has, oldest (applied first) to newest: a signed ad with no entries and
metadata (its value record and the provider's registry record: the worker's first index
write, popped from staging in the same batch), then an ad staged with an error, whose
``"ad invalid, recorded processed-with-error"`` log line (structlog JSON on stderr, with its
own timestamp) is written only once the ad before it is committed, then (``staged`` only) the
rest: ads with one signed body under distinct CIDs (signing 100k ads would take a minute; the
worker never reads them before the measurement ends).

The figure is that log line's timestamp minus the wall clock just before ``Popen``: interpreter
start, imports, opening LevelDB, start-up, the worker's first two ads.  No polling, no sleep.
Beside it, to say what the time goes to: when the daemon's start-up line (``--json``, stdout:
every server listening) was read (``None``: not before the first write), each start-up log
line's offset, how long opening a copy of the database takes (``leveldb_open_s``: LevelDB
replays its write-ahead log, the writes not yet in a table file, up to two memtables of 64 MiB;
the daemon's start-up check opens the database once before the daemon does, and pays it), and
how long a bare ``python -c "import indexer.cli.daemon"`` takes (``python_import_daemon_s``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from bench.growth import build, check_disk
from indexer.config import DB_DIR
from staging import StagedAd, StagingArea
from store import KV
from sync import NO_ENTRIES, Advertisement, Link, PrivateKey, encode_block, sign_advertisement
from sync.model.cid import DAG_JSON
from sync.model.metadata import bitswap

__all__ = ["run"]

ADS = 100_000
INDEX = 10_000_000
PROVIDERS = 10
INDEX_PROVIDERS = 2  # providers with two ads each staged beside the index, per round
ROUNDS = 3
SEGMENT = 10_000  # ads per spill batch
TARGET_S = 2.0
MARKER = "ad invalid, recorded processed-with-error"
TIMEOUT = 120.0  # a daemon that never gets there is killed and the run fails
ADDRS = ["/ip4/127.0.0.1/tcp/9/http"]  # never dialled: the staged ads need no entries


def _signed(key: PrivateKey, context: bytes) -> tuple[Link, bytes]:
    ad = Advertisement(
        provider=str(key.peer_id()),
        addresses=("/ip4/127.0.0.1/tcp/9999",),
        entries=NO_ENTRIES,
        context_id=context,
        metadata=bitswap(),
        is_rm=False,
        previous_id=None,
        extended_provider=None,
    )
    return encode_block(sign_advertisement(ad, key, {}).to_node())


def _stack(key: PrivateKey, ads: int, tag: bytes) -> list[StagedAd]:
    """A provider's stack, newest (position 0) first: filler, the marker, the first ad."""
    first_cid, first_raw = _signed(key, b"first " + tag)
    _, filler_raw = _signed(key, b"filler " + tag)
    marker = StagedAd(Link.make(DAG_JSON, b"marker " + tag).raw, b"", error="bench marker")
    filler = [
        StagedAd(Link.make(DAG_JSON, b"filler %s %d" % (tag, i)).raw, filler_raw)
        for i in range(ads - 2)
    ]
    return [*filler, marker, StagedAd(first_cid.raw, first_raw)]


def _stage(db: Path, providers: int, per_provider: int, tag: bytes) -> None:
    publisher = PrivateKey.generate().peer_id().raw
    with KV(db) as kv:
        area = StagingArea(kv)
        base = area.commit_seq()
        walk = area.begin_walk(publisher, ADDRS, b"head " + tag)
        counts = {}
        for p in range(providers):
            provider = PrivateKey.generate()
            stack = _stack(provider, per_provider, b"%s/%d" % (tag, p))
            raw = provider.peer_id().raw
            for at in range(0, len(stack), SEGMENT):
                area.spill(
                    walk, [(raw, at + i, ad) for i, ad in enumerate(stack[at : at + SEGMENT])]
                )
            counts[raw] = len(stack)
        area.commit_walk(walk, counts, base_seq=base)


def _data_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    key = path / "identity.key"
    if not key.exists():
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(PrivateKey.generate().marshal())
    return path


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _read_stdout(stream: IO[str], out: list[float]) -> None:
    if stream.readline():
        out.append(time.time())
    stream.read()  # drain until the process ends


def _start(data_dir: Path) -> dict[str, Any]:
    """Start the daemon on ``data_dir``; seconds until its first ad is committed, and more."""
    cmd = [sys.executable, "-m", "indexer", "daemon", "--data-dir", str(data_dir), "--no-p2p",
           "--find-addr", "127.0.0.1:0", "--ingest-addr", "127.0.0.1:0",
           "--admin-addr", "127.0.0.1:0", "--json"]  # fmt: skip
    started_line: list[float] = []
    events: list[tuple[float, str]] = []
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    assert proc.stdout is not None and proc.stderr is not None
    reader = threading.Thread(target=_read_stdout, args=(proc.stdout, started_line), daemon=True)
    reader.start()
    first: float | None = None
    try:
        for line in proc.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            at = _epoch(record["timestamp"]) - t0 if "timestamp" in record else -1.0
            if record.get("event") == MARKER:
                first = at
                break
            events.append((round(at, 3), str(record.get("event"))))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        watchdog.cancel()
        reader.join(5)
    if first is None:
        raise RuntimeError(f"the daemon exited ({proc.returncode}) before its first ad: {events}")
    return {
        "first_index_write_s": round(first, 3),
        "startup_line_s": round(started_line[0] - t0, 3) if started_line else None,
        "log_lines_before": events,
    }


def _open_s(db: Path, scratch: Path) -> float:
    """Opening a copy of ``db`` (so the daemon still finds it as it was): LevelDB replays its
    write-ahead log (the writes not yet in a table file) and writes it out as a level-0 table."""
    shutil.copytree(db, scratch)
    try:
        start = time.perf_counter()
        KV(scratch, create=False).close()
        return round(time.perf_counter() - start, 3)
    finally:
        shutil.rmtree(scratch)


def _import_s() -> float:
    """A bare interpreter importing the daemon's command module (best of three)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import indexer.cli.daemon"], check=True)
        best = min(best, time.perf_counter() - start)
    return best


def _summary(runs: list[dict[str, Any]], open_s: float, **extra: Any) -> dict[str, Any]:
    seconds = [r["first_index_write_s"] for r in runs]
    return {
        **extra,
        "first_index_write_s": {
            "best": min(seconds),
            "median": round(statistics.median(seconds), 3),
            "runs": seconds,
        },
        # None: the daemon wrote to its index before every server listened (it was stopped then)
        "startup_line_s": [r["startup_line_s"] for r in runs],
        "leveldb_open_s": open_s,
        "log_lines_before_first_write": runs[0]["log_lines_before"],
        "meets": statistics.median(seconds) < TARGET_S,
    }


def _env(name: str, default: int) -> int:
    from bench.growth import parse_sizes  # one syntax for sizes: 100k, 10M

    value = os.environ.get(name)
    return parse_sizes(value)[0] if value else default


def run(ads: int | None = None, index: int | None = None, rounds: int = ROUNDS) -> dict[str, Any]:
    ads = ads or _env("BENCH_RECOVERY_ADS", ADS)
    index = index or _env("BENCH_RECOVERY_INDEX", INDEX)
    with tempfile.TemporaryDirectory() as tmp:
        check_disk(Path(tmp), index)
        staged_runs, staged_open = [], 0.0
        for r in range(rounds):
            data = _data_dir(Path(tmp) / f"staged{r}")
            _stage(data / DB_DIR, PROVIDERS, -(-ads // PROVIDERS), b"staged %d" % r)
            if r == 0:
                staged_open = _open_s(data / DB_DIR, Path(tmp) / "copy")
            staged_runs.append(_start(data))
        data = _data_dir(Path(tmp) / "index")
        start = time.perf_counter()
        build(data / DB_DIR, index)
        built_s = time.perf_counter() - start
        index_runs, index_open = [], 0.0
        for r in range(rounds):
            _stage(data / DB_DIR, INDEX_PROVIDERS, 2, b"index %d" % r)
            if r == 0:
                index_open = _open_s(data / DB_DIR, Path(tmp) / "copy")
            index_runs.append(_start(data))
    staged = _summary(staged_runs, staged_open, ads=ads, providers=PROVIDERS)
    on_index = _summary(index_runs, index_open, multihashes=index, build_s=round(built_s, 1))
    worst = max(staged["first_index_write_s"]["median"], on_index["first_index_write_s"]["median"])
    return {
        "staged": staged,
        "index": on_index,
        "seconds": worst,
        "python_import_daemon_s": round(_import_s(), 3),
        "target_s": TARGET_S,
    }
