"""HCS errors (upstream internal/hcs/errors.go and the root package's constants): the codes, the sentinel errors,
HcsError/SystemError/ProcessError, the ResultError document and the is_* predicates.

One HRESULT hierarchy: everything here that carries a code is an hcsshim.bridge.wire.HResultError, the same
exception the bridge raises, so a code from HCS, from the bridge or from a backend is tested the same way.

* **Codes.** Upstream's ``Err*`` syscall.Errno values are ints under upstream's names (`ErrElementNotFound` =
  0x490, `ErrComputeSystemDoesNotExist` = 0xC037010E, ...), in the folded form the bindings report (spec 1.1:
  an HRESULT of facility WIN32, ``0x8007xxxx``, becomes its Win32 code; `win32_from_hresult`). `Errno(code)`
  raises one: an HResultError whose `hresult` is the full HRESULT (0x80070490) and `code` the folded value.
* **Sentinels.** Upstream's errors.New values are exception classes with upstream's messages
  (`ErrAlreadyClosed`, `ErrTimeout`, ...), all SentinelError; `ErrTimeout` is also a TimeoutError.
* **Wrappers.** ``HcsError(op, err, events)``, ``SystemError(id, op, err, events)`` and
  ``ProcessError(system_id, pid, op, err, events)`` word their message as upstream does (``"start c1: <err>"``,
  then one ``[Event Detail: ...]`` line per ErrorEvent) and take their HRESULT from `err` (E_FAIL when it has
  none). `make_hcs_error`, `make_system_error` and `make_process_error` do not double-wrap.
* **Predicates.** `is_not_exist(err)` and the others hold when `err` or anything it wraps matches upstream's
  codes or sentinels (`is_any`). Unwrapping hook: an exception wraps what its `inner` attribute holds (the three
  wrappers here, and the root package's ContainerError/ProcessError) and its ``__cause__`` (``raise ... from``,
  Python's ``%w``). A wrapper is matched only through what it wraps. An exception carries a code when it has an
  int `hresult` (HResultError, hcsshim.hcs.win32's Win32Error) or `winerror` attribute; codes compare folded.

Messages of the codes are texts of our own (on Windows the system's message table words them its way).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

from hcsshim.bridge.wire import (
    E_FAIL,
    ERROR_NOT_FOUND,
    VMCOMPUTE_INVALID_JSON,
    VMCOMPUTE_INVALID_STATE,
    VMCOMPUTE_SYSTEM_ALREADY_STOPPED,
    VMCOMPUTE_SYSTEM_NOT_FOUND,
    VMCOMPUTE_UNKNOWN_MESSAGE,
    HResultError,
    hresult_name,
    uint32,
)
from hcsshim.gojson import I32, STR, U16, U32, Struct, field, list_of, loads, value

__all__ = [
    "ERROR_GEN_FAILURE",
    "ERROR_SHUTDOWN_IN_PROGRESS",
    "HCS_E_OPERATION_TIMEOUT",
    "WSAEINVAL",
    "ErrAlreadyClosed",
    "ErrComputeSystemDoesNotExist",
    "ErrElementNotFound",
    "ErrHandleClose",
    "ErrInvalidData",
    "ErrInvalidHandle",
    "ErrInvalidNotificationType",
    "ErrInvalidProcessState",
    "ErrInvalidState",
    "ErrNotSupported",
    "ErrOperationDenied",
    "ErrPlatformNotSupported",
    "ErrProcNotFound",
    "ErrProcessAlreadyStopped",
    "ErrTimeout",
    "ErrUnexpectedContainerExit",
    "ErrUnexpectedProcessAbort",
    "ErrUnexpectedValue",
    "ErrVmcomputeAlreadyStopped",
    "ErrVmcomputeInvalidJSON",
    "ErrVmcomputeOperationAccessIsDenied",
    "ErrVmcomputeOperationInvalidState",
    "ErrVmcomputeOperationPending",
    "ErrVmcomputeSystemAlreadyStopped",
    "ErrVmcomputeUnexpectedExit",
    "ErrVmcomputeUnknownMessage",
    "Errno",
    "ErrorEvent",
    "HcsError",
    "ProcessError",
    "ResultError",
    "SentinelError",
    "SystemError",
    "TimeoutInfinite",
    "WaitErrExecFailed",
    "code_message",
    "hresult_from_win32",
    "is_access_is_denied",
    "is_already_closed",
    "is_already_stopped",
    "is_any",
    "is_error_invalid_handle",
    "is_not_exist",
    "is_not_supported",
    "is_operation_invalid_state",
    "is_pending",
    "is_timeout",
    "make_hcs_error",
    "make_process_error",
    "make_system_error",
    "parse_result_error",
    "unwrap",
    "win32_from_hresult",
]


# -- the folding rule -----------------------------------------------------------------------------------------

_FACILITY_MASK = 0x1FFF0000
_FACILITY_WIN32 = 0x00070000


def win32_from_hresult(hr: int) -> int:
    """The code upstream reports for an HRESULT (signed or unsigned): a FACILITY_WIN32 one (``0x8007xxxx``,
    severity and customer bits ignored) folds to its Win32 code, 0x80070490 -> 0x490; any other value is kept
    whole as an unsigned 32-bit number (0xC0370103)."""
    hr = uint32(hr)
    if hr & _FACILITY_MASK == _FACILITY_WIN32:
        return hr & 0xFFFF
    return hr


def hresult_from_win32(code: int) -> int:
    """HRESULT_FROM_WIN32: a Win32 code as its FACILITY_WIN32 HRESULT (0 and HRESULTs are returned as is)."""
    code = uint32(code)
    if code == 0 or code & 0x80000000:
        return code
    return 0x80070000 | (code & 0xFFFF)


# -- codes ----------------------------------------------------------------------------------------------------

ErrComputeSystemDoesNotExist = VMCOMPUTE_SYSTEM_NOT_FOUND  # 0xC037010E: no compute system with that id
ErrElementNotFound = win32_from_hresult(ERROR_NOT_FOUND)  # 0x490: the object (or process) does not exist
ErrNotSupported = 0x32  # ERROR_NOT_SUPPORTED
ErrInvalidData = 0xD  # ERROR_INVALID_DATA: a request HCS finds invalid or does not support
ErrVmcomputeAlreadyStopped = VMCOMPUTE_SYSTEM_ALREADY_STOPPED  # 0xC0370110: shutdown/terminate of a stopped system
ErrVmcomputeSystemAlreadyStopped = 0x80370110  # the HRESULT form: the system is no longer running
ErrVmcomputeOperationPending = 0xC0370103  # the call completes asynchronously
ErrVmcomputeOperationInvalidState = 0xC0370105  # the system is not in a state for the operation
ErrInvalidState = VMCOMPUTE_INVALID_STATE  # 0x80370105: HCS_E_INVALID_STATE, as the v2 API returns it
HCS_E_OPERATION_TIMEOUT = 0x80370118  # v2: HcsWaitForOperationResult's wait elapsed
ErrProcNotFound = 0x7F  # ERROR_PROC_NOT_FOUND: a DLL lacks the export
ErrVmcomputeOperationAccessIsDenied = 0x5  # ERROR_ACCESS_DENIED (RS1/RS2 enumeration race)
ErrVmcomputeInvalidJSON = VMCOMPUTE_INVALID_JSON  # 0xC037010D
ErrVmcomputeUnknownMessage = VMCOMPUTE_UNKNOWN_MESSAGE  # 0xC037010B
ErrVmcomputeUnexpectedExit = 0xC0370106  # the system exited unexpectedly
ErrProcessAlreadyStopped = 0x8037011F  # kill of a process that has exited
ErrInvalidHandle = 0x6  # ERROR_INVALID_HANDLE

# The root package's constants.
WaitErrExecFailed = 32767
ERROR_GEN_FAILURE = 31
ERROR_SHUTDOWN_IN_PROGRESS = 1115
WSAEINVAL = 10022
TimeoutInfinite = 0xFFFFFFFF

_MESSAGES = {
    ErrComputeSystemDoesNotExist: "The compute system does not exist.",
    ErrElementNotFound: "Element not found.",
    ErrNotSupported: "The request is not supported.",
    ErrInvalidData: "The data is invalid.",
    ErrVmcomputeAlreadyStopped: "The compute system is already stopped.",
    ErrVmcomputeSystemAlreadyStopped: "The compute system is not running.",
    ErrVmcomputeOperationPending: "The operation is pending.",
    ErrVmcomputeOperationInvalidState: "The compute system is in an invalid state for the operation.",
    ErrInvalidState: "The operation is not valid in the compute system's current state.",
    HCS_E_OPERATION_TIMEOUT: "The operation timed out.",
    ErrProcNotFound: "The specified procedure could not be found.",
    ErrVmcomputeOperationAccessIsDenied: "Access is denied.",
    ErrVmcomputeInvalidJSON: "The JSON document is invalid.",
    ErrVmcomputeUnknownMessage: "The message is unknown to the compute system.",
    ErrVmcomputeUnexpectedExit: "The compute system exited unexpectedly.",
    ErrProcessAlreadyStopped: "The process has already exited.",
    ErrInvalidHandle: "The handle is invalid.",
    ERROR_GEN_FAILURE: "A device attached to the system is not functioning.",
    ERROR_SHUTDOWN_IN_PROGRESS: "A system shutdown is in progress.",
    WSAEINVAL: "An invalid argument was supplied.",
}


def code_message(code: int) -> str:
    """The text of a code (an HRESULT or a folded code): ours for the codes above, else the HRESULT in hex."""
    folded = win32_from_hresult(code)
    return _MESSAGES.get(folded) or hresult_name(hresult_from_win32(folded))


class Errno(HResultError):
    """One HCS or Win32 code raised as an exception (upstream's syscall.Errno): `code` is the folded value
    (0x490), `hresult` the full HRESULT (0x80070490); str() is the code's message."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = win32_from_hresult(code)
        super().__init__(hresult_from_win32(self.code), message or code_message(self.code))

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"Errno({self.code:#x})"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.code, self.message))


