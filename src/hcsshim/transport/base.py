"""Port-addressed byte-stream connections with hcsshim's semantics: the host listens on port P, the guest dials P.

Owns the interface every transport offers (`Transport.listen`/`dial`, `Listener.accept`, `Conn`), the
socket-backed implementations (`UnixTransport`: port P is the unix socket ``DIR/P``; `VsockTransport`:
AF_VSOCK, the guest dials CID 2) and `open_transport`, which turns a ``-transport`` value
(``vsock``, ``unix:DIR``, ``mux:DEVICE``, ``mux:fd=R,W``) into a transport.

A `Conn` is a full-duplex byte stream with half-close: `recv` returns b"" at the peer's EOF,
`write_eof` is ``shutdown(SHUT_WR)``, `close` releases it. `fileno()` is the socket's fd for socket
transports (so a process can be handed the connection itself) and None for multiplexed streams.

Standard library only: the guest agent uses this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable

__all__ = [
    "DIAL_RETRIES",
    "DIAL_RETRY_DELAY",
    "VMADDR_CID_HOST",
    "Conn",
    "FdConn",
    "Listener",
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
DIAL_RETRIES = 10
DIAL_RETRY_DELAY = 0.1
RECV_SIZE = 256 * 1024
STREAM_LIMIT = 1 << 20  # read-buffer high-water mark of socket connections
# Errors after which a dial is retried (the listener may not be there yet); others fail at once.
_RETRY_ERRNOS = {errno.ETIMEDOUT, errno.ENOENT, errno.ECONNREFUSED}


class Conn:
    """One connection: an async full-duplex byte stream with half-close (see the module docstring)."""

    port: int = 0

    async def recv(self, n: int = RECV_SIZE) -> bytes:
        raise NotImplementedError

    async def sendall(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    async def send_frame(self, data: bytes) -> None:
        """Send one whole message: concurrent send_frame calls never interleave their bytes."""
        lock = self.__dict__.get("_frame_lock")
        if lock is None:
            lock = self.__dict__["_frame_lock"] = asyncio.Lock()
        async with lock:
            await self.sendall(data)

    def write_eof(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def fileno(self) -> int | None:
        return None

    async def recv_exactly(self, n: int) -> bytes:
        """n bytes, or fewer when the peer closed first."""
        chunks: list[bytes] = []
        while n > 0:
            data = await self.recv(min(n, RECV_SIZE))
            if not data:
                break
            chunks.append(data)
            n -= len(data)
        return b"".join(chunks)

    async def recv_all(self) -> bytes:
        """Everything until EOF."""
        chunks: list[bytes] = []
        while data := await self.recv():
            chunks.append(data)
        return b"".join(chunks)


class Listener:
    """Accepts the connections dialed to one port until closed."""

    port: int = 0

    async def accept(self) -> Conn:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Transport:
    """Listens on (host side) and dials (guest side) numbered ports."""

    async def listen(self, port: int) -> Listener:
        raise NotImplementedError

    async def dial(self, port: int, *, retries: int = DIAL_RETRIES, delay: float = DIAL_RETRY_DELAY) -> Conn:
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the transport itself holds (its connections are closed by their owners)."""


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


async def wait_readable(fd: int) -> None:
    """Until fd is readable (or has an error/hang-up pending)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.add_reader(fd, _wake, fut)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def wait_writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.add_writer(fd, _wake, fut)
    try:
        await fut
    finally:
        loop.remove_writer(fd)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def read_fd(fd: int, n: int = RECV_SIZE) -> bytes:
    """Read up to n bytes from a non-blocking fd; b"" at EOF (EIO, as a pty master reports it, too)."""
    while True:
        try:
            return os.read(fd, n)
        except BlockingIOError:
            await wait_readable(fd)
        except OSError as e:
            if e.errno == errno.EIO:
                return b""
            raise


async def write_fd(fd: int, data: bytes | memoryview) -> None:
    """Write all of data to a non-blocking fd (BrokenPipeError when the reader is gone)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await wait_writable(fd)
            continue
        view = view[n:]


class FdConn(Conn):
    """A Conn over a pair of file descriptors (a pipe pair, stdin/stdout): made non-blocking, owned here
    unless owns_fds is False. write_eof closes the write fd (when it differs from the read fd)."""

    def __init__(self, read: int, write: int, *, owns_fds: bool = True, port: int = 0) -> None:
        self.read_fd: int | None = read
        self.write_fd: int | None = write
        self.owns_fds = owns_fds
        self.port = port
        os.set_blocking(read, False)
        os.set_blocking(write, False)

    async def recv(self, n: int = RECV_SIZE) -> bytes:
        if self.read_fd is None:
            return b""
        try:
            return await read_fd(self.read_fd, n)
        except ConnectionResetError:
            return b""

    async def sendall(self, data: bytes | memoryview) -> None:
        if self.write_fd is None:
            raise BrokenPipeError(errno.EPIPE, "send on a closed connection")
        await write_fd(self.write_fd, data)

    def write_eof(self) -> None:
        fd, self.write_fd = self.write_fd, None
        if fd is not None and fd != self.read_fd and self.owns_fds:
            os.close(fd)

    def close(self) -> None:
        fds = {self.read_fd, self.write_fd} - {None}
        self.read_fd = self.write_fd = None
        if self.owns_fds:
            for fd in fds:
                os.close(fd)  # type: ignore[arg-type]


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
        from hcsshim.transport.mux import MuxTransport

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
