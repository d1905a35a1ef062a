"""Hostile bytes against every HTTP server of a real ``indexer daemon`` and a real publisher.

Four servers, each in a real process: the daemon's ingest, find and admin servers, and the
publisher's ipnisync TCP server.  Every malformed or unsupported request of ``tests/hostile.py``
goes to each over a raw socket, then a good request on a new connection proves the process still
serves, and its log (JSON lines on stderr, read by a thread so the pipe never fills) must hold no
error and no unhandled exception.  The timed attacks (one byte at a time, a slow body, a reader
that never reads) run against processes with short deadlines (``[http]`` in the daemon's config
file; ``NodeConfig.http`` for the publisher, run from a three-line script).  The floods run
against processes at their default settings, as the outside tester ran them: 1,100 idle
connections on each daemon server, every server filled to its cap with busy connections, and a
daemon whose hard open-files limit (1,400) is below what its default caps would need.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import trio

from indexer.config import ConfigError, load_config
from tests.e2e.test_publisher_cli import INDEXER, mh_lines, ok
from tests.hostile import (
    CASES,
    HALF_CLOSED,
    HOST,
    Case,
    exchange,
    good,
    open_raw,
    parse,
    pipelined_never_read,
    read_all,
    read_one,
    slow_body,
    slowloris,
)

SHORT_HTTP = """
[http]
head_timeout = 1.0
body_timeout = 1.0
send_timeout = 1.0
idle_timeout = 30.0
"""
SHORT_LIMITS = {"head_timeout": 1.0, "body_timeout": 1.0, "send_timeout": 1.0, "idle_timeout": 30}

PUBLISHER_SCRIPT = """
import json, sys, msgspec, trio
from pathlib import Path
from indexer.logs import configure_logging
from indexer.publisher.node import PUBLIC_LIMITS, NodeConfig, PublisherNode
from sync.net.httpserver import Limits
from indexer.publisher.chain import Publisher

configure_logging()
limits = Limits(**{**msgspec.to_builtins(PUBLIC_LIMITS), **json.loads(sys.argv[2])})
node = PublisherNode(Publisher.open(Path(sys.argv[1])), NodeConfig(http=limits))

async def main():
    async with trio.open_nursery() as nursery:
        info = await nursery.start(node.run)
        print(json.dumps(msgspec.to_builtins(info)), flush=True)

