"""The stdio of a process in a utility VM: the client's FIFOs (or file:// URIs) on one side, the process's stdio
connections over the bridge (hcsshim.gcs.Process: stdin, stdout, stderr streams) on the other.

`ConnIO` owns the descriptors and the relays of one process:

    OPEN (FIFOs opened) --attach(process)--> RELAYING --every output stream at EOF--> DRAINED --close()--> CLOSED

* stdin: the FIFO is read once a writer has come (a FIFO polls readable only then: an early read would be a
  false EOF) and sent on the stdin connection; at the FIFO's EOF, or on CloseIO once what the FIFO holds has
  been sent, the connection is half-closed and the process reads EOF;
* stdout and stderr: each connection is read to its EOF and written to its FIFO, then closed (the guest reports
  the exit only once the host has closed its output connections: the exit always follows the last byte).
  As containerd's runc shim does, each output FIFO also has a reader of our own, so that a client going away
  (a detached `ctr run -d`) never makes the writes fail; if the FIFO still fails, the rest is read and dropped
  so the process never blocks.

A terminal process has no stderr: its pty's output comes on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from hcsshim.shim.stdio import StdioError, StdioPaths, open_input, open_output
from hcsshim.transport.base import Conn, wait_readable, write_fd

log = logging.getLogger("hcsshim.shim.vmio")

_CHUNK = 256 * 1024
DRAIN_TIMEOUT = 5.0


class ConnIO:
    """The FIFOs and relays of one process in a utility VM (see the module docstring for the states)."""

    def __init__(self, paths: StdioPaths) -> None:
        self.paths = paths
        self.state = "OPEN"
        self._fds: list[int] = []
        self._stdin: int | None = None
        self._outputs: dict[str, int] = {}  # stream -> FIFO write end
        self._relays: list[asyncio.Task[None]] = []
        self._stdin_relay: asyncio.Task[None] | None = None
        self._stdin_conn: Conn | None = None
        self._close_stdin = asyncio.Event()

    @classmethod
    def open(cls, paths: StdioPaths) -> ConnIO:
        """Opens the client's FIFOs; nothing is left open on error (StdioError names the stream)."""
        io = cls(paths)
        try:
            if paths.stdin:
                io._stdin = io._keep(open_input(paths.stdin))
            for name, uri in (("stdout", paths.stdout), ("stderr", paths.stderr)):
                if uri and not (paths.terminal and name == "stderr"):
                    dst, keep = open_output(uri, name)
                    io._outputs[name] = io._keep(dst)
                    if keep is not None:
                        io._keep(keep)
        except BaseException:
            io.close()
            raise
        return io

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    @property
    def wants(self) -> tuple[bool, bool, bool]:
        """Which of stdin, stdout and stderr the process needs connections for."""
        return self._stdin is not None, "stdout" in self._outputs, "stderr" in self._outputs

    def attach(self, stdin: Conn | None, stdout: Conn | None, stderr: Conn | None) -> None:
        """Starts relaying between the FIFOs and the process's connections (each one is owned here from now)."""
        if self.state != "OPEN":
            raise StdioError(f"attach stdio: the relays are {self.state.lower()}")
        self.state = "RELAYING"
        if stdin is not None:
            self._stdin_conn = stdin
            if self._stdin is None:
                stdin.write_eof()
            else:
                self._stdin_relay = asyncio.ensure_future(self._relay_stdin(self._stdin, stdin))
        for name, conn in (("stdout", stdout), ("stderr", stderr)):
            if conn is not None:
                self._relays.append(asyncio.ensure_future(self._relay_output(name, conn, self._outputs.get(name))))

    async def _relay_stdin(self, fd: int, conn: Conn) -> None:
        try:
            closing = asyncio.ensure_future(self._close_stdin.wait())
            readable: asyncio.Future[None] | None = None
            try:
                while not closing.done():
                    readable = asyncio.ensure_future(wait_readable(fd))
                    await asyncio.wait([readable, closing], return_when=asyncio.FIRST_COMPLETED)
                    await _cancelled(readable)
                    if not await self._send_available(fd, conn):
                        break
                else:  # CloseIO: the client wrote everything; send what the FIFO still holds
                    await self._send_available(fd, conn)
            finally:
                # No wait may outlive the relay: its reader registration would stay on the fd's number, which the
                # next descriptor opened (a ttrpc connection, say) takes over once close() has closed the FIFO.
                await _cancelled(closing)
                if readable is not None:
                    await _cancelled(readable)
            conn.write_eof()
        except (OSError, ConnectionError) as exc:
            log.debug("stdin relay: %s", exc)

    @staticmethod
    async def _send_available(fd: int, conn: Conn) -> bool:
        """Sends what the FIFO holds now; False at its EOF (every writer has gone)."""
        while True:
            try:
                data = os.read(fd, _CHUNK)
            except BlockingIOError:
                return True
            if not data:
                return False
            await conn.sendall(data)

    async def _relay_output(self, name: str, conn: Conn, fd: int | None) -> None:
        try:
            while data := await conn.recv(_CHUNK):
                if fd is None:
                    continue
                try:
                    await write_fd(fd, data)
                except OSError as exc:
                    log.debug("stdio %s: the client's end failed (%s); discarding further output", name, exc)
                    fd = None
        except (OSError, ConnectionError) as exc:
            log.debug("%s relay: %s", name, exc)
        finally:
            conn.close()

    def close_stdin(self) -> None:
        """End of input (CloseIO): what the FIFO holds now is still sent, then the process reads EOF."""
        self._close_stdin.set()
        if self._stdin_relay is None and self._stdin_conn is not None and self.state == "RELAYING":
            self._stdin_conn.write_eof()

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Until every output connection reached EOF and was written out (bounded)."""
        if self._relays:
            _, pending = await asyncio.wait(self._relays, timeout=timeout)
            if pending:
                log.debug("stdio: output still open %.0fs after the exit; not waiting longer", timeout)
        if self.state == "RELAYING":
            self.state = "DRAINED"

    def close(self) -> None:
        """Stops the relays and closes every connection, then the descriptors (idempotent).

        The descriptors are closed only once the cancelled relays have finished: a relay waiting on one has it
        registered with the event loop, and must drop that registration while the number is still ours."""
        tasks = [t for t in [*self._relays, self._stdin_relay] if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        self._relays.clear()
        self._stdin_relay = None
        if self._stdin_conn is not None:
            self._stdin_conn.close()
            self._stdin_conn = None
        fds, self._fds = self._fds, []
        self._outputs.clear()
        self._stdin = None
        self.state = "CLOSED"
        if tasks:
            asyncio.gather(*tasks, return_exceptions=True).add_done_callback(lambda _f: _close_all(fds))
        else:
            _close_all(fds)


async def _cancelled(fut: asyncio.Future[None]) -> None:
    """Cancels fut and waits until it has finished (its finally clauses have run); a cancellation of the caller
    still propagates (fut's own step was scheduled first, so it runs before anything the caller's end triggers)."""
    if not fut.done():
        fut.cancel()
        await asyncio.wait([fut])
    if not fut.cancelled():
        fut.exception()  # retrieved: a failed wait is the relay's business, reported by what it does next


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
