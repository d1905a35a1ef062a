"""The h11 HTTP server and the ipnisync handler, over real sockets on 127.0.0.1.

The hostile-client half sends every request of ``tests/hostile.py`` and the slow, silent,
never-reading and flooding clients to one server, each followed by a good request on a new
connection; the deadline rules are also checked exactly on trio's mock clock over memory streams.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.publisher.chain import Publisher
from sync import encode_block, load_advertisement
from sync.errors import Refusal
from sync.ipnisync.routes import ipnisync_handler
from sync.model.metadata import bitswap
from sync.net.httpmessage import split_target
from sync.net.httpserver import (
    ConnectionLimiter,
    Handler,
    Limits,
    Request,
    Response,
    descriptors_for,
    serve_connection,
    serve_tcp,
    share_open_files,
)
from tests.builders import multihash
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


async def echo(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/stream":

        async def parts() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"line {i}\n".encode()

        return Response(200, parts(), "application/x-ndjson")
    body = f"{request.method} {request.path} {dict(request.query)} {len(request.body)}".encode()
    return Response(200, body * 50, "text/plain", compressible=True)


async def start(nursery: trio.Nursery, handler: object, **kw: object) -> str:
    listeners = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def test_keep_alive_gzip_streaming_and_errors() -> None:
    async with trio.open_nursery() as nursery:
        base = await start(nursery, echo)
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(3):  # one connection, several requests
                r = await client.get("/a/b", params={"q": "1"})
                assert r.status_code == 200 and r.text.startswith("GET /a/b {'q': ['1']} 0")
                assert r.headers["content-encoding"] == "gzip"
            r = await client.put("/x", content=b"12345", headers={"accept-encoding": "identity"})
            assert "content-encoding" not in r.headers and r.text.startswith("PUT /x {} 5")
            r = await client.get("/stream")
            assert r.text == "line 0\nline 1\nline 2\n"
            assert r.headers["transfer-encoding"] == "chunked"
            r = await client.get("/boom")
            assert r.status_code == 500 and r.text == "internal error\n"
            r = await client.post("/big", content=b"x" * ((1 << 20) + 1))
            assert r.status_code == 413
        nursery.cancel_scope.cancel()


async def test_malformed_request_gets_400_not_a_crash() -> None:
    async with trio.open_nursery() as nursery:
        base = await start(nursery, echo)
        port = int(base.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        reply = await stream.receive_some(4096)
        assert reply.startswith(b"HTTP/1.1 400")
        await stream.aclose()
        async with httpx.AsyncClient(base_url=base) as client:  # the server is still up
            assert (await client.get("/")).status_code == 200
        nursery.cancel_scope.cancel()


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[Publisher]:
    pub = Publisher.init(tmp_path / "pub")
    yield pub
    pub.close()


async def test_ipnisync_routes(publisher: Publisher) -> None:
    async with trio.open_nursery() as nursery:
        base = await start(nursery, ipnisync_handler(publisher))
        async with httpx.AsyncClient(base_url=base + "/ipni/v1/ad") as client:
            r = await client.get("/head")
            assert r.status_code == 204 and "no-cache" in r.headers["cache-control"]
            published = publisher.add(b"c", [multihash(i) for i in range(2000)], bitswap())
            r = await client.get("/head")
            assert r.status_code == 200 and r.content == publisher.signed_head()
            assert r.headers["etag"] == f'"{published.cid}"'
            assert r.headers["content-type"] == "application/vnd.ipld.dag-json"
            r = await client.get("/head", headers={"if-none-match": r.headers["etag"]})
            assert r.status_code == 304 and not r.content
            r = await client.get(f"/{published.cid}")
            assert r.status_code == 200 and r.content == publisher.block(published.link)
            assert r.headers["cache-control"] == "public, max-age=29030400, immutable"
            unknown, _ = encode_block({"x": 1})
            assert (await client.get(f"/{unknown}")).status_code == 404
            assert (await client.get("/not-a-cid")).status_code == 400
            assert (await client.post("/head")).status_code == 405
            assert (await client.get("/a/b")).status_code == 404
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/other")).status_code == 404
            ad = load_advertisement(published.link, publisher.block(published.link) or b"")
            chunk = await client.get(
                f"/ipni/v1/ad/{ad.entries}", headers={"accept-encoding": "gzip"}
            )
            assert chunk.headers["content-encoding"] == "gzip"
            assert chunk.content == publisher.block(ad.entries)  # httpx decodes gzip
            assert int(chunk.headers["content-length"]) < len(chunk.content)
        nursery.cancel_scope.cancel()


# --- hostile clients: nothing a peer sends may raise out of a connection, stall or lock it ----

OK_PATH = "/ok"


async def strict(request: Request) -> Response:
    """GET/HEAD of anything; any other method 405 with Allow (as every real handler does)."""
    if request.path == "/stream":

        async def lines() -> AsyncIterator[bytes]:
            for i in range(3):
                yield b"line %d\n" % i

        return Response(200, lines(), "text/plain")
    if request.method not in ("GET", "HEAD"):
        return Response.text(405, "method not allowed", headers=(("allow", "GET, HEAD"),))
    return Response.text(200, "ok")


class Served:
    """``serve_tcp`` on a free port with a limiter whose counters the test reads."""

    def __init__(self, port: int, limiter: ConnectionLimiter) -> None:
        self.port = port
        self.limiter = limiter


async def serve(
    nursery: trio.Nursery, handler: Handler = strict, limits: Limits | None = None, name: str = "t"
) -> Served:
    limits = limits or Limits()
    limiter = ConnectionLimiter(limits.max_connections, name)
    listeners = await nursery.start(
        partial(serve_tcp, limits=limits, limiter=limiter), handler, "127.0.0.1", 0
    )
    return Served(listeners[0].socket.getsockname()[1], limiter)


async def until(condition: Callable[[], bool], limit: float = 10) -> None:
    """Wait (bounded) for a counter the server moves; the server runs in this process."""
    with trio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 -- a bounded poll of a server counter
            await trio.sleep(0.005)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_malformed_request_gets_a_status_and_the_server_lives_on(case: Case) -> None:
    async with trio.open_nursery() as nursery:
        served = await serve(nursery)
        if case.closes:
            reply = await exchange(served.port, case.data(OK_PATH))
            status, headers, rest = parse(reply.raw)
            assert status in case.statuses, reply.raw[:200]
            assert headers["connection"] == "close"  # and it did close: exchange read to EOF
            assert rest == (b"" if case.head else rest[: int(headers["content-length"])])
        else:  # answered, and the connection stays usable
            stream = await open_raw(served.port)
            await stream.send_all(case.data(OK_PATH))
            status, headers, _ = parse(await read_one(stream))
            assert status in case.statuses and headers["allow"] == "GET, HEAD"
            await stream.send_all(f"GET {OK_PATH} HTTP/1.1\r\n{HOST}\r\n".encode())
            assert parse(await read_one(stream))[0] == 200
            await stream.aclose()
        assert await good(served.port, OK_PATH) == 200
        assert served.limiter.failures == 0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("name", "data", "statuses"), HALF_CLOSED, ids=[h[0] for h in HALF_CLOSED])
async def test_half_closed_connections(name: str, data: str, statuses: frozenset[int]) -> None:
    async with trio.open_nursery() as nursery:
        served = await serve(nursery)
        reply = await exchange(served.port, data.replace("{path}", OK_PATH).encode(), shut_wr=True)
        assert reply.status in statuses, reply
        assert await good(served.port, OK_PATH) == 200
        assert served.limiter.failures == 0
        nursery.cancel_scope.cancel()


async def test_pipelining_expect_continue_head_of_a_stream_and_error_replies_to_head() -> None:
    async with trio.open_nursery() as nursery:
        served = await serve(nursery)
        stream = await open_raw(served.port)
        one = f"GET {OK_PATH} HTTP/1.1\r\n{HOST}\r\n".encode()
        await stream.send_all(one * 3)  # three requests in one segment
        buffer = bytearray()
        for _ in range(3):
            assert parse(await read_one(stream, buffer))[0] == 200
        await stream.send_all(
            f"GET {OK_PATH} HTTP/1.1\r\n{HOST}Content-Length: 2\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        first = await stream.receive_some(4096)
        assert first.startswith(b"HTTP/1.1 100 ")  # asked for the body before reading it
        await stream.send_all(b"hi")
        assert parse(await read_one(stream))[0] == 200
        await stream.send_all(f"HEAD /stream HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n".encode())
        status, _, rest = parse((await read_all(stream)).raw)
        assert status == 200 and rest == b""
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_handler_faults_close_only_their_connection() -> None:
    async def faulty(request: Request) -> Response:
        if request.path == "/bad-header":
            return Response(200, b"x", headers=(("x-evil", "a\r\nb"),))
        if request.path == "/broken-stream":

            async def parts() -> AsyncIterator[bytes]:
                yield b"first\n"
                raise RuntimeError("stream bug")

            return Response(200, parts())
        return await strict(request)

    async with trio.open_nursery() as nursery:
        served = await serve(nursery, faulty)
        for path in ("/bad-header", "/broken-stream"):
            reply = await exchange(served.port, f"GET {path} HTTP/1.1\r\n{HOST}\r\n".encode())
            assert b"x-evil" not in reply.raw
            assert not reply.raw.endswith(b"0\r\n\r\n")  # a cut stream is never a whole one
            assert await good(served.port, OK_PATH) == 200
        assert served.limiter.failures == 0
        nursery.cancel_scope.cancel()


SHORT = Limits(head_timeout=0.5, body_timeout=0.5, send_timeout=0.3, idle_timeout=30)


async def test_slowloris_head_is_closed_by_the_head_deadline() -> None:
    async with trio.open_nursery() as nursery:
        served = await serve(nursery, limits=SHORT)
        reply, sent = await slowloris(served.port, OK_PATH, interval=0.02, budget=1000)
        assert reply.status == 408 and sent < 1000  # bytes kept coming; it still hung up
        assert await good(served.port, OK_PATH) == 200
        nursery.cancel_scope.cancel()


async def test_slow_body_is_closed_by_the_body_deadline() -> None:
    async with trio.open_nursery() as nursery:
        served = await serve(nursery, limits=SHORT)
        reply, sent = await slow_body(served.port, OK_PATH, interval=0.02, budget=1000)
        assert reply.status == 408 and sent < 1000
        assert await good(served.port, OK_PATH) == 200
        nursery.cancel_scope.cancel()


async def test_a_client_that_never_reads_is_dropped_by_the_send_deadline() -> None:
    async with trio.open_nursery() as nursery:
        served = await serve(nursery, limits=SHORT)
        stream = await pipelined_never_read(served.port, OK_PATH, count=4000)
        await until(lambda: served.limiter.stalled == 1)
        reply = await read_all(stream)  # what reached us before the server gave up
        assert reply.raw.count(b"HTTP/1.1 200 ") < 4000
        await stream.aclose()
        assert await good(served.port, OK_PATH) == 200
        nursery.cancel_scope.cancel()


async def test_idle_flood_rotates_through_the_cap() -> None:
    async with trio.open_nursery() as nursery:
        served = await serve(nursery, limits=Limits(max_connections=8))
        idle = [await open_raw(served.port) for _ in range(30)]
        await until(lambda: served.limiter.evicted == 22)
        assert served.limiter.open == 8
        assert await good(served.port, OK_PATH) == 200  # room made by dropping the idlest
        for stream in idle:
            await stream.aclose()
        assert served.limiter.refused == 0 and served.limiter.failures == 0
        nursery.cancel_scope.cancel()


async def test_busy_flood_gets_503_and_leaves_other_servers_alone() -> None:
    async with trio.open_nursery() as nursery:
        flooded = await serve(nursery, limits=replace(SHORT, head_timeout=30, max_connections=8))
        other = await serve(nursery, name="other")
        busy = []
        for _ in range(8):  # each has sent a byte of a head: not idle, cannot be dropped
            stream = await open_raw(flooded.port)
            await stream.send_all(b"G")
            busy.append(stream)
        await until(lambda: flooded.limiter.open == 8 and not flooded.limiter.idle_count)
        reply = await exchange(flooded.port, f"GET {OK_PATH} HTTP/1.1\r\n{HOST}\r\n".encode())
        status, headers, _ = parse(reply.raw)
        assert status == 503 and headers["retry-after"] == "1"
        assert await good(other.port, OK_PATH) == 200
        for stream in busy:
            await stream.aclose()
        await until(lambda: flooded.limiter.open == 0)
        assert await good(flooded.port, OK_PATH) == 200
        assert flooded.limiter.refused == 1 and flooded.limiter.failures == 0
        nursery.cancel_scope.cancel()


# --- the same deadlines on a mock clock: exact, and no real time passes -----------------------


async def served_on_memory(
    nursery: trio.Nursery,
    server: trio.abc.Stream,
    limits: Limits,
    handler: Handler = strict,
) -> trio.Event:
    done = trio.Event()

    async def run() -> None:
        await serve_connection(server, handler, limits=limits)
        done.set()

    nursery.start_soon(run)
    return done


async def drain(stream: trio.abc.Stream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    return bytes(data)


async def test_head_deadline_runs_from_accept_not_from_the_last_byte(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    limits = Limits(head_timeout=10, idle_timeout=1000)
    async with trio.open_nursery() as nursery:
        done = await served_on_memory(nursery, server, limits)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        sent = 0
        while not done.is_set() and sent < 1000:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await client.send_all(b"a")
                sent += 1
            await trio.sleep(1)
        assert (await drain(client)).startswith(b"HTTP/1.1 408 ")
    assert 10 <= sent <= 12  # 10 s of one byte a second, then the 1 s lingering close


async def test_silent_connection_closed_at_the_head_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        await served_on_memory(nursery, server, Limits(head_timeout=10, idle_timeout=1000))
        assert await drain(client) == b""  # nothing asked, nothing said
        assert trio.current_time() == 10


async def test_idle_keep_alive_closed_silently_at_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        await served_on_memory(nursery, server, Limits(head_timeout=10, idle_timeout=100))
        await client.send_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        reply = await drain(client)
        assert reply.count(b"HTTP/1.1 ") == 1 and reply.startswith(b"HTTP/1.1 200 ")
        assert trio.current_time() == 100


@pytest.mark.parametrize(("rate", "status"), [(50, 408), (200, 200)])
async def test_body_must_keep_up_the_minimum_rate(
    autojump_clock: trio.testing.MockClock, rate: int, status: int
) -> None:
    client, server = trio.testing.memory_stream_pair()
    limits = Limits(body_timeout=10, min_rate=100, max_body=10_000)
    async with trio.open_nursery() as nursery:
        await served_on_memory(nursery, server, limits)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 10000\r\n\r\n")

        async def upload() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                for _ in range(10_000 // rate):
                    await client.send_all(b"x" * rate)
                    await trio.sleep(1)

        nursery.start_soon(upload)
        reply = await drain(client)
        assert reply.startswith(b"HTTP/1.1 %d " % status)
        nursery.cancel_scope.cancel()


async def test_send_deadline_grows_with_the_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.lockstep_stream_pair()  # a send waits for the peer to read
    body = b"z" * 100_000

    async def big(request: Request) -> Response:
        return Response(200, body, "application/octet-stream")

    limits = Limits(send_timeout=5, min_rate=1000)
    async with trio.open_nursery() as nursery:
        done = await served_on_memory(nursery, server, limits, big)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await client.receive_some(65536)).startswith(b"HTTP/1.1 200 ")  # the head
        started = trio.current_time()
        with trio.fail_after(1000):
            await done.wait()  # the body is never read: the server gives up
        assert trio.current_time() - started == pytest.approx(5 + len(body) / 1000)


# --- descriptors ----------------------------------------------------------------------------


def test_caps_are_shared_to_fit_the_open_files_limit() -> None:
    caps = [1024, 256, 64]
    need = sum(descriptors_for(c) for c in caps)
    assert share_open_files(caps, need) == caps
    shared = share_open_files(caps, need // 2)
    assert sum(descriptors_for(c) for c in shared) <= need // 2
    assert shared[0] > shared[1] > shared[2] >= 8
    assert share_open_files(caps, -5) == [8, 8, 8]


RLIMIT_SCRIPT = """
import resource, sys
from sync.net.httpserver import raise_open_files_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
print(raise_open_files_limit(), hard)
"""


def test_open_files_limit_is_raised_to_the_hard_limit() -> None:
    command = [sys.executable, "-c", RLIMIT_SCRIPT]
    out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    now, hard = out.stdout.split()[-2:]
    assert now == hard and "open files limit" in out.stdout + out.stderr


EMFILE_SCRIPT = """
import resource, sys
from functools import partial
import trio
from sync.net.httpserver import Limits, Response, serve_tcp
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (48, hard))

