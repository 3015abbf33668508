"""The root package's legacy API (upstream's github.com/Microsoft/hcsshim container.go, process.go, errors.go,
interface.go, hcsshim.go): CreateContainer, OpenContainer, GetContainers, the Container and Process objects, the
error variables, ContainerError/ProcessError and the Is* predicates, blocking as upstream's are. Reached as
``hcsshim.CreateContainer`` and so on (the package root imports this module on first use).

Built on hcsshim.hcs (its blocking wrappers, hcsshim.hcs.blocking; the backend is hcsshim.hcs.service's default,
chosen by platform or HCSSHIM_HCS_BACKEND). Upstream's names are kept: functions, error variables and constants in
Go's spelling, methods in snake_case (`Container.wait_timeout`, `Process.exit_code`). Errors are raised, not
returned, and a Go `time.Duration` is a number of seconds.

Upstream's quirks, kept because callers rely on them:

* **Shutdown and terminate "fail" with pending.** A request HCS accepted raises a ContainerError wrapping
  ErrVmcomputeOperationPending; callers test ``IsPending(err)`` and then `wait()`.
* **Kill that delivered nothing** raises a ProcessError wrapping ErrElementNotFound.
* **Wait reports an unexpected exit**: Container.wait() raises the system's exit error (ErrVmcomputeUnexpectedExit)
  when the container exited unexpectedly.
* **Additional JSON.** CreateContainer merges the JSON object in HCSSHIM_CREATECONTAINER_ADDITIONALJSON (read
  when this module is imported, as upstream reads it at init) into the configuration, as upstream's mergemaps
  does: an object merges into an object key by key (recursively), any other value replaces, a null keeps an
  object; the merged document is written as Go writes a map[string]interface{}: keys sorted, numbers as float64
  (so integers past 2**53 lose precision, as upstream's do).

Errors from the hcs layer (SystemError, ProcessError) are converted to ContainerError/ProcessError of this module
carrying the same operation, error and events (upstream's convertSystemError/convertProcessError); the message
reads ``container c1 encountered an error during hcs::System::Start: failure in a Windows system call: <text>
(0x<code>)``. The predicates see through both layers.

Not here: the root package's layer functions, its HNS re-exports and HcsError (hcserror's), which belong to other
parts; IsNotExist does not yet match HNS's EndpointNotFoundError/NetworkNotFoundError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from hcsshim import gojson
from hcsshim.hcs import blocking, errors, schema1
from hcsshim.hcs.backend import raising
from hcsshim.hcs.errors import (
    ERROR_GEN_FAILURE,
    ERROR_SHUTDOWN_IN_PROGRESS,
    WSAEINVAL,
    ErrAlreadyClosed,
    ErrComputeSystemDoesNotExist,
    ErrElementNotFound,
    ErrHandleClose,
    ErrInvalidData,
    ErrInvalidNotificationType,
    ErrInvalidProcessState,
    Errno,
    ErrNotSupported,
    ErrOperationDenied,
    ErrorEvent,
    ErrPlatformNotSupported,
    ErrProcNotFound,
    ErrTimeout,
    ErrUnexpectedContainerExit,
    ErrUnexpectedProcessAbort,
    ErrUnexpectedValue,
    ErrVmcomputeAlreadyStopped,
    ErrVmcomputeInvalidJSON,
    ErrVmcomputeOperationAccessIsDenied,
    ErrVmcomputeOperationInvalidState,
    ErrVmcomputeOperationPending,
    ErrVmcomputeUnknownMessage,
    TimeoutInfinite,
    WaitErrExecFailed,
)
from hcsshim.hcs.process import Stdio

__all__ = [
    "ERROR_GEN_FAILURE",
    "ERROR_SHUTDOWN_IN_PROGRESS",
    "WSAEINVAL",
    "Add",
    "AssignedDevice",
    "ComputeSystemQuery",
    "Container",
    "ContainerConfig",
    "ContainerError",
    "ContainerProperties",
    "CreateContainer",
    "ErrAlreadyClosed",
    "ErrComputeSystemDoesNotExist",
    "ErrElementNotFound",
    "ErrHandleClose",
    "ErrInvalidData",
    "ErrInvalidNotificationType",
    "ErrInvalidProcessState",
    "ErrNotSupported",
    "ErrOperationDenied",
    "ErrPlatformNotSupported",
    "ErrProcNotFound",
    "ErrTimeout",
    "ErrUnexpectedContainerExit",
    "ErrUnexpectedProcessAbort",
    "ErrUnexpectedValue",
    "ErrVmcomputeAlreadyStopped",
    "ErrVmcomputeInvalidJSON",
    "ErrVmcomputeOperationAccessIsDenied",
    "ErrVmcomputeOperationInvalidState",
    "ErrVmcomputeOperationPending",
    "ErrVmcomputeUnknownMessage",
    "GetContainers",
    "HvRuntime",
    "IsAccessIsDenied",
    "IsAlreadyClosed",
    "IsAlreadyStopped",
    "IsNotExist",
    "IsNotSupported",
    "IsOperationInvalidState",
    "IsPending",
    "IsTimeout",
    "Layer",
    "MappedDir",
    "MappedPipe",
    "MappedVirtualDisk",
    "MappedVirtualDiskController",
    "MemoryStats",
    "Network",
    "NetworkStats",
    "OpenContainer",
    "Process",
    "ProcessConfig",
    "ProcessError",
    "ProcessListItem",
    "ProcessorStats",
    "Remove",
    "RequestType",
    "ResourceModificationRequestResponse",
    "ResourceType",
    "Statistics",
    "StorageStats",
    "TimeoutInfinite",
    "WaitErrExecFailed",
]

# -- the schema aliases (interface.go, container.go) ----------------------------------------------------------

ProcessConfig = schema1.ProcessConfig
Layer = schema1.Layer
MappedDir = schema1.MappedDir
MappedPipe = schema1.MappedPipe
HvRuntime = schema1.HvRuntime
MappedVirtualDisk = schema1.MappedVirtualDisk
AssignedDevice = schema1.AssignedDevice
ContainerConfig = schema1.ContainerConfig
ComputeSystemQuery = schema1.ComputeSystemQuery
ContainerProperties = schema1.ContainerProperties
MemoryStats = schema1.MemoryStats
ProcessorStats = schema1.ProcessorStats
StorageStats = schema1.StorageStats
NetworkStats = schema1.NetworkStats
Statistics = schema1.Statistics
ProcessListItem = schema1.ProcessListItem
MappedVirtualDiskController = schema1.MappedVirtualDiskController
RequestType = schema1.RequestType
ResourceType = schema1.ResourceType
ResourceModificationRequestResponse = schema1.ResourceModificationRequestResponse
Add = schema1.RequestType.ADD
Remove = schema1.RequestType.REMOVE
Network = schema1.ResourceType.NETWORK

ENV_ADDITIONAL_JSON = "HCSSHIM_CREATECONTAINER_ADDITIONALJSON"
# Read once, when the module is imported (upstream's init).
create_container_additional_json = os.environ.get(ENV_ADDITIONAL_JSON, "")


# -- errors (errors.go) ---------------------------------------------------------------------------------------


def _suffix(operation: str, err: BaseException | None, events: Sequence[ErrorEvent]) -> str:
    s = f" encountered an error during {operation}" if operation else ""
    if isinstance(err, Errno):  # upstream's syscall.Errno case
        s += f": failure in a Windows system call: {err} (0x{err.code:x})"
    elif err is not None:
        s += f": {err}"
    return s + "".join("\n" + str(ev) for ev in events)


class _LegacyError(Exception):
    """What ContainerError and ProcessError share: upstream's operation name, the error (`inner`, which the
    predicates look through) and the HCS ErrorEvents."""

    _NIL: ClassVar[str] = ""  # the message's start when the object is missing

    def __init__(self, operation: str, err: BaseException | None, events: Sequence[ErrorEvent]) -> None:
        self.operation = operation
        self.err = err
        self.events = list(events)
        super().__init__(str(self))

    @property
    def inner(self) -> BaseException | None:
        return self.err

    def _subject(self) -> str | None:
        raise NotImplementedError

    def __str__(self) -> str:
        subject = self._subject()
        if subject is None:
            return f"{self._NIL}: {self.err}"
        return subject + _suffix(self.operation, self.err, self.events)


class ContainerError(_LegacyError):
    """An operation on a Container failed: the container, upstream's operation name, the error and the events."""

    _NIL = "unexpected nil container for error"

    def __init__(self, container: Container | None, operation: str, err: BaseException | None,
                 events: Sequence[ErrorEvent] = ()) -> None:
        self.container = container
        super().__init__(operation, err, events)

    def _subject(self) -> str | None:
        return None if self.container is None else f"container {self.container._system.id}"


