"""The C types of the HCS headers (ComputeCore.h, ComputeDefs.h and vmcompute's): scalars, handles, structs and
callback prototypes, with their Python-side values.

Handles are opaque pointers; in Python they are plain ints (0 for NULL), typed with NewTypes so a system handle is
not passed where an operation is expected. HCS_PROCESS_INFORMATION is shared by both APIs (uint32 pid, 4 bytes of
padding, three HANDLEs: 32 bytes on x64). HRESULT is declared c_int32, never c_long (64-bit on Linux).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import NewType

from hcsshim.hcs.win32.loader import FUNCTYPE
from hcsshim.hcs.win32.strings import PCWSTR

__all__ = [
    "DWORD",
    "HANDLE",
    "HCS_CALLBACK",
    "HCS_EVENT",
    "HCS_EVENT_CALLBACK",
    "HCS_NOTIFICATION_CALLBACK",
    "HCS_OPERATION",
    "HCS_OPERATION_COMPLETION",
    "HCS_PROCESS",
    "HCS_PROCESS_INFORMATION",
    "HCS_SYSTEM",
    "HRESULT",
    "INFINITE",
    "HcsCallback",
    "HcsOperation",
    "HcsProcess",
    "HcsSystem",
    "ProcessInformation",
    "handle_value",
]

HRESULT = ctypes.c_int32
DWORD = ctypes.c_uint32
HANDLE = ctypes.c_void_p
HCS_OPERATION = ctypes.c_void_p
HCS_SYSTEM = ctypes.c_void_p
HCS_PROCESS = ctypes.c_void_p
HCS_CALLBACK = ctypes.c_void_p  # vmcompute's callback registration handle

INFINITE = 0xFFFFFFFF  # a timeout in milliseconds that never expires

HcsOperation = NewType("HcsOperation", int)
HcsSystem = NewType("HcsSystem", int)
HcsProcess = NewType("HcsProcess", int)
HcsCallback = NewType("HcsCallback", int)


def handle_value(handle: ctypes.c_void_p | int | None) -> int:
    """A handle (c_void_p, int or None) as an int, 0 for NULL."""
    if isinstance(handle, ctypes.c_void_p):
        return handle.value or 0
    return handle or 0


class HCS_PROCESS_INFORMATION(ctypes.Structure):  # the C name
    """The pid and the stdio pipe handles of a process HCS started (HcsProcessInformation in vmcompute)."""

    _fields_ = [
        ("ProcessId", DWORD),
        ("Reserved", DWORD),
        ("StdInput", HANDLE),
        ("StdOutput", HANDLE),
        ("StdError", HANDLE),
    ]


class HCS_EVENT(ctypes.Structure):  # the C name
    """One notification of a compute system, process or operation: its HCS_EVENT_TYPE and JSON data."""

    _fields_ = [
        ("Type", DWORD),
        ("EventData", PCWSTR),
        ("Operation", HCS_OPERATION),
    ]


# void CALLBACK (HCS_OPERATION operation, void* context): an operation completed.
HCS_OPERATION_COMPLETION = FUNCTYPE(None, HCS_OPERATION, ctypes.c_void_p)
# void CALLBACK (HCS_EVENT* event, void* context): an event of a system, process or operation.
HCS_EVENT_CALLBACK = FUNCTYPE(None, ctypes.POINTER(HCS_EVENT), ctypes.c_void_p)
# void CALLBACK (DWORD notificationType, void* context, HRESULT status, PCWSTR data): vmcompute's notification.
HCS_NOTIFICATION_CALLBACK = FUNCTYPE(None, DWORD, ctypes.c_void_p, HRESULT, PCWSTR)


@dataclass(frozen=True)
class ProcessInformation:
    """HCS_PROCESS_INFORMATION as Python values: the pid and the stdio handles (0 when HCS made no pipe)."""

    process_id: int
    std_input: int = 0
    std_output: int = 0
    std_error: int = 0

    @classmethod
    def from_struct(cls, info: HCS_PROCESS_INFORMATION) -> ProcessInformation:
        return cls(info.ProcessId, info.StdInput or 0, info.StdOutput or 0, info.StdError or 0)
