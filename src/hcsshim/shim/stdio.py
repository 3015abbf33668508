"""A process's stdio: the client's FIFOs (or file:// URIs) on one side, the process's pipes or pty on the other.

`ProcessIO` owns every descriptor of one process's stdio and the pumps that move bytes between them:

    OPEN --(runc create/exec done: child ends closed)--> RUNNING --(process exited)--> DRAINING
         --(stdout/stderr at EOF, or drain timed out)--> DRAINED --close()--> CLOSED

Non-terminal processes get one pipe per stream: the process holds one end (passed to runc), the shim pumps the
other end to or from the FIFO with splice(2), so the bytes never enter Python. Terminal processes get a pty from
runc over a console socket (`--console-socket`); the shim pumps the master both ways and resizes it.

Following containerd's runc shim, the shim opens each output FIFO for writing and also keeps a reader of its own,
so that a client going away (a detached `ctr run -d`) never makes the process's writes fail with EPIPE. The
stdin FIFO is opened non-blocking for reading: on Linux it only polls readable once a writer has come (with
data or when it leaves), so an early open never reads a false EOF.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import struct

from hcsshim.runc.console import ConsoleError, ConsoleSocket

log = logging.getLogger("hcsshim.shim.stdio")

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_CHUNK = 1 << 20
DRAIN_QUIET_TIMEOUT = 2.0
STDIN_QUIET_TIMEOUT = 1.0  # seconds without stdin progress after CloseIO before the process's stdin is closed


class StdioError(Exception):
    """The client's stdio cannot be opened or used; the message names the stream and path."""


class StdioPaths:
    """The client's stdio as containerd passes it (FIFO paths or URIs; "" for none)."""

    __slots__ = ("stderr", "stdin", "stdout", "terminal")

    def __init__(self, stdin: str = "", stdout: str = "", stderr: str = "", terminal: bool = False) -> None:
        self.stdin, self.stdout, self.stderr, self.terminal = stdin, stdout, stderr, terminal

    def __repr__(self) -> str:
        return (f"StdioPaths(stdin={self.stdin!r}, stdout={self.stdout!r}, stderr={self.stderr!r}, "
                f"terminal={self.terminal})")


def _target_path(uri: str, stream: str) -> tuple[str, str]:
    """(kind, path) of a stdio string: a bare path or fifo:// is a FIFO; file:// a regular file."""
    if "://" not in uri:
        return "fifo", uri
    scheme, _, rest = uri.partition("://")
    path = rest.split("?", 1)[0]
    if scheme == "fifo":
        return "fifo", path
    if scheme == "file":
        return "file", path
    raise StdioError(f"{stream} {uri}: unsupported scheme {scheme!r} (fifo and file are supported)")


def open_output(uri: str, stream: str) -> tuple[int, int | None]:
    """Opens an output target: (write fd, keep-alive read fd or None)."""
    kind, path = _target_path(uri, stream)
    try:
        if kind == "file":
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640), None
        keep = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC), keep
        except BaseException:
            os.close(keep)
            raise
    except OSError as exc:
        raise StdioError(f"open {stream} {path}: {exc.strerror}") from None


def open_input(uri: str) -> int:
    _, path = _target_path(uri, "stdin")
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise StdioError(f"open stdin {path}: {exc.strerror}") from None


