"""The ttrpc client on asyncio: odd stream ids, many calls in flight on one connection, deadlines, metadata.

A call writes one Request frame (stream ids 1, 3, 5, ... per connection) and waits for the Response with the
same id; answers may come in any order. A timeout is sent as `timeout_nano` and also enforced locally:
DEADLINE_EXCEEDED when it expires, and a late answer is dropped. A non-OK status raises
`TtrpcError.from_status`. States: OPEN -> CLOSED (close(), EOF, peer gone or a malformed frame): every pending
and later call raises ConnectionClosed and the close callbacks run once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.message import DecodeError, Message

from hcsshim.api.ttrpc.request_pb2 import Response
from hcsshim.ttrpc.codec import READ_SIZE, TYPE_RESPONSE, FrameDecoder, encode_request
from hcsshim.ttrpc.errors import Code, ConnectionClosed, ProtocolError, TtrpcError

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Mapping, Sequence
    from types import TracebackType

log = logging.getLogger("hcsshim.ttrpc")

M = TypeVar("M", bound=Message)

_LOST_WAIT = 1.0  # seconds close() lets queued requests flush before aborting the connection


class _ClientProtocol(asyncio.BufferedProtocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.decoder = FrameDecoder()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._view = memoryview(bytearray(READ_SIZE))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client._transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        decoder = self.decoder
        pending = self.client._pending
        try:
            decoder.receive_data(self._view[:nbytes])
            while (frame := decoder.next_frame()) is not None:
                if frame.type == TYPE_RESPONSE:
                    fut = pending.pop(frame.stream_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame.data)
        except ProtocolError as exc:
            log.error("ttrpc: client of %s: closing the connection: %s", self.client.peer_name, exc)
            self.client._lost(f"ttrpc: closed: {exc}")
            if self.client._transport is not None:
                self.client._transport.abort()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost("ttrpc: closed")
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.client._paused = True

    def resume_writing(self) -> None:
        self.client._paused = False
        for fut in self.client._drainers:
            if not fut.done():
                fut.set_result(None)
        self.client._drainers.clear()


class Client:
    """A ttrpc client on one connection. Make it with `connect(path)` or `from_socket(sock)`."""

    def __init__(self, peer_name: str = "") -> None:
        self.peer_name = peer_name
        self._transport: asyncio.Transport | None = None
        self._protocol: _ClientProtocol | None = None
        self._pending: dict[int, asyncio.Future[bytes | None]] = {}
        self._next_id = 1
        self._callbacks: list[Callable[[], object]] = []
        self._paused = False
        self._drainers: list[asyncio.Future[None]] = []
        self.closed = False

    @classmethod
    async def connect(cls, path: str, *, timeout: float | None = None) -> Client:
        """Connect to the AF_UNIX socket at `path` (OSError naming the path if that fails)."""
        loop = asyncio.get_running_loop()
        client = cls(path)
        try:
            async with asyncio.timeout(timeout):
                _, client._protocol = await loop.create_unix_connection(lambda: _ClientProtocol(client), path)
        except TimeoutError:
            raise TimeoutError(f"ttrpc: connect {path}: timed out after {timeout}s") from None
        except OSError as exc:
            if exc.errno is None:
                raise
            raise type(exc)(exc.errno, f"ttrpc: connect {path}: {exc.strerror}") from None
        return client

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> Client:
        """A client on an already connected AF_UNIX stream socket (the client owns it from now on)."""
        loop = asyncio.get_running_loop()
        client = cls(str(sock.getpeername() or "socket"))
        _, client._protocol = await loop.create_unix_connection(lambda: _ClientProtocol(client), sock=sock)
        return client

    def add_close_callback(self, fn: Callable[[], object]) -> None:
        """Run `fn()` once when the connection ends (at once if it already has)."""
        if self.closed:
            fn()
        else:
            self._callbacks.append(fn)

    @property
    def pending(self) -> int:
        """Calls waiting for their answer."""
        return len(self._pending)

    async def call(self, service: str, method: str, request: Message, response_type: type[M], *,
                   timeout: float | None = None,
                   metadata: Mapping[str, str | Sequence[str]] | None = None) -> M:
        """Call `service/method` and return its decoded answer; TtrpcError on any failure."""
        if self.closed or self._transport is None:
            raise ConnectionClosed()
        loop = asyncio.get_running_loop()
        timeout_nano = 0
        if timeout is not None:
            if timeout <= 0:
                raise TtrpcError(Code.DEADLINE_EXCEEDED, f"{service}/{method}: context deadline exceeded")
            timeout_nano = max(1, int(timeout * 1e9))
        if metadata:
            metadata = {key.lower(): value for key, value in metadata.items()}
        stream_id = self._next_id
        try:
            data = encode_request(stream_id, service, method, request.SerializeToString(),
                                  timeout_nano=timeout_nano, metadata=metadata)
        except ProtocolError as exc:
            raise TtrpcError(Code.RESOURCE_EXHAUSTED, f"{service}/{method}: request: {exc}") from None
        self._next_id = (stream_id + 2) & 0xFFFFFFFF
        fut: asyncio.Future[bytes | None] = loop.create_future()
        timer = loop.call_later(timeout, _expire, fut) if timeout is not None else None
        self._pending[stream_id] = fut
        try:
            if self._paused:
                drained: asyncio.Future[None] = loop.create_future()
                self._drainers.append(drained)
                await asyncio.wait((drained, fut), return_when=asyncio.FIRST_COMPLETED)
                if fut.done():
                    return self._answer(service, method, fut.result(), response_type)
            self._transport.write(data)
            return self._answer(service, method, await fut, response_type)
        finally:
            if self._pending.get(stream_id) is fut:
                del self._pending[stream_id]
            if timer is not None:
                timer.cancel()

    @staticmethod
    def _answer(service: str, method: str, data: bytes | None, response_type: type[M]) -> M:
        if data is None:
            raise TtrpcError(Code.DEADLINE_EXCEEDED, f"{service}/{method}: context deadline exceeded")
        try:
            resp = Response.FromString(data)
        except DecodeError as exc:
            raise TtrpcError(Code.INTERNAL, f"{service}/{method}: invalid response envelope: {exc}") from None
        status = resp.status
        if status.code:
            raise TtrpcError.from_status(status)
        try:
            return response_type.FromString(resp.payload)
        except DecodeError as exc:
            raise TtrpcError(Code.INTERNAL,
                             f"{service}/{method}: error unmarshalling response: {exc}") from None

    def _lost(self, message: str) -> None:
        if self.closed:
            return
        self.closed = True
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(message))
        for fut in self._drainers:
            if not fut.done():
                fut.set_result(None)
        self._drainers.clear()
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception:
                log.exception("ttrpc: close callback %r of the client of %s failed", fn, self.peer_name)

    async def close(self) -> None:
        """Close the connection: pending calls raise ConnectionClosed; returns once the socket is closed."""
        self._lost("ttrpc: closed")
        transport, protocol = self._transport, self._protocol
        if transport is None or protocol is None:
            return
        transport.close()
        if not protocol.lost.done():
            await asyncio.wait((protocol.lost,), timeout=_LOST_WAIT)
            if not protocol.lost.done():
                transport.abort()
                await protocol.lost

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


def _expire(fut: asyncio.Future[bytes | None]) -> None:
    if not fut.done():
        fut.set_result(None)  # None marks an expired deadline; answers are bytes
