"""The etcd v3 JSON gateway client (``indexer.cluster.etcd``) against a real 3-member etcd.

And against hostile endpoints: real HTTP servers on 127.0.0.1 answering junk, 500s, wrong shapes
or errors, and ports nobody listens on.  Every failure is a typed ``ClusterError``.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator

import pytest
import trio

from indexer.cluster.etcd import Compare, Delete, EtcdClient, Get, Put, prefix_end
from indexer.errors import (
    ClusterError,
    EtcdBadResponse,
    EtcdRefused,
    EtcdUnavailable,
    LeaseNotFound,
)
from tests.cluster.etcd import EtcdCluster, closed_endpoint

Answer = tuple[int, bytes]


class PostStub:
    """Answers every POST with ``answer(path)``; counts the requests."""

    def __init__(self, answer: Callable[[str], Answer]) -> None:
        self.hits = 0
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stub.hits += 1
                self.rfile.read(int(self.headers.get("content-length", "0")))
                status, body = answer(self.path)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Callable[[Callable[[str], Answer]], PostStub]]:
    made: list[PostStub] = []

    def make(answer: Callable[[str], Answer]) -> PostStub:
        made.append(PostStub(answer))
        return made[-1]

    yield make
    for s in made:
        s.close()


async def test_keys_round_trip_as_bytes(etcd: EtcdClient, root: str) -> None:
    base = root.encode()
    odd = base + b"/\xff\x00bin"  # not UTF-8: base64 carries it
    await etcd.put(odd, b"\x00\x01")
    await etcd.put(base + b"/a", b"one")
    assert [kv.value for kv in await etcd.range(odd)] == [b"\x00\x01"]
    listed = await etcd.range(base + b"/", prefix=True)
    assert [kv.key for kv in listed] == [base + b"/a", odd]
    assert all(kv.create_revision > 0 and kv.version == 1 for kv in listed)
    assert await etcd.range(base + b"/missing") == []
    assert await etcd.delete(base + b"/", prefix=True) == 2
    assert await etcd.range(base, prefix=True) == []
    assert prefix_end(b"a\xff") == b"b" and prefix_end(b"\xff") == b"\0"


async def test_txn_takes_the_branch_its_compare_picks(etcd: EtcdClient, root: str) -> None:
    key = f"{root}/k".encode()
    absent = [Compare(key, "CREATE", 0)]
    first = await etcd.txn(absent, [Put(key, b"v1"), Get(key)], [Get(key)])
    assert first.succeeded and first.responses[1].kvs[0].create_revision == first.revision
    second = await etcd.txn(absent, [Put(key, b"v2")], [Get(key)])
    assert not second.succeeded and second.responses[0].kvs[0].value == b"v1"
    gone = await etcd.txn([Compare(key, "CREATE", first.revision)], [Delete(key)])
    assert gone.succeeded and gone.responses[0].deleted == 1
    assert await etcd.range(key) == []


async def test_a_lease_takes_its_keys_with_it(etcd: EtcdClient, root: str) -> None:
    lease = await etcd.lease_grant(30)
    assert lease.ttl == 30
    key = f"{root}/leased".encode()
    await etcd.put(key, b"x", lease=lease.id)
    assert (await etcd.range(key))[0].lease == lease.id
    assert await etcd.lease_keepalive(lease.id) == 30
    assert 0 < await etcd.lease_ttl(lease.id) <= 30
    await etcd.lease_revoke(lease.id)
    assert await etcd.range(key) == []
    assert await etcd.lease_keepalive(lease.id) <= 0
    assert await etcd.lease_ttl(lease.id) == -1
    with pytest.raises(LeaseNotFound):
        await etcd.put(key, b"y", lease=lease.id)
    with pytest.raises(LeaseNotFound):
        await etcd.lease_revoke(lease.id)


async def test_down_and_500_endpoints_fail_over_to_a_live_one(
    etcd_cluster: EtcdCluster, stub: Callable[[Callable[[str], Answer]], PostStub], root: str
) -> None:
    failing = stub(lambda path: (500, b"<html>oops</html>"))
    endpoints = [closed_endpoint(), failing.endpoint, etcd_cluster.endpoints[0]]
    async with EtcdClient(endpoints, request_timeout=0.5, deadline=5) as client:
        await client.put(f"{root}/k".encode(), b"v")
        assert client.current == 2 and failing.hits == 1
        await client.put(f"{root}/k".encode(), b"w")  # the live one stays current
        assert failing.hits == 1


async def test_no_live_endpoint_is_unavailable_within_the_deadline(
    stub: Callable[[Callable[[str], Answer]], PostStub],
) -> None:
    failing = stub(lambda path: (503, b'{"code":14,"message":"etcdserver: no leader"}'))
    async with EtcdClient([closed_endpoint(), failing.endpoint], deadline=1.0) as client:
        start = trio.current_time()
        with pytest.raises(EtcdUnavailable, match="no leader"):
            await client.range(b"/k")
        assert trio.current_time() - start < 1.0 + 1.0  # bounded by the deadline
    assert failing.hits >= 2  # tried round after round


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        ((200, b"<html>not json</html>"), EtcdBadResponse, "range"),
        ((200, b'{"kvs": "nope"}'), EtcdBadResponse, "range"),
        ((200, b'{"kvs": [{"key": "!!not base64"}]}'), EtcdBadResponse, "range"),
        ((200, b"[1, 2]"), EtcdBadResponse, "range"),
        ((400, b"garbage"), EtcdBadResponse, "HTTP 400"),
        ((400, b'{"code": 3, "message": "bad key"}'), EtcdRefused, "code 3"),
        ((404, b'{"code": 5, "message": "requested lease not found"}'), LeaseNotFound, "lease"),
    ],
)
async def test_a_hostile_answer_is_a_typed_error(
    stub: Callable[[Callable[[str], Answer]], PostStub],
    answer: Answer,
    error: type[ClusterError],
    match: str,
) -> None:
    hostile = stub(lambda path: answer)
    async with EtcdClient([hostile.endpoint], deadline=2.0) as client:
        with pytest.raises(error, match=match):
            await client.range(b"/k")


@pytest.mark.parametrize(
    ("path", "body", "match"),
    [
        ("grant", b'{"header": {}}', "no lease"),
        ("keepalive", b"{}", "neither"),
        ("keepalive", b'{"error": {"grpc_code": 14, "message": "down"}}', "down"),
        ("txn", b'{"header": {"revision": "7"}, "succeeded": true}', "0 results for 1"),
        ("txn", b'{"succeeded": true}', "header"),
    ],
)
async def test_wrong_shapes_of_each_call_are_typed(
    stub: Callable[[Callable[[str], Answer]], PostStub], path: str, body: bytes, match: str
) -> None:
    hostile = stub(lambda _: (200, body))
    async with EtcdClient([hostile.endpoint], deadline=1.0) as client:
        with pytest.raises(ClusterError, match=match):
            if path == "grant":
                await client.lease_grant(10)
            elif path == "keepalive":
                await client.lease_keepalive(1)
            else:
                await client.txn([Compare(b"/k", "CREATE", 0)], [Put(b"/k", b"v")])


def test_bad_endpoints_are_refused_at_once() -> None:
    for bad in ([], ["localhost:2379"], ["ftp://h:1"], ["http://"]):
        with pytest.raises(ValueError, match="endpoint"):
            EtcdClient(bad)
