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
SystemExited or ProcessExited once, and never after `close`. Events that arrive before a sink is set are kept and
delivered, in order, when it is set (the object layer sets it right after create/open).

What else the object layer relies on:

* **Failures.** A backend raises an HResultError; `CallError` is the one to raise when the failure comes with an
  HCS result document: it carries the document's ErrorEvents, which the object layer attaches to its
  SystemError/ProcessError (`events_of`). Codes compare folded (hcsshim.hcs.errors), so 0x80070490 and 0x490 are
  the same ERROR_NOT_FOUND.
* **Create leaves nothing behind.** When `create_system` fails after the system came to exist, the backend
  terminates it and closes its handle before raising (upstream's defer in CreateComputeSystem).
* **Shutdown and terminate are requests.** They may return once the request is accepted (upstream submits them
  without waiting); the system's exit is reported by SystemExited.
* **Close waits for calls in flight.** `close` returns after every call still running on the handle has returned
  (a call whose caller was cancelled included) and only then releases the handle, so a handle is never freed
  under a running call. The object layer makes no call on a handle after `close`.
* **Stdio.** `ProcessInfo`'s descriptors belong to the caller from the moment they are returned.

Optional capabilities (added later; a backend offers them by giving its SystemHandle the methods, and the object
layer checks for them with `supports` and fails with ErrNotSupported, naming the system and the operation, when a
handle lacks one; a backend that has the methods but cannot serve them on this host raises ErrNotSupported too):

* **Live migration** (`MigrationHandle`, upstream's hcsv2 migration.go): the five HcsXxxLiveMigration steps and
  the destination's start, each taking the options document HCS takes; the steps that use the transport socket
  take its handle, which the backend hands HCS with the operation (HcsAddResourceToOperation, Socket,
  resourcepaths.LIVE_MIGRATION_SOCKET_URI). Its events are the system's `EVENT_GROUP_LIVE_MIGRATION` events,
  whose data is an OperationSystemMigrationNotificationInfo document, delivered to the sink like any other.
* **The silo** (`SiloHandle`, process-isolated containers): the container's server silo job object, which HCS
  owns, read and changed directly rather than through HCS: its counters (`SiloStatistics`, upstream's
  statisticsInProc) and its CPU group affinities (upstream's SetCPUGroupAffinities).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from hcsshim import gojson
from hcsshim.hcs.errors import Errno, ErrorEvent, unwrap

__all__ = ["Backend", "CallError", "Event", "EventSink", "GroupAffinity", "MigrationHandle", "ProcessHandle",
           "ProcessInfo", "SiloHandle", "SiloStatistics", "SystemHandle", "document_text", "events_of", "raising",
           "supports"]

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
EVENT_GROUP_VM_LIFECYCLE = 0x80000002
EVENT_GROUP_LIVE_MIGRATION = 0x80000003  # data: an OperationSystemMigrationNotificationInfo document
EVENT_GROUP_OPERATION_INFO = 0xC0000001


@dataclass(frozen=True)
class Event:
    """One HCS notification: its HCS_EVENT_TYPE and its data (JSON text, "" when none)."""

    type: int
    data: str = ""


EventSink = Callable[[Event], None]


class CallError(Errno):
    """An HCS call failed with an HRESULT and, maybe, a result document: `code`/`hresult` as in Errno, the message
    (the result's ErrorMessage, else the code's text), `function` (the C function or backend operation that
    failed, for logs), `result` (the ResultError document as returned, "" if none) and its `events`."""

    def __init__(self, code: int, message: str = "", *, function: str = "", result: str = "",
                 events: Sequence[ErrorEvent] = ()) -> None:
        super().__init__(code, message)
        self.function = function
        self.result = result
        self.events = list(events)

    def __repr__(self) -> str:
        return f"CallError({self.code:#x}, function={self.function!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_call_error, (self.code, self.message, self.function, self.result, self.events))


def _rebuild_call_error(code: int, message: str, function: str, result: str,
                        events: list[ErrorEvent]) -> CallError:
    return CallError(code, message, function=function, result=result, events=events)


def events_of(err: BaseException) -> list[ErrorEvent]:
    """The ErrorEvents a failure carries: the first non-empty `events` list of ErrorEvents (a CallError's, an
    HcsError's) in its chain; [] when there is none."""
    for e in unwrap(err):
        events = getattr(e, "events", None)
        if isinstance(events, list) and events and all(isinstance(ev, ErrorEvent) for ev in events):
            return events
    return []


@contextmanager
def raising(wrap: Callable[[Exception], BaseException]) -> Iterator[None]:
    """Raise `wrap(err)`, chained from err, for an Exception the block raises (err itself, unchained, when `wrap`
    returns it: make_system_error does not double-wrap). How the object layer turns a backend's failure into its
    own error at the boundary."""
    try:
        yield
    except Exception as err:
        wrapped = wrap(err)
        if wrapped is err:
            raise
        raise wrapped from err


def document_text(document: gojson.Struct | Mapping[str, Any] | str) -> str:
    """The JSON text handed to a backend for a document argument: a typed document as Go writes it, a mapping as
    JSON (its order kept), text as is."""
    if isinstance(document, str):
        return document
    return gojson.dumps(document)


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


# -- optional capabilities --------------------------------------------------------------------------------------


@runtime_checkable
class MigrationHandle(Protocol):
    """A SystemHandle that can live-migrate (see the module docstring). `socket` is the transport socket's handle
    (a Windows SOCKET); the options are the schema2 migration documents as JSON text."""

    async def start_migration_destination(self, options: str, socket: int) -> None: ...  # StartOptions
    async def initialize_live_migration(self, options: str) -> None: ...  # MigrationInitializeOptions
    async def start_live_migration(self, options: str, socket: int) -> None: ...  # MigrationStartOptions
    async def start_live_migration_transfer(self, options: str) -> None: ...  # MigrationTransferOptions
    async def finalize_live_migration(self, options: str) -> None: ...  # MigrationFinalizedOptions
    async def cancel_live_migration(self, options: str) -> None: ...  # MigrationCancelOptions



@dataclass(frozen=True)
class GroupAffinity:
    """GROUP_AFFINITY (upstream's jobobject.GroupAffinity): a processor group and the bitmask of its processors."""

    mask: int
    group: int = 0


@dataclass(frozen=True)
class SiloStatistics:
    """A process-isolated container's counters as its silo job object keeps them: `timestamp` (time.time(), taken
    before the queries), commit and peak commit (JOBOBJECT_MEMORY_USAGE_INFORMATION), kernel and user time in
    100 ns (JOBOBJECT_BASIC_ACCOUNTING_INFORMATION), the read and write counts and bytes
    (JOBOBJECT_IO_ATTRIBUTION_INFORMATION) and the private working set of the processes in the silo."""

    timestamp: float
    memory_commit_bytes: int
    memory_commit_peak_bytes: int
    kernel_time_100ns: int
    user_time_100ns: int
    read_count: int
    read_bytes: int
    write_count: int
    write_bytes: int
    private_working_set_bytes: int


@runtime_checkable
class SiloHandle(Protocol):
    """A SystemHandle of a process-isolated container whose silo job object the backend can open."""

    async def silo_statistics(self) -> SiloStatistics: ...
    async def set_silo_cpu_group_affinities(self, affinities: Sequence[GroupAffinity]) -> None: ...


def supports(handle: object, capability: type[Any]) -> bool:
    """Whether `handle` offers an optional capability (MigrationHandle, SiloHandle): has all its methods."""
    return isinstance(handle, capability)
