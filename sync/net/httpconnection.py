"""One HTTP/1.1 connection of ``sync.net.httpserver``: request/response cycles on h11, with the
deadlines, limits and refusals that server's docstring states.

Rules this module keeps: every h11 error becomes a ``Refusal`` (answered and closed) or a
``Hangup`` (closed); the head deadline is never restarted per byte; a new connection's first
bytes are checked before h11 has a whole head; a write that outlives its deadline closes the
connection; a handler or streamed body that fails is logged, never raised.
"""

from __future__ import annotations

import math
from typing import Any

import h11
import structlog
import trio

from sync.net.httplimits import DEFAULT_BUDGET, Slot
from sync.net.httpmessage import (
    STREAM_ERRORS,
    ByteStream,
    Handler,
    Hangup,
    Limits,
    Refusal,
    Request,
    Response,
    check_request,
    client_ip,
    gzip_encoding,
    is_garbage,
    parse_request,
    peer_name,
    raw_reply,
    status_line,
)

__all__ = ["Connection"]

log = structlog.get_logger("sync.net.httpserver")

_RECV = 65536
_COALESCE = 64 << 10  # responses up to this size go out in one send
_SNIFF = 64  # bytes of a connection's first request checked before h11 sees a whole head


class Connection:
    """One HTTP/1.1 connection: request/response cycles until either side ends it."""

    def __init__(
        self,
        stream: ByteStream,
        handler: Handler,
        limits: Limits,
        slot: Slot | None,
        name: str,
    ) -> None:
        self.stream = stream
        self.handler = handler
        self.limits = limits
        self.slot = slot
        self.name = name
        self.peer = peer_name(stream)
        self.client = client_ip(stream)
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head)
        self.accepted = trio.current_time()
        self.served = 0
        self.linger = False
        self.method = b""
        self._sniff: bytearray | None = bytearray()
        self._first_method = b""
        self._clock = trio.CancelScope()
        self._phase = "idle"

    # -- the cycle --------------------------------------------------------------------------

    async def run(self) -> None:
        with self._clock:
            while await self._cycle():
                self.h11.start_next_cycle()
                self.served += 1
        if self._clock.cancelled_caught:  # a deadline passed; every deadline ends a connection
            await self._expired()

    def _until(self, deadline: float, phase: str) -> None:
        """Arm the connection's one deadline (cheaper than a cancel scope per read and write)."""
        self._clock.deadline = deadline
        self._phase = phase

    async def _expired(self) -> None:
        if self._phase == "head":
            await self._refuse(Refusal(408, "request head not received in time"))
        elif self._phase == "body":
            await self._refuse(Refusal(408, "request body not received in time"))
        elif self._phase == "send":
            if self.slot is not None:
                self.slot.limiter.stalled += 1
            if (suppressed := DEFAULT_BUDGET.take()) is not None:
                log.info(
                    "http peer stopped reading; closed", server=self.name, peer=self.peer,
                    suppressed=suppressed,
                )  # fmt: skip
        # "idle": no byte of a request came; close without a word

    async def _cycle(self) -> bool:
        """One request and its response; False when the connection must close."""
        self.method = b""
        try:
            request = await self._read_request()
        except Hangup:
            return False
        except Refusal as refusal:
            await self._refuse(refusal)
            return False
        self._until(math.inf, "handler")  # a handler has no deadline: it is ours
        try:
            response = await self.handler(request)
        except Exception:
            log.exception("http handler failed", method=request.method, path=request.path)
            response = Response.text(500, "internal error")
        try:
            await self._respond(request, response)
        except Hangup:
            return False
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    async def _refuse(self, refusal: Refusal) -> None:
        self._until(math.inf, "refuse")
        self.linger = True
        if self.slot is not None:
            self.slot.limiter.rejected += 1
        budget = self.slot.limiter.log if self.slot is not None else DEFAULT_BUDGET
        if (suppressed := budget.take()) is not None:
            log.info(
                "http request refused", server=self.name, status=refusal.status,
                reason=refusal.reason, peer=self.peer, suppressed=suppressed,
            )  # fmt: skip
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response is already under way: closing is all that is left
        body = f"{refusal.reason}\n".encode("utf-8", "replace")
        method = self.method or (self._first_method if self.served == 0 else b"")
        reply = raw_reply(refusal.status, body, head_only=method == b"HEAD", extra=refusal.extra)
        limits = self.limits
        with trio.move_on_after(limits.send_timeout + len(reply) / limits.min_rate):
            await self.stream.send_all(reply)

    # -- reading ----------------------------------------------------------------------------

    def _next(self) -> Any:
        try:
            return self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise Refusal(exc.error_status_hint, f"bad request: {exc}") from None

    async def _receive(self, deadline: float, phase: str, size: int = _RECV) -> bytes:
        """Up to ``size`` bytes (b"" at EOF); past ``deadline`` the connection expires."""
        self._until(deadline, phase)
        return bytes(await self.stream.receive_some(size))

    def _mark(self, idle: bool) -> None:
        if self.slot is not None:
            if idle:
                self.slot.limiter.idle(self.slot)
            else:
                self.slot.limiter.busy(self.slot)

    async def _read_head(self) -> h11.Request:
        limits, conn = self.limits, self.h11
        event = self._next()
        if event is h11.NEED_DATA:
            now = trio.current_time()
            waiting = not conn.trailing_data[0]  # no byte of this request has arrived yet
            if self.served == 0:
                deadline = self.accepted + limits.head_timeout
            else:
                deadline = now + (limits.idle_timeout if waiting else limits.head_timeout)
            fed = 0
            self._mark(idle=waiting)
            try:
                while event is h11.NEED_DATA:
                    size = min(_RECV, max(1, limits.max_head + 1 - fed))
                    data = await self._receive(deadline, "idle" if waiting else "head", size)
                    if data and waiting:
                        waiting = False
                        self._mark(idle=False)
                        if self.served:
                            deadline = trio.current_time() + limits.head_timeout
                    self._check_start(data)
                    fed += len(data)
                    conn.receive_data(data)
                    event = self._next()
            finally:
                self._mark(idle=False)
        if isinstance(event, h11.ConnectionClosed):
            raise Hangup
        if not isinstance(event, h11.Request):  # pragma: no cover - h11's server cycle
            raise Refusal(400, f"unexpected {type(event).__name__}")
        return event

    def _check_start(self, data: bytes) -> None:
        """Refuse at once what cannot be HTTP (binary, a TLS ClientHello) on a new connection."""
        if self._sniff is None:
            return
        self._sniff += data[: _SNIFF - len(self._sniff)]
        if is_garbage(bytes(self._sniff)):
            raise Refusal(400, "not an HTTP/1.1 request")
        method, space, _ = self._sniff.lstrip(b"\r\n").partition(b" ")
        if space or len(self._sniff) >= _SNIFF:
            self._first_method = bytes(method)  # for a refusal before h11 has the whole head
            self._sniff = None

    async def _read_body(self) -> bytes:
        limits, conn = self.limits, self.h11
        if conn.they_are_waiting_for_100_continue:
            await self._send(
                conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )
        body = bytearray()
        start, received = trio.current_time(), 0
        while True:
            event = self._next()
            if event is h11.NEED_DATA:
                deadline = start + limits.body_timeout + received / limits.min_rate
                data = await self._receive(deadline, "body")
                received += len(data)
                conn.receive_data(data)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > limits.max_body:
                    raise Refusal(413, "request body too large")
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:  # pragma: no cover - h11 raises on a body cut short
                raise Hangup

    async def _read_request(self) -> Request:
        event = await self._read_head()
        self.method = event.method
        check_request(event, self.limits)
        return parse_request(event, await self._read_body(), self.client)

    # -- writing ----------------------------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        if not data:
            return
        limits = self.limits
        self._until(trio.current_time() + limits.send_timeout + len(data) / limits.min_rate, "send")
        await self.stream.send_all(data)
        self._until(math.inf, "respond")  # producing the next part has no deadline

    async def _send_event(self, event: Any) -> None:
        await self._send(self.h11.send(event) or b"")

    async def _respond(self, request: Request, response: Response) -> None:
        try:
            await self._respond_h11(request, response)
        except h11.LocalProtocolError as exc:
            log.error("http response refused by h11", path=request.path, error=str(exc))
            raise Hangup from None

    async def _respond_h11(self, request: Request, response: Response) -> None:
        headers = [(b"server", b"ipni-indexer")]
        if response.content_type:
            headers.append((b"content-type", response.content_type.encode()))
        headers += [(k.encode(), v.encode()) for k, v in response.headers]
        body = response.body
        head_only = request.method == "HEAD"
        if isinstance(body, bytes):
            if response.compressible and "gzip" in request.header("accept-encoding"):
                encoded = (response.gzipped or gzip_encoding)(body)
                if encoded is not None:
                    body = encoded
                    headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
            headers.append((b"content-length", str(len(body)).encode()))
            events: list[Any] = [status_line(response.status, headers)]
            if body and not head_only:
                events.append(h11.Data(data=body))
            events.append(h11.EndOfMessage())
            if len(body) <= _COALESCE:  # one send: a send per part costs a system call each
                await self._send(b"".join(self.h11.send(e) or b"" for e in events))
            else:
                for event in events:
                    await self._send_event(event)
            return
        await self._send_event(status_line(response.status, headers))
        if head_only:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
        else:
            try:
                async for chunk in body:
                    if chunk:
                        await self._send_event(h11.Data(data=chunk))
            except (Hangup, h11.LocalProtocolError, *STREAM_ERRORS):
                raise
            except Exception:
                log.exception("http response stream failed", path=request.path)
                raise Hangup from None
        await self._send_event(h11.EndOfMessage())
