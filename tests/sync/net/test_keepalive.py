"""``KeepAlivePool`` (under ``HttpClient``): at most ``max_idle`` idle connections are kept, a
connection whose body was not read to its end is never handed out again, and a closed pool
opens nothing.  Real servers on 127.0.0.1 (``serve_counted`` counts accepted connections)."""

from __future__ import annotations

import ssl

import httpcore
import pytest
import trio
import trio.testing

from sync.errors import FetchFailed
from sync.net.httpclient import ClientStream, HttpClient
from sync.net.httpserver import Request, Response
from sync.net.keepalive import unshared
from tests.sync.net.test_httpclient import serve_counted


def _url(addr: str) -> str:
    port = addr.split("/tcp/")[1].split("/", maxsplit=1)[0]
    return f"http://127.0.0.1:{port}/x"


async def test_idle_connections_are_capped_at_max_idle() -> None:
    waiting = 6
    all_in = trio.Event()

    async def barrier(request: Request) -> Response:
        nonlocal waiting
        waiting -= 1
        if waiting <= 0:
            all_in.set()
        await all_in.wait()
        return Response.text(200, "ok")

    client = HttpClient(timeout=10, ssl_context=ssl.create_default_context(), max_idle=2)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, accepts = await serve_counted(nursery, barrier)

            async def get() -> None:
                async with client.get(_url(addr), {}) as response:
                    assert b"".join([chunk async for chunk in response]) == b"ok\n"

            async with trio.open_nursery() as gets:
                for _ in range(6):
                    gets.start_soon(get)
            assert len(accepts) == 6  # one each, concurrently
            waiting = 4
            all_in = trio.Event()
            async with trio.open_nursery() as gets:
                for _ in range(4):
                    gets.start_soon(get)
            assert len(accepts) == 8  # 2 kept of 6, so 2 reused and 2 new
            await client.aclose()
            with pytest.raises(FetchFailed):
                await get()
            nursery.cancel_scope.cancel()
    assert len(accepts) == 8


async def test_a_body_not_read_to_its_end_does_not_come_back() -> None:
    async def big(request: Request) -> Response:
        return Response(200, b"x" * 200_000, "application/octet-stream")

    client = HttpClient(timeout=10, ssl_context=ssl.create_default_context())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, accepts = await serve_counted(nursery, big)
            for _ in range(3):
                async with client.get(_url(addr), {}) as response:
                    async for _chunk in response:
                        break  # stop early: the rest is unread on that connection
            async with client.get(_url(addr), {}) as response:
                assert sum([len(c) async for c in response]) == 200_000
            async with client.get(_url(addr), {}) as response:  # the whole one is reused
                assert sum([len(c) async for c in response]) == 200_000
            await client.aclose()
            nursery.cancel_scope.cancel()
    assert len(accepts) == 4


async def test_a_pooled_connection_has_no_state_lock_and_httpcore_still_names_it() -> None:
    """``unshared`` drops httpcore 1.0's ``_state_lock``: if a release renames it, this fails
    (and the pool goes on, slower, with the lock) rather than the speed-up going unseen."""
    left, _right = trio.testing.memory_stream_pair()
    origin = httpcore.Origin(b"http", b"127.0.0.1", 80)
    plain = httpcore.AsyncHTTP11Connection(origin, ClientStream(left))
    assert "_state_lock" in vars(plain)
    assert vars(unshared(plain))["_state_lock"] is not None
    assert type(vars(plain)["_state_lock"]).__name__ == "_NoLock"
