"""The Windows backend: the Backend contract (hcsshim.hcs.backend) over computecore.dll's v2 operation API
(hcsshim.hcs.win32), driven as upstream internal/hcs/v2 drives it.

* **Calls.** Every computecore call blocks, so each runs in a worker thread (asyncio.to_thread), under its own HCS
  operation (win32.operation: create, call, wait, close). Create, start, pause, resume and save wait at most the
  watchdog timeouts of hcsshim.hcs.timeouts (HCSSHIM_TIMEOUT_SYSTEM*), after which HCS is asked to cancel the
  operation and the timeout (HCS_E_OPERATION_TIMEOUT) is the error; the other calls wait for HCS. Shutdown and
  terminate are submitted, not waited for. A call is never abandoned: when its caller is cancelled the thread
  runs on, and the handle's close waits for it before releasing the handle.
* **Errors.** A failed call (win32.hresult.Win32Error) becomes a backend.CallError with the same code, the result
  document and its ErrorEvents.
* **Events.** One callback per system handle (live-migration events enabled, as upstream) and per process handle,
  registered at create/open. The bindings keep the handler in win32.callbacks.REGISTRY for the handle's life and
  release it at close; the handler hands each HCS_EVENT from HCS's thread to the event loop
  (loop.call_soon_threadsafe), where it goes to the handle's sink (kept until a sink is set; SystemExited and
  ProcessExited once; nothing after close).
* **Processes.** HcsCreateProcess's wait can fail spuriously although the process was made (seen on process-
  isolated containers); as upstream, the process information is then fetched again (HcsGetProcessInfo), and only
  if that fails too is the create an error. The stdio HANDLEs become file descriptors (msvcrt.open_osfhandle);
  off Windows, where a stand-in computecore (tests/fakehcs) hands out descriptors, they are taken as they are.
* **Create leaves nothing behind.** A system whose creation fails after HCS made it is terminated and closed.
* **Live migration** (backend.MigrationHandle, as upstream's migration.go): each step is one operation waited
  for without a watchdog (INFINITE, as upstream); the steps over the transport socket first add it to their
  operation (HcsAddResourceToOperation: Socket, resourcepaths.LIVE_MIGRATION_SOCKET_URI, the socket's handle).
  Steps run concurrently, so a cancel reaches HCS while another step waits. On a Windows whose computecore lacks
  the live-migration exports a step fails with ERROR_NOT_SUPPORTED naming the missing export.
* **The silo** (backend.SiloHandle): a container's silo job object is opened by name, used and closed in a worker
  thread (hcsshim.hcs.silo) under the handle's calls, so close waits for it too; a failure names the function and
  the silo.

Unverified on Windows: written against the documented contracts and tested against the fake computecore.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hcsshim.hcs import silo, timeouts
from hcsshim.hcs.backend import (
    EVENT_PROCESS_EXITED,
    EVENT_SYSTEM_EXITED,
    CallError,
    EventSink,
    GroupAffinity,
    ProcessInfo,
    SiloStatistics,
)
from hcsshim.hcs.errors import ErrNotSupported, hresult_from_win32
from hcsshim.hcs.resourcepaths import LIVE_MIGRATION_SOCKET_URI
from hcsshim.hcs.win32 import computecore as cc
from hcsshim.hcs.win32.cdefs import HcsProcess, HcsSystem
from hcsshim.hcs.win32.hresult import MissingExportError, Win32Error
from hcsshim.hcs.win32.operation import run_operation, run_process_operation, submit_operation
from hcsshim.hcs.winshared import Calls, Notifications, call_error, close_descriptors, descriptors, in_thread

if sys.platform == "win32":
    pass

__all__ = ["WindowsBackend", "WindowsProcess", "WindowsSystem", "call_error"]  # call_error: hcsshim.hcs.winshared

log = logging.getLogger("hcsshim.hcs.windows")

T = TypeVar("T")
_TERMINAL = frozenset({EVENT_SYSTEM_EXITED, EVENT_PROCESS_EXITED})
_INVALID_HANDLE_VALUE = (1 << (8 * ctypes.sizeof(ctypes.c_void_p))) - 1


# -- handles --------------------------------------------------------------------------------------------------


class _Handle:
    """What system and process handles share: their calls, their events and their closing."""

    def __init__(self, calls: Calls, events: Notifications) -> None:
        self._calls = calls
        self._events = events
        self._closing: asyncio.Task[None] | None = None

    def set_event_sink(self, sink: EventSink) -> None:
        self._events.set_sink(sink)

    async def _run(self, call: Callable[[Any], object], timeout: float | None = None) -> str:
        """Run computecore `call(operation)` under a new operation; the result document."""
        return (await self._calls.run(lambda: run_operation(call, timeout)))[1]

    def _release(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Wait for the calls in flight, then release the handle (idempotent; completes even if cancelled)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        await self._calls.drain()
        try:
            await self._calls.run(self._release)
        finally:
            self._events.close()


class WindowsProcess(_Handle):
    """An HCS_PROCESS: backend.ProcessHandle."""

    def __init__(self, handle: HcsProcess, pid: int, calls: Calls, events: Notifications) -> None:
        super().__init__(calls, events)
        self.handle = handle
        self.pid = pid

    async def signal(self, options: str) -> None:
        await self._run(lambda op: cc.signal_process(self.handle, op, options))

    async def terminate(self) -> None:
        await self._run(lambda op: cc.terminate_process(self.handle, op, ""))

    async def info(self) -> ProcessInfo:
        def fetch() -> ProcessInfo:
            _, info, _ = run_process_operation(lambda op: cc.get_process_info(self.handle, op))
            return descriptors(info)

        return await self._calls.run(fetch)

    async def properties(self, query: str) -> str:
        return await self._run(lambda op: cc.get_process_properties(self.handle, op, query))

    async def modify(self, settings: str) -> None:
        await self._run(lambda op: cc.modify_process(self.handle, op, settings))

    def _release(self) -> None:
        cc.close_process(self.handle)


def _watch_process(process: HcsProcess, events: Notifications) -> None:
    """Register the process's callback; on failure the handle is closed."""
    try:
        cc.set_process_callback(process, events.from_hcs)
    except BaseException:
        cc.close_process(process)
        raise


