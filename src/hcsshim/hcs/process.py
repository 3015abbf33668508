"""A process of a compute system (upstream internal/hcs/v2's Process): signal it, kill it, resize its console, close
its stdin, read its stdio, wait for it and read its exit code. Made by System.create_process / open_process.

State machine of a Process (the object's; HCS reports the process's exit as a ProcessExited event):

    RUNNING ──ProcessExited────────────────────────────────────────────────► EXITED (the exit code)
       ├──ServiceDisconnect─────────────────────────────────────────────────► EXITED (-1, wait error)
       ├──signal/kill found it gone, and no ProcessExited came within 1 s────► EXITED (-1, wait error)
       └──close()──► CLOSED (when not EXITED yet: also EXITED, -1, wait error ErrAlreadyClosed)

* RUNNING: every operation may be called; `exit_code()` fails with ErrInvalidProcessState.
* EXITED (`exited` is True): `wait()` returns, or raises the wait error; `exit_code()` gives the code (-1 when
  HCS reported a non-zero LastWaitResult) or raises the wait error. `kill()` fails with ErrProcessAlreadyStopped;
  `close_stdin()` only closes the local pipe.
* CLOSED: the pipes and the handle are released; operations fail with ErrAlreadyClosed (wrapped), close_stdout,
  close_stderr and close itself are no-ops.

The 1 s force-unblock is upstream's workaround for an HCS that never reports the exit of a process it says is
gone (ErrVmcomputeOperationInvalidState, ErrInvalidState, ErrComputeSystemDoesNotExist, ErrElementNotFound); its
timer is a task this object owns and cancels on exit or close.

Signal and kill report whether the request was delivered. As upstream, a signal HCS refuses is not an error:
signal returns False (the refusal is logged). Kill opens a second handle on the system and on the process and
terminates through those (HCS queues requests per handle, so a kill does not wait behind earlier signals); if
the system cannot be opened, the whole system is terminated and this process's System is closed. A process that
is already gone, or refuses with ERROR_ACCESS_DENIED (TerminateProcess on an exited process), counts as killed;
a second kill after a delivered one returns True without a call.

Stdio: `stdio()` gives the host ends of the pipes HCS made (create_process only) as unbuffered binary files the
process owns and closes; `stdio_legacy()` hands them over to the caller, or asks HCS for fresh ones. Errors are
ProcessErrors naming the system, the pid and upstream's operation (``hcs::Process::Kill c1:7: ...``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import Mapping
from typing import Any, Protocol

from hcsshim import gojson
from hcsshim.hcs import schema2
from hcsshim.hcs.backend import (
    EVENT_PROCESS_EXITED,
    EVENT_SERVICE_DISCONNECT,
    Backend,
    Event,
    ProcessHandle,
    ProcessInfo,
    document_text,
    events_of,
    raising,
)
from hcsshim.hcs.errors import (
    ErrAlreadyClosed,
    ErrComputeSystemDoesNotExist,
    ErrElementNotFound,
    ErrInvalidProcessState,
    ErrInvalidState,
    Errno,
    ErrProcessAlreadyStopped,
    ErrUnexpectedProcessAbort,
    ErrVmcomputeOperationAccessIsDenied,
    ErrVmcomputeOperationInvalidState,
    is_already_stopped,
    is_any,
    make_process_error,
    make_system_error,
)
from hcsshim.hcs.notify import EventFeed, EventStream

__all__ = ["FORCE_UNBLOCK_DELAY", "Process", "ProcessHost", "Stdio"]

log = logging.getLogger("hcsshim.hcs")

FORCE_UNBLOCK_DELAY = 1.0  # seconds after a signal found the process gone, before waits are released
# guestrequest's ProcessModifyRequest operations and handle names
_CONSOLE_SIZE = "ConsoleSize"
_CLOSE_HANDLE = "CloseHandle"
_STDIN = "StdIn"
# What a signal or kill answer means "the process is gone" (upstream's three, and HCS_E_INVALID_STATE, the form
# computecore returns).
_GONE = (ErrVmcomputeOperationInvalidState, ErrInvalidState, ErrComputeSystemDoesNotExist, ErrElementNotFound)

Stdio = tuple[io.FileIO | None, io.FileIO | None, io.FileIO | None]
"""(stdin, stdout, stderr): the host ends of a process's pipes, None for a pipe not made."""


class ProcessHost(Protocol):
    """What a Process needs of the System it runs in (kept narrow: this module does not depend on System)."""

    @property
    def id(self) -> str: ...

    @property
    def backend(self) -> Backend: ...

    async def terminate(self) -> None: ...

    async def close(self) -> None: ...


