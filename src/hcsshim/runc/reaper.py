"""Spawning child processes and collecting their exits: the one place in a process that calls waitpid.

Two waiters share one spawn/run/watch API:

* `Reaper` owns *every* exit of the process.  `start()` makes the process a child subreaper (so container
  inits and other orphans of our children are reparented to us; the first `spawn()` sets the flag, as
  there is no descendant to adopt before it and a VM's boot path saves importing ctypes) and installs a
  SIGCHLD handler on the running loop that reaps with ``waitpid(-1, WNOHANG)`` until no exited child is
  left.  Each exit is dispatched once: to the futures of `watch(pid)` registered for it and to every
  `subscribe()` callback.  An exit nobody watches yet is kept (the last `keep`, default 1024) for the first
  later `watch(pid)`: a container init may exit before its pid is read from runc's pid file.
* `PidfdWaiter` is for processes that are *not* subreapers and must not steal other code's children:
  `watch(pid)` waits on ``pidfd_open(pid)`` with ``loop.add_reader`` and reaps only that pid.  It can only
  watch direct children.  It needs no start; it is what `Runc` uses when given no waiter.

Rules while a `Reaper` is started (documented, not enforced):

* Nothing else in the process may reap: no ``asyncio.create_subprocess_*`` (its child watcher would race
  with ``waitpid(-1)``), no ``subprocess.run``/``Popen.wait`` and no ``os.wait*`` of our children.
* The handler belongs to the loop that was running in `start()`; call the API from that loop (the main
  thread: signal handlers only work there).

Spawning uses ``subprocess.Popen`` (CPython's vfork path: ~0.6 ms for /bin/true here) and never lets Popen
wait: the Popen object is kept until the waiter reports the exit and then marked reaped (``returncode``
set), so neither ``Popen.__del__`` nor ``subprocess._cleanup`` ever call waitpid on it.

Exit statuses are reported as a shell reports them: the exit code, or 128 + signal number when the process
was killed by a signal (``sh -c 'kill -9 $$'`` -> 137).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "DEVNULL",
    "PIPE",
    "Child",
    "Completed",
    "PidfdWaiter",
    "PipeReader",
    "Reaper",
    "ReaperClosed",
    "exit_status",
]

log = logging.getLogger(__name__)

#: Pass as stdin/stdout/stderr of `spawn` to get a new pipe (our end on `Child`), or /dev/null.
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL

_PR_SET_CHILD_SUBREAPER = 36
_READ_CHUNK = 65536


def exit_status(wait_status: int) -> int:
    """A waitpid() status as a shell reports it: the exit code, or 128 + signal when killed by a signal."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def _set_child_subreaper(on: bool) -> None:
    from hcsshim.libc import errno, libc

    if libc().prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        err = errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER, {int(on)}): {os.strerror(err)}")


class ReaperClosed(RuntimeError):
    """The waiter was closed while a watch() of a process that had not exited was pending."""


class Completed:
    """The result of `run`: the exit status and the captured stdout and stderr (empty when not captured)."""

    __slots__ = ("argv", "status", "stderr", "stdout")

    def __init__(self, argv: Sequence[str], status: int, stdout: bytes, stderr: bytes) -> None:
        self.argv = list(argv)
        self.status = status
        self.stdout = stdout
        self.stderr = stderr

    def __iter__(self):  # (status, stdout, stderr) = await waiter.run(...)
        return iter((self.status, self.stdout, self.stderr))

    def __repr__(self) -> str:
        return (f"Completed(argv={self.argv!r}, status={self.status}, stdout={self.stdout!r}, "
                f"stderr={self.stderr!r})")


class Child:
    """A spawned process: its pid, its exit (via `wait`) and our ends of the pipes asked for with PIPE.

    The pipe ends (`stdin`, `stdout`, `stderr`: int fds or None) are non-blocking and owned by this object:
    `close()` closes them; a caller that takes one over sets the attribute to None first.
    """

    __slots__ = ("_exit", "pid", "stderr", "stdin", "stdout")

    def __init__(
        self, pid: int, exit: asyncio.Future[int], stdin: int | None, stdout: int | None, stderr: int | None
    ) -> None:
        self.pid = pid
        self._exit = exit
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr

    @property
    def status(self) -> int | None:
        """The exit status once the waiter reported it, else None."""
        if self._exit.done() and not self._exit.cancelled() and self._exit.exception() is None:
            return self._exit.result()
        return None

    async def wait(self) -> int:
        """Wait for the exit and return its status (cancelling this wait does not stop the watch)."""
        return await asyncio.shield(self._exit)

    def close(self) -> None:
        """Close our pipe ends (idempotent)."""
        for name in ("stdin", "stdout", "stderr"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)

    def __repr__(self) -> str:
        return f"Child(pid={self.pid}, status={self.status})"