def _create_process(system: HcsSystem, parameters: str, events: Notifications) -> tuple[HcsProcess, ProcessInfo]:
    made: list[HcsProcess] = []

    def create(op: Any) -> HcsProcess:
        made.append(cc.create_process(system, parameters, op))
        return made[-1]

    try:
        process, information, _ = run_process_operation(create)
    except Win32Error as create_failed:
        if not made:
            raise
        process = made[0]
        log.debug("HcsCreateProcess wait failed; falling back to HcsGetProcessInfo",
                  extra={"error": str(create_failed)})
        try:
            _, information, _ = run_process_operation(lambda op: cc.get_process_info(process, op))
        except Win32Error:
            cc.close_process(process)
            raise create_failed from None  # the recovery's failure would hide the real cause
    try:
        info = descriptors(information)
    except BaseException:
        cc.close_process(process)
        raise
    try:
        _watch_process(process, events)
    except BaseException:
        close_descriptors(info)
        raise
    return process, info


class WindowsSystem(_Handle):
    """An HCS_SYSTEM: backend.SystemHandle."""

    def __init__(self, id: str, handle: HcsSystem, calls: Calls, events: Notifications) -> None:
        super().__init__(calls, events)
        self.id = id
        self.handle = handle

    async def start(self, options: str = "") -> None:
        await self._run(lambda op: cc.start_compute_system(self.handle, op, options), timeouts.TIMEOUTS.system_start)

    async def shutdown(self, options: str = "") -> None:
        await self._calls.run(lambda: submit_operation(
            lambda op: cc.shut_down_compute_system(self.handle, op, options)))

    async def terminate(self, options: str = "") -> None:
        await self._calls.run(lambda: submit_operation(
            lambda op: cc.terminate_compute_system(self.handle, op, options)))

    async def pause(self, options: str = "") -> None:
        await self._run(lambda op: cc.pause_compute_system(self.handle, op, options), timeouts.TIMEOUTS.system_pause)

    async def resume(self, options: str = "") -> None:
        await self._run(lambda op: cc.resume_compute_system(self.handle, op, options),
                        timeouts.TIMEOUTS.system_resume)

    async def save(self, options: str) -> None:
        await self._run(lambda op: cc.save_compute_system(self.handle, op, options), timeouts.TIMEOUTS.system_save)

    async def properties(self, query: str) -> str:
        return await self._run(lambda op: cc.get_compute_system_properties(self.handle, op, query))

    async def modify(self, request: str) -> None:
        await self._run(lambda op: cc.modify_compute_system(self.handle, op, request))

    async def create_process(self, parameters: str) -> tuple[WindowsProcess, ProcessInfo]:
        events = Notifications(asyncio.get_running_loop())

        def orphaned(made: tuple[HcsProcess, ProcessInfo]) -> None:
            close_descriptors(made[1])
            cc.close_process(made[0])

        process, info = await self._calls.run(lambda: _create_process(self.handle, parameters, events), orphaned)
        return WindowsProcess(process, info.pid, Calls(), events), info

    async def open_process(self, pid: int) -> WindowsProcess:
        events = Notifications(asyncio.get_running_loop())

        def open_() -> HcsProcess:
            process = cc.open_process(self.handle, pid)
            _watch_process(process, events)
            return process

        return WindowsProcess(await self._calls.run(open_, cc.close_process), pid, Calls(), events)

    # -- live migration (backend.MigrationHandle)

    async def _migrate(self, call: Callable[[Any], object], socket: int | None = None) -> None:
        """Run migration step `call(operation)`, the transport socket added to its operation first when given."""
        def step(op: Any) -> None:
            if socket is not None:
                cc.add_resource_to_operation(op, cc.RESOURCE_TYPE_SOCKET, LIVE_MIGRATION_SOCKET_URI, socket)
            call(op)

        try:
            await self._run(step)
        except CallError as err:
            if not isinstance(err.__cause__, MissingExportError):
                raise
            raise CallError(hresult_from_win32(ErrNotSupported), f"{err}: live migration needs a newer Windows",
                            function=err.function) from err

    async def start_migration_destination(self, options: str, socket: int) -> None:
        await self._migrate(lambda op: cc.start_compute_system(self.handle, op, options), socket)

    async def initialize_live_migration(self, options: str) -> None:
        await self._migrate(lambda op: cc.initialize_live_migration_on_source(self.handle, op, options))

    async def start_live_migration(self, options: str, socket: int) -> None:
        await self._migrate(lambda op: cc.start_live_migration_on_source(self.handle, op, options), socket)

    async def start_live_migration_transfer(self, options: str) -> None:
        await self._migrate(lambda op: cc.start_live_migration_transfer(self.handle, op, options))

    async def finalize_live_migration(self, options: str) -> None:
        await self._migrate(lambda op: cc.finalize_live_migration(self.handle, op, options))

    async def cancel_live_migration(self, options: str) -> None:
        await self._migrate(lambda op: cc.cancel_live_migration(self.handle, op, options))

    # -- the silo (backend.SiloHandle)

    async def _silo(self, fn: Callable[[], T]) -> T:
        """`fn()`, a blocking call on the container's silo, in a thread; a failure names the function and the silo."""
        try:
            return await self._calls.run(fn)
        except CallError as err:
            raise CallError(err.hresult, f"{err.function} {silo.silo_name(self.id)}: {err}",
                            function=err.function) from err

    async def silo_statistics(self) -> SiloStatistics:
        return await self._silo(lambda: silo.statistics(self.id))

    async def set_silo_cpu_group_affinities(self, affinities: Sequence[GroupAffinity]) -> None:
        await self._silo(lambda: silo.set_cpu_group_affinities(self.id, affinities))

    def _release(self) -> None:
        cc.close_compute_system(self.handle)