class Pump:
    """Moves bytes from src to dst (both non-blocking) until EOF on src, on the event loop.

    splice(2) is used when one side is a pipe, else read/write. A dst that fails (EPIPE, EIO) is dropped and
    src is drained into nothing so the process never blocks. `done` resolves at EOF of src."""

    __slots__ = ("_buf", "_closed", "_loop", "_splice", "done", "dst", "name", "progress", "src")

    def __init__(self, loop: asyncio.AbstractEventLoop, src: int, dst: int | None, name: str) -> None:
        self._loop = loop
        self.src, self.dst, self.name = src, dst, name
        self._splice = True
        self._buf = b""
        self._closed = False
        self.progress = 0
        self.done: asyncio.Future[None] = loop.create_future()
        loop.add_reader(src, self._readable)

    def _readable(self) -> None:
        try:
            if self.dst is not None and self._splice:
                try:
                    n = os.splice(self.src, self.dst, _CHUNK, flags=_SPLICE_FLAGS)
                except OSError as exc:
                    if exc.errno == errno.EINVAL:
                        self._splice = False
                        return self._readable()
                    if exc.errno == errno.EAGAIN:
                        # Either side may be the one that would block; find out by polling dst.
                        self._wait_writable()
                        return None
                    raise
                if n == 0:
                    return self._eof()
                self.progress += n
                return None
            data = os.read(self.src, _CHUNK)
            if not data:
                return self._eof()
            self.progress += len(data)
            if self.dst is None:
                return None
            self._buf = data
            self._flush()
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EIO and self.src != self.dst:  # pty master after the slave closed
                return self._eof()
            self._drop_dst(exc)

    def _wait_writable(self) -> None:
        self._loop.remove_reader(self.src)
        self._loop.add_writer(self.dst, self._writable)  # type: ignore[arg-type]

    def _writable(self) -> None:
        self._loop.remove_writer(self.dst)  # type: ignore[arg-type]
        if self._buf:
            self._flush()
        elif not self._closed:
            self._loop.add_reader(self.src, self._readable)

    def _flush(self) -> None:
        assert self.dst is not None
        try:
            while self._buf:
                n = os.write(self.dst, self._buf)
                self._buf = self._buf[n:]
        except BlockingIOError:
            self._loop.remove_reader(self.src)
            self._loop.add_writer(self.dst, self._writable)
            return
        except OSError as exc:
            self._drop_dst(exc)
            return
        if not self._closed:
            # resume reading if we had paused for the writer
            self._loop.remove_reader(self.src)
            self._loop.add_reader(self.src, self._readable)

    def _drop_dst(self, exc: OSError) -> None:
        log.debug("stdio %s: destination failed (%s); discarding further output", self.name, exc.strerror)
        if self.dst is not None:
            self._loop.remove_writer(self.dst)
        self.dst = None
        self._buf = b""
        if not self._closed:
            self._loop.remove_reader(self.src)
            self._loop.add_reader(self.src, self._readable)

    def _eof(self) -> None:
        self.stop()
        if not self.done.done():
            self.done.set_result(None)

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.src)
        if self.dst is not None:
            self._loop.remove_writer(self.dst)
        if not self.done.done():
            self.done.set_result(None)


