"""Relaying a process's stdio between its pipes or pty and the host's stdio connections (spec section 6).

Owns the copy loops and their close rules:

* stdin (host -> process): copy until the host half-closes, then close the process's stdin;
* stdout/stderr (process -> host): copy until the pipe's EOF, then half-close the connection and wait for
  the host to close it (the handshake the Go host expects), then close; if the host goes away, keep
  draining the pipe so the process never blocks on a full pipe;
* a pty master: its output goes to the stdout connection and the stdin connection feeds it; at the pty's
  EOF/EIO the connections are just closed (no handshake);

plus the pipes themselves (`Pipes`, 1 MiB pipe buffers). The console socket on which runc hands over a pty
master is `hcsshim.runc.console.ConsoleSocket`, shared with the shim.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import termios

from hcsshim.transport.base import Conn, read_fd, write_fd

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
_F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20


def make_pipe() -> tuple[int, int]:
    """A pipe with a 1 MiB buffer when the system allows it (fewer wake-ups when relaying bulk output)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


class Pipes:
    """The three stdio pipes of a process. child = the ends the process gets (None = /dev/null);
    ours = our ends (non-blocking). `close_child()` once the process has them."""

    def __init__(self, stdin: bool, stdout: bool, stderr: bool) -> None:
        self.child: list[int | None] = [None, None, None]
        self.ours: list[int | None] = [None, None, None]
        try:
            for i, want in enumerate((stdin, stdout, stderr)):
                if want:
                    r, w = make_pipe()
                    self.child[i], self.ours[i] = (r, w) if i == 0 else (w, r)
                    os.set_blocking(self.ours[i], False)  # type: ignore[arg-type]
        except BaseException:
            self.close()
            raise

    def close_child(self) -> None:
        for i, fd in enumerate(self.child):
            if fd is not None:
                os.close(fd)
                self.child[i] = None

    def take(self, i: int) -> int | None:
        fd, self.ours[i] = self.ours[i], None
        return fd

    def close(self) -> None:
        self.close_child()
        for i, fd in enumerate(self.ours):
            if fd is not None:
                os.close(fd)
                self.ours[i] = None


async def conn_to_fd(conn: Conn, fd: int) -> None:
    """stdin: copy the host's bytes into fd until the host half-closes (or the process's side is gone),
    then close fd (the process sees EOF). Owns fd; the connection stays the caller's."""
    try:
        while data := await conn.recv(CHUNK):
            await write_fd(fd, data)
    except (BrokenPipeError, ConnectionError):
        pass
    finally:
        os.close(fd)


async def fd_to_conn(fd: int, conn: Conn | None, *, handshake: bool = True) -> None:
    """stdout/stderr: copy fd into conn until fd's EOF, then half-close conn and (with handshake) wait for
    the host to close it. conn None or broken: drain and discard. Owns fd and conn (closed at the end)."""
    try:
        while True:
            data = await read_fd(fd, CHUNK)
            if not data:
                break
            if conn is not None:
                try:
                    await conn.sendall(data)
                except (BrokenPipeError, ConnectionError) as e:
                    log.debug("stdio relay: host connection lost, discarding output", extra={"error": str(e)})
                    conn.close()
                    conn = None
        if conn is not None:
            conn.write_eof()
            if handshake:
                with contextlib.suppress(ConnectionError):
                    while await conn.recv(4096):
                        pass
    finally:
        os.close(fd)
        if conn is not None:
            conn.close()


async def pty_relay(master: int, stdin: Conn | None, stdout: Conn | None) -> None:
    """A terminal: master -> stdout until EOF/EIO, stdin -> master meanwhile; then close both connections.
    The master fd stays open (the caller closes it, ResizeConsole may still use it until then)."""
    feeder = None
    if stdin is not None:
        feeder = asyncio.create_task(_feed_pty(stdin, master), name=f"pty-stdin-{master}")
    try:
        while data := await read_fd(master, CHUNK):
            if stdout is not None:
                try:
                    await stdout.sendall(data)
                except (BrokenPipeError, ConnectionError):
                    stdout.close()
                    stdout = None
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
        for conn in (stdin, stdout):
            if conn is not None:
                conn.close()


async def _feed_pty(conn: Conn, master: int) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await conn.recv(CHUNK):
            await write_fd(master, data)
        # Host stdin EOF: a terminal's "end of input" is ^D at the start of a line.
        await write_fd(master, b"\x04")


def set_window_size(master: int, height: int, width: int) -> None:
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def open_pty() -> tuple[int, int]:
    """(master, slave): the master non-blocking and close-on-exec, the slave as the process's terminal."""
    master, slave = os.openpty()
    os.set_blocking(master, False)
    os.set_inheritable(master, False)
    return master, slave
