"""The HCS v1 backend: the Backend contract (hcsshim.hcs.backend) over vmcompute.dll (hcsshim.hcs.win32.vmcompute),
driven as upstream's v1 internal/hcs drives it: callbacks with an integer context, notification channels, and a
wait for the completion of every call HCS answers "pending". Chosen with HCSSHIM_HCS_BACKEND=windows-v1 (or
`VmcomputeBackend()` passed to create_compute_system and friends).

* **Calls.** Every vmcompute call blocks, so each runs in a worker thread (asyncio.to_thread). A call whose caller
  is cancelled runs on; the handle's close waits for it before releasing the handle.
* **Callbacks.** Each system and process handle registers one callback (HcsRegisterComputeSystemCallback /
  HcsRegisterProcessCallback) right after create/open; the context HCS gets is an integer key of
  win32.callbacks.REGISTRY. The handler hands each notification from HCS's thread to the event loop
  (loop.call_soon_threadsafe), where it goes to the handle's channels (hcsshim.hcs.waithelper) and, when it is
  an event, to the handle's sink.
* **Pending.** Create, start, pause, resume and save may answer ERROR_VMCOMPUTE_OPERATION_PENDING; the call then
  waits for its completion notification (SystemCreateCompleted, ...) at most the watchdog timeout of
  hcsshim.hcs.timeouts (or the `timeouts` given to the backend). The outcomes are waithelper's: the
  notification's status (a failure is a CallError carrying the ResultError document HCS sent as its data),
  ErrUnexpectedContainerExit, ErrUnexpectedProcessAbort, ErrHandleClose (closed meanwhile) or ErrTimeout.
  Shutdown and terminate answering pending are accepted requests: their completion is SystemExited.
* **Events.** v1 notification codes are not the HCS_EVENT_TYPE codes of the contract; they are translated
  (`EVENT_TYPES`): SystemExited, CrashInitiated, CrashReport, RdpEnhancedModeStateChanged, SiloJobCreated,
  GuestConnectionClosed, ProcessExited and ServiceDisconnect become events; the completions only complete waits;
  the rest (ShutdownFailed, Invalid, unknown codes) are logged and dropped. SystemExited's data is HCS's when it
  is an exit status (an object with ExitType), else one made from the notification's status
  (`exit_status`). ProcessExited's data is the process's ProcessStatus document, read with
  HcsGetProcessProperties as upstream's waitBackground does (events behind it wait for it, to keep the order).
  Events wait for a sink, SystemExited and ProcessExited come once, nothing comes after close.
* **Close.** Waits in progress end (ErrHandleClose), then the calls in flight are waited for, then the callback
  is unregistered (HCS waits for callbacks running) and the handle closed.
* **Create leaves nothing behind.** A system whose creation fails after HCS made it (the callback refused, the
  completion failed or never came, the caller cancelled) is terminated and closed.

Deviations, where the contract has no way to say upstream's answer: a SystemExited whose status is a failure
other than ErrVmcomputeUnexpectedExit is reported as an unexpected exit (upstream makes the status the wait
error); a ProcessExited whose status is a failure, or whose properties cannot be read, is reported with the
notification's own data (the object layer then reads exit code -1) rather than as a wait error.

Shared with the v2 backend (hcsshim.hcs.windows): the worker-thread calls, the error translation, the stdio
descriptors and the sink's side of the events.

Unverified on Windows: written against the documented contracts and tested against the fake vmcompute.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from hcsshim.hcs import timeouts as watchdog
from hcsshim.hcs.backend import (
    EVENT_PROCESS_EXITED,
    EVENT_SERVICE_DISCONNECT,
    EVENT_SYSTEM_CRASH_INITIATED,
    EVENT_SYSTEM_CRASH_REPORT,
    EVENT_SYSTEM_EXITED,
    EVENT_SYSTEM_GUEST_CONNECTION_CLOSED,
    EVENT_SYSTEM_RDP_ENHANCED_MODE_STATE_CHANGED,
    EVENT_SYSTEM_SILO_JOB_CREATED,
    CallError,
    Event,
    EventSink,
    ProcessInfo,
)
from hcsshim.hcs.errors import ErrVmcomputeUnexpectedExit, win32_from_hresult
from hcsshim.hcs.timeouts import Timeouts
from hcsshim.hcs.waithelper import PROCESS_CHANNELS, SYSTEM_CHANNELS, Channels
from hcsshim.hcs.win32 import vmcompute as vm
from hcsshim.hcs.win32.callbacks import Notification
from hcsshim.hcs.win32.cdefs import HcsCallback, HcsProcess, HcsSystem
from hcsshim.hcs.win32.hresult import Win32Error, failed
from hcsshim.hcs.winshared import Calls, Notifications, call_error, close_descriptors, descriptors, in_thread

__all__ = ["EVENT_TYPES", "VmcomputeBackend", "VmcomputeProcess", "VmcomputeSystem", "exit_status",
           "notification_error"]

log = logging.getLogger("hcsshim.hcs.windows_v1")

# v1 notification -> the HCS_EVENT_TYPE the contract's events carry
EVENT_TYPES = {
    vm.NOTIFICATION_SYSTEM_EXITED: EVENT_SYSTEM_EXITED,
    vm.NOTIFICATION_SYSTEM_CRASH_INITIATED: EVENT_SYSTEM_CRASH_INITIATED,
    vm.NOTIFICATION_SYSTEM_CRASH_REPORT: EVENT_SYSTEM_CRASH_REPORT,
    vm.NOTIFICATION_SYSTEM_RDP_ENHANCED_MODE_STATE_CHANGED: EVENT_SYSTEM_RDP_ENHANCED_MODE_STATE_CHANGED,
    vm.NOTIFICATION_SYSTEM_SILO_JOB_CREATED: EVENT_SYSTEM_SILO_JOB_CREATED,
    vm.NOTIFICATION_SYSTEM_GUEST_CONNECTION_CLOSED: EVENT_SYSTEM_GUEST_CONNECTION_CLOSED,
    vm.NOTIFICATION_PROCESS_EXITED: EVENT_PROCESS_EXITED,
    vm.NOTIFICATION_SERVICE_DISCONNECT: EVENT_SERVICE_DISCONNECT,
}
_SYSTEM, _PROCESS = "system", "process"


def notification_error(notification: Notification, function: str) -> CallError | None:
    """The failure a completion notification reports (None for a success status): its code, with the message and
    ErrorEvents of the ResultError document HCS sent as its data; `function` names the call it completes."""
    if not failed(notification.status):
        return None
    return call_error(Win32Error(notification.status, function, notification.data or None))


def exit_status(notification: Notification) -> str:
    """A SystemExited event's data: HCS's own when it is an exit status (a JSON object with ExitType), else that
    object (``{}`` when there is none) with the notification's status as ``Status`` (an int32) and, when the
    status is a failure, ``"ExitType": "UnexpectedExit"``."""
    try:
        doc = json.loads(notification.data) if notification.data else {}
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        log.warning("SystemExited data is not a JSON object", extra={"exit_data": notification.data})
        doc = {}
    if "ExitType" in doc:
        return notification.data
    bad = failed(notification.status)
    doc.setdefault("Status", notification.status - (1 << 32) if bad else notification.status)
    if bad:
        if win32_from_hresult(notification.status) != ErrVmcomputeUnexpectedExit:
            log.warning("system exited with a failure status", extra={"status": f"{notification.status:#x}"})
        doc["ExitType"] = "UnexpectedExit"
    return json.dumps(doc, separators=(",", ":"))


# -- notifications --------------------------------------------------------------------------------------------


class _Watcher:
    """One handle's callback and notifications: HCS's thread hands each to the loop, where it completes waits
    (`channels`) and, as an Event, goes to the sink. `register`/`unregister` run in worker threads."""

    def __init__(self, kind: str, calls: Calls, **fields: object) -> None:
        self.kind = kind
        self.calls = calls
        self.channels = Channels(SYSTEM_CHANNELS if kind == _SYSTEM else PROCESS_CHANNELS)
        self.handle = 0
        self._loop = asyncio.get_running_loop()
        self._fields = fields
        self._callback: HcsCallback | None = None
        self._events = Notifications(self._loop)  # the sink's side: kept until set, terminal once, none after close
        self._held: list[Event] | None = None  # events behind a ProcessExited whose status is being read
        self._reading: asyncio.Task[None] | None = None
        self._process_exit_seen = False
        self._closed = False

    # worker threads

    def register(self, handle: int) -> None:
        self.handle = handle
        if self.kind == _SYSTEM:
            self._callback = vm.register_compute_system_callback(HcsSystem(handle), self._from_hcs)
        else:
            self._callback = vm.register_process_callback(HcsProcess(handle), self._from_hcs)

    def unregister(self) -> None:
        callback, self._callback = self._callback, None
        if callback is None:
            return
        if self.kind == _SYSTEM:
            vm.unregister_compute_system_callback(callback)
        else:
            vm.unregister_process_callback(callback)

    # HCS's thread

    def _from_hcs(self, notification: Notification) -> None:
        try:
            self._loop.call_soon_threadsafe(self._on_loop, notification)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            log.debug("HCS notification after the event loop closed dropped",
                      extra={**self._fields, "notification": notification.type})

    # the loop

    def _on_loop(self, notification: Notification) -> None:
        if self._closed:
            return
        name = vm.NOTIFICATION_NAMES.get(notification.type, f"Unknown: {notification.type}")
        log.debug("HCS notification", extra={**self._fields, "notification": name,
                                             "status": f"{notification.status:#x}"})
        routed = self.channels.put(notification)
        event_type = EVENT_TYPES.get(notification.type)
        if event_type == EVENT_SYSTEM_EXITED:
            self._emit(Event(event_type, exit_status(notification)))
        elif event_type == EVENT_PROCESS_EXITED:
            self._process_exited(notification)
        elif event_type is not None:
            self._emit(Event(event_type, notification.data))
        elif not routed:
            log.info("HCS notification dropped", extra={**self._fields, "notification": name,
                                                        "status": f"{notification.status:#x}"})

    def _emit(self, event: Event) -> None:
        if self._held is not None:
            self._held.append(event)
        else:
            self._events.deliver(event)

    def _process_exited(self, notification: Notification) -> None:
        if self._process_exit_seen:
            return
        self._process_exit_seen = True
        if failed(notification.status):
            log.warning("process exit notification with a failure status",
                        extra={**self._fields, "status": f"{notification.status:#x}"})
            self._emit(Event(EVENT_PROCESS_EXITED, notification.data))
            return
        self._held = []
        self._reading = self._loop.create_task(self._read_exit_status(notification))

    async def _read_exit_status(self, notification: Notification) -> None:
        handle = HcsProcess(self.handle)
        try:
            data = await self.calls.run(lambda: vm.get_process_properties(handle))
        except CallError as err:
            log.warning("reading an exited process's status failed", extra={**self._fields, "error": str(err)})
            data = notification.data
        held, self._held = self._held or [], None
        if self._closed:
            return
        self._emit(Event(EVENT_PROCESS_EXITED, data))
        for event in held:
            self._emit(event)

    def set_sink(self, sink: EventSink) -> None:
        self._events.set_sink(sink)

    async def wait(self, expected: int, timeout: float | None, function: str) -> None:
        """Wait for the completion of `function`, which HCS answered pending."""
        err = notification_error(await self.channels.wait_for(expected, timeout), function)
        if err is not None:
            raise err

    async def close(self) -> None:
        """End the waits and the deliveries (the callback stays registered until `unregister`)."""
        self._closed = True
        self.channels.close()
        self._events.close()
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)


# -- handles --------------------------------------------------------------------------------------------------


class _Handle:
    """What system and process handles share: their calls, their notifications and their closing."""

    def __init__(self, handle: int, watcher: _Watcher) -> None:
        self._watcher = watcher
        self._calls = watcher.calls
        self._closing: asyncio.Task[None] | None = None
        self.handle = handle

    def set_event_sink(self, sink: EventSink) -> None:
        self._watcher.set_sink(sink)

    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await self._calls.run(fn)

    def _release(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """End the waits, wait for the calls in flight, then unregister the callback and release the handle
        (idempotent; completes even if cancelled)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        await self._watcher.close()
        await self._calls.drain()
        await self._calls.run(self._release)