# -- sentinels ------------------------------------------------------------------------------------------------


class SentinelError(Exception):
    """An upstream errors.New value: a condition with a fixed message and no code (raise the class)."""

    MESSAGE: ClassVar[str] = ""

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.MESSAGE)


class ErrHandleClose(SentinelError):
    """The handle that generates the notification being waited on was closed."""

    MESSAGE = "hcsshim: the handle generating this notification has been closed"


class ErrAlreadyClosed(SentinelError):
    """The handle was already closed by Close."""

    MESSAGE = "hcsshim: the handle has already been closed"


class ErrInvalidNotificationType(SentinelError):
    MESSAGE = "hcsshim: invalid notification type"


class ErrInvalidProcessState(SentinelError):
    MESSAGE = "the process is in an invalid state for the attempted operation"


class ErrTimeout(SentinelError, TimeoutError):
    """Waiting for a notification timed out (also a TimeoutError)."""

    MESSAGE = "hcsshim: timeout waiting for notification"


class ErrUnexpectedContainerExit(SentinelError):
    """The container exited while another notification was awaited."""

    MESSAGE = "unexpected container exit"


class ErrUnexpectedProcessAbort(SentinelError):
    """The connection to the compute service was lost while a notification was awaited."""

    MESSAGE = "lost communication with compute service"


