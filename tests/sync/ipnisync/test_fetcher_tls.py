"""The fetcher over https: a local TLS server with a self-signed certificate (made here with
``cryptography``), trusted through the fetcher's test-only ``ssl_context`` parameter."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sync import PrivateKey, encode_block
from sync.errors import BlockNotFound, FetchFailed
from sync.ipnisync.fetch import HttpFetcher, open_fetcher
from sync.ipnisync.routes import ipnisync_handler
from sync.net.httpserver import serve_connection
from tests.builders import MemorySource

KEY = PrivateKey.generate()
PEER = KEY.peer_id()
BLOCKS = [encode_block({"tls": i}) for i in range(10)]
BIG = encode_block({"padding": "y" * 200_000})  # several TLS records, gzip-encoded


def self_signed(names: list[x509.GeneralName]) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a self-signed certificate for ``names``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ipni-indexer test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """A certificate for 127.0.0.1 and localhost: (cert file, key file, cert PEM)."""
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert, key = self_signed(names)
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    yield folder / "cert.pem", folder / "key.pem", cert.decode()


@pytest.fixture(scope="module")
def localhost_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """A certificate naming localhost only (not 127.0.0.1)."""
    cert, key = self_signed([x509.DNSName("localhost")])
    folder = tmp_path_factory.mktemp("tls-localhost")
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    yield folder / "cert.pem", folder / "key.pem", cert.decode()


async def serve_tls(
    nursery: trio.Nursery, certificate: tuple[Path, Path, str], accepts: list[int]
) -> int:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certificate[0], certificate[1])
    handler = ipnisync_handler(MemorySource(*BLOCKS, BIG))

    async def on_connection(stream: trio.SSLStream[trio.SocketStream]) -> None:
        accepts.append(1)
        await serve_connection(stream, handler)

    serve = partial(trio.serve_ssl_over_tcp, on_connection, 0, server, host="127.0.0.1")
    listeners = await nursery.start(serve)
    port: int = listeners[0].transport_listener.socket.getsockname()[1]
    return port


async def test_https_keep_alive_with_a_trusted_self_signed_certificate(
    certificate: tuple[Path, Path, str],
) -> None:
    trusted = ssl.create_default_context(cadata=certificate[2])
    accepts: list[int] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await serve_tls(nursery, certificate, accepts)
            for host in ("ip4/127.0.0.1", "dns4/localhost"):
                url = f"https://{host.split('/')[1]}:{port}/ipni/v1/ad"
                async with HttpFetcher(PEER, [url], ssl_context=trusted) as fetcher:
                    for link, raw in [*BLOCKS, BIG]:
                        assert await fetcher.block(link, "EntryChunk") == raw
                    with pytest.raises(BlockNotFound):
                        await fetcher.block(encode_block({"absent": 1})[0])
            nursery.cancel_scope.cancel()
    assert len(accepts) == 2  # one TLS connection per fetcher


async def test_https_refuses_an_untrusted_or_misnamed_certificate(
    certificate: tuple[Path, Path, str], localhost_only: tuple[Path, Path, str]
) -> None:
    link = BLOCKS[0][0]
    other, _ = self_signed([x509.DNSName("elsewhere.example")])
    accepts: list[int] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await serve_tls(nursery, certificate, accepts)
            addr = f"/ip4/127.0.0.1/tcp/{port}/https"
            async with open_fetcher([addr], PEER) as fetcher:  # the system's CAs
                with pytest.raises(FetchFailed, match=r"ConnectError.*CERTIFICATE_VERIFY_FAILED"):
                    await fetcher.block(link)
            url = f"https://127.0.0.1:{port}/ipni/v1/ad"
            wrong = ssl.create_default_context(cadata=other.decode())
            async with HttpFetcher(PEER, [url], ssl_context=wrong) as fetcher:
                with pytest.raises(FetchFailed, match="CERTIFICATE_VERIFY_FAILED"):
                    await fetcher.block(link)
            plain = f"http://127.0.0.1:{port}/ipni/v1/ad"  # TLS server, plain HTTP request
            async with HttpFetcher(PEER, [plain], timeout=5) as fetcher:
                with pytest.raises(FetchFailed):
                    await fetcher.block(link)
            port = await serve_tls(nursery, localhost_only, accepts)
            trusted = ssl.create_default_context(cadata=localhost_only[2])
            for host, error in [("localhost", None), ("127.0.0.1", "mismatch")]:
                url = f"https://{host}:{port}/ipni/v1/ad"
                async with HttpFetcher(PEER, [url], ssl_context=trusted) as fetcher:
                    if error is None:
                        assert await fetcher.block(link) == BLOCKS[0][1]
                    else:
                        with pytest.raises(FetchFailed, match=error):
                            await fetcher.block(link)
            nursery.cancel_scope.cancel()