def open_stdio(info: ProcessInfo) -> Stdio:
    """`info`'s descriptors as files (stdin for writing, stdout and stderr for reading); on failure every
    descriptor is closed."""
    fds = (info.stdin, info.stdout, info.stderr)
    files: list[io.FileIO | None] = []
    try:
        for fd, mode in zip(fds, ("wb", "rb", "rb"), strict=True):
            files.append(None if fd is None else io.FileIO(fd, mode, closefd=True))
    except BaseException:
        for f in files:
            if f is not None:
                f.close()
        for fd in fds[len(files):]:
            if fd is not None:
                os.close(fd)
        raise
    return files[0], files[1], files[2]


def _close_files(*files: io.FileIO | None) -> None:
    for f in files:
        if f is not None:
            f.close()


class Process:
    """A process of a compute system; see the module docstring for its states."""

    def __init__(self, host: ProcessHost, handle: ProcessHandle, pid: int, stdio: Stdio | None = None) -> None:
        self._host = host
        self._handle = handle
        self._pid = pid
        self._cached_stdio = stdio is not None
        self._stdin, self._stdout, self._stderr = stdio or (None, None, None)
        self._closed = False
        self._close_lock = asyncio.Lock()
        self._exited = asyncio.Event()
        self._exit_code = -1
        self._wait_error: BaseException | None = None
        self._kill_delivered = False
        self._timers: set[asyncio.Task[None]] = set()
        self._events = EventFeed()
        handle.set_event_sink(self._on_event)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "exited" if self.exited else "running"
        return f"<Process {self.system_id}:{self._pid} {state}>"

    # -- identity and state

    @property
    def pid(self) -> int:
        """The process's id in its compute system."""
        return self._pid

    @property
    def system_id(self) -> str:
        """The id of the compute system the process runs in."""
        return self._host.id

    @property
    def exited(self) -> bool:
        """Whether the process has exited (or counts as exited: see the module docstring)."""
        return self._exited.is_set()

    @property
    def closed(self) -> bool:
        return self._closed

    def events(self) -> EventStream:
        """The process's HCS notifications from now on, until its exit or close (an async iterator)."""
        return self._events.subscribe()

    # -- notifications

    def _error(self, op: str, err: BaseException | int) -> BaseException:
        exc = Errno(err) if isinstance(err, int) else err
        return make_process_error(self.system_id, self._pid, op, exc, events_of(exc))

    def _check_open(self, op: str) -> None:
        if self._closed:
            raise self._error(op, ErrAlreadyClosed())

    def _on_event(self, event: Event) -> None:
        self._events.publish(event)
        if event.type == EVENT_PROCESS_EXITED:
            self._exited_with(event.data)
        elif event.type == EVENT_SERVICE_DISCONNECT:
            self._finish(-1, self._error("hcs::Process::waitBackground", ErrUnexpectedProcessAbort()))

    def _exited_with(self, data: str) -> None:
        fields = {"cid": self.system_id, "pid": self._pid}
        if not data:
            self._finish(-1, None)
            return
        try:
            status = gojson.loads(data, schema2.ProcessStatus)
        except gojson.DecodeError as err:
            self._finish(-1, self._error("hcs::Process::waitBackground", err))
            return
        if status.last_wait_result != 0:
            log.warning("non-zero last wait result", extra={**fields, "wait_result": status.last_wait_result})
            self._finish(-1, None)
            return
        log.debug("process exited", extra={**fields, "exit_code": status.exit_code})
        self._finish(status.exit_code, None)

    def _finish(self, exit_code: int, err: BaseException | None) -> None:
        """Record the exit once (the first report wins) and release the waiters."""
        if self._exited.is_set():
            return
        self._exit_code = exit_code
        self._wait_error = err
        self._exited.set()
        self._events.end()
        for timer in self._timers:
            timer.cancel()

    def _not_delivered(self, op: str, err: BaseException) -> bool:
        """Upstream's processSignalResult for a failed signal or kill: not delivered; when the answer says the
        process is gone, release the waits after FORCE_UNBLOCK_DELAY unless its exit is reported first."""
        log.warning("signal not delivered", extra={"cid": self.system_id, "pid": self._pid, "op": op,
                                                   "error": str(err)})
        if is_any(err, *_GONE) and not self.exited:
            timer = asyncio.get_running_loop().create_task(self._force_unblock(self._error(op, err)))
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)
        return False

    async def _force_unblock(self, err: BaseException) -> None:
        await asyncio.sleep(FORCE_UNBLOCK_DELAY)
        if not self.exited:
            log.warning("force unblocking process waits", extra={"cid": self.system_id, "pid": self._pid,
                                                                 "error": str(err)})
            self._finish(-1, err)

    # -- operations

    async def signal(self, options: gojson.Struct | Mapping[str, Any] | str) -> bool:
        """Send a signal: `options` is ``{"Signal": <int>}`` for a Linux process, ``{"Signal": "CtrlC" |
        "CtrlBreak" | "CtrlClose" | "CtrlLogOff" | "CtrlShutdown"}`` for a Windows one. Whether it was
        delivered; a refusal is False, not an error (see the module docstring)."""
        op = "hcs::Process::Signal"
        self._check_open(op)
        text = document_text(options)
        try:
            await self._handle.signal(text)
        except Exception as err:
            return self._not_delivered(op, err)
        return True

    async def kill(self) -> bool:
        """Terminate the process without waiting for it to exit; whether the kill was delivered."""
        op = "hcs::Process::Kill"
        self._check_open(op)
        if self.exited:
            raise self._error(op, ErrProcessAlreadyStopped)
        if self._kill_delivered:
            return True
        backend = self._host.backend
        try:
            system = await backend.open_system(self.system_id)
        except Exception as err:
            log.error("opening a second system handle to kill failed: terminating the system",
                      extra={"cid": self.system_id, "pid": self._pid, "error": str(err)})
            await self._host.terminate()
            await self._host.close()
            return True
        try:
            with raising(lambda err: make_system_error(self.system_id, "hcs::System::OpenProcess", err,
                                                       events_of(err))):
                try:
                    process = await system.open_process(self._pid)
                except Exception as err:
                    if is_already_stopped(err):
                        return True
                    raise
            try:
                await process.terminate()
            except Exception as err:
                if is_any(err, ErrVmcomputeOperationAccessIsDenied) or is_already_stopped(err):
                    return True
                # Deliberate: the force-unblock applies to this process (upstream arms it on the temporary
                # second process object, which is closed at once, so it never fires there).
                return self._not_delivered(op, err)
            finally:
                await process.close()
        finally:
            await system.close()
        self._kill_delivered = True
        return True

    async def resize_console(self, width: int, height: int) -> None:
        """Resize the process's pseudo-console (in character cells)."""
        op = "hcs::Process::ResizeConsole"
        self._check_open(op)
        request = schema2.ProcessModifyRequest(operation=_CONSOLE_SIZE,
                                               console_size=schema2.ConsoleSize(height=height, width=width))
        with raising(lambda err: self._error(op, err)):
            await self._handle.modify(gojson.dumps(request))

    async def close_stdin(self) -> None:
        """Close the process's stdin (HCS closes its end, unless the process has exited; then the local pipe)."""
        op = "hcs::Process::CloseStdin"
        self._check_open(op)
        if not self.exited:
            request = schema2.ProcessModifyRequest(operation=_CLOSE_HANDLE,
                                                   close_handle=schema2.CloseHandle(handle=_STDIN))
            with raising(lambda err: self._error(op, err)):
                await self._handle.modify(gojson.dumps(request))
        stdin, self._stdin = self._stdin, None
        _close_files(stdin)

    def close_stdout(self) -> None:
        """Close the local end of stdout (no-op when closed or absent)."""
        stdout, self._stdout = self._stdout, None
        _close_files(stdout)

    def close_stderr(self) -> None:
        """Close the local end of stderr (no-op when closed or absent)."""
        stderr, self._stderr = self._stderr, None
        _close_files(stderr)

    def stdio(self) -> Stdio:
        """The pipes made at create (stdin, stdout, stderr; None where absent or closed). The process owns them:
        close() closes them (as do close_stdin/close_stdout/close_stderr)."""
        return self._stdin, self._stdout, self._stderr

    async def stdio_legacy(self) -> Stdio:
        """The pipes, handed over to the caller, who closes them: the ones made at create the first time (the
        process no longer holds them), else fresh ones from HCS (HcsGetProcessInfo)."""
        op = "hcs::Process::StdioLegacy"
        self._check_open(op)
        if self._cached_stdio:
            pipes = self._stdin, self._stdout, self._stderr
            self._stdin = self._stdout = self._stderr = None
            self._cached_stdio = False
            return pipes
        with raising(lambda err: self._error(op, err)):
            info = await self._handle.info()
            return open_stdio(info)

    async def wait(self) -> None:
        """Return when the process has exited; raise the wait error when its exit is unknown (closed first,
        connection to HCS lost, force-unblocked)."""
        await self._exited.wait()
        if self._wait_error is not None:
            raise self._wait_error

    def exit_code(self) -> int:
        """The exit code (-1 when HCS reported a failed wait); ErrInvalidProcessState before the exit; the wait
        error when the exit is unknown."""
        if not self.exited:
            raise self._error("hcs::Process::ExitCode", ErrInvalidProcessState())
        if self._wait_error is not None:
            raise self._wait_error
        return self._exit_code

    async def close(self) -> None:
        """Release the pipes and the handle, without killing or waiting for the process (idempotent)."""
        async with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._cached_stdio = False
            _close_files(self._stdin, self._stdout, self._stderr)
            self._stdin = self._stdout = self._stderr = None
            timers = list(self._timers)
            for timer in timers:
                timer.cancel()
            await asyncio.gather(*timers, return_exceptions=True)
            try:
                await self._handle.close()
            finally:
                self._finish(-1, self._error("hcs::Process::Wait", ErrAlreadyClosed()))

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
