"""The Linux backend of hcsshim.hcs (`LinuxBackend`): compute systems that are QEMU utility VMs, behind the same
contract as HCS's (hcsshim.hcs.backend: JSON documents in and out, HRESULT errors, events).

A `LinuxSystem` is one open handle of a system. Its state machine (HCS's, as `Properties.State` reports it)::

    create_system --> Created      the document is read (hcsshim.hcs.linux.document: refused before anything is
                                   made when a field has no QEMU counterpart), the system's directory and record are
                                   made (hcsshim.hcs.linux.registry) and the document's Plan9 shares bound
    Created --start--> Running     QEMU starts (hcsshim.hcs.linux.machine): booted, or restored from the saved
                                   state the document names; only the creating handle starts a system
    Running --pause--> Paused --resume--> Running
    Running | Paused --save--> Paused           the state written to SaveOptions.SaveStateFilePath
    Created | Running | Paused --terminate | shutdown | QEMU exits--> Stopped
                                   SystemExited is sent to every handle: {"Status": 0 or the unexpected-exit
                                   HRESULT, "ExitType": "ForcedExit" | "GracefulExit" | "UnexpectedExit"}
    any --close--> (handle closed) the creating handle's close terminates a system created with
                                   ShouldTerminateOnLastHandleClosed, and removes a stopped system's directory
                                   (unmounting its shares); another process's handle only lets go

`open_system` from another process attaches to the running QEMU (its control monitor and a pidfd), so such a
handle pauses, resumes, saves, queries, modifies and terminates the system as the creator's does. Processes of
these systems are not HCS's: a Linux utility VM's processes run over its GCS connection (hcsshim.gcs), as
upstream's external bridge does, so create_process and open_process fail with ErrNotSupported.

Properties (a v2 PropertyQuery; the reply is a Properties document, whose basic fields a v1 ContainerProperties
reader also reads): always Id, SystemType "VirtualMachine", RuntimeOsType "Linux", Name, Owner, RuntimeId,
State, Stopped, ExitType; "Statistics" from /proc (QEMU's CPU time, RSS, peak RSS and PSS) and the uptime;
"Memory" the assigned memory in 4 KiB pages (QEMU's query-memory-size-summary); "TerminateOnLastHandleClosed".
Other property types are refused with ErrNotSupported naming them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

from hcsshim import gojson
from hcsshim.bridge.wire import VMCOMPUTE_SYSTEM_ALREADY_EXISTS, HResultError
from hcsshim.hcs import errors
from hcsshim.hcs.backend import EVENT_SYSTEM_EXITED, Event, EventSink, ProcessHandle, ProcessInfo
from hcsshim.hcs.linux import accel as accel_mod
from hcsshim.hcs.linux import cgroups, devices, procfs, registry
from hcsshim.hcs.linux.document import MachineConfig, parse
from hcsshim.hcs.linux.machine import (
    FORCED_EXIT,
    STOPPING,
    UNEXPECTED_EXIT,
    Machine,
    MachineError,
    MachineState,
    read_stopping,
    write_stopping,
)
from hcsshim.hcs.schema1 import ComputeSystemQuery, ContainerProperties
from hcsshim.hcs.schema2 import PropertyQuery, SaveOptions
from hcsshim.runc.reaper import PidfdWaiter, Reaper

__all__ = ["LinuxBackend", "LinuxSystem"]

log = logging.getLogger(__name__)

SYSTEM_TYPE = "VirtualMachine"
RUNTIME_OS_TYPE = "Linux"
_SUPPORTED_PROPERTIES = frozenset({"Statistics", "Memory", "TerminateOnLastHandleClosed"})


P = ParamSpec("P")
T = TypeVar("T")


def _tracked(method: Callable[Concatenate[LinuxSystem, P], Awaitable[T]]
             ) -> Callable[Concatenate[LinuxSystem, P], Awaitable[T]]:
    """A handle call that `close` waits for (the backend contract: a handle is never released under a call)."""

    @functools.wraps(method)
    async def call(self: LinuxSystem, *args: P.args, **kwargs: P.kwargs) -> T:
        self._calls += 1
        self._idle.clear()
        try:
            return await method(self, *args, **kwargs)
        finally:
            self._calls -= 1
            if self._calls == 0:
                self._idle.set()

    return call


def _int32(hr: int) -> int:
    return hr - (1 << 32) if hr & 0x80000000 else hr


# Messages name what failed, not the operation or the system: the object layer (hcsshim.hcs.system) wraps every
# error with both ("hcs::System::Start c1: <this>").

def _not_found() -> HResultError:
    return HResultError(errors.ErrComputeSystemDoesNotExist, "no such compute system")


def _gen_failure(exc: BaseException | str) -> HResultError:
    return HResultError(errors.hresult_from_win32(errors.ERROR_GEN_FAILURE), str(exc))


def _invalid_state(state: str, why: str = "") -> HResultError:
    return HResultError(errors.ErrInvalidState, f"the system is {state.lower()}" + (f" ({why})" if why else ""))


class LinuxBackend:
    """Creates, opens and lists QEMU compute systems under `root` (hcsshim.hcs.linux.registry). `accel` forces
    an accelerator ("kvm" or "tcg"; default: hcsshim.hcs.linux.accel's probe); `waiter` spawns and reaps QEMU."""

    name = "linux"

    def __init__(self, root: str | None = None, *, accel: str | None = None,
                 waiter: Reaper | PidfdWaiter | None = None) -> None:
        self.root = root or registry.default_root()
        self.accel = accel
        self.waiter = waiter

    def __repr__(self) -> str:
        return f"LinuxBackend({self.root!r})"

    def _dir(self, id: str) -> str:
        try:
            return registry.system_dir(self.root, id)
        except ValueError as exc:
            raise HResultError(errors.ErrVmcomputeInvalidJSON, str(exc)) from None

    async def create_system(self, id: str, document: str) -> LinuxSystem:
        directory = self._dir(id)
        cfg = parse(id, document)
        try:
            os.makedirs(self.root, mode=0o711, exist_ok=True)
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                # what a dead owner left (or a create cut short) is cleaned up; a live system is an error
                record = registry.read_record(self.root, id)
                if record is None and registry.young(directory):
                    raise  # no record yet: another create is making it
                if record is not None and not registry.is_stale(self.root, record):
                    raise
                problems = await asyncio.to_thread(registry.cleanup_stale, self.root, id)
                if problems:
                    raise _gen_failure("; ".join(problems)) from None
                os.mkdir(directory, 0o700)
        except FileExistsError:
            raise HResultError(VMCOMPUTE_SYSTEM_ALREADY_EXISTS, f"{directory} exists") from None
        except OSError as exc:
            raise _gen_failure(f"{directory}: {exc}") from None
        try:
            for sub in ("shares", "hvsock"):
                os.mkdir(os.path.join(directory, sub), 0o700)
            with open(os.path.join(directory, registry.DOCUMENT), "w") as f:
                f.write(document if isinstance(document, str) else document.decode())
            for share in cfg.shares:
                devices.bind_share(directory, share.name, share.path, share.read_only,
                                   f"Plan9 share {share.name}")
            record = registry.SystemRecord.new(id, cfg.owner, cfg.terminate_on_last_handle_closed)
            record.write(directory)
        except BaseException as exc:
            registry.remove(directory)
            if isinstance(exc, OSError):
                raise _gen_failure(exc) from None
            raise
        return LinuxSystem(self, cfg, directory, record, owner=True)

    async def open_system(self, id: str) -> LinuxSystem:
        directory = self._dir(id)
        record = registry.read_record(self.root, id)
        if record is None or registry.is_stale(self.root, record):
            raise _not_found()
        try:
            with open(os.path.join(directory, registry.DOCUMENT)) as f:
                cfg = parse(id, f.read(), check_files=False)
        except OSError:
            raise _not_found() from None
        system = LinuxSystem(self, cfg, directory, record, owner=False)
        running = registry.qemu_running(directory)
        if running is not None:
            try:
                await system.machine.attach(running)
            except MachineError as exc:
                if registry.qemu_running(directory) is None:
                    system.machine.mark_stopped(-1)  # it stopped meanwhile: the handle of a stopped system
                else:
                    raise _gen_failure(exc) from None
        elif procfs.PidRecord.read(directory) is not None:
            system.machine.mark_stopped(-1)  # started and gone: a stopped system (its owner has not closed it yet)
        return system

    async def enumerate_systems(self, query: str) -> str:
        try:
            q = gojson.loads(query, ComputeSystemQuery) if query else ComputeSystemQuery()
        except gojson.DecodeError as exc:
            raise HResultError(errors.ErrVmcomputeInvalidJSON, str(exc)) from None
        found = []
        for id in registry.list_ids(self.root):
            record = registry.read_record(self.root, id)
            if record is None or registry.is_stale(self.root, record):
                continue
            if (q.ids and id not in q.ids) or (q.names and id not in q.names) or \
                    (q.types and SYSTEM_TYPE not in q.types) or (q.owners and record.owner not in q.owners):
                continue
            state = _file_state(os.path.join(self.root, id))
            found.append(ContainerProperties(id=id, name=id, state=state, system_type=SYSTEM_TYPE,
                                             runtime_os_type=RUNTIME_OS_TYPE, owner=record.owner,
                                             runtime_id=record.runtime_id, stopped=state == "Stopped").to_json())
        return json.dumps(found)

    async def service_properties(self, query: str) -> str:
        return json.dumps({"Properties": [{"SupportedSchemaVersions": [{"Major": 1, "Minor": 0},
                                                                       {"Major": 2, "Minor": 1}]}]})

    async def modify_service(self, settings: str) -> None:
        raise HResultError(errors.hresult_from_win32(errors.ErrNotSupported),
                           "not supported by the Linux (QEMU) backend")


def _file_state(directory: str) -> str:
    """A system's state as its files tell it (a paused system reads as Running: only QMP knows)."""
    if procfs.PidRecord.read(directory) is None:
        return "Stopped" if read_stopping(directory) else "Created"
    return "Running" if registry.qemu_running(directory) is not None else "Stopped"


class LinuxSystem:
    """One open handle of a Linux compute system (module docstring)."""

    def __init__(self, backend: LinuxBackend, cfg: MachineConfig, directory: str, record: registry.SystemRecord,
                 *, owner: bool) -> None:
        self.id = cfg.id
        self.backend = backend
        self.cfg = cfg
        self.dir = directory
        self.record = record
        self.owner = owner
        self.closed = False
        self._sink: EventSink | None = None
        self._pending: list[Event] = []
        self.machine = Machine(cfg, directory, waiter=backend.waiter, on_exit=self._on_exit)
        self._calls = 0  # calls in flight (_tracked)
        self._idle = asyncio.Event()
        self._idle.set()

    def __repr__(self) -> str:
        return f"LinuxSystem({self.id!r}, {self.machine.state.value}{', owner' if self.owner else ''})"

    # -- events ---------------------------------------------------------------------------------------------

    def set_event_sink(self, sink: EventSink) -> None:
        self._sink = sink
        pending, self._pending = self._pending, []
        for event in pending:
            sink(event)

    def _emit(self, event: Event) -> None:
        if self.closed:
            return
        if self._sink is None:
            self._pending.append(event)
        else:
            self._sink(event)

    def _on_exit(self, status: int, exit_type: str) -> None:
        if self.owner:  # nothing can use the shares or the cgroup any more: they go now, not at close
            for problem in [*devices.unbind_all(self.dir), *cgroups.remove(self.dir)]:
                log.warning("compute system %s: %s", self.id, problem)
        hr = errors.ErrVmcomputeUnexpectedExit if exit_type == UNEXPECTED_EXIT else 0
        self._emit(Event(EVENT_SYSTEM_EXITED, json.dumps({"Status": _int32(hr), "ExitType": exit_type})))

    # -- lifecycle ------------------------------------------------------------------------------------------

    def _check(self, op: str) -> None:
        if self.closed:
            raise HResultError(errors.hresult_from_win32(errors.ErrInvalidHandle), "the handle is closed")

    def _stopped(self, op: str) -> None:
        if self.machine.exited.is_set():
            raise HResultError(errors.ErrVmcomputeSystemAlreadyStopped, "the system is stopped")

    @_tracked
    async def start(self, options: str = "") -> None:
        self._check("start")
        self._stopped("start")
        if self.machine.state is not MachineState.CREATED:
            raise _invalid_state(self.machine.state.value)
        if not self.owner:
            raise _invalid_state(self.machine.state.value, "only the process that created it starts it")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, STOPPING))
        try:
            qemu = accel_mod.qemu_binary()
            accel = self.backend.accel
            if accel is None:
                waiter = self.backend.waiter or self.machine.waiter
                accel = await accel_mod.choose(self.cfg.kernel, waiter=waiter or PidfdWaiter(), qemu=qemu)
            if self.machine.waiter is None:
                self.machine.waiter = PidfdWaiter()
            await self.machine.start(qemu, accel)
        except (MachineError, OSError) as exc:
            raise _gen_failure(exc) from None
        for slot, nic in enumerate(self.cfg.nics):
            os.makedirs(os.path.join(self.dir, "nics"), mode=0o700, exist_ok=True)
            with open(os.path.join(self.dir, "nics", str(slot)), "w") as f:
                f.write(nic.id)

    @_tracked
    async def shutdown(self, options: str = "") -> None:
        self._check("shutdown")
        self._stopped("shutdown")
        if self.machine.state is MachineState.CREATED:
            write_stopping(self.dir, FORCED_EXIT)
            self.machine.mark_stopped(0)
            return
        try:
            await self.machine.shutdown()
        except MachineError as exc:
            raise _gen_failure(exc) from None

    @_tracked
    async def terminate(self, options: str = "") -> None:
        self._check("terminate")
        self._stopped("terminate")
        if self.machine.state is MachineState.CREATED:
            write_stopping(self.dir, FORCED_EXIT)
            self.machine.mark_stopped(0)
            return
        await self.machine.terminate()

    @_tracked
    async def pause(self, options: str = "") -> None:
        self._check("pause")
        self._stopped("pause")
        if self.machine.state is not MachineState.RUNNING:
            raise _invalid_state(self.machine.state.value)
        try:
            await self.machine.pause()
        except MachineError as exc:
            raise _gen_failure(exc) from None

    @_tracked
    async def resume(self, options: str = "") -> None:
        self._check("resume")
        self._stopped("resume")
        if self.machine.state is not MachineState.PAUSED:
            raise _invalid_state(self.machine.state.value)
        try:
            await self.machine.resume()
        except MachineError as exc:
            raise _gen_failure(exc) from None

    @_tracked
    async def save(self, options: str) -> None:
        self._check("save")
        self._stopped("save")
        try:
            opts = gojson.loads(options, SaveOptions) if options else SaveOptions()
        except gojson.DecodeError as exc:
            raise HResultError(errors.ErrVmcomputeInvalidJSON, str(exc)) from None
        if not opts.save_state_file_path:
            raise HResultError(errors.ErrVmcomputeInvalidJSON, "SaveOptions.SaveStateFilePath: "
                                                               "required on the Linux backend")
        if self.machine.state not in (MachineState.RUNNING, MachineState.PAUSED):
            raise _invalid_state(self.machine.state.value)
        try:
            await self.machine.save(opts.save_state_file_path)
        except MachineError as exc:
            raise _gen_failure(exc) from None

    @_tracked
    async def properties(self, query: str) -> str:
        self._check("properties")
        try:
            q = gojson.loads(query, PropertyQuery) if query else PropertyQuery()
        except gojson.DecodeError as exc:
            raise HResultError(errors.ErrVmcomputeInvalidJSON, str(exc)) from None
        for t in q.property_types:
            if t not in _SUPPORTED_PROPERTIES:
                raise HResultError(errors.hresult_from_win32(errors.ErrNotSupported),
                                   f"property type {t!r}: not supported by the Linux "
                                   "(QEMU) backend")
        state = await self._state()
        doc: dict[str, object] = {"Id": self.id, "SystemType": SYSTEM_TYPE, "RuntimeOsType": RUNTIME_OS_TYPE,
                                  "Name": self.id, "Owner": self.record.owner, "RuntimeId": self.record.runtime_id,
                                  "State": state}
        if state == "Stopped":
            doc["Stopped"] = True
            doc["ExitType"] = self.machine.exit_type or read_stopping(self.dir) or UNEXPECTED_EXIT
        if "TerminateOnLastHandleClosed" in q.property_types:
            doc["TerminateOnLastHandleClosed"] = self.cfg.terminate_on_last_handle_closed
        if "Memory" in q.property_types:
            doc["Memory"] = {"VirtualNodeCount": 1,
                             "VirtualMachineMemory": {"AssignedMemory": await self._assigned_pages(state)}}
        if "Statistics" in q.property_types:
            doc["Statistics"] = self._statistics(state)
        return json.dumps(doc)

    async def _assigned_pages(self, state: str) -> int:
        """The VM's RAM in 4 KiB pages: QEMU's (query-memory-size-summary) while it runs, else the document's."""
        if state in ("Running", "Paused"):
            with contextlib.suppress(MachineError, TimeoutError, OSError):
                info = await self.machine.execute("properties", "query-memory-size-summary")
                if isinstance(info, dict) and isinstance(info.get("base-memory"), int):
                    return (info["base-memory"] + int(info.get("plugged-memory") or 0)) // 4096
        return self.cfg.memory_mb * 256

    async def _state(self) -> str:
        if self.machine.exited.is_set():
            return "Stopped"
        if self.machine.state is MachineState.CREATED:
            return "Created"
        try:
            return (await self.machine.status()).value
        except (MachineError, TimeoutError, OSError):
            return self.machine.state.value

    def _statistics(self, state: str) -> dict[str, object]:
        now = datetime.datetime.now(datetime.UTC)
        out: dict[str, object] = {"Timestamp": now.isoformat().replace("+00:00", "Z")}
        pid = self.machine.pid
        started = procfs.started_at(pid) if pid is not None and state != "Stopped" else None
        if started is not None:
            out["ContainerStartTime"] = datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat() \
                .replace("+00:00", "Z")
            out["Uptime100ns"] = max(0, int((now.timestamp() - started) * 10_000_000))
        if pid is not None and state != "Stopped":
            with contextlib.suppress(OSError):
                s = procfs.stats(pid)
                out["Processor"] = {"TotalRuntime100ns": s.total_runtime_100ns,
                                    "RuntimeUser100ns": s.user_ns // 100, "RuntimeKernel100ns": s.system_ns // 100}
                out["Memory"] = {"MemoryUsageCommitBytes": s.working_set_bytes,
                                 "MemoryUsageCommitPeakBytes": s.peak_bytes,
                                 "MemoryUsagePrivateWorkingSetBytes": s.pss_bytes or s.working_set_bytes}
        return out

    @_tracked
    async def modify(self, request: str) -> None:
        self._check("modify")
        self._stopped("modify")
        if self.machine.state not in (MachineState.RUNNING, MachineState.PAUSED):
            raise _invalid_state(self.machine.state.value)
        await devices.modify(self.machine, self.cfg, self.dir, request)

    async def create_process(self, parameters: str) -> tuple[ProcessHandle, ProcessInfo]:
        raise HResultError(errors.hresult_from_win32(errors.ErrNotSupported),
                           "a Linux utility VM's processes run over its GCS "
                           "connection (hcsshim.gcs), not through the backend")

    async def open_process(self, pid: int) -> ProcessHandle:
        raise HResultError(errors.hresult_from_win32(errors.ErrNotSupported),
                           "a Linux utility VM's processes run over its GCS "
                           "connection (hcsshim.gcs), not through the backend")

    async def close(self) -> None:
        """Closes this handle (module docstring); idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.owner and self.cfg.terminate_on_last_handle_closed and not self.machine.exited.is_set() and \
                self.machine.pid is not None:
            await self.machine.terminate()
        await self.machine.close()  # a call still waiting on QEMU fails now
        await self._idle.wait()
        if self.owner and (self.machine.exited.is_set() or self.machine.pid is None):
            problems = await asyncio.to_thread(registry.remove, self.dir)
            if problems:
                raise HResultError(errors.hresult_from_win32(errors.ERROR_GEN_FAILURE),
                                   "; ".join(problems))
