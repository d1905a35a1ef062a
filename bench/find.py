"""HTTP find throughput: lookups through the find server beside its own empty endpoint.

``run()`` writes an index of ``MULTIHASHES`` multihashes straight into LevelDB (``store.KV`` and
``IndexStore``'s write plans): ``PROVIDERS`` providers with ``CONTEXTS`` contexts each, every
tenth multihash also under a second provider, and a registry record (addresses, publisher, last
ad) per provider, so answers have the shape of real ones.  The server is the daemon's own find
handler (``indexer.daemon.Daemon._find_handler``: the find API with delegated routing mounted by
prefix) on ``sync.net.httpserver.serve_tcp``, in its own process (``python -m bench.find
serve``), so the load generator does not share its GIL.

The load generator (this process) keeps ``CONNECTIONS`` keep-alive HTTP/1.1 connections busy,
one request in flight on each (no pipelining), with a small raw-socket client on ``selectors``
(httpx would measure itself: 250-450 requests/s).  Requests are encoded ahead of time.  Each
route is measured for ``SECONDS`` after a ``WARMUP``, in ``ROUNDS`` alternating rounds (best
round kept; the machine is noisy):

- ``empty``: ``GET /health``, the cheapest route of the same server (the baseline);
- ``find``: ``GET /multihash/<base58>`` of random indexed multihashes (200, JSON);
- ``find_404``: ``GET /multihash/<base58>`` of multihashes not in the index (404);
- ``batch``: ``POST /multihash`` of ``BATCH`` random indexed multihashes (requests/s and
  multihashes/s, the latter also beside the handler's own work done in-process on the same
  batches: ``Finder.find`` and the JSON encoding, best of ``ROUNDS``);
- ``routing``: ``GET /routing/v1/providers/<cid>`` (CIDv1 raw of an indexed multihash; JSON);
- ``find_during_ingest``: ``find`` again (one round) against a second server process that ingests
  meanwhile: a new context's ``CHUNK`` new multihashes per batch, each batch written in a worker
  thread as ingest writes its entry chunks, so every batch also empties the read caches.  Its
  p50 and p99 latency stand beside those of the best quiet ``find`` round, with the multihashes
  per second the ingest wrote meanwhile.

Each figure stands beside the empty endpoint's as a ratio (target: find >= 0.8).  The server's
and the client's CPU use during the window say which side was the bottleneck: a server near
1.0 core is saturated.  ``python -m bench.find profile`` runs the same load with the server
under cProfile and prints where the server's time goes (its main thread only: the worker threads
big batches are looked up in are not profiled; use py-spy with ``--threads`` for those).
"""

from __future__ import annotations

import cProfile
import hashlib
import io
import json
import os
import pstats
import random
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import base58
import msgspec
import trio

from store import KV, IndexStore, ProviderRecord, Write, value_key
from sync import Link, PrivateKey

__all__ = ["run"]

MULTIHASHES = 100_000
PROVIDERS = 4
CONTEXTS = 10  # per provider
BATCH = 100
CONNECTIONS = 16
SECONDS = 2.0
WARMUP = 0.3
ROUNDS = 2
POOL = 2_000  # distinct pre-encoded requests per route
CHUNK = 16_384  # multihashes per batch the concurrent ingest writes (an entry chunk's)
RAW = 0x55
METADATA = b"\x80\x12"  # bitswap
_TICK = os.sysconf("SC_CLK_TCK")


def _mh(i: int) -> bytes:
    return b"\x12\x20" + hashlib.sha256(i.to_bytes(8, "big")).digest()


