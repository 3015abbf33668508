"""The ttrpc server on asyncio: many connections, many concurrent requests per connection, whole-frame writes.

Each request runs in its own task owned by its connection -- concurrency is mandatory, since containerd keeps
`Wait` outstanding while it calls `State` and `Kill` on the same connection -- and answers go out in
completion order. Frames are written whole with one `transport.write` each, so they never interleave.

Errors, as the Go server reports them: unknown service -> UNIMPLEMENTED "service <name>"; unknown method ->
UNIMPLEMENTED "method <name>"; undecodable payload -> INTERNAL "ttrpc: error unmarshalling payload: ..."; a
handler's TtrpcError -> its status; any other exception -> UNKNOWN str(exc), logged with its traceback;
`timeout_nano` > 0 -> the handler runs under that deadline -> DEADLINE_EXCEEDED; an even stream id ->
INVALID_ARGUMENT; frames of unknown type are ignored. Unlike Go, malformed input (a bad header, an oversized
length, a Request that is not protobuf, EOF inside a frame) closes that connection with a logged error: its
in-flight handlers are cancelled and every other connection is served on.

Connection states: OPEN -> CLOSED on bad input, EOF (as in Go: the peer is gone) or server close, with its
in-flight handlers cancelled -- except a handler that itself closes the server: its connection stays open,
taking no more requests, until that handler's answer is written (the shim's Shutdown does this).
Server states: NEW -> SERVING (serve/serve_path, any number of listeners) -> CLOSING (close(): no new
connections; in-flight requests get `grace` seconds, then are cancelled) -> CLOSED: every task it started has
been awaited, every connection is closed, and the socket files serve_path created are removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError, Message

from hcsshim.api.google.rpc.status_pb2 import Status
from hcsshim.ttrpc.codec import (
    READ_SIZE,
    TYPE_REQUEST,
    FrameDecoder,
    decode_request,
    encode_response,
    metadata_dict,
)
from hcsshim.ttrpc.errors import Code, ProtocolError, TtrpcError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hcsshim.api.ttrpc.request_pb2 import Request

log = logging.getLogger("hcsshim.ttrpc")

Handler = Callable[["RequestContext", Message], Awaitable[Message]]

_PEERCRED = struct.Struct("3i")
_EVEN_STREAM = Status(code=Code.INVALID_ARGUMENT, message="StreamID must be odd for client initiated streams")
_LOST_WAIT = 1.0  # seconds close() lets a connection flush its last answers before aborting it


class RequestContext:
    """What a handler knows about its request. `deadline` is in loop time (loop.time()), None if unbounded."""

    __slots__ = ("deadline", "metadata", "method", "peer_gid", "peer_pid", "peer_uid", "service", "stream_id")

    def __init__(self, service: str, method: str, stream_id: int, metadata: dict[str, list[str]],
                 deadline: float | None, peer: tuple[int, int, int] | None = None) -> None:
        self.service = service
        self.method = method
        self.stream_id = stream_id
        self.metadata = metadata
        self.deadline = deadline
        self.peer_pid, self.peer_uid, self.peer_gid = peer if peer is not None else (None, None, None)

    @property
    def peer(self) -> tuple[int, int, int] | None:
        """(pid, uid, gid) of the peer process from SO_PEERCRED, None if unknown."""
        return None if self.peer_pid is None else (self.peer_pid, self.peer_uid, self.peer_gid)  # type: ignore

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative), None without a deadline."""
        if self.deadline is None:
            return None
        return self.deadline - asyncio.get_running_loop().time()

    def __repr__(self) -> str:
        return (f"RequestContext({self.service}/{self.method}, stream_id={self.stream_id}, "
                f"peer_pid={self.peer_pid}, deadline={self.deadline})")