class ErrUnexpectedValue(SentinelError):
    MESSAGE = "unexpected value returned from hcs"


class ErrOperationDenied(SentinelError):
    MESSAGE = "operation denied"


class ErrPlatformNotSupported(SentinelError):
    MESSAGE = "unsupported platform request"


# -- the ResultError document ---------------------------------------------------------------------------------


class ErrorEvent(Struct):
    """One event of an HCS result document; str() is upstream's ``[Event Detail: ...]`` text."""

    message: str = field("Message", STR)
    stack_trace: str = field("StackTrace", STR)
    provider: str = field("Provider", STR)
    event_id: int = field("EventId", U16)
    flags: int = field("Flags", U32)
    source: str = field("Source", STR)

    def __str__(self) -> str:
        text = "[Event Detail: " + self.message
        if self.stack_trace:
            text += " Stack Trace: " + self.stack_trace
        if self.provider:
            text += " Provider: " + self.provider
        if self.event_id:
            text += f" EventID: {self.event_id}"
        if self.flags:
            text += f" flags: {self.flags}"
        if self.source:
            text += " Source: " + self.source
        return text + "]"


class ResultError(Struct):
    """The result document most HCS calls return: the HRESULT (an int32), a message and the events."""

    error: int = field("Error", I32, omitempty=False)
    error_message: str = field("ErrorMessage", STR, omitempty=False)
    error_events: list[ErrorEvent] = field("ErrorEvents", list_of(value(ErrorEvent)))