class ProcessError(_LegacyError):
    """An operation on a Process failed: as ContainerError, naming the process and its container."""

    _NIL = "Unexpected nil process for error"

    def __init__(self, process: Process | None, operation: str, err: BaseException | None,
                 events: Sequence[ErrorEvent] = ()) -> None:
        self.process = process
        super().__init__(operation, err, events)

    def _subject(self) -> str | None:
        if self.process is None:
            return None
        p = self.process._process
        return f"process {p.pid} in container {p.system_id}"


def _container_error(err: BaseException, container: Container) -> BaseException:
    """upstream's convertSystemError: an hcs SystemError as a ContainerError, anything else as it is."""
    if isinstance(err, errors.SystemError):
        return ContainerError(container, err.op, err.err, err.events)
    return err


def _process_error(err: BaseException, process: Process) -> BaseException:
    """upstream's convertProcessError."""
    if isinstance(err, errors.ProcessError):
        return ProcessError(process, err.op, err.err, err.events)
    return err


# The predicates: hcsshim.hcs.errors' already look through ContainerError/ProcessError (their `inner`), which is
# what upstream's getInnerError does for these.
IsNotExist = errors.is_not_exist
IsAlreadyClosed = errors.is_already_closed
IsPending = errors.is_pending
IsTimeout = errors.is_timeout
IsAlreadyStopped = errors.is_already_stopped
IsNotSupported = errors.is_not_supported
IsOperationInvalidState = errors.is_operation_invalid_state
IsAccessIsDenied = errors.is_access_is_denied


