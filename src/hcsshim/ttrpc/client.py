"""The ttrpc client on asyncio: odd stream ids, many calls in flight on one connection, deadlines, metadata."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from hcsshim.ttrpc import codec
from hcsshim.ttrpc.errors import Code, ConnectionClosed, ProtocolError, TtrpcError

if TYPE_CHECKING:
    from google.protobuf.message import Message

M = TypeVar("M", bound="Message")


class _Protocol(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.decoder = codec.FrameDecoder()

    def data_received(self, data: bytes) -> None:
        try:
            self.decoder.receive_data(data)
            while (frame := self.decoder.next_frame()) is not None:
                if frame.type == codec.TYPE_RESPONSE:
                    fut = self.client._pending.pop(frame.stream_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
        except ProtocolError as exc:
            self.client._lost(ConnectionClosed(f"ttrpc: closed: {exc}"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(ConnectionClosed())


class Client:
    """A ttrpc client connection (states: OPEN -> CLOSED; every pending call fails with ConnectionClosed)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[codec.Frame]] = {}
        self._next_id = 1
        self._callbacks: list[Callable[[], None]] = []
        self.closed = False
        self._closed_event = asyncio.Event()

    @classmethod
    async def connect(cls, path: str, *, timeout: float | None = None) -> Client:
        loop = asyncio.get_running_loop()
        client = cls()
        coro = loop.create_unix_connection(lambda: _Protocol(client), path)
        transport, _ = await (asyncio.wait_for(coro, timeout) if timeout else coro)
        client._transport = transport
        return client

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> Client:
        loop = asyncio.get_running_loop()
        client = cls()
        transport, _ = await loop.create_unix_connection(lambda: _Protocol(client), sock=sock)
        client._transport = transport
        return client

    def add_close_callback(self, fn: Callable[[], None]) -> None:
        self._callbacks.append(fn)

    def _lost(self, exc: ConnectionClosed) -> None:
        if self.closed:
            return
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._closed_event.set()
        for fn in self._callbacks:
            fn()

    async def call(self, service: str, method: str, request: Message, response_type: type[M], *,
                   timeout: float | None = None,
                   metadata: Mapping[str, str | Sequence[str]] | None = None) -> M:
        if self.closed or self._transport is None:
            raise ConnectionClosed()
        stream_id = self._next_id
        self._next_id += 2
        fut: asyncio.Future[codec.Frame] = asyncio.get_running_loop().create_future()
        data = codec.encode_request(stream_id, service, method, request.SerializeToString(),
                                    timeout_nano=int(timeout * 1e9) if timeout else 0, metadata=metadata)
        self._pending[stream_id] = fut
        self._transport.write(data)
        try:
            frame = await (asyncio.wait_for(fut, timeout) if timeout else fut)
        except TimeoutError:
            raise TtrpcError(Code.DEADLINE_EXCEEDED, f"{service}/{method}: deadline exceeded") from None
        finally:
            self._pending.pop(stream_id, None)
        response = codec.decode_response(frame)
        if response.HasField("status") and response.status.code != 0:
            raise TtrpcError.from_status(response.status)
        try:
            return response_type.FromString(response.payload)
        except Exception as exc:
            raise TtrpcError(Code.INTERNAL, f"ttrpc: error unmarshalling response of {method}: {exc}") from None

    async def close(self) -> None:
        if not self.closed:
            self._lost(ConnectionClosed())
        await self._closed_event.wait()
