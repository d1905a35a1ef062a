"""The publisher as a user runs it: ``indexer publisher`` subprocesses, real HTTP on 127.0.0.1.

A chain of three ads is built with the CLI, served by ``publisher serve``, fetched over HTTP and
verified twice: by the project's data model and by the independent go-libipni-rules verifier.
Announces are caught by a plain ``http.server`` receiver, in both wire forms.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync import Link, Message, load_advertisement, load_entry_chunk, verify_advertisement
from tests import independent_verifier as independent

INDEXER = shutil.which("indexer", path=str(Path(sys.executable).parent)) or "indexer"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INDEXER, "publisher", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(*args: str, stdin: str | None = None) -> Any:
    out = run(*args, "--json", stdin=stdin)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def mh_lines(start: int, count: int) -> str:
    digests = (hashlib.sha256(str(i).encode()).digest() for i in range(start, start + count))
    return "".join(f"1220{d.hex()}\n" for d in digests)


class Receiver:
    """A plain HTTP server that records every PUT it gets."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, bytes]] = []
        self.event = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with outer.event:
                    outer.received.append((self.path, self.headers["content-type"], body))
                    outer.event.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 20) -> list[tuple[str, str, bytes]]:
        with self.event:
            assert self.event.wait_for(lambda: len(self.received) >= count, timeout), self.received
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


class Serving:
    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [INDEXER, "publisher", "serve", "--data-dir", str(data_dir), "--json", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read() if self.proc.stderr else "no output"
        self.info = json.loads(line)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


def fetch_chain(url: str) -> tuple[bytes, dict[str, bytes]]:
    """The head and every block reachable from it, fetched over HTTP."""
    blocks: dict[str, bytes] = {}
    with httpx.Client(base_url=url) as client:
        head = client.get("/head")
        assert head.status_code == 200
        todo = [independent.verify_head(head.content)[0]]
        while todo:
            cid = todo.pop()
            r = client.get(f"/{cid}")
            assert r.status_code == 200, cid
            blocks[cid] = r.content
            link = Link.parse(cid)
            if b"Signature" in r.content:
                ad = load_advertisement(link, r.content)
                links = (ad.previous_id, ad.entries if ad.has_entries else None)
                todo += [str(x) for x in links if x]
            else:
                nxt = load_entry_chunk(link, r.content).next
                todo += [str(nxt)] if nxt else []
    return head.content, blocks


@pytest.mark.parametrize("codec", ["dag-json", "dag-cbor"])
def test_three_ad_chain_serves_verifies_and_announces(
    tmp_path: Path, receiver: Receiver, codec: str
) -> None:
    data = tmp_path / "pub"
    init = ok(
        "init", "--data-dir", str(data), "--addr", "/ip4/127.0.0.1/tcp/4001", "--codec", codec
    )
    peer = init["peer_id"]
    ok("add", "--data-dir", str(data), "--context-id", "one", "--multihashes", "-",
       stdin=mh_lines(0, 20_000))  # fmt: skip
    ok("add", "--data-dir", str(data), "--context-id", "two", "--metadata", "http",
       "--multihashes", "-", stdin=mh_lines(20_000, 10))  # fmt: skip
    ok("remove", "--data-dir", str(data), "--context-id", "one")
    listing = ok("ls", "--data-dir", str(data))
    assert [a["kind"] for a in listing["ads"]] == ["remove", "add", "add"]

    serving = Serving(data, "--announce", receiver.url)
    try:
        assert serving.info["peer_id"] == peer
        head_raw, blocks = fetch_chain(serving.info["url"])
        # 1. Our data model.
        ads = [load_advertisement(Link.parse(c), b) for c, b in blocks.items() if b"IsRm" in b]
        assert len(ads) == 3
        assert {str(verify_advertisement(ad).signer) for ad in ads} == {peer}
        # 2. The independent verifier, written to go-libipni's rules.
        verified = independent.verify_chain(blocks.__getitem__, head_raw)
        assert [v.is_rm for v in verified] == [True, False, False]
        assert {v.signer for v in verified} == {peer}
        assert len(verified[2].multihashes) == 20_000 and len(verified[1].multihashes) == 10
        # The start-up announce: CBOR, to /announce, every address carrying /p2p/<peer>.
        path, ctype, body = receiver.wait_for(1)[0]
        assert (path, ctype) == ("/announce", "application/octet-stream")
        message = Message.from_cbor(body)
        assert str(message.cid) == listing["ads"][0]["cid"]
        assert message.publisher() is not None and str(message.publisher()) == peer
        assert any("/http/p2p/" in a for a in message.addresses())
        # Publishing while serving goes through the server and is announced.
        added = ok("add", "--data-dir", str(data), "--context-id", "three",
                   "--multihashes", "-", stdin=mh_lines(30_000, 5))  # fmt: skip
        assert Message.from_cbor(receiver.wait_for(2)[1][2]).cid == Link.parse(added["cid"])
        assert ok("ls", "--data-dir", str(data))["ads"][0]["cid"] == added["cid"]
    finally:
        assert serving.stop() == 0
    assert not (data / "publisher.sock").exists()

    serving = Serving(data, "--announce", receiver.url, "--announce-json")
    try:
        path, ctype, body = receiver.wait_for(3)[2]
        assert ctype == "application/json"
        assert str(Message.from_json(body).cid) == added["cid"]
        doc = json.loads(body)
        assert set(doc) == {"Cid", "Addrs", "ExtraData", "OrigPeer"}
    finally:
        serving.stop()


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("add", "--context-id", "c", "--multihashes", "-"), "1220zz\n", "bad line"),
        (("add", "--context-id", "c", "--multihashes", "-"), "\n# nothing\n", "no multihashes"),
        (("add", "--context-id", "c", "--multihashes", "/nonexistent"), None, "no such file"),
        (("add", "--context-id", "x" * 65, "--multihashes", "-"), mh_lines(0, 1), "ContextID"),
        (
            ("add", "--context-id", "c", "--metadata", "graphsync", "--multihashes", "-"),
            mh_lines(0, 1),
            "--piece-cid",
        ),
        (("remove", "--context-id", "never"), None, "never published"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tmp_path: Path, args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    data = tmp_path / "pub"
    ok("init", "--data-dir", str(data))
    ok("add", "--data-dir", str(data), "--context-id", "keep", "--multihashes", "-",
       stdin=mh_lines(0, 3))  # fmt: skip
    before = ok("ls", "--data-dir", str(data))
    out = run(*args, "--data-dir", str(data), stdin=stdin)
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert ok("ls", "--data-dir", str(data)) == before


def test_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    out = run("add", "--data-dir", str(tmp_path / "none"), "--context-id", "c",
              "--multihashes", "-", stdin=mh_lines(0, 1))  # fmt: skip
    assert out.returncode == 1 and "publisher init" in out.stderr
    assert not (tmp_path / "none").exists()
    out = run("init", "--data-dir", str(tmp_path / "p"))
    again = run("init", "--data-dir", str(tmp_path / "p"))
    assert out.returncode == 0 and again.returncode == 1 and "already" in again.stderr