def _build(path: Path) -> None:
    """The index: every multihash under one provider's context, every tenth under a second."""
    peers = [PrivateKey.generate().peer_id().raw for _ in range(PROVIDERS)]
    contexts = [(p, b"ctx-%d-%d" % (n, c)) for n, p in enumerate(peers) for c in range(CONTEXTS)]
    per_context = -(-MULTIHASHES // len(contexts))
    with KV(path) as kv:
        writes: list[Write] = []
        for n, provider in enumerate(peers):
            record = ProviderRecord(
                addresses=[
                    f"/ip4/10.0.0.{n + 1}/tcp/4001",
                    f"/dns4/p{n}.example.net/tcp/443/https",
                ],
                publisher=provider,
                publisher_addrs=[f"/ip4/10.0.0.{n + 1}/tcp/3104/http"],
                last_ad=Link.make(RAW, b"ad-%d" % n).raw,
                last_ad_time=1_700_000_000.0,
            )
            writes += IndexStore.put_provider(provider, record)
        for c, (provider, ctx) in enumerate(contexts):
            writes += IndexStore.put_value(provider, ctx, METADATA)
            first = c * per_context
            mhs = [_mh(i) for i in range(first, min(MULTIHASHES, first + per_context))]
            writes += IndexStore.put_multihashes(value_key(provider, ctx), mhs)
            other = contexts[(c + CONTEXTS) % len(contexts)]  # another provider's context
            writes += IndexStore.put_multihashes(value_key(*other), mhs[::10])
            kv.write_batch(writes)
            writes = []
        kv.compact()


# --- the server (its own process) --------------------------------------------------------------


async def _ingest(kv: KV, written: list[int]) -> None:
    """Ingest-shaped writes until cancelled: a new context's chunk of ``CHUNK`` new multihashes
    per batch, each written in a worker thread as ingest writes its chunks (``ingest/apply.py``);
    ``written[0]`` counts the multihashes written."""
    index = IndexStore(kv)
    provider = PrivateKey.generate().peer_id().raw
    first = 10 * MULTIHASHES  # far from every multihash the load asks for

    def chunk(n: int) -> None:
        ctx = b"ingest-%d" % n
        vk = index.allocate(provider, ctx)
        start = first + n * CHUNK
        mhs = [_mh(i) for i in range(start, start + CHUNK)]
        kv.write_batch([*IndexStore.put_value_at(vk, provider, ctx, METADATA),
                        *IndexStore.put_multihashes(vk, mhs)])  # fmt: skip
        written[0] += CHUNK

    n = 0
    while True:
        await trio.to_thread.run_sync(chunk, n)
        n += 1


async def _serve(path: Path, ingest: bool = False) -> None:
    from indexer.config import Config
    from indexer.daemon import Daemon
    from sync.net.httpserver import serve_tcp

    written = [0]
    with KV(path, create=False) as kv:
        daemon = Daemon(path.parent, Config(), PrivateKey.generate())
        handler = daemon._find_handler(kv)  # exactly what the daemon serves
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
            if ingest:
                nursery.start_soon(_ingest, kv, written)
            print(json.dumps({"port": listeners[0].socket.getsockname()[1]}), flush=True)
            # A line asks how much was ingested; the parent closing our stdin ends the server.
            while await trio.to_thread.run_sync(sys.stdin.readline):
                print(json.dumps({"ingested": written[0]}), flush=True)
            nursery.cancel_scope.cancel()


def _server_main(path: str, profile: str | None, ingest: bool = False) -> None:
    if profile is None:
        trio.run(_serve, Path(path), ingest)
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        trio.run(_serve, Path(path), ingest)
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


class _Server:
    """A find server process: its port and pid; ``ingested()`` asks how much it ingested."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.port: int = json.loads(proc.stdout.readline())["port"]
        self.pid = proc.pid

    def ingested(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return int(json.loads(self.proc.stdout.readline())["ingested"])


@contextmanager
def _server(path: Path, profile: str | None = None, ingest: bool = False) -> Iterator[_Server]:
    """A find server over ``path`` in its own process (ingesting meanwhile with ``ingest``)."""
    args = [sys.executable, "-m", "bench.find", "serve" + ("-ingest" if ingest else ""), str(path)]
    proc = subprocess.Popen(
        [*args, *([profile] if profile else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield _Server(proc)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the load generator ------------------------------------------------------------------------


def _cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _complete(buf: bytearray) -> int:
    """Length of the first whole response in ``buf`` (0: not yet)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return 0
    head = bytes(buf[:end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        size = end + 4 + int(head[at + 17 : stop if stop >= 0 else len(head)])
        return size if len(buf) >= size else 0
    stop = buf.find(b"\r\n0\r\n\r\n", end)  # chunked
    return stop + 7 if stop >= 0 else 0


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: bench\r\naccept: application/json\r\n\r\n".encode()


def _post(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
    return head.encode() + b"content-length: %d\r\n\r\n" % len(body) + body


def _load(
    port: int, pid: int, requests: list[bytes], latencies: list[float] | None = None
) -> dict[str, Any]:
    """Keep ``CONNECTIONS`` connections busy; requests/s and CPU use in the measured window
    (and each measured request's latency appended to ``latencies``)."""
    sel = selectors.DefaultSelector()
    socks = []
    sent: dict[socket.socket, float] = {}  # when each connection's request in flight went out
    rng = random.Random(len(requests))
    for _ in range(CONNECTIONS):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sel.register(sock, selectors.EVENT_READ, bytearray())
        socks.append(sock)
        sent[sock] = time.perf_counter()
        sock.sendall(requests[rng.randrange(len(requests))])
    statuses: dict[int, int] = {}
    begin = time.perf_counter()
    start, stop = begin + WARMUP, begin + WARMUP + SECONDS
    measuring, done, last = False, 0, start
    server_cpu = client_cpu = 0.0
    in_flight = CONNECTIONS
    while in_flight:
        for key, _ in sel.select():
            conn, buf = key.fileobj, key.data
            assert isinstance(conn, socket.socket)
            data = conn.recv(262144)
            if not data:
                raise ConnectionError("the server closed a keep-alive connection")
            buf += data
            size = _complete(buf)
            if not size:
                continue
            now = time.perf_counter()
            if not measuring and now >= start:
                measuring, server_cpu, client_cpu = True, _cpu(pid), time.process_time()
                start = now
            if measuring and now < stop:
                done += 1
                last = now
                status = int(buf[9:12])
                statuses[status] = statuses.get(status, 0) + 1
                if latencies is not None:
                    latencies.append(now - sent[conn])
            del buf[:size]
            if now < stop:
                sent[conn] = time.perf_counter()
                conn.sendall(requests[rng.randrange(len(requests))])
            else:
                in_flight -= 1
    elapsed = last - start
    server_cpu, client_cpu = _cpu(pid) - server_cpu, time.process_time() - client_cpu
    for sock in socks:
        sel.unregister(sock)
        sock.close()
    return {
        "requests_per_s": done / elapsed,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_cpu_cores": server_cpu / elapsed,
        "client_cpu_cores": client_cpu / elapsed,
    }


def _batches() -> list[list[bytes]]:
    rng = random.Random(6)
    return [[_mh(i) for i in rng.sample(range(MULTIHASHES), BATCH)] for _ in range(POOL // 10)]


def _requests() -> dict[str, list[bytes]]:
    rng = random.Random(5)
    known = [_mh(i) for i in rng.sample(range(MULTIHASHES), POOL)]
    unknown = [_mh(MULTIHASHES + i) for i in range(POOL)]
    batches = [msgspec.json.encode({"Multihashes": mhs}) for mhs in _batches()]
    return {
        "empty": [_get("/health")],
        "find": [_get("/multihash/" + base58.b58encode(mh).decode()) for mh in known],
        "find_404": [_get("/multihash/" + base58.b58encode(mh).decode()) for mh in unknown],
        "batch": [_post("/multihash", body) for body in batches],
        "routing": [_get("/routing/v1/providers/" + str(Link(b"\x01\x55" + mh))) for mh in known],
    }


def _check(port: int, requests: dict[str, list[bytes]]) -> None:
    """One request per route: the statuses and shapes the benchmark counts on."""
    want = {"find_404": 404}  # every other route: 200
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for name, reqs in requests.items():
            sock.sendall(reqs[0])
            buf = bytearray()
            while not (size := _complete(buf)):
                buf += sock.recv(262144)
            status, body = int(buf[9:12]), bytes(buf[buf.find(b"\r\n\r\n") + 4 : size])
            assert status == want.get(name, 200), (name, status, body[:200])
            if name == "find":
                assert len(json.loads(body)["MultihashResults"][0]["ProviderResults"]) >= 1
            if name == "batch":
                assert len(json.loads(body)["MultihashResults"]) == BATCH
            if name == "routing":
                assert json.loads(body)["Providers"], body[:200]


def _in_process(path: Path) -> float:
    """Multihashes/s of the batch handler's own work (``Finder.find`` + JSON), no HTTP."""
    from indexer.find.expand import Finder
    from indexer.find.model import FindResponse, encode

    batches = _batches()

    async def rounds(index: IndexStore) -> float:
        best = 0.0
        finder = Finder(index)  # one for every batch, as the handler keeps one
        for _ in range(ROUNDS + 1):  # the first round warms the block cache
            start = time.perf_counter()
            for mhs in batches:
                encode(FindResponse(await finder.find(mhs)))
            best = max(best, len(batches) * BATCH / (time.perf_counter() - start))
        return best

    with KV(path, create=False) as kv:
        return trio.run(rounds, IndexStore(kv))


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies) or [0.0]

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99)}


def _during_ingest(path: Path, requests: list[bytes], quiet: list[float]) -> dict[str, Any]:
    """``find`` while the same server process ingests (``_ingest``), beside its quiet latency."""
    latencies: list[float] = []
    with _server(path, ingest=True) as server:
        before = server.ingested()
        start = time.perf_counter()
        result = _load(server.port, server.pid, requests, latencies)
        ingested = (server.ingested() - before) / (time.perf_counter() - start)
    quiet_row = _percentiles(quiet)
    return {
        "requests_per_s": round(result["requests_per_s"]),
        **_percentiles(latencies),
        "quiet_p50_ms": quiet_row["p50_ms"],
        "quiet_p99_ms": quiet_row["p99_ms"],
        "ingest_multihashes_per_s": round(ingested),
        "statuses": result["statuses"],
        "server_cpu_cores": round(result["server_cpu_cores"], 2),
    }


def _measure(path: Path, profile: str | None = None) -> dict[str, Any]:
    requests = _requests()
    best: dict[str, dict[str, Any]] = {}
    quiet: list[float] = []  # find latencies of the best quiet round
    with _server(path, profile) as server:
        port, pid = server.port, server.pid
        _check(port, requests)
        for _ in range(ROUNDS):
            for name, reqs in requests.items():
                latencies: list[float] = []
                result = _load(port, pid, reqs, latencies)
                if name not in best or result["requests_per_s"] > best[name]["requests_per_s"]:
                    best[name] = result
                    if name == "find":
                        quiet = latencies
    in_process = _in_process(path)  # after the server is gone: LevelDB is single-process
    during = _during_ingest(path, requests["find"], quiet) if profile is None else None
    empty = best["empty"]["requests_per_s"]
    out: dict[str, Any] = {}
    for name, result in best.items():
        rate = result["requests_per_s"]
        row: dict[str, Any] = {"requests_per_s": round(rate)}
        if name != "empty":
            row["ratio_to_empty"] = round(rate / empty, 3)
        if name == "batch":
            row["multihashes_per_s"] = round(rate * BATCH)
            row["in_process_multihashes_per_s"] = round(in_process)
            row["ratio_to_in_process"] = round(rate * BATCH / in_process, 3)
        row["statuses"] = result["statuses"]
        row["server_cpu_cores"] = round(result["server_cpu_cores"], 2)
        row["client_cpu_cores"] = round(result["client_cpu_cores"], 2)
        out[name] = row
    if during is not None:
        out["find_during_ingest"] = during
    return out


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index"
        _build(path)
        routes = _measure(path)
    return {
        "multihashes": MULTIHASHES,
        "providers": PROVIDERS,
        "contexts": PROVIDERS * CONTEXTS,
        "connections": CONNECTIONS,
        "seconds_per_route": SECONDS,
        "empty_endpoint": "GET /health",
        **routes,
        "target_find_ratio": 0.8,
    }


def profile(top: int = 30) -> str:
    """The same load with the server under cProfile; its hottest functions (own time)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index"
        _build(path)
        stats_file = str(Path(tmp) / "server.prof")
        _measure(path, stats_file)
        text = io.StringIO()
        stats = pstats.Stats(stats_file, stream=text)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return text.getvalue()


if __name__ == "__main__":
    if sys.argv[1:2] in (["serve"], ["serve-ingest"]):
        profile_to = sys.argv[3] if len(sys.argv) > 3 else None
        _server_main(sys.argv[2], profile_to, ingest=sys.argv[1] == "serve-ingest")
    elif sys.argv[1:2] == ["profile"]:
        print(profile())
    else:
        json.dump(run(), sys.stdout, indent=2)
        sys.stdout.write("\n")