# -- the additional JSON (internal/mergemaps) -----------------------------------------------------------------


def _merge(src: Any, dst: Any) -> Any:
    """mergemaps.Merge(fromMap=src, ToMap=dst): src's values win; objects merge key by key; a null keeps an
    object."""
    if isinstance(src, dict):
        if not isinstance(dst, dict):
            return src
        for key, value in dst.items():
            src[key] = _merge(src[key], value) if key in src else value
        return src
    if src is None and isinstance(dst, dict):
        return dst
    return src


def _as_go_map(value: Any) -> Any:
    """A decoded JSON value as Go re-encodes a map[string]interface{}: object keys sorted."""
    if isinstance(value, dict):
        return {key: _as_go_map(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_as_go_map(item) for item in value]
    return value


def _go_object(text: str, what: str) -> dict[str, Any] | None:
    """`text` decoded as Go decodes into a map[string]interface{} (numbers as float64; null: nil)."""
    value = json.loads(text, parse_int=float)
    if value is not None and not isinstance(value, dict):
        kind = {list: "array", str: "string", float: "number", bool: "bool"}.get(type(value), "value")
        raise ValueError(f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}} ({what})")
    return value


def merge_json(document: gojson.Struct | str, additional: str) -> str:
    """The configuration text with `additional` (a JSON object) merged in, as upstream's mergemaps.MergeJSON
    followed by json.Marshal; `document` as Go writes it when `additional` is empty."""
    text = document if isinstance(document, str) else gojson.dumps(document)
    if not additional:
        return text
    merged = _merge(_go_object(additional, "additional JSON"), _go_object(text, "configuration"))
    return gojson.dumps(_as_go_map(merged))


# -- containers (container.go) --------------------------------------------------------------------------------


def CreateContainer(id: str, config: ContainerConfig | str) -> Container:
    """Create container `id` from `config` (and the additional JSON), without starting it."""
    extra = create_container_additional_json
    try:
        document = merge_json(config, extra)
    except ValueError as err:
        raise ValueError(f"failed to merge additional JSON '{extra}': {err}") from err
    return Container(blocking.create_compute_system(id, document))


def OpenContainer(id: str) -> Container:
    """Open the existing container `id`."""
    return Container(blocking.open_compute_system(id))


def GetContainers(q: ComputeSystemQuery) -> list[ContainerProperties]:
    """The compute systems matching the query."""
    return blocking.get_compute_systems(q)


