"""Port-addressed byte-stream connections with hcsshim's semantics: the host listens on port P, the guest dials P.

Owns the socket-backed transports (`UnixTransport`: port P is the unix socket ``DIR/P``; `VsockTransport`:
AF_VSOCK, the guest dials CID 2) and `open_transport`, which turns a ``-transport`` value
(``vsock``, ``unix:DIR``, ``mux:DEVICE``, ``mux:fd=R,W``) into a transport. The interface they implement
(`Transport`, `Listener`, `Conn`) and the fd I/O (`FdConn`, `read_fd`, `write_fd`) are in `conn`, re-exported
here.

Standard library only: the guest agent uses this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable

from hcsshim.transport.conn import (
    DIAL_RETRIES,
    DIAL_RETRY_DELAY,
    RECV_SIZE,
    Conn,
    FdConn,
    Listener,
    Transport,
    read_fd,
    wait_readable,
    wait_writable,
    write_fd,
)
from hcsshim.transport.mux import MuxTransport

__all__ = [
    "DIAL_RETRIES",
    "DIAL_RETRY_DELAY",
    "RECV_SIZE",
    "VMADDR_CID_HOST",
    "Conn",
    "FdConn",
    "Listener",
    "MuxTransport",
    "SocketConn",
    "Transport",
    "UnixTransport",
    "VsockTransport",
    "open_transport",
    "read_fd",
    "wait_readable",
    "wait_writable",
    "write_fd",
]

VMADDR_CID_HOST = 2
STREAM_LIMIT = 1 << 20  # read-buffer high-water mark of socket connections
# Errors after which a dial is retried (the listener may not be there yet); others fail at once.
_RETRY_ERRNOS = {errno.ETIMEDOUT, errno.ENOENT, errno.ECONNREFUSED}


class _StreamProtocol(asyncio.Protocol):
    """The event-loop side of a SocketConn: buffers received bytes (pausing the socket above STREAM_LIMIT),
    or hands them straight to a consumer installed with `SocketConn.set_consumer`; tracks write flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.consumer: Callable[[bytes], None] | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.consumer is not None:
            self.consumer(data)
            return
        self.buffer += data
        self._wake()
        if len(self.buffer) > STREAM_LIMIT and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        if self.consumer is not None:
            self.consumer(b"")
        return True  # keep the socket open: our side may still write (half-close)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.eof:
            self.eof = True
            if self.consumer is not None:
                self.consumer(b"")
        self.error = exc
        self._wake()
        self.writing_paused = False
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()

    def _wake(self) -> None:
        w = self._read_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait_readable(self) -> None:
        self._read_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._read_waiter
        finally:
            self._read_waiter = None

    async def drain(self) -> None:
        while self.writing_paused:
            w = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(w)
            await w


class SocketConn(Conn):
    """A Conn over a connected stream socket through an event-loop transport (owned by this object).

    Construct with `await SocketConn.open(sock, port)`. Writes are queued by the transport at once, so
    `send_frame` never interleaves messages; they wait only while the write buffer is above its high-water
    mark. A consumer (`set_consumer`) gets received bytes directly from the event loop (b"" at EOF), which
    is how the bridge reads without a wake-up per message.
    """

    def __init__(self, transport: asyncio.Transport, protocol: _StreamProtocol, port: int = 0) -> None:
        self.transport = transport
        self.protocol = protocol
        self.port = port
        self._closed = False
        self._sock = transport.get_extra_info("socket")

    @classmethod
    async def open(cls, sock: socket.socket, port: int = 0) -> SocketConn:
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.connect_accepted_socket(_StreamProtocol, sock)
        except BaseException:
            sock.close()
            raise
        return cls(transport, protocol, port)

    def set_consumer(self, consumer: Callable[[bytes], None]) -> None:
        """From now on, call consumer(data) for received bytes (and consumer(b"") at EOF)."""
        p = self.protocol
        data, p.buffer = bytes(p.buffer), bytearray()
        p.consumer = consumer
        if p.reading_paused:
            p.reading_paused = False
            self.transport.resume_reading()
        if data:
            consumer(data)
        if p.eof:
            consumer(b"")

    async def recv(self, n: int = RECV_SIZE) -> bytes:
        p = self.protocol
        while not p.buffer:
            if p.eof or self._closed:
                return b""
            await p.wait_readable()
        if len(p.buffer) <= n:
            data, p.buffer = bytes(p.buffer), bytearray()
        else:
            data = bytes(p.buffer[:n])
            del p.buffer[:n]
        if p.reading_paused and len(p.buffer) < STREAM_LIMIT // 2:
            p.reading_paused = False
            self.transport.resume_reading()
        return data

    async def sendall(self, data: bytes | memoryview) -> None:
        if self._closed or self.transport.is_closing():
            raise BrokenPipeError(errno.EPIPE, f"send on a closed connection (port {self.port:#x})")
        self.transport.write(data)
        if self.protocol.writing_paused:
            await self.protocol.drain()
            if self.transport.is_closing():
                raise BrokenPipeError(errno.EPIPE, f"connection lost (port {self.port:#x})")

    async def send_frame(self, data: bytes) -> None:
        await self.sendall(data)  # write() queues all of data at once: frames never interleave

    def write_eof(self) -> None:
        if not self._closed and not self.transport.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                self.transport.write_eof()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.close()

    def fileno(self) -> int | None:
        return None if self._closed or self._sock is None else self._sock.fileno()

    def __repr__(self) -> str:
        return f"SocketConn(port={self.port:#x}, fd={self.fileno()})"


