"""The HRESULT rule of the HCS bindings (spec 1.1) and the one exception every binding raises, `Win32Error`.

A call fails when its 32-bit return is negative. The error's code follows upstream's generated bindings: an
HRESULT of facility WIN32 (`0x8007xxxx`, ignoring the severity/customer bits) is folded to its plain Win32 code
(`0x80070490` -> `0x490`, ERROR_NOT_FOUND); every other HRESULT is kept whole (`0xC0370103`). When HCS returned a
result document (a JSON ResultError: `Error`, `ErrorMessage`, `ErrorEvents[]`), the error carries it, raw and
parsed.

This module is deliberately small and standalone: the object layer (hcsshim.hcs.errors) maps a Win32Error to its
own HcsError family at the boundary; nothing here knows about those.
"""

from __future__ import annotations

import ctypes
import json
from typing import Any

__all__ = [
    "ERROR_INVALID_PARAMETER",
    "ERROR_MOD_NOT_FOUND",
    "ERROR_NOT_FOUND",
    "ERROR_PROC_NOT_FOUND",
    "ERROR_VMCOMPUTE_OPERATION_PENDING",
    "HCS_E_OPERATION_TIMEOUT",
    "S_OK",
    "MissingExportError",
    "MissingLibraryError",
    "Win32Error",
    "check_hresult",
    "failed",
    "hresult_from_win32",
    "parse_result_document",
    "win32_from_hresult",
]

S_OK = 0
ERROR_INVALID_PARAMETER = 0x57
ERROR_MOD_NOT_FOUND = 0x7E
ERROR_PROC_NOT_FOUND = 0x7F
ERROR_NOT_FOUND = 0x490
# v1: the call was accepted and completes with a notification (vmcompute's "pending").
ERROR_VMCOMPUTE_OPERATION_PENDING = 0xC0370103
# v2: HcsWaitForOperationResult's wait elapsed while HCS still tracks the operation.
HCS_E_OPERATION_TIMEOUT = 0x80370118

_FACILITY_WIN32_MASK = 0x1FFF0000
_FACILITY_WIN32 = 0x00070000

# Messages for the codes these bindings produce themselves (on Windows the system's message table is used too).
_MESSAGES = {
    ERROR_INVALID_PARAMETER: "The parameter is incorrect.",
    ERROR_MOD_NOT_FOUND: "The specified module could not be found.",
    ERROR_PROC_NOT_FOUND: "The specified procedure could not be found.",
    ERROR_NOT_FOUND: "Element not found.",
    ERROR_VMCOMPUTE_OPERATION_PENDING: "The operation is pending (it completes asynchronously).",
    HCS_E_OPERATION_TIMEOUT: "The wait for the operation's result timed out.",
}


def failed(hr: int) -> bool:
    """Whether a 32-bit HRESULT (signed or unsigned) means failure: its signed value is negative."""
    return bool(hr & 0x80000000)


def win32_from_hresult(hr: int) -> int:
    """The error code hcsshim reports for an HRESULT: the Win32 code of a FACILITY_WIN32 HRESULT, else the whole
    (unsigned 32-bit) HRESULT."""
    hr &= 0xFFFFFFFF
    if hr & _FACILITY_WIN32_MASK == _FACILITY_WIN32:
        return hr & 0xFFFF
    return hr


def hresult_from_win32(code: int) -> int:
    """HRESULT_FROM_WIN32: a Win32 code as a FACILITY_WIN32 HRESULT (0 stays 0; an HRESULT is returned as is)."""
    code &= 0xFFFFFFFF
    if code == 0 or code & 0x80000000:
        return code
    return 0x80070000 | (code & 0xFFFF)


def parse_result_document(text: str | None) -> dict[str, Any] | None:
    """The ResultError object of an HCS result document, or None when the text is empty or not a JSON object."""
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _system_message(code: int) -> str:
    format_error = getattr(ctypes, "FormatError", None)  # Windows only
    if format_error is not None:
        try:
            text = str(format_error(code)).strip()
        except (OSError, ValueError):
            text = ""
        if text and not text.startswith("<no description"):
            return text
    return _MESSAGES.get(code, "")


class Win32Error(OSError):
    """A failed HCS call: the function, its HRESULT, the folded code and, when HCS sent one, the result document.

    Attributes: `hresult` (the unsigned 32-bit HRESULT), `win32` (the folded code, upstream's syscall.Errno),
    `function` (the C name of the export), `result_text` (the result document as returned, "" if none) and
    `result_json` (that document parsed, or None). `winerror` mirrors `win32` as on Windows' OSError.
    """

    def __init__(self, hresult: int, function: str, result: str | None = None, message: str | None = None) -> None:
        self.hresult = hresult & 0xFFFFFFFF
        self.win32 = win32_from_hresult(self.hresult)
        self.winerror = self.win32
        self.function = function
        self.result_text = result or ""
        self.result_json = parse_result_document(self.result_text)
        if message is None:
            message = self.error_message or _system_message(self.win32) or "HCS call failed"
        self.message = message
        super().__init__(f"{function}: {message} (0x{self.win32:x})")

    @property
    def error_message(self) -> str:
        """The result document's ErrorMessage ("" when there is none)."""
        value = (self.result_json or {}).get("ErrorMessage")
        return value if isinstance(value, str) else ""

    @property
    def error_events(self) -> list[dict[str, Any]]:
        """The result document's ErrorEvents (Message, StackTrace, Provider, EventId, Flags, Source)."""
        events = (self.result_json or {}).get("ErrorEvents")
        return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.hresult, self.function, self.result_text, self.message))


class MissingLibraryError(Win32Error):
    """The DLL of a binding could not be loaded (ERROR_MOD_NOT_FOUND); `library` names it."""

    def __init__(self, library: str, function: str, detail: str) -> None:
        self.library = library
        self.detail = detail
        super().__init__(hresult_from_win32(ERROR_MOD_NOT_FOUND), function, message=f"cannot load {library}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.library, self.function, self.detail))


class MissingExportError(Win32Error):
    """The DLL loaded but lacks the export (ERROR_PROC_NOT_FOUND), e.g. a function newer than this Windows build."""

    def __init__(self, library: str, function: str) -> None:
        self.library = library
        super().__init__(hresult_from_win32(ERROR_PROC_NOT_FOUND), function,
                         message=f"{library} has no export {function}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.library, self.function))


def check_hresult(hr: int, function: str, result: str | None = None) -> int:
    """Raise Win32Error when `hr` failed; return it (S_OK or a success code) otherwise."""
    if failed(hr):
        raise Win32Error(hr, function, result)
    return hr
