"""A small async etcd v3 client over the JSON gateway (``/v3/...``), with httpx: runs under trio.

Only what ownership needs: lease grant / keep-alive / revoke / time-to-live, txn, range, put,
delete.  Rules it keeps:
- Keys and values are bytes; they travel base64-encoded as the gateway wants, and int64 fields
  as decimal strings (decoded leniently: the gateway writes them as strings, omits zero ones).
- Several endpoints: a call goes to the current one; a connection failure, a timeout or a 5xx
  (no leader, leader changed, request timed out) moves it to the next, round after round with a
  short backoff, until the call's ``deadline``: then ``EtcdUnavailable`` with the last failure.
  The endpoint that answered stays current.  A call that failed may have been applied (a timeout
  after the write): every txn the ownership sends is safe to repeat.
- Plain HTTP to the endpoints as given, no proxy from the environment (no TLS or auth yet).
- Every third-party failure is translated here: an httpx error, a body that is not the gateway's
  JSON (``EtcdBadResponse``), an error etcd answered (``EtcdRefused`` with its gRPC code;
  ``LeaseNotFound`` for a lease that expired or was revoked).  Nothing else escapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import httpx
import msgspec
import trio

from indexer.errors import EtcdBadResponse, EtcdRefused, EtcdUnavailable, LeaseNotFound

__all__ = [
    "Compare",
    "Delete",
    "EtcdClient",
    "Get",
    "KeyValue",
    "Lease",
    "OpResult",
    "Put",
    "TxnResult",
    "prefix_end",
]

GRPC_NOT_FOUND = 5
GRPC_RETRYABLE = frozenset({4, 14})  # DeadlineExceeded, Unavailable: another member may answer


class KeyValue(msgspec.Struct, frozen=True):
    """A key as etcd holds it: ``create_revision`` is 0 for a key that does not exist."""

    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True)
class Lease:
    """A granted lease: its ``id`` and the TTL (seconds) etcd granted."""

    id: int
    ttl: int


@dataclass(frozen=True)
class Compare:
    """A txn condition: ``target`` of ``key`` compared (``result``) with ``operand``."""

    key: bytes
    target: Literal["CREATE", "MOD", "VERSION", "VALUE", "LEASE"]
    operand: int | bytes
    result: Literal["EQUAL", "GREATER", "LESS", "NOT_EQUAL"] = "EQUAL"

    def wire(self) -> dict[str, object]:
        field = {
            "CREATE": "create_revision",
            "MOD": "mod_revision",
            "VERSION": "version",
            "VALUE": "value",
            "LEASE": "lease",
        }[self.target]
        operand = self.operand if isinstance(self.operand, bytes) else str(self.operand)
        return {"key": self.key, "target": self.target, "result": self.result, field: operand}


@dataclass(frozen=True)
class Put:
    """Set ``key`` to ``value``, attached to ``lease`` (0: none)."""

    key: bytes
    value: bytes
    lease: int = 0

    def wire(self) -> dict[str, object]:
        return {"request_put": {"key": self.key, "value": self.value, "lease": str(self.lease)}}


@dataclass(frozen=True)
class Get:
    """Read ``key``, or every key under it with ``prefix``."""

    key: bytes
    prefix: bool = False

    def wire(self) -> dict[str, object]:
        return {"request_range": _range_body(self.key, self.prefix)}


@dataclass(frozen=True)
class Delete:
    """Delete ``key``, or every key under it with ``prefix``."""

    key: bytes
    prefix: bool = False

    def wire(self) -> dict[str, object]:
        return {"request_delete_range": _range_body(self.key, self.prefix)}


@dataclass(frozen=True)
class OpResult:
    """One operation's answer inside a txn: the keys a ``Get`` read, the count a ``Delete`` did."""

    kvs: tuple[KeyValue, ...] = ()
    deleted: int = 0


@dataclass(frozen=True)
class TxnResult:
    """Whether the conditions held, the store's revision after it, each operation's answer."""

    succeeded: bool
    revision: int
    responses: tuple[OpResult, ...]