class _Connection(asyncio.BufferedProtocol):
    """One accepted connection: decodes frames, runs a task per request, writes whole answers."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.peer: tuple[int, int, int] | None = None
        self.closing = False  # no more requests are taken
        self.draining = False  # the server closes from a handler here: close once its answer is written
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self._paused = False
        self._resume: asyncio.Future[None] | None = None
        self._keep: asyncio.Task | None = None  # the handler that closes the server: not cancelled
        self._view = memoryview(bytearray(READ_SIZE))

    def describe(self) -> str:
        return f"peer pid {self.peer[0]} uid {self.peer[1]}" if self.peer else "unknown peer"

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            self.peer = _PEERCRED.unpack(creds)
        except (OSError, AttributeError):
            self.peer = None
        if self.server._closing:
            self.closing = True
            transport.abort()
            return
        self.server._connections.add(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        if self.closing:
            return
        decoder = self.decoder
        try:
            decoder.receive_data(self._view[:nbytes])
            while (frame := decoder.next_frame()) is not None:
                if frame.type != TYPE_REQUEST:
                    continue  # unknown frame types are ignored, for compatibility (as the Go server does)
                stream_id = frame.stream_id
                if not stream_id & 1:
                    self.write(encode_response(stream_id, status=_EVEN_STREAM))
                    continue
                task = self.loop.create_task(self._handle(stream_id, decode_request(frame)))
                self.tasks.add(task)
                self.server._tasks.add(task)
                task.add_done_callback(self._task_done)
        except ProtocolError as exc:
            self.fail(exc)

    def eof_received(self) -> bool:
        # As in Go, EOF means the peer is gone: the connection closes and its handlers are cancelled.
        try:
            self.decoder.receive_data(b"")
            self.decoder.next_frame()
        except ProtocolError as exc:
            self.fail(exc)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        for task in self.tasks:
            if task is not self._keep:
                task.cancel()
        self.server._connections.discard(self)
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)

    # ours

    def fail(self, exc: BaseException) -> None:
        """Malformed input: log it, cancel this connection's handlers and drop it."""
        log.error("ttrpc: closing the connection of %s: %s", self.describe(), exc)
        self.shutdown(abort=True)

    def shutdown(self, *, abort: bool = False, keep: asyncio.Task | None = None) -> None:
        """Stop taking requests, cancel the handlers (but `keep`) and close (flushing written answers)."""
        self.closing = True
        self._keep = keep
        for task in self.tasks:
            if task is not keep:
                task.cancel()
        if keep is not None and keep in self.tasks:
            self.draining = True  # closed by _task_done once `keep` has answered
        elif self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.server._tasks.discard(task)
        if self.draining and not self.tasks and self.transport is not None:
            self.transport.close()

    async def _handle(self, stream_id: int, req: Request) -> None:
        payload = b""
        status = None
        try:
            payload = await self._call(stream_id, req)
        except TtrpcError as exc:
            status = exc.to_status()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # we were cancelled: the peer is gone or the server is closing
            status = Status(code=Code.CANCELLED, message=f"{req.service}/{req.method}: context canceled")
        except Exception as exc:
            log.error("ttrpc: %s/%s (stream %d, %s) failed", req.service, req.method, stream_id,
                      self.describe(), exc_info=True)
            status = Status(code=Code.UNKNOWN, message=str(exc))
        try:
            out = encode_response(stream_id, payload, status)
        except ProtocolError as exc:
            out = encode_response(stream_id, status=Status(
                code=Code.RESOURCE_EXHAUSTED, message=f"{req.service}/{req.method}: response: {exc}"))
        if self._paused and not self.closing:
            if self._resume is None or self._resume.done():
                self._resume = self.loop.create_future()
            await self._resume
        self.write(out)

    async def _call(self, stream_id: int, req: Request) -> bytes:
        methods = self.server._services.get(req.service)
        if methods is None:
            raise TtrpcError(Code.UNIMPLEMENTED, f"service {req.service}")
        entry = methods.get(req.method)
        if entry is None:
            raise TtrpcError(Code.UNIMPLEMENTED, f"method {req.method}")
        request_type, handler = entry
        try:
            message = request_type.FromString(req.payload)
        except DecodeError as exc:
            raise TtrpcError(Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}") from None
        md = metadata_dict(req.metadata) if req.metadata else {}
        if req.timeout_nano > 0:
            deadline = self.loop.time() + req.timeout_nano / 1e9
            ctx = RequestContext(req.service, req.method, stream_id, md, deadline, self.peer)
            timeout = asyncio.timeout_at(deadline)
            try:
                async with timeout:
                    response = await handler(ctx, message)
            except TimeoutError:
                if timeout.expired():
                    raise TtrpcError(Code.DEADLINE_EXCEEDED,
                                     f"{req.service}/{req.method}: context deadline exceeded") from None
                raise
        else:
            ctx = RequestContext(req.service, req.method, stream_id, md, None, self.peer)
            response = await handler(ctx, message)
        if response is None:
            raise TypeError(f"ttrpc: {req.service}/{req.method}: the handler returned None, not a message")
        return response.SerializeToString()