def parse_result_error(json_text: str | bytes | None) -> tuple[int, str, list[ErrorEvent]]:
    """(hresult as unsigned 32-bit, message, events) of an HCS result document; (0, "", []) when there is none
    (None or empty text). A document that is not JSON or does not fit raises DecodeError (a ValueError) naming
    "HCS result document"."""
    if not json_text or not json_text.strip():
        return 0, "", []
    doc = loads(json_text, ResultError, where="HCS result document")
    return uint32(doc.error), doc.error_message, doc.error_events


# -- unwrapping and matching ----------------------------------------------------------------------------------


def _wrapped(err: BaseException) -> list[BaseException]:
    out = []
    inner = getattr(err, "inner", None)
    if isinstance(inner, BaseException):
        out.append(inner)
    if err.__cause__ is not None and err.__cause__ is not inner:
        out.append(err.__cause__)
    return out


def unwrap(err: BaseException | None) -> Iterator[BaseException]:
    """`err` and everything it wraps (its `inner`, its ``__cause__``, theirs, ...), depth first, each once."""
    seen: set[int] = set()
    stack = [] if err is None else [err]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend(reversed(_wrapped(e)))


def _code(err: BaseException) -> int | None:
    """The folded code an exception carries, None when it has none or wraps another (a wrapper's code is its
    inner's, matched there)."""
    if isinstance(getattr(err, "inner", None), BaseException):
        return None
    for attr in ("hresult", "winerror"):
        v = getattr(err, attr, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return win32_from_hresult(v)
    return None


Target = int | type[BaseException] | BaseException


def _matches(err: BaseException, target: Target) -> bool:
    if isinstance(target, type):
        return isinstance(err, target)
    if isinstance(target, BaseException):
        if err is target:
            return True
        code = _code(target)
        return code is not None and _code(err) == code
    return _code(err) == win32_from_hresult(target)


def is_any(err: BaseException | None, *targets: Target) -> bool:
    """Whether `err` or anything it wraps is one of `targets` (upstream's IsAny, a vectorised errors.Is): a code
    (compared folded: 0x80070490 is 0x490), an exception class (isinstance) or an exception (itself, or its
    code)."""
    return any(_matches(e, t) for e in unwrap(err) for t in targets)


def is_not_exist(err: BaseException | None) -> bool:
    """The compute system or process does not exist (ErrComputeSystemDoesNotExist, ErrElementNotFound; the latter
    may also mean the process exited, so is_already_stopped holds too)."""
    return is_any(err, ErrComputeSystemDoesNotExist, ErrElementNotFound)


def is_error_invalid_handle(err: BaseException | None) -> bool:
    """The operation used a handle that is invalid or closed (ErrInvalidHandle)."""
    return is_any(err, ErrInvalidHandle)


def is_already_closed(err: BaseException | None) -> bool:
    """The system or process was already closed by its close method (ErrAlreadyClosed)."""
    return is_any(err, ErrAlreadyClosed)


def is_pending(err: BaseException | None) -> bool:
    """The operation is completing in the background (ErrVmcomputeOperationPending)."""
    return is_any(err, ErrVmcomputeOperationPending)


def is_timeout(err: BaseException | None) -> bool:
    """A wait timed out: ErrTimeout or any TimeoutError (Python's net.Error.Timeout()) in the chain."""
    return is_any(err, ErrTimeout, TimeoutError)


def is_already_stopped(err: BaseException | None) -> bool:
    """The system or process has already stopped (ErrVmcomputeAlreadyStopped, ErrVmcomputeSystemAlreadyStopped,
    ErrProcessAlreadyStopped, ErrElementNotFound)."""
    return is_any(err, ErrVmcomputeAlreadyStopped, ErrVmcomputeSystemAlreadyStopped, ErrProcessAlreadyStopped,
                  ErrElementNotFound)


def is_not_supported(err: BaseException | None) -> bool:
    """The platform does not understand or support the request (ErrVmcomputeInvalidJSON, ErrInvalidData,
    ErrNotSupported, ErrVmcomputeUnknownMessage)."""
    return is_any(err, ErrVmcomputeInvalidJSON, ErrInvalidData, ErrNotSupported, ErrVmcomputeUnknownMessage)


def is_operation_invalid_state(err: BaseException | None) -> bool:
    """ErrVmcomputeOperationInvalidState (0xC0370105; not the v2 form ErrInvalidState, as upstream)."""
    return is_any(err, ErrVmcomputeOperationInvalidState)


def is_access_is_denied(err: BaseException | None) -> bool:
    """ErrVmcomputeOperationAccessIsDenied (ERROR_ACCESS_DENIED)."""
    return is_any(err, ErrVmcomputeOperationAccessIsDenied)


# -- wrappers -------------------------------------------------------------------------------------------------


def _as_exception(err: BaseException | int) -> BaseException:
    return Errno(err) if isinstance(err, int) else err


def _details(err: BaseException, events: Sequence[ErrorEvent]) -> str:
    return str(err) + "".join("\n" + str(ev) for ev in events)


class HcsError(HResultError):
    """An HCS operation failed: `op` ("CreateComputeSystem", "start", ...), `err` (what failed; `inner` too, for
    the predicates; an int code becomes an Errno) and the ErrorEvents HCS returned. The HRESULT is err's (E_FAIL
    when err has none); the message is ``"<op>: <err>"`` and one line per event."""

    def __init__(self, op: str, err: BaseException | int, events: Sequence[ErrorEvent] = ()) -> None:
        self.op = op
        self.err = _as_exception(err)
        self.events = list(events)
        code = next((c for e in unwrap(self.err) if (c := _code(e)) is not None), None)
        hresult = E_FAIL if code is None else hresult_from_win32(code)
        records = getattr(self.err, "records", None)
        super().__init__(hresult, self._text(), records if isinstance(records, list) else None)

    @property
    def inner(self) -> BaseException:
        return self.err

    def _text(self) -> str:
        return f"{self.op}: {_details(self.err, self.events)}"

    def timeout(self) -> bool:
        """Whether the wrapped error is a timeout (upstream's net.Error Timeout())."""
        return is_timeout(self.err)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.op, self.err, self.events))


