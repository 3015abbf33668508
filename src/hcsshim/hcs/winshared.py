"""What the two Windows backends (hcsshim.hcs.windows over computecore, hcsshim.hcs.windows_v1 over vmcompute)
share: a failed Win32 call as the contract's CallError, blocking calls in worker threads that a handle's close
waits for (`Calls`), a handle's HCS events handed from HCS's thread to the sink on the event loop
(`Notifications`: kept until a sink is set, SystemExited and ProcessExited once, nothing after close), and the
stdio HANDLEs of a process as file descriptors."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from hcsshim.hcs.backend import EVENT_PROCESS_EXITED, EVENT_SYSTEM_EXITED, CallError, Event, EventSink, ProcessInfo
from hcsshim.hcs.errors import code_message, parse_result_error
from hcsshim.hcs.win32 import callbacks
from hcsshim.hcs.win32.cdefs import ProcessInformation
from hcsshim.hcs.win32.hresult import MissingExportError, MissingLibraryError, Win32Error
from hcsshim.hcs.win32.loader import IS_WINDOWS

if sys.platform == "win32":
    import msvcrt

__all__ = ["Calls", "Notifications", "call_error", "close_descriptors", "descriptors", "in_thread"]

log = logging.getLogger("hcsshim.hcs.windows")

T = TypeVar("T")
_TERMINAL = frozenset({EVENT_SYSTEM_EXITED, EVENT_PROCESS_EXITED})
_INVALID_HANDLE_VALUE = (1 << (8 * ctypes.sizeof(ctypes.c_void_p))) - 1


# -- errors and threads ---------------------------------------------------------------------------------------


def call_error(err: Win32Error) -> CallError:
    """A failed computecore call as the backend's error: its code, message, result document and ErrorEvents."""
    events = []
    if err.result_text:
        try:
            events = parse_result_error(err.result_text)[2]
        except ValueError as bad:
            log.warning("could not parse an HCS result document", extra={"function": err.function,
                                                                         "error": str(bad)})
    if err.error_message:
        message = err.error_message
    elif IS_WINDOWS or isinstance(err, MissingLibraryError | MissingExportError):
        message = err.message  # the system's message table, or what the loader said
    else:
        message = code_message(err.win32)
    return CallError(err.hresult, message, function=err.function, result=err.result_text, events=events)


def _translated(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except Win32Error as err:
        raise call_error(err) from err


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking call in a worker thread, translating its Win32Error; a cancelled caller leaves it running."""
    return await asyncio.shield(asyncio.to_thread(_translated, fn))


class Calls:
    """The calls of one handle running in worker threads; `drain` waits until none is."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def _start(self, fn: Callable[[], T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(asyncio.to_thread(_translated, fn))
        self._running.add(task)
        task.add_done_callback(self._done)
        return task

    async def run(self, fn: Callable[[], T], release: Callable[[T], object] | None = None) -> T:
        """`fn()` in a thread. When the caller is cancelled the call runs on; what it then returns is given to
        `release` (in a thread): a handle nobody will receive is closed, not leaked."""
        task = self._start(fn)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if release is not None:
                def orphaned(done: asyncio.Task[T]) -> None:
                    if not done.cancelled() and done.exception() is None:
                        self._start(lambda: release(done.result()))

                task.add_done_callback(orphaned)
            raise

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that was cancelled no longer reads it

    async def drain(self) -> None:
        while self._running:
            await asyncio.wait(set(self._running))


# -- events ---------------------------------------------------------------------------------------------------


class Notifications:
    """One handle's events, from HCS's thread to the sink on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._sink: EventSink | None = None
        self._pending: list[Event] = []
        self._terminal_seen = False
        self._closed = False

    def from_hcs(self, event: callbacks.Event) -> None:
        """The registered handler: runs on HCS's thread."""
        try:
            self._loop.call_soon_threadsafe(self.deliver, Event(event.type, event.data))
        except RuntimeError:  # the loop is closed: nobody is left to tell
            log.debug("HCS event after the event loop closed dropped", extra={"event_type": event.type})

    def deliver(self, event: Event) -> None:
        """Hands `event` to the sink (on the event loop's thread)."""
        if self._closed:
            return
        if event.type in _TERMINAL:
            if self._terminal_seen:
                return
            self._terminal_seen = True
        if self._sink is None:
            self._pending.append(event)
        else:
            self._sink(event)

    def set_sink(self, sink: EventSink) -> None:
        self._sink = sink
        pending, self._pending = self._pending, []
        for event in pending:
            sink(event)

    def close(self) -> None:
        self._closed = True
        self._pending.clear()


# -- stdio ----------------------------------------------------------------------------------------------------


def _close_raw_handle(handle: int) -> None:
    if IS_WINDOWS:
        ctypes.windll.kernel32.CloseHandle(ctypes.c_void_p(handle))  # type: ignore[attr-defined]
    else:
        os.close(handle)


def descriptors(info: ProcessInformation) -> ProcessInfo:
    """The process information with its stdio HANDLEs as descriptors (None for NULL or INVALID_HANDLE_VALUE); on
    failure every handle is closed."""
    handles = [h if h not in (0, _INVALID_HANDLE_VALUE) else None
               for h in (info.std_input, info.std_output, info.std_error)]
    fds: list[int | None] = []
    try:
        for handle in handles:
            if handle is None:
                fds.append(None)
            elif sys.platform == "win32":
                fds.append(msvcrt.open_osfhandle(handle, 0))
            else:
                fds.append(handle)
    except BaseException:
        for fd in fds:
            if fd is not None:
                os.close(fd)
        for handle in handles[len(fds):]:
            if handle is not None:
                _close_raw_handle(handle)
        raise
    return ProcessInfo(info.process_id, fds[0], fds[1], fds[2])


def close_descriptors(info: ProcessInfo) -> None:
    for fd in (info.stdin, info.stdout, info.stderr):
        if fd is not None:
            os.close(fd)