def prefix_end(key: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``key``."""
    end = bytearray(key)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def _range_body(key: bytes, prefix: bool) -> dict[str, object]:
    return {"key": key, "range_end": prefix_end(key)} if prefix else {"key": key}


# -- the gateway's answers (lenient: int64 as strings, zero fields omitted) --


class _Header(msgspec.Struct):
    revision: int = 0


class _Range(msgspec.Struct):
    header: _Header = msgspec.field(default_factory=_Header)
    kvs: list[KeyValue] = msgspec.field(default_factory=list)


class _Deleted(msgspec.Struct):
    deleted: int = 0


class _OpAnswer(msgspec.Struct):
    response_range: _Range | None = None
    response_put: _Header | None = None  # ignored
    response_delete_range: _Deleted | None = None


class _Txn(msgspec.Struct):
    header: _Header
    succeeded: bool = False
    responses: list[_OpAnswer] = msgspec.field(default_factory=list)


class _Grant(msgspec.Struct):
    id: int = msgspec.field(name="ID", default=0)
    ttl: int = msgspec.field(name="TTL", default=0)


class _StreamError(msgspec.Struct):
    grpc_code: int = 0
    message: str = ""


class _KeepAlive(msgspec.Struct):
    result: _Grant | None = None
    error: _StreamError | None = None


class _Error(msgspec.Struct):
    code: int = 0
    message: str = ""
    error: str = ""


T = TypeVar("T")


def _decode(body: bytes, shape: type[T], path: str) -> T:
    try:
        return msgspec.json.decode(body, type=shape, strict=False)
    except msgspec.MsgspecError as exc:
        raise EtcdBadResponse(f"{path}: not the gateway's answer: {exc}") from None


class EtcdClient:
    """An etcd v3 client over ``endpoints`` (``http://host:port``): use it ``async with``."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        request_timeout: float = 2.0,
        deadline: float = 10.0,
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        for endpoint in endpoints:
            try:
                url = httpx.URL(endpoint)
            except httpx.InvalidURL:
                url = httpx.URL()
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError(f"not an etcd endpoint (http://host:port): {endpoint!r}")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.deadline = deadline
        self.current = 0
        # etcd sits on the operator's own network: proxy variables (HTTP_PROXY) are not used.
        self._http = httpx.AsyncClient(timeout=request_timeout, trust_env=False)

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- leases --

    async def lease_grant(self, ttl: int) -> Lease:
        answer = _decode(await self.call("/v3/lease/grant", {"TTL": ttl}), _Grant, "grant")
        if answer.id == 0 or answer.ttl <= 0:
            raise EtcdBadResponse(f"lease grant answered no lease: {answer}")
        return Lease(answer.id, answer.ttl)

    async def lease_keepalive(self, lease: int) -> int:
        """Renew ``lease``: the TTL it has again, 0 or less once it expired or was revoked."""
        body = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        answer = _decode(body, _KeepAlive, "keepalive")
        if answer.error is not None:
            code, message = answer.error.grpc_code, answer.error.message
            if code in GRPC_RETRYABLE:
                raise EtcdUnavailable(f"keepalive: etcd answered code {code}: {message}")
            raise _refusal(code, message)
        if answer.result is None:
            raise EtcdBadResponse("keepalive answered neither a result nor an error")
        return answer.result.ttl

    async def lease_ttl(self, lease: int) -> int:
        """Seconds ``lease`` has left (-1 once it does not exist)."""
        body = await self.call("/v3/lease/timetolive", {"ID": str(lease)})
        return _decode(body, _Grant, "timetolive").ttl

    async def lease_revoke(self, lease: int) -> None:
        """Revoke ``lease``: every key attached to it is deleted at once."""
        await self.call("/v3/lease/revoke", {"ID": str(lease)})

    # -- keys --

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Put | Get | Delete],
        failure: Sequence[Put | Get | Delete] = (),
    ) -> TxnResult:
        body = {
            "compare": [c.wire() for c in compare],
            "success": [op.wire() for op in success],
            "failure": [op.wire() for op in failure],
        }
        answer = _decode(await self.call("/v3/kv/txn", body), _Txn, "txn")
        ops = success if answer.succeeded else failure
        if len(answer.responses) != len(ops):
            raise EtcdBadResponse(f"txn answered {len(answer.responses)} results for {len(ops)}")
        results = tuple(
            OpResult(
                kvs=tuple(a.response_range.kvs) if a.response_range else (),
                deleted=a.response_delete_range.deleted if a.response_delete_range else 0,
            )
            for a in answer.responses
        )
        return TxnResult(answer.succeeded, answer.header.revision, results)

    async def range(self, key: bytes, *, prefix: bool = False) -> list[KeyValue]:
        body = await self.call("/v3/kv/range", _range_body(key, prefix))
        return _decode(body, _Range, "range").kvs

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Set ``key``; the store's revision after it."""
        body = await self.call("/v3/kv/put", {"key": key, "value": value, "lease": str(lease)})
        return _decode(body, _Range, "put").header.revision

    async def delete(self, key: bytes, *, prefix: bool = False) -> int:
        """Delete ``key`` (or the keys under it): how many were deleted."""
        body = await self.call("/v3/kv/deleterange", _range_body(key, prefix))
        return _decode(body, _Deleted, "deleterange").deleted

    # -- the one request path --

    async def call(self, path: str, body: Mapping[str, object]) -> bytes:
        """POST ``body`` to ``path`` on the current endpoint, failing over; the 200 body."""
        payload = msgspec.json.encode(body)
        last = "no attempt"
        backoff = 0.05
        with trio.move_on_after(self.deadline):
            while True:
                for _ in range(len(self.endpoints)):
                    endpoint = self.endpoints[self.current]
                    try:
                        reply = await self._http.post(endpoint + path, content=payload)
                    except httpx.HTTPError as exc:
                        last = f"{endpoint}: {type(exc).__name__}: {exc}"
                    else:
                        if reply.status_code == 200:
                            return reply.content
                        if reply.status_code < 500:
                            raise _answered_error(reply, path)
                        last = f"{endpoint}: HTTP {reply.status_code}: {reply.text[:200]}"
                    self.current = (self.current + 1) % len(self.endpoints)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        raise EtcdUnavailable(f"no etcd endpoint answered {path} in {self.deadline} s: {last}")


def _refusal(code: int, message: str) -> EtcdRefused:
    if code == GRPC_NOT_FOUND and "lease not found" in message:
        return LeaseNotFound(code, message)
    return EtcdRefused(code, message)


def _answered_error(reply: httpx.Response, path: str) -> EtcdRefused | EtcdBadResponse:
    try:
        error = msgspec.json.decode(reply.content, type=_Error, strict=False)
    except msgspec.MsgspecError:
        return EtcdBadResponse(f"{path}: HTTP {reply.status_code}, not the gateway's error")
    return _refusal(error.code, error.message or error.error)