class SystemError(HcsError):  # upstream's name: shadows the builtin within this module only
    """An operation on a compute system failed: its message names the system, ``"<op> <id>: <err>"``."""

    def __init__(self, id: str, op: str, err: BaseException | int, events: Sequence[ErrorEvent] = ()) -> None:
        self.id = id
        super().__init__(op, err, events)

    def _text(self) -> str:
        return f"{self.op} {self.id}: {_details(self.err, self.events)}"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.id, self.op, self.err, self.events))


class ProcessError(HcsError):
    """An operation on a process failed: its message names the system and the pid, ``"<op> <id>:<pid>: <err>"``."""

    def __init__(self, system_id: str, pid: int, op: str, err: BaseException | int,
                 events: Sequence[ErrorEvent] = ()) -> None:
        self.system_id = system_id
        self.pid = pid
        super().__init__(op, err, events)

    def _text(self) -> str:
        return f"{self.op} {self.system_id}:{self.pid}: {_details(self.err, self.events)}"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.system_id, self.pid, self.op, self.err, self.events))


def make_hcs_error(op: str, err: BaseException | int, events: Sequence[ErrorEvent] = ()) -> BaseException:
    """HcsError(op, err, events), or err itself when it already is (or wraps) an HcsError."""
    err = _as_exception(err)
    if any(isinstance(e, HcsError) for e in unwrap(err)):
        return err
    return HcsError(op, err, events)


def make_system_error(id: str, op: str, err: BaseException | int,
                      events: Sequence[ErrorEvent] = ()) -> BaseException:
    """SystemError(id, op, err, events), or err itself when it already is (or wraps) a SystemError."""
    err = _as_exception(err)
    if any(isinstance(e, SystemError) for e in unwrap(err)):
        return err
    return SystemError(id, op, err, events)


def make_process_error(system_id: str, pid: int, op: str, err: BaseException | int,
                       events: Sequence[ErrorEvent] = ()) -> BaseException:
    """ProcessError(system_id, pid, op, err, events), or err itself when it already is (or wraps) one."""
    err = _as_exception(err)
    if any(isinstance(e, ProcessError) for e in unwrap(err)):
        return err
    return ProcessError(system_id, pid, op, err, events)
