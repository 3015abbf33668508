"""The transport interface: `Transport` (listen on / dial numbered ports), `Listener`, `Conn`, and the
non-blocking fd I/O the implementations share (`read_fd`, `write_fd`, `FdConn` over a pair of fds).

A `Conn` is a full-duplex byte stream with half-close: `recv` returns b"" at the peer's EOF,
`write_eof` is ``shutdown(SHUT_WR)``, `close` releases it. `fileno()` is the socket's fd for socket
transports (so a process can be handed the connection itself) and None for multiplexed streams.

The implementations build on this module: sockets in `base`, the port multiplexer in `mux`. Standard library
only: the guest agent uses this package.
"""

from __future__ import annotations

import asyncio
import errno
import os

__all__ = [
    "DIAL_RETRIES",
    "DIAL_RETRY_DELAY",
    "RECV_SIZE",
    "Conn",
    "FdConn",
    "Listener",
    "Transport",
    "read_fd",
    "wait_readable",
    "wait_writable",
    "write_fd",
]

DIAL_RETRIES = 10
DIAL_RETRY_DELAY = 0.1
RECV_SIZE = 256 * 1024


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
