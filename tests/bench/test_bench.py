"""The benchmarks' own machinery, fast: the summary table of ``python -m bench``, the growth
bench end to end at two tiny sizes (through ingest's write path), the small-ads bench on a tiny
chain (a real publisher process), and the recovery bench's data directories (the daemon start
itself takes seconds: run ``python -m bench recovery``)."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench import growth, ingest, recovery
from bench.__main__ import BENCHES, HEADLINES, Headline, _record, summary
from bench.errors import BenchRefused
from indexer.config import DB_DIR
from staging import StagingArea
from store import KV, IndexStore
from sync import Advertisement, Link, decode_node

RESULTS = {
    "ingest": {"ingest_multihashes_per_s": 300, "raw_plyvel_writebatch_puts_per_s": 1000,
               "ratio_to_raw": 0.3, "measured_at": "2026-01-01T00:00:00Z"},
    "memory": {"peak_rss_mib": [100.0, 120.0], "rss_ratio": 1.2},
    "recovery": {"seconds": 1.5, "python_import_daemon_s": 0.5},
    "growth": {"checkpoints": [{"ingest_multihashes_per_s": 10, "lookups_per_s": 5},
                               {"ingest_multihashes_per_s": 8, "lookups_per_s": 1}],
               "ingest_ratio": 0.8, "lookup_ratio": 0.2},
}  # fmt: skip


def _rows(results: dict[str, object]) -> dict[str, dict[str, object]]:
    return {f"{r['bench']}: {r['figure']}": r for r in summary(results)}


def test_summary_rows_come_from_each_bench_own_figures() -> None:
    rows = _rows(RESULTS)
    ingest = rows["ingest: ingest / raw LevelDB puts"]
    assert ingest["value"] == 300 and ingest["raw"] == 1000 and ingest["ratio"] == 0.3
    assert ingest["target"] == "ratio >= 0.6" and ingest["meets"] is False
    assert ingest["measured_at"] == "2026-01-01T00:00:00Z"
    memory = rows["memory: peak RSS, 100k-ad / 1k-ad chain"]
    assert memory["value"] == 120.0 and memory["raw"] == 100.0 and memory["meets"] is True
    recovery_row = rows["recovery: start to first index write (worst case's median)"]
    assert recovery_row["value"] == 1.5 and recovery_row["ratio"] == 3.0  # value / raw
    assert recovery_row["target"] == "value < 2" and recovery_row["meets"] is True
    ingest_growth = rows["growth: ingest at the largest size / the smallest"]
    assert ingest_growth["value"] == 8 and ingest_growth["raw"] == 10
    assert ingest_growth["meets"] is True
    assert rows["growth: lookups at the largest size / the smallest"]["meets"] is False
    # A bench never run, or a figure its bench does not (yet) give: a row that says so.
    find = rows["find: HTTP find / the same server's /health"]
    assert find["value"] == "not measured yet" and find["meets"] is None
    assert len(rows) == len(HEADLINES)
    assert {h.bench for h in HEADLINES} <= set(BENCHES)


def test_a_value_target_and_a_missing_raw() -> None:
    h = Headline("small_ads", "ads", "ads/s", ("ads_per_s",), "none", target=2000, on="value")
    [row] = summary({"small_ads": {"ads_per_s": 2500}}, [h])
    assert row["raw"] is None and row["ratio"] is None and row["meets"] is True


def test_results_file_merges_by_bench_and_rebuilds_the_summary(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"ingest": RESULTS["ingest"], "summary": ["stale"]}))
    _record({"memory": RESULTS["memory"]}, path)
    kept = json.loads(path.read_text())
    assert kept["ingest"] == RESULTS["ingest"] and kept["memory"] == RESULTS["memory"]
    rows = _rows({"ingest": RESULTS["ingest"], "memory": RESULTS["memory"]})
    assert kept["summary"] == list(rows.values())
    path.write_text("not json")
    _record({"memory": RESULTS["memory"]}, path)  # a damaged file is started afresh
    assert set(json.loads(path.read_text())) == {"memory", "summary", "summary_built_at"}


def test_sizes_and_the_disk_check(tmp_path: Path) -> None:
    assert growth.parse_sizes("200k, 1M,2.5M") == [200_000, 1_000_000, 2_500_000]
    for bad in ["1M,200k", "x", "0,1"]:
        with pytest.raises(BenchRefused):
            growth.parse_sizes(bad)
    assert growth.check_disk(tmp_path, 1000) > 0
    with pytest.raises(BenchRefused, match="free"):
        growth.check_disk(tmp_path, 10**15)


def test_growth_end_to_end_at_tiny_sizes() -> None:
    out = growth.run([20_000, 40_000], lookups=200, quiet=0.02)
    first, last = out["checkpoints"]
    assert (first["multihashes"], last["multihashes"]) == (20_000, 40_000)
    for point in (first, last):
        assert point["lookups_per_s"] > 0 and point["raw_gets_per_s"] > 0
        assert point["disk_bytes_per_pair_as_is"] > 0
        assert point["write_batch_ms"]["max"] >= point["write_batch_ms"]["p50"] > 0
        assert point["compactions"]["written_mb"] >= 0
    assert out["ingest_ratio"] == round(
        last["ingest_multihashes_per_s"] / first["ingest_multihashes_per_s"], 3
    )


def test_small_ads_reports_both_processes_cpu_and_the_ceiling_it_sets() -> None:
    out = ingest.small_ads(ads=300)
    assert out["ads"] == 300 and out["ads_per_s"] > 0 and out["sequential_block_requests_per_s"] > 0
    # Both processes worked (the publisher's CPU is read from its own /proc entry, in clock
    # ticks: 300 ads are ~600 requests, tens of ticks), and no run can beat the CPU they took.
    assert out["indexer_cpu_us_per_ad"] > 0 and out["publisher_cpu_us_per_ad"] > 0
    per_ad = out["indexer_cpu_us_per_ad"] + out["publisher_cpu_us_per_ad"]
    assert abs(out["cpu_bound_ads_per_s"] - (os.cpu_count() or 1) * 1e6 / per_ad) <= 2
    assert out["ads_per_s"] <= out["cpu_bound_ads_per_s"] * 1.05  # rounding, tick granularity


def test_growth_build_indexes_through_staging_and_leaves_nothing_staged(tmp_path: Path) -> None:
    growth.build(tmp_path / "db", 2 * growth.CHUNK + 100, ad_chunks=2)  # one ad and a bit
    with KV(tmp_path / "db", create=False) as kv:
        index = IndexStore(kv)
        # Each ad popped once, in order: a second ad begun before the first was popped would
        # have found the first again (and left the second staged).
        assert index.lookup(growth.chunk(0)[0]) and index.lookup(growth.chunk(2)[99])
        assert not index.lookup(growth.chunk(2)[100])  # the last chunk was cut short
        assert StagingArea(kv).providers() == []
        [second] = index.lookup(growth.chunk(2)[0])
        assert second.context_id == b"growth 1" and second.metadata == growth.METADATA
        assert index.provider(growth.PROVIDER) is not None


def test_growth_pops_every_ad_once_in_order(tmp_path: Path) -> None:
    with KV(tmp_path / "db") as kv, ThreadPoolExecutor(1) as pool:
        writer = growth._Writer(kv, ad_chunks=1)
        growth._grow(writer, 3 * 1000, pool)  # chunks cut to 1,000: one chunk, one ad
        growth._grow(writer, 4 * 1000, pool)
        assert StagingArea(kv).providers() == []
        assert writer.written == 4000 and writer.chunks == 2  # one cut-short chunk per call


def test_recovery_stages_the_first_ad_then_the_marker(tmp_path: Path) -> None:
    data = recovery._data_dir(tmp_path / "data")
    assert (data / "identity.key").stat().st_mode & 0o777 == 0o600
    recovery._stage(data / DB_DIR, 3, 5, b"t")
    with KV(data / DB_DIR, create=False) as kv:
        area = StagingArea(kv)
        assert len(area.providers()) == 3
        for provider in area.providers():
            entry = area.next_entry(provider)
            assert entry is not None and entry.ad.error is None and entry.stack.count == 5
            ad = Advertisement.from_node(decode_node(entry.ad.raw, Link(entry.ad.cid).codec))
            assert not ad.has_entries and ad.metadata
            [marker, *_] = area.upcoming(entry, 4)
            assert marker.error is not None


def test_memory_parts_split_the_whole_rss_and_see_leveldb_tables(tmp_path: Path) -> None:
    """``bench.heap`` splits the RSS by mapping: the parts add up to the process's RSS, and the
    pages of a table file LevelDB read through mmap count as ``leveldb_tables``."""
    from bench.heap import _parts

    with KV(tmp_path / "db") as kv:
        kv.write_batch([(b"k%06d" % i, os.urandom(200)) for i in range(5_000)])
        kv.compact()  # into table files
        assert sum(1 for _ in kv.scan(b"k")) == 5_000  # read through the mmapped tables
        parts = _parts()
        status = Path("/proc/self/status").read_text().splitlines()
        rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    assert set(parts) == {"anonymous", "leveldb_tables", "other_files"}
    assert parts["leveldb_tables"] > 0 and parts["anonymous"] > 0 and parts["other_files"] > 0
    assert abs(sum(parts.values()) - rss) < 4 << 20  # two reads, a few pages apart
