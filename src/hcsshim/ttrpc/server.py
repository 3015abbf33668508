"""The ttrpc server on asyncio: many connections, many concurrent requests per connection, whole-frame writes.

Each request runs in its own task owned by its connection (containerd keeps Wait outstanding while it calls
State and Kill on the same connection), and responses go out in completion order. A malformed frame closes
that connection only; the server keeps serving the others. `close()` stops accepting, lets in-flight requests
finish within a grace period, cancels the rest and closes every connection: nothing is left running.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from hcsshim.ttrpc import codec
from hcsshim.ttrpc.errors import Code, ProtocolError, TtrpcError

if TYPE_CHECKING:
    from google.protobuf.message import Message

log = logging.getLogger("hcsshim.ttrpc")

Handler = Callable[["RequestContext", "Message"], Awaitable["Message"]]


class RequestContext:
    """What a handler knows about its request."""

    __slots__ = ("deadline", "metadata", "method", "peer", "service", "stream_id")

    def __init__(self, service: str, method: str, stream_id: int, metadata: dict[str, list[str]],
                 deadline: float | None, peer: tuple[int, int, int] | None) -> None:
        self.service, self.method, self.stream_id = service, method, stream_id
        self.metadata, self.deadline, self.peer = metadata, deadline, peer


class _Connection(asyncio.Protocol):
    """One accepted connection (states: OPEN -> CLOSED)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.decoder = codec.FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.tasks: set[asyncio.Task] = set()
        self.peer: tuple[int, int, int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        try:
            self.peer = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        except (OSError, AttributeError):
            self.peer = None
        self.server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.decoder.receive_data(data)
            while (frame := self.decoder.next_frame()) is not None:
                self._dispatch(frame)
        except ProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        try:
            self.decoder.receive_data(b"")
            self.decoder.next_frame()
        except ProtocolError as exc:
            self._fail(exc)
        return True  # keep our half open: in-flight answers may still go out

    def _fail(self, exc: ProtocolError) -> None:
        log.error("ttrpc: closing connection from pid %s: %s", self.peer[0] if self.peer else "?", exc)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for task in self.tasks:
            task.cancel()
        self.server._connections.discard(self)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _dispatch(self, frame: codec.Frame) -> None:
        if frame.type != codec.TYPE_REQUEST:
            return  # unknown frame types are ignored, as the Go server does
        if frame.stream_id % 2 == 0:
            self.write(codec.encode_response(frame.stream_id, status=TtrpcError(
                Code.INVALID_ARGUMENT, f"ttrpc: stream id {frame.stream_id} must be odd").to_status()))
            return
        request = codec.decode_request(frame)
        task = asyncio.ensure_future(self._handle(frame.stream_id, request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, stream_id: int, request) -> None:
        started = asyncio.get_running_loop().time()
        try:
            payload = await self._call(stream_id, request)
            out = codec.encode_response(stream_id, payload)
        except TtrpcError as exc:
            out = codec.encode_response(stream_id, status=exc.to_status())
        except asyncio.CancelledError:
            return
        except Exception as exc:
            log.error("ttrpc: %s/%s failed", request.service, request.method, exc_info=exc)
            out = codec.encode_response(stream_id, status=TtrpcError(Code.UNKNOWN, str(exc)).to_status())
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ttrpc: %s/%s stream %d answered in %.1f ms", request.service, request.method, stream_id,
                      (asyncio.get_running_loop().time() - started) * 1e3)
        try:
            self.write(out)
        except ProtocolError as exc:  # a response over the size limit
            self.write(codec.encode_response(stream_id, status=TtrpcError(Code.RESOURCE_EXHAUSTED,
                                                                          str(exc)).to_status()))

    async def _call(self, stream_id: int, request) -> bytes:
        methods = self.server._services.get(request.service)
        if methods is None:
            raise TtrpcError(Code.UNIMPLEMENTED, f"service {request.service}")
        entry = methods.get(request.method)
        if entry is None:
            raise TtrpcError(Code.UNIMPLEMENTED, f"method {request.method}")
        request_type, handler = entry
        try:
            message = request_type.FromString(request.payload)
        except Exception as exc:
            raise TtrpcError(Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}") from None
        metadata: dict[str, list[str]] = {}
        for kv in request.metadata:
            metadata.setdefault(kv.key, []).append(kv.value)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout_nano / 1e9 if request.timeout_nano > 0 else None
        ctx = RequestContext(request.service, request.method, stream_id, metadata, deadline, self.peer)
        if deadline is None:
            response = await handler(ctx, message)
        else:
            try:
                async with asyncio.timeout_at(deadline):
                    response = await handler(ctx, message)
            except TimeoutError:
                raise TtrpcError(Code.DEADLINE_EXCEEDED, f"{request.method}: deadline exceeded") from None
        return response.SerializeToString()


class Server:
    """A ttrpc server (states: NEW -> SERVING -> CLOSED)."""

    def __init__(self) -> None:
        self._services: dict[str, dict[str, tuple[type, Handler]]] = {}
        self._connections: set[_Connection] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._closed: asyncio.Event | None = None
        self._paths: list[str] = []

    def register(self, service: str, methods: Mapping[str, tuple[type, Handler]]) -> None:
        self._services.setdefault(service, {}).update(methods)

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def serve(self, listener: socket.socket) -> None:
        """Serves an already bound and listening AF_UNIX socket until close()."""
        loop = asyncio.get_running_loop()
        if self._closed is None:
            self._closed = asyncio.Event()
        server = await loop.create_unix_server(lambda: _Connection(self), sock=listener)
        self._servers.append(server)
        await self._closed.wait()

    async def serve_path(self, path: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(128)
        self._paths.append(path)
        await self.serve(sock)

    async def close(self, *, grace: float = 0.0) -> None:
        """Stops accepting, waits up to `grace` seconds for in-flight requests, then closes everything."""
        if self._closed is None:
            self._closed = asyncio.Event()
        for server in self._servers:
            server.close()
        pending = [t for c in self._connections for t in c.tasks]
        if pending and grace > 0:
            await asyncio.wait(pending, timeout=grace)
        await asyncio.sleep(0)  # let finished handlers hand their answers to the transports
        for conn in list(self._connections):
            for task in conn.tasks:
                task.cancel()
            if conn.transport is not None and not conn.closed:
                conn.closed = True
                conn.transport.close()
        remaining = [t for c in self._connections for t in c.tasks]
        if remaining:
            await asyncio.gather(*remaining, return_exceptions=True)
        self._servers.clear()
        import os

        for path in self._paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._paths.clear()
        self._closed.set()