class Container:
    """A created (not necessarily running) container: upstream's Container interface, blocking."""

    def __init__(self, system: blocking.BlockingSystem) -> None:
        self._system = system

    def __repr__(self) -> str:
        return f"<hcsshim.Container {self._system.id}>"

    def _failing(self) -> AbstractContextManager[None]:
        return raising(lambda err: _container_error(err, self))

    def start(self) -> None:
        """Start the container, synchronously."""
        with self._failing():
            self._system.start()

    def _stop(self, request: str, operation: str) -> None:
        with self._failing():
            getattr(self._system, request)()
        raise ContainerError(self, operation, Errno(ErrVmcomputeOperationPending))

    def shutdown(self) -> None:
        """Request a shutdown: raises a ContainerError for which IsPending holds when HCS accepted it (then
        wait())."""
        self._stop("shutdown", "hcsshim::ComputeSystem::Shutdown")

    def terminate(self) -> None:
        """Request a terminate: as shutdown, raises a pending ContainerError when accepted."""
        self._stop("terminate", "hcsshim::ComputeSystem::Terminate")

    def wait(self) -> None:
        """Until the container has stopped; raises its exit error when it exited unexpectedly."""
        self._wait(None)

    def wait_timeout(self, timeout: float) -> None:
        """As wait, giving up after `timeout` seconds with a ContainerError wrapping ErrTimeout."""
        self._wait(timeout)

    def _wait(self, timeout: float | None) -> None:
        with self._failing():
            try:
                self._system.wait(timeout)
            except TimeoutError:
                raise ContainerError(self, "hcsshim::ComputeSystem::Wait", ErrTimeout()) from None
            exit_error = self._system.exit_error()
            if exit_error is not None:
                raise exit_error

    def pause(self) -> None:
        with self._failing():
            self._system.pause()

    def resume(self) -> None:
        with self._failing():
            self._system.resume()

    def has_pending_updates(self) -> bool:
        """Always False (upstream's answer)."""
        return False

    def _properties(self, kind: str) -> ContainerProperties:
        with self._failing():
            return self._system.properties(kind)

    def statistics(self) -> Statistics:
        """The container's statistics (a v1 query)."""
        return self._properties(schema1.PropertyType.STATISTICS).statistics

    def process_list(self) -> list[ProcessListItem]:
        """The container's processes (a v1 query)."""
        return self._properties(schema1.PropertyType.PROCESS_LIST).process_list

    def mapped_virtual_disks(self) -> dict[int, MappedVirtualDiskController]:
        """The virtual disks mapped to a utility VM, by controller (a v1 query)."""
        return self._properties(schema1.PropertyType.MAPPED_VIRTUAL_DISK).mapped_virtual_disk_controllers

    def create_process(self, c: ProcessConfig) -> Process:
        """Start a process in the container."""
        with self._failing():
            return Process(self._system.create_process(c))

    def open_process(self, pid: int) -> Process:
        """Open the container's process `pid`."""
        with self._failing():
            return Process(self._system.open_process(pid))

    def close(self) -> None:
        """Release the container's handle without stopping it."""
        with self._failing():
            self._system.close()

    def modify(self, config: ResourceModificationRequestResponse) -> None:
        """Add or remove a resource (a Network endpoint)."""
        with self._failing():
            self._system.modify(config)


# -- processes (process.go) -----------------------------------------------------------------------------------


class Process:
    """A running or exited process: upstream's Process interface, blocking."""

    def __init__(self, process: blocking.BlockingProcess) -> None:
        self._process = process

    def __repr__(self) -> str:
        return f"<hcsshim.Process {self._process.system_id}:{self._process.pid}>"

    def _failing(self) -> AbstractContextManager[None]:
        return raising(lambda err: _process_error(err, self))

    def pid(self) -> int:
        """The process's id in its container."""
        return self._process.pid

    def kill(self) -> None:
        """Terminate the process without waiting; a ProcessError wrapping ErrElementNotFound when nothing was
        delivered."""
        with self._failing():
            found = self._process.kill()
        if not found:
            raise ProcessError(self, "hcsshim::Process::Kill", Errno(ErrElementNotFound))

    def wait(self) -> None:
        """Until the process exits."""
        self._wait(None)

    def wait_timeout(self, timeout: float) -> None:
        """As wait, giving up after `timeout` seconds with a ProcessError wrapping ErrTimeout."""
        self._wait(timeout)

    def _wait(self, timeout: float | None) -> None:
        with self._failing():
            try:
                self._process.wait(timeout)
            except TimeoutError:
                raise ProcessError(self, "hcsshim::Process::Wait", ErrTimeout()) from None

    def exit_code(self) -> int:
        """The exit code of the exited process."""
        with self._failing():
            return self._process.exit_code()

    def resize_console(self, width: int, height: int) -> None:
        with self._failing():
            self._process.resize_console(width, height)

    def stdio(self) -> Stdio:
        """(stdin, stdout, stderr) for the caller to use and close (upstream's StdioLegacy)."""
        with self._failing():
            return self._process.stdio_legacy()

    def close_stdin(self) -> None:
        with self._failing():
            self._process.close_stdin()

    def close(self) -> None:
        """Release the process's handle without killing it."""
        with self._failing():
            self._process.close()