def _release_process(process: HcsProcess, watcher: _Watcher) -> None:
    try:
        watcher.unregister()
    finally:
        vm.close_process(process)


class VmcomputeProcess(_Handle):
    """An HCS_PROCESS: backend.ProcessHandle."""

    def __init__(self, handle: HcsProcess, pid: int, watcher: _Watcher) -> None:
        super().__init__(handle, watcher)
        self.pid = pid

    async def signal(self, options: str) -> None:
        await self._call(lambda: vm.signal_process(HcsProcess(self.handle), options))

    async def terminate(self) -> None:
        await self._call(lambda: vm.terminate_process(HcsProcess(self.handle)))

    async def info(self) -> ProcessInfo:
        info: ProcessInfo = await self._call(lambda: descriptors(vm.get_process_info(HcsProcess(self.handle))))
        return info

    async def properties(self, query: str) -> str:
        """The ProcessStatus document (v1's HcsGetProcessProperties takes no query: `query` is not sent)."""
        status: str = await self._call(lambda: vm.get_process_properties(HcsProcess(self.handle)))
        return status

    async def modify(self, settings: str) -> None:
        await self._call(lambda: vm.modify_process(HcsProcess(self.handle), settings))

    def _release(self) -> None:
        _release_process(HcsProcess(self.handle), self._watcher)