trio.run(main)
"""


class Proc:
    """A serving subprocess: its first stdout line (JSON), and every stderr line as it comes."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.lines: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._collect, args=(self.proc.stderr,), daemon=True).start()
        line = self.proc.stdout.readline()
        assert line, "".join(self.lines)
        self.info: dict[str, Any] = json.loads(line)

    def _collect(self, stderr: IO[str]) -> None:
        for line in stderr:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    def records(self) -> list[dict[str, Any]]:
        with self._seen:
            lines = list(self.lines)
        return [_record(line) for line in lines]

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 20) -> Any:
        """The first log record ``match`` accepts (waiting for it, at most ``timeout`` s)."""

        def found() -> dict[str, Any] | None:
            return next((r for r in map(_record, self.lines) if match(r)), None)

        with self._seen:
            assert self._seen.wait_for(lambda: found() is not None, timeout), self.lines[-20:]
            return found()

    def assert_healthy(self) -> None:
        """Still running, and nothing logged as an error or an unhandled exception."""
        assert self.proc.poll() is None, "".join(self.lines[-30:])
        bad = [r for r in self.records() if r.get("level") in ("error", "critical") or
               "exception" in r or "Traceback" in r.get("event", "")]  # fmt: skip
        assert not bad, bad[:5]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _record(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        return {"level": "error", "event": f"not a structured line: {line!r}"}
    return record if isinstance(record, dict) else {"level": "error", "event": line}


@dataclass(frozen=True)
class Server:
    name: str
    proc: Proc
    port: int
    path: str  # a GET route answering 200

    async def still_serving(self) -> None:
        assert await good(self.port, self.path) == 200
        self.proc.assert_healthy()


def _port(url: str) -> int:
    return int(url.rstrip("/").split(":")[-1].split("/")[0])


# Runs argv[3:] with RLIMIT_NOFILE set to (argv[1], argv[2]).
WITH_NOFILE = "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, "
WITH_NOFILE += "(int(sys.argv[1]), int(sys.argv[2]))); os.execv(sys.argv[3], sys.argv[3:])"
HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
# The outside tester's soft limit; a hard limit the daemon raises it to (as many systems have).
TESTER_NOFILE = (min(1024, HARD), min(4096, HARD))


def with_nofile(args: list[str], nofile: tuple[int, int] | None) -> list[str]:
    if nofile is None:
        return args
    return [sys.executable, "-c", WITH_NOFILE, *map(str, nofile), *args]


def start_daemon(data: Path, config: str, nofile: tuple[int, int] | None = None) -> Proc:
    data.mkdir(parents=True, exist_ok=True)
    (data / "config.toml").write_text(config)
    args = [INDEXER, "daemon", "--data-dir", str(data), "--json", "--no-p2p"]
    args += ["--find-addr", "127.0.0.1:0", "--ingest-addr", "127.0.0.1:0"]
    args += ["--admin-addr", "127.0.0.1:0"]
    return Proc(with_nofile(args, nofile))


def daemon_servers(proc: Proc) -> list[Server]:
    info = proc.info
    return [
        Server("ingest", proc, _port(info["ingest_url"]), "/health"),
        Server("find", proc, _port(info["find_url"]), "/health"),
        Server("admin", proc, _port(info["admin_url"]), "/healthcheck"),
    ]


def publisher_data(data: Path) -> Path:
    ok("init", "--data-dir", str(data))
    ok("add", "--data-dir", str(data), "--context-id", "c", "--multihashes", "-",
       stdin=mh_lines(0, 10))  # fmt: skip
    return data


def publisher_server(proc: Proc) -> Server:
    return Server("ipnisync", proc, _port(proc.info["url"]), "/ipni/v1/ad/head")


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """The four servers with one-second deadlines."""
    root = tmp_path_factory.mktemp("short")
    daemon = start_daemon(root / "idx", SHORT_HTTP)
    pub_data = publisher_data(root / "pub")
    script = [sys.executable, "-c", PUBLISHER_SCRIPT, str(pub_data), json.dumps(SHORT_LIMITS)]
    publisher = Proc(script)
    try:
        yield {s.name: s for s in [*daemon_servers(daemon), publisher_server(publisher)]}
    finally:
        daemon.stop()
        publisher.stop()


@pytest.fixture(scope="module")
def defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """The four servers as shipped (no [http] settings, ``indexer publisher serve``), started
    with the outside tester's open-files limits."""
    _raise_own_open_files_limit()
    root = tmp_path_factory.mktemp("defaults")
    daemon = start_daemon(root / "idx", "", TESTER_NOFILE)
    pub_data = publisher_data(root / "pub")
    serve = [INDEXER, "publisher", "serve", "--data-dir", str(pub_data), "--json"]
    publisher = Proc(with_nofile(serve, TESTER_NOFILE))
    try:
        yield {s.name: s for s in [*daemon_servers(daemon), publisher_server(publisher)]}
    finally:
        daemon.stop()
        publisher.stop()


def caps(server: Server) -> int:
    """The connection cap the server's process logged at start."""
    record = server.proc.wait_for(lambda r: r.get("event") == "http connection caps")
    return int(record[server.name])


def _raise_own_open_files_limit() -> None:
    """The floods hold thousands of client sockets in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


SERVERS = ["ingest", "find", "admin", "ipnisync"]


# --- every malformed request, on every server ------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("which", SERVERS)
async def test_malformed_request(short: dict[str, Server], which: str, case: Case) -> None:
    server = short[which]
    if case.closes:
        reply = await exchange(server.port, case.data(server.path))
        status, headers, rest = parse(reply.raw)
        assert status in case.statuses, reply.raw[:300]
        assert headers["connection"] == "close"
        if case.head:
            assert rest == b""  # no body after a HEAD, whatever Content-Length says
    else:
        stream = await open_raw(server.port)
        await stream.send_all(case.data(server.path))
        buffer = bytearray()
        status, headers, _ = parse(await read_one(stream, buffer))
        assert status in case.statuses and "allow" in headers
        await stream.send_all(f"GET {server.path} HTTP/1.1\r\n{HOST}\r\n".encode())
        assert parse(await read_one(stream, buffer))[0] == 200  # the connection still works
        await stream.aclose()
    await server.still_serving()


@pytest.mark.parametrize(("name", "data", "statuses"), HALF_CLOSED, ids=[h[0] for h in HALF_CLOSED])
@pytest.mark.parametrize("which", SERVERS)
async def test_half_closed(
    short: dict[str, Server], which: str, name: str, data: str, statuses: frozenset[int]
) -> None:
    server = short[which]
    reply = await exchange(server.port, data.replace("{path}", server.path).encode(), shut_wr=True)
    assert reply.status in statuses
    await server.still_serving()


@pytest.mark.parametrize("which", SERVERS)
async def test_routes_answer_405_to_other_methods(short: dict[str, Server], which: str) -> None:
    server = short[which]
    for method in ("POST", "PUT", "DELETE", "BREW"):
        request = f"{method} {server.path} HTTP/1.1\r\n{HOST}Content-Length: 0\r\n\r\n"
        reply = await exchange(server.port, request.encode(), shut_wr=True)
        status, headers, _ = parse(reply.raw)
        assert status == 405 and "GET" in headers["allow"], (method, status)
    await server.still_serving()


# --- slow and stalled clients ---------------------------------------------------------------


async def on_every_server(
    servers: dict[str, Server], attack: Callable[[Server], Awaitable[None]]
) -> None:
    """``attack`` against the four servers at once (each waits out a deadline)."""
    async with trio.open_nursery() as nursery:
        for server in servers.values():
            nursery.start_soon(attack, server)


async def test_slowloris_head(short: dict[str, Server]) -> None:
    async def attack(server: Server) -> None:
        reply, sent = await slowloris(server.port, server.path, interval=0.02, budget=1000)
        assert reply.status == 408 and sent < 1000, server.name  # closed while bytes came
        await server.still_serving()

    await on_every_server(short, attack)


async def test_slow_body(short: dict[str, Server]) -> None:
    async def attack(server: Server) -> None:
        reply, sent = await slow_body(server.port, server.path, interval=0.02, budget=1000)
        assert reply.status == 408 and sent < 1000, server.name
        await server.still_serving()

    await on_every_server(short, attack)


async def test_client_that_never_reads(short: dict[str, Server]) -> None:
    async def attack(server: Server) -> None:
        stream = await pipelined_never_read(server.port, server.path, count=4000)
        peer = f"127.0.0.1:{stream.socket.getsockname()[1]}"

        def gave_up(record: dict[str, Any]) -> bool:
            event = record.get("event") == "http peer stopped reading; closed"
            return event and record["peer"] == peer and record["server"] == server.name

        await trio.to_thread.run_sync(server.proc.wait_for, gave_up)
        reply = await read_all(stream)  # what reached us before it gave up, then the close
        assert reply.raw.count(b"HTTP/1.1 200 ") < 4000, server.name
        await stream.aclose()
        await server.still_serving()

    await on_every_server(short, attack)


# --- floods, at the default settings ----------------------------------------------------------


async def test_1100_idle_connections_on_each_daemon_server_lock_nothing_out(
    defaults: dict[str, Server],
) -> None:
    servers = [defaults[name] for name in ("ingest", "find", "admin")]
    count = min(1100, (HARD - 300) // 3)  # 1,100 unless this process may not hold that many
    held = []
    try:
        for server in servers:
            held += [await open_raw(server.port) for _ in range(count)]
        for server in servers:  # the idlest connection makes room for each good one
            await server.still_serving()
    finally:
        for stream in held:
            await stream.aclose()
    for server in servers:
        await server.still_serving()
    accept_failed = [
        r for r in servers[0].proc.records() if r.get("event") == "http accept failed; retrying"
    ]
    assert not accept_failed  # the caps held below the descriptors it has


async def _fill(server: Server, count: int) -> tuple[list[trio.SocketStream], int]:
    """``count`` connections, each proven busy (answered 100 Continue, body never sent).

    Returns them and the status the first one refused got (0 when none was refused).
    """
    request = f"PUT {server.path} HTTP/1.1\r\n{HOST}Content-Length: 10\r\n"
    request += "Expect: 100-continue\r\n\r\n"
    busy: list[trio.SocketStream] = []
    for _ in range(count):
        stream = await open_raw(server.port)
        await stream.send_all(request.encode())
        with trio.fail_after(10):
            first = await stream.receive_some(4096)
        if not first.startswith(b"HTTP/1.1 100 "):
            reply = first + (await read_all(stream)).raw
            await stream.aclose()
            return busy, parse(reply)[0]
        busy.append(stream)
    return busy, 0


@pytest.mark.parametrize("which", SERVERS)
async def test_busy_flood_past_the_cap(defaults: dict[str, Server], which: str) -> None:
    server = defaults[which]
    cap = caps(server)
    if TESTER_NOFILE[1] == 4096:  # room for the shipped caps
        assert cap == {"ingest": 256, "find": 1024, "admin": 64, "ipnisync": 1024}[which]
    busy, refused = await _fill(server, cap + 1)
    try:
        assert len(busy) == cap and refused == 503
        reply = await exchange(server.port, f"GET {server.path} HTTP/1.1\r\n{HOST}\r\n".encode())
        status, headers, _ = parse(reply.raw)
        assert status == 503 and headers["retry-after"] == "1"
        for other in defaults.values():  # the other servers do not notice
            if other.name != which:
                await other.still_serving()
    finally:
        for stream in busy:
            await stream.aclose()
    with trio.fail_after(20):  # the closes reach the server; then it serves again
        while await good(server.port, server.path) != 200:  # noqa: ASYNC110 -- polls a server in another process
            await trio.sleep(0.05)
    await server.still_serving()
    record = server.proc.wait_for(lambda r: r.get("event") == "http connection cap reached"
                                  and r.get("server") == which)  # fmt: skip
    assert record["cap"] == cap and record["level"] == "warning"


async def test_caps_fit_a_low_open_files_limit(tmp_path: Path) -> None:
    """Hard limit 1,400: default caps would need 1,568 descriptors, LevelDB 1,100 more."""
    _raise_own_open_files_limit()
    proc = start_daemon(tmp_path / "idx", "", nofile=(1400, 1400))
    try:
        caps = proc.wait_for(lambda r: r.get("event") == "http connection caps")
        limit = proc.wait_for(lambda r: r.get("event") == "open files limit")
        assert limit["soft"] == 1400
        assert caps["find"] < 1024 and caps["ingest"] < 256 and caps["admin"] < 64
        find, *others = sorted(daemon_servers(proc), key=lambda s: s.name != "find")
        busy, refused = await _fill(find, caps["find"] + 1)
        try:
            assert len(busy) == caps["find"] and refused == 503
            for other in others:
                await other.still_serving()
        finally:
            for stream in busy:
                await stream.aclose()
        assert not [r for r in proc.records() if r.get("event") == "http accept failed; retrying"]
        proc.assert_healthy()
    finally:
        proc.stop()


async def test_soft_open_files_limit_is_raised_at_start(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    proc = start_daemon(tmp_path / "idx", "", nofile=(256, hard))
    try:
        limit = proc.wait_for(lambda r: r.get("event") == "open files limit")
        assert (limit["was"], limit["soft"], limit["hard"]) == (256, hard, hard)
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[http]\nhead_timeout = 0\n", "http.head_timeout: expected float > 0.0, got 0$"),
        ("[http]\nmin_transfer_rate = -1.0\n", "http.min_transfer_rate: expected float > 0.0"),
        ('[http]\nmax_find_connections = "many"\n', "http.max_find_connections: expected int"),
        ("[http]\nheader_timeout = 1\n", 'unknown key "http.header_timeout"'),
    ],
    ids=["zero-timeout", "negative-rate", "wrong-type", "unknown-key"],
)
def test_http_settings_are_checked(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    path.write_text(SHORT_HTTP)
    assert load_config(path).http.head_timeout == 1.0