async def handler(request):
    return Response.text(200, "ok")

async def main():
    async with trio.open_nursery() as nursery:
        limits = Limits(max_connections=1000, head_timeout=60)  # a cap above the limit
        listeners = await nursery.start(partial(serve_tcp, limits=limits), handler, "127.0.0.1", 0)
        print("port", listeners[0].socket.getsockname()[1], flush=True)

trio.run(main)
"""


async def test_accept_out_of_descriptors_backs_off_and_recovers() -> None:
    proc = subprocess.Popen(  # noqa: ASYNC220 -- nothing else runs in this loop meanwhile
        [sys.executable, "-c", EMFILE_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        port = int(proc.stdout.readline().split()[-1])
        held = [await open_raw(port) for _ in range(80)]  # more than it has descriptors for
        lines: list[str] = []
        with trio.fail_after(20):
            while not any("http accept failed" in line for line in lines):
                lines.append(await trio.to_thread.run_sync(proc.stdout.readline))
        assert "EMFILE" in lines[-1] and proc.poll() is None
        for stream in held:
            await stream.aclose()
        with trio.fail_after(20):
            while (status := await good(port, OK_PATH)) != 200:  # the backlog is drained first
                assert status == 0
        assert proc.poll() is None
    finally:
        proc.kill()
        rest, _ = proc.communicate(timeout=10)
    assert "Traceback" not in "".join(lines) + rest


async def test_request_carries_the_tcp_peer_address() -> None:
    async def who(request: Request) -> Response:
        return Response.text(200, request.client)

    async with trio.open_nursery() as nursery:
        served = await serve(nursery, who)
        reply = await exchange(
            served.port, f"GET / HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n".encode()
        )
        assert parse(reply.raw)[2] == b"127.0.0.1\n"
        nursery.cancel_scope.cancel()


_TARGET_CHARS = "".join(chr(c) for c in range(0x21, 0x7F))  # h11 targets: visible ASCII only


@given(st.text(_TARGET_CHARS, max_size=40), st.sampled_from(["", "/", "//", "?", "#", "/a?"]))
@settings(max_examples=300, deadline=None)
def test_split_target_is_urlsplit(rest: str, start: str) -> None:
    target = start + rest
    try:
        parts = urlsplit(target)
    except ValueError:  # "//[": the server answers 400 (tests/hostile.py, bad-target-ipv6)
        with pytest.raises(Refusal):
            split_target(target)
        return
    assert split_target(target) == (parts.path, parts.query)