def _release_system(system: HcsSystem, watcher: _Watcher | None, *, terminate: bool) -> None:
    """Terminate (when asked; errors logged, pending accepted), unregister the callback and close the handle."""
    if terminate:
        try:
            vm.terminate_compute_system(system)
        except Win32Error as err:
            log.debug("terminating a system whose creation failed", extra={"error": str(err)})
    try:
        if watcher is not None:
            watcher.unregister()
    finally:
        vm.close_compute_system(system)


class VmcomputeSystem(_Handle):
    """An HCS_SYSTEM: backend.SystemHandle."""

    def __init__(self, id: str, handle: HcsSystem, watcher: _Watcher, limits: Callable[[], Timeouts]) -> None:
        super().__init__(handle, watcher)
        self.id = id
        self._limits = limits

    @property
    def _system(self) -> HcsSystem:
        return HcsSystem(self.handle)

    async def _pending(self, call: Callable[[HcsSystem, str], bool], options: str, completion: int,
                       timeout: float, function: str) -> None:
        """Make a call that may go pending; when it does, wait for its completion notification."""
        self._watcher.channels.discard(completion)  # a completion nobody waited for is not this call's
        if await self._call(lambda: call(self._system, options)):
            await self._watcher.wait(completion, timeout, function)

    async def start(self, options: str = "") -> None:
        await self._pending(vm.start_compute_system, options, vm.NOTIFICATION_SYSTEM_START_COMPLETED,
                            self._limits().system_start, "HcsStartComputeSystem")

    async def shutdown(self, options: str = "") -> None:
        await self._call(lambda: vm.shutdown_compute_system(self._system, options))  # pending: accepted

    async def terminate(self, options: str = "") -> None:
        await self._call(lambda: vm.terminate_compute_system(self._system, options))  # pending: accepted

    async def pause(self, options: str = "") -> None:
        await self._pending(vm.pause_compute_system, options, vm.NOTIFICATION_SYSTEM_PAUSE_COMPLETED,
                            self._limits().system_pause, "HcsPauseComputeSystem")

    async def resume(self, options: str = "") -> None:
        await self._pending(vm.resume_compute_system, options, vm.NOTIFICATION_SYSTEM_RESUME_COMPLETED,
                            self._limits().system_resume, "HcsResumeComputeSystem")

    async def save(self, options: str) -> None:
        await self._pending(vm.save_compute_system, options, vm.NOTIFICATION_SYSTEM_SAVE_COMPLETED,
                            self._limits().system_save, "HcsSaveComputeSystem")

    async def properties(self, query: str) -> str:
        document: str = await self._call(lambda: vm.get_compute_system_properties(self._system, query))
        return document

    async def modify(self, request: str) -> None:
        await self._call(lambda: vm.modify_compute_system(self._system, request))

    async def create_process(self, parameters: str) -> tuple[VmcomputeProcess, ProcessInfo]:
        watcher = _Watcher(_PROCESS, Calls(), cid=self.id)

        def create() -> tuple[HcsProcess, ProcessInfo]:
            process, information = vm.create_process(self._system, parameters)
            try:
                info = descriptors(information)
            except BaseException:
                vm.close_process(process)
                raise
            try:
                watcher.register(process)
            except BaseException:
                close_descriptors(info)
                vm.close_process(process)
                raise
            return process, info

        def orphaned(made: tuple[HcsProcess, ProcessInfo]) -> None:
            close_descriptors(made[1])
            _release_process(made[0], watcher)

        process, info = await self._calls.run(create, orphaned)
        return VmcomputeProcess(process, info.pid, watcher), info

    async def open_process(self, pid: int) -> VmcomputeProcess:
        watcher = _Watcher(_PROCESS, Calls(), cid=self.id, pid=pid)

        def open_() -> HcsProcess:
            process = vm.open_process(self._system, pid)
            try:
                watcher.register(process)
            except BaseException:
                vm.close_process(process)
                raise
            return process

        process = await self._calls.run(open_, lambda made: _release_process(made, watcher))
        return VmcomputeProcess(process, pid, watcher)

    async def abandon(self) -> None:
        """Terminate (errors ignored) and close: the end of a system whose creation failed."""
        try:
            await self.terminate()
        except CallError as err:
            log.debug("terminating a system whose creation failed", extra={"cid": self.id, "error": str(err)})
        await self.close()

    def _release(self) -> None:
        _release_system(self._system, self._watcher, terminate=False)