class ProcessIO:
    """All stdio descriptors and pumps of one process (see the module docstring for the states)."""

    def __init__(self, paths: StdioPaths) -> None:
        self.paths = paths
        self.state = "OPEN"
        self._fds: list[int] = []           # everything the shim must close at the end
        self._child: list[int | None] = [None, None, None]  # ends handed to the process via runc
        self._stdin_w: int | None = None    # shim end of the process's stdin pipe
        self._stdin_src: int | None = None  # the stdin FIFO
        self._out_pumps: list[Pump] = []
        self._in_pump: Pump | None = None
        self._closing_stdin: asyncio.Task[None] | None = None  # CloseIO waiting for the FIFO's tail
        self.console: ConsoleSocket | None = None
        self.master: int | None = None
        self._loop = asyncio.get_running_loop()

    @classmethod
    def open(cls, paths: StdioPaths) -> ProcessIO:
        """Opens the client's FIFOs and makes the pipes (or console socket). Nothing is left open on error."""
        if paths.terminal and paths.stderr:
            raise StdioError("terminal processes have no separate stderr: stderr must be empty")
        io = cls(paths)
        try:
            io._open()
        except BaseException:
            io.close()
            raise
        return io

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _open(self) -> None:
        p = self.paths
        if p.terminal:
            self.console = ConsoleSocket()
            if p.stdin:
                self._stdin_src = self._keep(open_input(p.stdin))
            return
        loop = self._loop
        if p.stdin:
            self._stdin_src = self._keep(open_input(p.stdin))
            r, w = os.pipe2(os.O_CLOEXEC)
            self._child[0] = r
            self._stdin_w = self._keep(w)
            os.set_blocking(w, False)
        for index, uri, name in ((1, p.stdout, "stdout"), (2, p.stderr, "stderr")):
            if not uri:
                continue
            if index == 2 and uri == p.stdout and uri.startswith("file://"):
                self._child[2] = self._child[1]   # same file: one pipe carries both streams into it
                continue
            dst, keep = open_output(uri, name)
            self._keep(dst)
            if keep is not None:
                self._keep(keep)
            r, w = os.pipe2(os.O_CLOEXEC)
            self._child[index] = w
            self._keep(r)
            os.set_blocking(r, False)
            self._out_pumps.append(Pump(loop, r, dst, name))
        if self._stdin_src is not None and self._stdin_w is not None:
            self._in_pump = Pump(loop, self._stdin_src, self._stdin_w, "stdin")
            self._in_pump.done.add_done_callback(lambda _f: self._close_stdin_now())

    @property
    def child_fds(self) -> tuple[int | None, int | None, int | None]:
        """The (stdin, stdout, stderr) descriptors to hand to runc; None means /dev/null."""
        return self._child[0], self._child[1], self._child[2]

    @property
    def console_socket(self) -> str | None:
        return self.console.path if self.console else None

    async def attach_console(self) -> None:
        """Receives the pty master from runc and starts pumping it (terminal processes)."""
        assert self.console is not None
        try:
            master = await self.console.receive_master()
        except ConsoleError as exc:
            raise StdioError(str(exc)) from None
        finally:
            self.console.close()
            self.console = None
        self.master = self._keep(master)
        if self.paths.stdout:
            dst, keep = open_output(self.paths.stdout, "stdout")
            self._keep(dst)
            if keep is not None:
                self._keep(keep)
            self._out_pumps.append(Pump(self._loop, master, dst, "stdout"))
        else:
            self._out_pumps.append(Pump(self._loop, master, None, "stdout"))
        if self._stdin_src is not None:
            self._in_pump = Pump(self._loop, self._stdin_src, os.dup(master), "stdin")
            self._keep(self._in_pump.dst)  # type: ignore[arg-type]

    def started(self) -> None:
        """The process holds its ends now: close the shim's copies (so EOF can happen)."""
        seen = set()
        for fd in self._child:
            if fd is not None and fd not in seen:
                seen.add(fd)
                os.close(fd)
        self._child = [None, None, None]
        self.state = "RUNNING"

    def close_stdin(self) -> None:
        """End of input (CloseIO): what the stdin FIFO holds now is still delivered, then the process reads EOF.

        A client calls CloseIO once it has written its input, which may still be in the FIFO (up to a pipe's
        worth): stopping the pump at once would drop the tail of it. The pump goes on until the FIFO's EOF (the
        client closed it) or until it made no progress for STDIN_QUIET_TIMEOUT seconds (another writer keeps
        it open), then the process's stdin is closed. Idempotent."""
        pump = self._in_pump
        if pump is None or pump.done.done() or self._closing_stdin is not None:
            if pump is None or pump.done.done():
                self._close_stdin_now()
            return
        self._closing_stdin = self._loop.create_task(self._close_stdin_when_delivered(pump))

    async def _close_stdin_when_delivered(self, pump: Pump) -> None:
        while not pump.done.done():
            before = pump.progress
            await asyncio.wait([pump.done], timeout=STDIN_QUIET_TIMEOUT)
            if not pump.done.done() and pump.progress == before:
                break
        self._close_stdin_now()

    def _close_stdin_now(self) -> None:
        """Delivers EOF to the process's stdin now (idempotent; the stdin FIFO's EOF lands here)."""
        if self._in_pump is not None:
            self._in_pump.stop()
        if self._stdin_w is not None and self.master is None:
            fd, self._stdin_w = self._stdin_w, None
            self._fds.remove(fd)
            os.close(fd)

    def resize(self, width: int, height: int) -> None:
        import fcntl
        import termios

        if self.master is None:
            raise StdioError("resize: the process has no terminal")
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def drain(self, quiet_timeout: float = DRAIN_QUIET_TIMEOUT) -> None:
        """Waits until the process's output reached EOF and is written out.

        Gives up after `quiet_timeout` seconds without progress (a daemonised child still holding the pipe)."""
        self.state = "DRAINING"
        pending = [p for p in self._out_pumps if not p.done.done()]
        while pending:
            before = sum(p.progress for p in pending)
            await asyncio.wait([p.done for p in pending], timeout=quiet_timeout)
            pending = [p for p in pending if not p.done.done()]
            if pending and sum(p.progress for p in pending) == before:
                log.debug("stdio: output still open %.1fs after exit; not waiting longer", quiet_timeout)
                break
        self.state = "DRAINED"

    def close(self) -> None:
        """Stops the pumps and closes every descriptor (idempotent)."""
        if self._closing_stdin is not None:
            self._closing_stdin.cancel()
        for pump in self._out_pumps:
            pump.stop()
        if self._in_pump is not None:
            self._in_pump.stop()
        if self.console is not None:
            self.console.close()
            self.console = None
        seen = set()
        for fd in [*self._fds, *(f for f in self._child if f is not None)]:
            if fd in seen:
                continue
            seen.add(fd)
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self._child = [None, None, None]
        self._stdin_w = None
        self.state = "CLOSED"