def _discard(system: HcsSystem) -> None:
    """Terminate (errors ignored) and close a system whose creation failed."""
    try:
        submit_operation(lambda op: cc.terminate_compute_system(system, op))
    except Win32Error as err:
        log.debug("terminating a system whose creation failed", extra={"error": str(err)})
    cc.close_compute_system(system)


def _watch_system(system: HcsSystem, events: Notifications) -> None:
    cc.set_compute_system_callback(system, events.from_hcs, cc.EVENT_OPTION_ENABLE_LIVE_MIGRATION_EVENTS)


def _create_system(id: str, document: str, events: Notifications) -> HcsSystem:
    made: list[HcsSystem] = []

    def create(op: Any) -> HcsSystem:
        made.append(cc.create_compute_system(id, document, op))
        return made[-1]

    try:
        run_operation(create, timeouts.TIMEOUTS.system_create)
        _watch_system(made[0], events)
    except BaseException:
        if made:
            _discard(made[0])
        raise
    return made[0]


def _open_system(id: str, events: Notifications) -> HcsSystem:
    system = cc.open_compute_system(id)
    try:
        _watch_system(system, events)
    except BaseException:
        cc.close_compute_system(system)
        raise
    return system


class WindowsBackend:
    """HCS through computecore.dll: backend.Backend."""

    name = "windows"

    async def create_system(self, id: str, document: str) -> WindowsSystem:
        events, calls = Notifications(asyncio.get_running_loop()), Calls()
        handle = await calls.run(lambda: _create_system(id, document, events), _discard)
        return WindowsSystem(id, handle, calls, events)

    async def open_system(self, id: str) -> WindowsSystem:
        events, calls = Notifications(asyncio.get_running_loop()), Calls()
        handle = await calls.run(lambda: _open_system(id, events), cc.close_compute_system)
        return WindowsSystem(id, handle, calls, events)

    async def enumerate_systems(self, query: str) -> str:
        return (await in_thread(lambda: run_operation(lambda op: cc.enumerate_compute_systems(query, op))))[1]

    async def service_properties(self, query: str) -> str:
        return await in_thread(lambda: cc.get_service_properties(query))

    async def modify_service(self, settings: str) -> None:
        await in_thread(lambda: cc.modify_service_settings(settings))