class _SocketListener(Listener):
    def __init__(self, sock: socket.socket, port: int, path: str | None = None) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.port = port
        self.path = path

    async def accept(self) -> Conn:
        conn, _ = await asyncio.get_running_loop().sock_accept(self.sock)
        return await SocketConn.open(conn, self.port)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.sock.close()
            if self.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)


async def _dial_socket(family: int, address: object, port: int, where: str, retries: int, delay: float) -> Conn:
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            return await SocketConn.open(sock, port)
        except OSError as e:
            sock.close()
            attempt += 1
            if e.errno not in _RETRY_ERRNOS or attempt > retries:
                raise OSError(e.errno, f"dial {where}: {e.strerror}") from None
            await asyncio.sleep(delay)
        except BaseException:
            sock.close()
            raise


class UnixTransport(Transport):
    """Port P is the unix socket DIR/P (decimal): the host listens there, the guest connects to it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def path(self, port: int) -> str:
        return os.path.join(self.directory, str(port))

    async def listen(self, port: int) -> Listener:
        path = self.path(port)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a stale socket of a listener that died
            sock.bind(path)
            sock.listen(64)
        except OSError as e:
            sock.close()
            raise OSError(e.errno, f"listen on port {port:#x} ({path}): {e.strerror}") from None
        return _SocketListener(sock, port, path)

    async def dial(self, port: int, *, retries: int = DIAL_RETRIES, delay: float = DIAL_RETRY_DELAY) -> Conn:
        path = self.path(port)
        return await _dial_socket(socket.AF_UNIX, path, port, f"port {port:#x} ({path})", retries, delay)

    def __repr__(self) -> str:
        return f"UnixTransport({self.directory!r})"


class VsockTransport(Transport):
    """AF_VSOCK: the host listens on (VMADDR_CID_ANY, P); the guest dials (cid, P), cid 2 = the host."""

    def __init__(self, cid: int = VMADDR_CID_HOST) -> None:
        if not hasattr(socket, "AF_VSOCK"):
            raise OSError(errno.EAFNOSUPPORT, "vsock transport: AF_VSOCK is not available")
        self.cid = cid

    async def listen(self, port: int) -> Listener:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            sock.bind((socket.VMADDR_CID_ANY, port))
            sock.listen(64)
        except OSError as e:
            sock.close()
            raise OSError(e.errno, f"listen on vsock port {port:#x}: {e.strerror}") from None
        return _SocketListener(sock, port)

    async def dial(self, port: int, *, retries: int = DIAL_RETRIES, delay: float = DIAL_RETRY_DELAY) -> Conn:
        return await _dial_socket(socket.AF_VSOCK, (self.cid, port), port,
                                  f"vsock {self.cid}:{port:#x}", retries, delay)


def open_transport(spec: str, *, role: str) -> Transport:
    """A transport from its text form; role is "host" or "guest" (the multiplexer needs to know).

    ``vsock``; ``unix:DIR``; ``mux:DEVICE`` (a character device or socket opened read-write, e.g. a
    virtio-serial port); ``mux:fd=R,W`` (inherited file descriptors, e.g. a pipe pair); ``mux:-`` (stdin and
    stdout). A mux transport must be started (`await t.start()`) on the running loop before use.
    """
    kind, _, arg = spec.partition(":")
    if kind == "vsock" and not arg:
        return VsockTransport()
    if kind == "unix" and arg:
        return UnixTransport(arg)
    if kind == "mux" and arg:
        if arg == "-":
            return MuxTransport(0, 1, role=role, owns_fds=False)
        if arg.startswith("fd="):
            try:
                r, w = (int(x) for x in arg[3:].split(","))
            except ValueError:
                raise ValueError(f"transport {spec!r}: expected mux:fd=R,W with two fd numbers") from None
            return MuxTransport(r, w, role=role)
        fd = os.open(arg, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        return MuxTransport(fd, fd, role=role)
    raise ValueError(f"transport {spec!r}: expected vsock, unix:DIR, mux:DEVICE, mux:fd=R,W or mux:-")