class PipeReader:
    """Reads a non-blocking pipe with loop.add_reader into memory, so the writer never blocks on a full pipe.

    `finish()` reads what is left without blocking, unregisters and closes the fd and returns all the bytes.
    Call it once the writer has exited: everything it wrote is then in the pipe, even when another process
    (say a container init that inherited it) still holds the write end, so we never wait for an EOF that
    may not come.
    """

    __slots__ = ("_chunks", "_fd", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._loop = loop
        self._fd = fd
        self._chunks: list[bytes] = []
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._read)

    def _read(self) -> bool:
        """Read until the pipe is empty; True at EOF (then the reader is removed)."""
        while True:
            try:
                data = os.read(self._fd, _READ_CHUNK)
            except BlockingIOError:
                return False
            if not data:
                self._loop.remove_reader(self._fd)
                return True
            self._chunks.append(data)

    def finish(self) -> bytes:
        if self._fd < 0:
            return b"".join(self._chunks)
        self._read()
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        return b"".join(self._chunks)


class _PipeWriter:
    """Writes bytes to a non-blocking pipe with loop.add_writer, then closes it."""

    __slots__ = ("_data", "_fd", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
        self._loop = loop
        self._fd = fd
        self._data = memoryview(data)
        os.set_blocking(fd, False)
        if self._write():
            loop.add_writer(fd, self._write)

    def _write(self) -> bool:
        """Write what the pipe takes; False once done (all written or the reader went away)."""
        try:
            while self._data:
                n = os.write(self._fd, self._data)
                self._data = self._data[n:]
        except BlockingIOError:
            return True
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close()
        return False

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_writer(self._fd)
            os.close(self._fd)
            self._fd = -1


def _mark_reaped(proc: subprocess.Popen[bytes], exit: asyncio.Future[int]) -> None:
    # The exit was collected by our waiter: tell Popen so that it never calls waitpid() itself.
    if proc.returncode is None:
        ok = not exit.cancelled() and exit.exception() is None
        proc.returncode = exit.result() if ok else -1


class _Waiter:
    """spawn and run, shared by Reaper and PidfdWaiter; subclasses provide watch() and the exit source."""

    __slots__ = ("_subscribers", "_watchers")

    def __init__(self) -> None:
        self._watchers: dict[int, list[asyncio.Future[int]]] = {}
        self._subscribers: list[Callable[[int, int], None]] = []

    def watch(self, pid: int, *, since: float | None = None) -> asyncio.Future[int]:
        raise NotImplementedError

    def _check_can_watch(self) -> None:
        """Raise before spawning when a child could not be watched (so none is left unreaped)."""

    def _before_spawn(self) -> None:
        """What must hold before a child exists (Reaper: the subreaper flag)."""

    def _watch_new(self, pid: int) -> asyncio.Future[int]:
        """Watch a child we just spawned (no exit of an earlier process with the same pid applies)."""
        return self.watch(pid)

    def subscribe(self, callback: Callable[[int, int], None]) -> Callable[[], None]:
        """Call callback(pid, status) for every exit this waiter collects; returns the unsubscribe function.

        Callbacks run on the loop, synchronously inside the exit dispatch: keep them short and non-raising
        (an exception is logged and swallowed).
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            try:
                self._subscribers.remove(callback)
            except ValueError:
                pass

        return unsubscribe

    def _add_watcher(self, pid: int, fut: asyncio.Future[int]) -> None:
        self._watchers.setdefault(pid, []).append(fut)

        def forget(f: asyncio.Future[int]) -> None:
            futs = self._watchers.get(pid)
            if f.cancelled() and futs is not None and f in futs:
                futs.remove(f)
                if not futs:
                    del self._watchers[pid]

        fut.add_done_callback(forget)

    def _dispatch(self, pid: int, status: int) -> bool:
        """Resolve the watchers of pid and notify subscribers; False when no live watcher took the exit."""
        taken = False
        for fut in self._watchers.pop(pid, ()):
            if not fut.done():
                fut.set_result(status)
                taken = True
        for callback in tuple(self._subscribers):
            try:
                callback(pid, status)
            except Exception:
                log.exception("exit subscriber failed", extra={"pid": pid, "status": status})
        return taken

    def _fail_watchers(self, reason: str) -> None:
        watchers, self._watchers = self._watchers, {}
        for pid, futs in watchers.items():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(ReaperClosed(f"{reason}: pid {pid} has not exited"))

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        pass_fds: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        start_new_session: bool = False,
    ) -> Child:
        """Start argv (argv[0] is looked up in PATH) and watch its exit.

        Each of stdin/stdout/stderr is None (inherit ours), PIPE (a new pipe: our non-blocking end is on
        the Child), DEVNULL, or an fd (dup'ed onto the child's 0/1/2; still ours to close).  All other fds
        are closed in the child except pass_fds, which keep their numbers.
        """
        self._check_can_watch()
        self._before_spawn()
        ours: list[int | None] = [None, None, None]
        theirs: list[int] = []
        spec: list[int | None] = [stdin, stdout, stderr]
        try:
            for i, want in enumerate(spec):
                if want == PIPE:
                    r, w = os.pipe()
                    ours[i], child_end = (w, r) if i == 0 else (r, w)
                    theirs.append(child_end)
                    spec[i] = child_end
            proc = subprocess.Popen(
                argv,
                stdin=spec[0],
                stdout=spec[1],
                stderr=spec[2],
                pass_fds=tuple(pass_fds),
                env=env,
                cwd=cwd,
                start_new_session=start_new_session,
                close_fds=True,
            )
        except BaseException:
            for fd in ours:
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        exit = self._watch_new(proc.pid)
        exit.add_done_callback(lambda f, proc=proc: _mark_reaped(proc, f))
        for fd in ours:
            if fd is not None:
                os.set_blocking(fd, False)
        return Child(proc.pid, exit, ours[0], ours[1], ours[2])

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        pass_fds: Sequence[int] = (),
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> Completed:
        """Run argv to its exit and return (status, stdout, stderr).

        stdout and stderr are captured unless an fd is given for them; stdin is `input` when given, else
        the given fd, else /dev/null.  Output is what the process wrote before it exited: we do not wait
        for an EOF that a grandchild holding the pipe could delay forever.  Cancelling run() stops the
        capture but not the process (its exit is still collected).
        """
        loop = asyncio.get_running_loop()
        if input is not None:
            stdin = PIPE
        elif stdin is None:
            stdin = DEVNULL
        child = await self.spawn(
            argv,
            stdin=stdin,
            stdout=PIPE if stdout is None else stdout,
            stderr=PIPE if stderr is None else stderr,
            pass_fds=pass_fds,
            env=env,
            cwd=cwd,
        )
        writer = out = err = None
        try:
            if child.stdin is not None:
                fd, child.stdin = child.stdin, None
                writer = _PipeWriter(loop, fd, input or b"")
            if child.stdout is not None:
                fd, child.stdout = child.stdout, None
                out = PipeReader(loop, fd)
            if child.stderr is not None:
                fd, child.stderr = child.stderr, None
                err = PipeReader(loop, fd)
            status = await child.wait()
        finally:
            if writer is not None:
                writer.close()
            stdout_data = out.finish() if out is not None else b""
            stderr_data = err.finish() if err is not None else b""
            child.close()
        return Completed(argv, status, stdout_data, stderr_data)


class Reaper(_Waiter):
    """Owns waitpid for the whole process (see the module docstring); start() it on the loop that uses it.

    close() removes the SIGCHLD handler (after a last reap), clears the subreaper flag it set, and fails the
    pending watch() futures with ReaperClosed: nothing would ever resolve them.  Kept exits are dropped.
    A closed Reaper can be started again.
    """

    __slots__ = ("_keep", "_loop", "_subreaper", "_unclaimed", "_want_subreaper")

    def __init__(self, *, keep: int = 1024) -> None:
        super().__init__()
        self._keep = keep
        self._loop: asyncio.AbstractEventLoop | None = None
        self._want_subreaper = False  # start(subreaper=True): set the flag before the first spawn
        self._subreaper = False  # the flag is set (close clears it)
        self._unclaimed: dict[int, tuple[int, float]] = {}  # pid -> (status, loop time when reaped)

    @property
    def started(self) -> bool:
        return self._loop is not None

    def start(self, *, subreaper: bool = True) -> None:
        """Install the SIGCHLD handler on the running loop; with subreaper, adopt orphaned descendants."""
        loop = asyncio.get_running_loop()
        if self._loop is not None:
            raise RuntimeError("reaper start: already started")
        self._want_subreaper = subreaper
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        self._loop = loop
        self._reap()  # children that exited before the handler was there

    def _before_spawn(self) -> None:
        if self._want_subreaper and not self._subreaper:
            _set_child_subreaper(True)
            self._subreaper = True

    def close(self) -> None:
        loop = self._loop
        if loop is None:
            return
        self._reap()
        self._loop = None
        if not loop.is_closed():
            loop.remove_signal_handler(signal.SIGCHLD)
        self._want_subreaper = False
        if self._subreaper:
            self._subreaper = False
            _set_child_subreaper(False)
        self._unclaimed.clear()
        self._fail_watchers("reaper closed")

    def watch(self, pid: int, *, since: float | None = None) -> asyncio.Future[int]:
        """A future resolved with the exit status of pid (a child or an adopted descendant).

        An exit that was reaped before, and that no watcher took, resolves it at once; with `since` (a
        ``loop.time()`` taken before the process could have been started, e.g. before ``runc create``) only
        if it was reaped at or after that time: an older one is of an earlier process that had the same pid
        (pids wrap at /proc/sys/kernel/pid_max, 32768 on small machines).  Each exit goes to the watchers
        registered when it is reaped, or else to the first later watch().
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError(f"reaper watch {pid}: reaper not started")
        fut: asyncio.Future[int] = loop.create_future()
        kept = self._unclaimed.pop(pid, None)
        if kept is not None and (since is None or kept[1] >= since):
            fut.set_result(kept[0])
        else:
            self._add_watcher(pid, fut)
        return fut

    def _check_can_watch(self) -> None:
        if self._loop is None:
            raise RuntimeError("reaper spawn: reaper not started")

    def _watch_new(self, pid: int) -> asyncio.Future[int]:
        # A kept exit under this pid belongs to an earlier process: the pid has been reused by our child.
        self._unclaimed.pop(pid, None)
        return self.watch(pid)

    def _reap(self) -> None:
        loop = self._loop
        if loop is None:  # a SIGCHLD callback already queued when close() removed the handler
            return
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            try:
                status = exit_status(wait_status)
            except ValueError:  # not an exit (we never ask for stops); nothing to report
                continue
            if not self._dispatch(pid, status):
                unclaimed = self._unclaimed
                unclaimed.pop(pid, None)  # keep insertion order = reap order
                unclaimed[pid] = (status, loop.time())
                if len(unclaimed) > self._keep:
                    del unclaimed[next(iter(unclaimed))]


class PidfdWaiter(_Waiter):
    """Waits for direct children only, one pidfd each; never reaps a pid it was not asked to watch.

    watch(pid) of a process that is not our child fails with ChildProcessError (it cannot be reaped here).
    subscribe() sees the exits this waiter collects.  close() unregisters the pidfds and fails pending
    watchers with ReaperClosed (the children are then left for someone else to reap).
    """

    __slots__ = ("_pidfds",)

    def __init__(self) -> None:
        super().__init__()
        self._pidfds: dict[int, tuple[asyncio.AbstractEventLoop, int]] = {}

    def start(self, *, subreaper: bool = False) -> None:
        """Nothing to install; accepted for symmetry with Reaper (subreaper must be False)."""
        if subreaper:
            raise ValueError("PidfdWaiter start: a PidfdWaiter cannot be a subreaper; use Reaper")

    def close(self) -> None:
        pidfds, self._pidfds = self._pidfds, {}
        for loop, pidfd in pidfds.values():
            if not loop.is_closed():
                loop.remove_reader(pidfd)
            os.close(pidfd)
        self._fail_watchers("pidfd waiter closed")

    def watch(self, pid: int, *, since: float | None = None) -> asyncio.Future[int]:
        """A future resolved with the exit status of the direct child pid (`since` is accepted and unused:
        an exited child stays a zombie until reaped here, so no exit can be stale)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        if pid not in self._pidfds:
            try:
                # Is it our child (exited or not)? WNOWAIT leaves an exited one to be reaped below.
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                pidfd = os.pidfd_open(pid)
            except ChildProcessError:
                fut.set_exception(ChildProcessError(errno.ECHILD, f"watch pid {pid}: not a child of ours"))
                return fut
            self._pidfds[pid] = (loop, pidfd)
            loop.add_reader(pidfd, self._ready, pid)
        self._add_watcher(pid, fut)
        return fut

    def _ready(self, pid: int) -> None:
        try:
            got, wait_status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError as e:
            self._release(pid)
            futs = self._watchers.pop(pid, ())
            for fut in futs:
                if not fut.done():
                    fut.set_exception(
                        ChildProcessError(e.errno, f"watch pid {pid}: reaped by someone else"))
            return
        if got == 0:
            return  # not exited yet (spurious wakeup)
        self._release(pid)
        self._dispatch(pid, exit_status(wait_status))

    def _release(self, pid: int) -> None:
        loop, pidfd = self._pidfds.pop(pid)
        loop.remove_reader(pidfd)
        os.close(pidfd)