class VmcomputeBackend:
    """HCS through vmcompute.dll: backend.Backend. `timeouts` bounds the pending waits (default: the watchdog
    timeouts of hcsshim.hcs.timeouts, as read at each call)."""

    name = "windows-v1"

    def __init__(self, timeouts: Timeouts | None = None) -> None:
        self._timeouts = timeouts

    def _limits(self) -> Timeouts:
        return self._timeouts or watchdog.TIMEOUTS

    async def create_system(self, id: str, document: str) -> VmcomputeSystem:
        watcher = _Watcher(_SYSTEM, Calls(), cid=id)

        def create() -> tuple[HcsSystem, bool]:
            system, pending = vm.create_compute_system(id, document)
            try:
                watcher.register(system)
            except BaseException:
                _release_system(system, None, terminate=True)
                raise
            return system, pending

        def orphaned(made: tuple[HcsSystem, bool]) -> None:
            _release_system(made[0], watcher, terminate=True)

        handle, pending = await watcher.calls.run(create, orphaned)
        system = VmcomputeSystem(id, handle, watcher, self._limits)
        if pending:
            try:
                await watcher.wait(vm.NOTIFICATION_SYSTEM_CREATE_COMPLETED, self._limits().system_create,
                                   "HcsCreateComputeSystem")
            except BaseException:
                await asyncio.shield(system.abandon())
                raise
        return system

    async def open_system(self, id: str) -> VmcomputeSystem:
        watcher = _Watcher(_SYSTEM, Calls(), cid=id)

        def open_() -> HcsSystem:
            system = vm.open_compute_system(id)
            try:
                watcher.register(system)
            except BaseException:
                vm.close_compute_system(system)
                raise
            return system

        handle = await watcher.calls.run(open_, lambda made: _release_system(made, watcher, terminate=False))
        return VmcomputeSystem(id, handle, watcher, self._limits)

    async def enumerate_systems(self, query: str) -> str:
        return await in_thread(lambda: vm.enumerate_compute_systems(query))

    async def service_properties(self, query: str) -> str:
        return await in_thread(lambda: vm.get_service_properties(query))

    async def modify_service(self, settings: str) -> None:
        await in_thread(lambda: vm.modify_service_settings(settings))
