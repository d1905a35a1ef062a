"""SIGKILL a real ``indexer ingest`` process mid-ingest of a 2,000-ad chain served over HTTP,
at several random moments; after each kill the invariants hold, and the last run completes.

The publisher is reached through a proxy that delays every block by 2 ms, so the chain takes
seconds to ingest however fast the indexer gets, and every kill lands mid-way.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

from indexer.publisher.chain import Publisher
from staging import StagingArea
from store import KV
from sync import Link
from sync.model.metadata import bitswap
from tests.builders import multihash
from tests.crash.invariants import check_invariants
from tests.e2e.test_publisher_cli import INDEXER
from tests.httpstub import SlowProxy

ADS = 2000
PER_AD = 5


def test_sigkill_mid_ingest_at_random_moments(tmp_path: Path) -> None:
    pub = Publisher.init(tmp_path / "pub")
    for i in range(ADS):
        pub.add(f"ctx{i}".encode(), [multihash(i * PER_AD + j) for j in range(PER_AD)], bitswap())
    chain = [
        (Link.parse(r.cid), {multihash(i * PER_AD + j) for j in range(PER_AD)})
        for i, r in enumerate(reversed(pub.chain()))
    ]
    peer = pub.peer_id
    pub.close()
    serve = subprocess.Popen(
        [INDEXER, "publisher", "serve", "--data-dir", str(tmp_path / "pub"), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert serve.stdout is not None
        origin = json.loads(serve.stdout.readline())["url"].removesuffix("/ipni/v1/ad")
        proxy = SlowProxy(origin, 0.002)
        addr = f"{proxy.addr}/p2p/{peer}"
        data = tmp_path / "indexer"
        command = [INDEXER, "ingest", "--data-dir", str(data), "--publisher", addr, "--json"]
        rng = random.Random(2000)
        kills = 0
        progress: list[int] = []
        for _ in range(5):
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.4, 2.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
            with KV(data / "db") as kv:
                check_invariants(kv, chain, peer.raw)
                area = StagingArea(kv)
                progress.append(sum(1 for c, _ in chain if area.done(c.raw)))
        final = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert final.returncode == 0, final.stderr
        assert kills >= 3, "the chain ingested too fast to be killed mid-way; make it longer"
        with KV(data / "db") as kv:
            check_invariants(kv, chain, peer.raw)
            area = StagingArea(kv)
            assert all(area.done(c.raw) for c, _ in chain)
            assert area.providers() == []
            indexed = {k[1:35] for k, _ in kv.scan(b"i")}
            assert indexed == {mh for _, mhs in chain for mh in mhs}
        assert progress == sorted(progress)  # work is never lost between kills
        proxy.close()
    finally:
        serve.terminate()
        serve.wait(timeout=20)
