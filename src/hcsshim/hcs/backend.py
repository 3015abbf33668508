"""The contract between hcsshim.hcs's System and Process objects and whatever runs compute systems: on Windows the
Host Compute Service through computecore.dll (hcsshim.hcs.windows), on Linux our own QEMU backend
(hcsshim.hcs.linux).

The contract is HCS's own C API, one level up: every operation takes and returns JSON text exactly as
computecore's functions do (a ComputeSystem document, a PropertyQuery, a ModifySettingRequest, a
ProcessParameters, ...), is a coroutine that returns when HCS's operation has completed, and fails with an
hcsshim.bridge.wire.HResultError carrying the HRESULT and, when HCS sent one, the ErrorEvents of its result
document. The object layer adds the rest of upstream's behaviour on top (typed documents, error wrapping with the
operation and the system's id, tolerated errors, cached properties, waiting), so a backend stays a translation.

Notifications are HCS's events (`Event`): a system's SystemExited (data: `{"Status": <HRESULT>, "ExitType":
"UnexpectedExit"|...}`), a process's ProcessExited (data: a ProcessStatus document), ServiceDisconnect, ... A
backend delivers them to the sink set on the handle, in order, from the event loop's thread; it delivers
SystemExited or ProcessExited once, and never after `close`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Backend", "Event", "EventSink", "ProcessHandle", "ProcessInfo", "SystemHandle"]

# HCS_EVENT_TYPE (computecore): the values a backend's events carry
EVENT_SYSTEM_EXITED = 0x00000001
EVENT_SYSTEM_CRASH_INITIATED = 0x00000002
EVENT_SYSTEM_CRASH_REPORT = 0x00000003
EVENT_SYSTEM_RDP_ENHANCED_MODE_STATE_CHANGED = 0x00000004
EVENT_SYSTEM_SILO_JOB_CREATED = 0x00000005
EVENT_SYSTEM_GUEST_CONNECTION_CLOSED = 0x00000006
EVENT_PROCESS_EXITED = 0x00010000
EVENT_OPERATION_CALLBACK = 0x01000000
EVENT_SERVICE_DISCONNECT = 0x02000000


@dataclass(frozen=True)
class Event:
    """One HCS notification: its HCS_EVENT_TYPE and its data (JSON text, "" when none)."""

    type: int
    data: str = ""


EventSink = Callable[[Event], None]


@dataclass
class ProcessInfo:
    """HCS_PROCESS_INFORMATION: the process's id and the host ends of the stdio pipes it was asked for (file
    descriptors, or None), which the caller owns."""

    pid: int
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


class ProcessHandle(Protocol):
    """An open process of a compute system (HCS_PROCESS)."""

    pid: int

    def set_event_sink(self, sink: EventSink) -> None: ...
    async def signal(self, options: str) -> None: ...
    async def terminate(self) -> None: ...
    async def info(self) -> ProcessInfo: ...  # fresh stdio handles (HcsGetProcessInfo)
    async def properties(self, query: str) -> str: ...  # a ProcessStatus document
    async def modify(self, settings: str) -> None: ...  # a ProcessModifyRequest
    async def close(self) -> None: ...


class SystemHandle(Protocol):
    """An open compute system (HCS_SYSTEM). Operations take the options JSON HCS takes ("" for none)."""

    id: str

    def set_event_sink(self, sink: EventSink) -> None: ...
    async def start(self, options: str = "") -> None: ...
    async def shutdown(self, options: str = "") -> None: ...
    async def terminate(self, options: str = "") -> None: ...
    async def pause(self, options: str = "") -> None: ...
    async def resume(self, options: str = "") -> None: ...
    async def save(self, options: str) -> None: ...
    async def properties(self, query: str) -> str: ...  # a Properties (v2) or ContainerProperties (v1) document
    async def modify(self, request: str) -> None: ...  # a ModifySettingRequest (or a schema1 request)
    async def create_process(self, parameters: str) -> tuple[ProcessHandle, ProcessInfo]: ...
    async def open_process(self, pid: int) -> ProcessHandle: ...
    async def close(self) -> None: ...  # the handle only: the system runs on


class Backend(Protocol):
    """What creates, opens and lists compute systems, and answers service-wide queries."""

    name: str

    async def create_system(self, id: str, document: str) -> SystemHandle: ...
    async def open_system(self, id: str) -> SystemHandle: ...
    async def enumerate_systems(self, query: str) -> str: ...  # a JSON array of schema1 ContainerProperties
    async def service_properties(self, query: str) -> str: ...
    async def modify_service(self, settings: str) -> None: ...