class Server:
    """A ttrpc server: register services, serve listeners, close."""

    def __init__(self) -> None:
        self._services: dict[str, dict[str, tuple[type[Message], Handler]]] = {}
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.Server] = []
        self._paths: list[tuple[str, int]] = []
        self._closing = False
        self._closed = asyncio.Event()

    def register(self, service: str, methods: Mapping[str, tuple[type[Message], Handler]]) -> None:
        """Add (or replace) the methods of `service`: name -> (request message class, async handler)."""
        self._services.setdefault(service, {}).update(methods)

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def in_flight(self) -> int:
        """Requests being handled right now, over all connections."""
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def serve(self, listener: socket.socket) -> None:
        """Serve an already bound and listening AF_UNIX stream socket until close() (which closes it).

        If the task running serve() is cancelled, the server closes (no grace) and the cancellation goes on.
        """
        if self._closing:
            listener.close()
            await self._closed.wait()
            return
        loop = asyncio.get_running_loop()
        # Python 3.13+ would otherwise unlink the listener's path on close: we remove only what we created.
        extra = {"cleanup_socket": False} if sys.version_info >= (3, 13) else {}
        server = await loop.create_unix_server(lambda: _Connection(self), sock=listener, **extra)
        self._servers.append(server)
        try:
            await self._closed.wait()
        except asyncio.CancelledError:
            await self.close()
            raise

    async def serve_path(self, path: str, *, backlog: int = 128) -> None:
        """Bind `path`, listen, serve until close(); close() removes the socket file (if still ours)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            self._paths.append((path, os.stat(path).st_ino))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            self._remove_paths()
            raise
        await self.serve(sock)

    async def close(self, *, grace: float = 0.0) -> None:
        """Stop accepting; give in-flight requests up to `grace` seconds, then cancel them; close everything.

        Idempotent; a concurrent second call waits for the first. Safe to call from a handler: that handler's
        own task is neither cancelled nor waited for.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        for server in self._servers:
            server.close()
        if grace > 0:
            deadline = loop.time() + grace
            while (pending := self._tasks - {me}) and (left := deadline - loop.time()) > 0:
                await asyncio.wait(pending, timeout=left)
        connections = list(self._connections)
        for conn in connections:
            conn.shutdown(keep=me)
        if pending := self._tasks - {me}:
            await asyncio.gather(*pending, return_exceptions=True)
        lost = [conn.lost for conn in connections if not conn.lost.done() and not conn.draining]
        if lost:
            _, not_done = await asyncio.wait(lost, timeout=_LOST_WAIT)
            if not_done:
                for conn in connections:
                    if not conn.lost.done() and conn.transport is not None:
                        conn.transport.abort()
                await asyncio.wait(not_done)
        # Not server.wait_closed(): from 3.12 it also waits for a connection kept open for `me` to answer.
        self._servers.clear()
        self._remove_paths()
        self._closed.set()

    def _remove_paths(self) -> None:
        for path, ino in self._paths:
            try:
                if os.stat(path).st_ino == ino:
                    os.unlink(path)
            except OSError:
                pass
        self._paths.clear()
