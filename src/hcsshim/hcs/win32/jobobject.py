"""Job objects (upstream internal/jobobject and internal/winapi's job-object bindings): the kernel32.dll and
ntdll.dll functions hcsshim uses on a container's silo, their structures, and `JobObject`, an open job handle.

Only what opening an existing job by name, reading its counters and setting its CPU group affinities need:
NtOpenJobObject (the NT variant upstream uses for the silo's name in the object namespace, `\\Container_<id>`),
QueryInformationJobObject (basic accounting, the process-id list, memory usage, I/O attribution),
SetInformationJobObject (JobObjectGroupInformationEx), CloseHandle, and, for the private working set of the
job's processes, OpenProcess, IsProcessInJob and NtQueryInformationProcess (ProcessVmCounters). Every call blocks.

Failures raise hresult.Win32Error naming the function: a kernel32 call's last error, an ntdll call's NTSTATUS as
RtlNtStatusToDosError converts it, both as FACILITY_WIN32 HRESULTs (so the folded code is the Win32 one).

Loading (hcsshim.hcs.win32.loader): nothing is loaded before the first call. The two libraries are registered in
loader.LIBRARIES when this module is imported, so `loader.set_library("kernel32" | "ntdll", path)` redirects
them (and HCSSHIM_FAKE_KERNEL32 / HCSSHIM_FAKE_NTDLL when first loaded); off Windows the tests point both at
one fake (tests/fakehcs/fakejob.c).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from types import TracebackType

from hcsshim.hcs.win32.cdefs import DWORD, HANDLE, handle_value
from hcsshim.hcs.win32.hresult import Win32Error, hresult_from_win32
from hcsshim.hcs.win32.loader import LIBRARIES, Library, last_error

__all__ = [
    "ERROR_MORE_DATA",
    "GROUP_AFFINITY",
    "JOBOBJECT_BASIC_ACCOUNTING_INFORMATION",
    "JOBOBJECT_IO_ATTRIBUTION_INFORMATION",
    "JOBOBJECT_MEMORY_USAGE_INFORMATION",
    "JOB_OBJECT_ALL_ACCESS",
    "KERNEL32",
    "NTDLL",
    "VM_COUNTERS_EX2",
    "JobObject",
]

KERNEL32 = Library("kernel32", ("kernel32.dll",), "HCSSHIM_FAKE_KERNEL32")
NTDLL = Library("ntdll", ("ntdll.dll",), "HCSSHIM_FAKE_NTDLL")
LIBRARIES.setdefault(KERNEL32.name, KERNEL32)
LIBRARIES.setdefault(NTDLL.name, NTDLL)

JOB_OBJECT_ALL_ACCESS = 0x1F003F
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
# JOBOBJECTINFOCLASS
JOB_OBJECT_BASIC_ACCOUNTING_INFORMATION = 1
JOB_OBJECT_BASIC_PROCESS_ID_LIST = 3
JOB_OBJECT_GROUP_INFORMATION_EX = 14
JOB_OBJECT_MEMORY_USAGE_INFORMATION = 28
JOB_OBJECT_IO_ATTRIBUTION = 42
JOBOBJECT_IO_ATTRIBUTION_CONTROL_ENABLE = 0x1
PROCESS_VM_COUNTERS = 3  # PROCESSINFOCLASS ProcessVmCounters
ERROR_MORE_DATA = 234

BOOL = ctypes.c_int32
NTSTATUS = ctypes.c_uint32
SIZE_T = ctypes.c_size_t  # also ULONG_PTR and KAFFINITY
_LIST_SLOTS = 64  # process ids read in one go; more take a second, larger query


class UNICODE_STRING(ctypes.Structure):
    _fields_ = (("Length", ctypes.c_uint16), ("MaximumLength", ctypes.c_uint16),
                ("Buffer", ctypes.POINTER(ctypes.c_uint16)))


class OBJECT_ATTRIBUTES(ctypes.Structure):
    _fields_ = (("Length", ctypes.c_uint32), ("RootDirectory", HANDLE), ("ObjectName", ctypes.POINTER(UNICODE_STRING)),
                ("Attributes", ctypes.c_uint32), ("SecurityDescriptor", ctypes.c_void_p),
                ("SecurityQualityOfService", ctypes.c_void_p))


class JOBOBJECT_BASIC_ACCOUNTING_INFORMATION(ctypes.Structure):
    """Times are in 100 ns units."""

    _fields_ = (("TotalUserTime", ctypes.c_int64), ("TotalKernelTime", ctypes.c_int64),
                ("ThisPeriodTotalUserTime", ctypes.c_int64), ("ThisPeriodTotalKernelTime", ctypes.c_int64),
                ("TotalPageFaultCount", DWORD), ("TotalProcesses", DWORD), ("ActiveProcesses", DWORD),
                ("TotalTerminatedProcesses", DWORD))


class JOBOBJECT_MEMORY_USAGE_INFORMATION(ctypes.Structure):
    _fields_ = (("JobMemory", ctypes.c_uint64), ("PeakJobMemoryUsed", ctypes.c_uint64))


class JOBOBJECT_IO_ATTRIBUTION_STATS(ctypes.Structure):
    _fields_ = (("IoCount", SIZE_T), ("TotalNonOverlappedQueueTime", ctypes.c_uint64),
                ("TotalNonOverlappedServiceTime", ctypes.c_uint64), ("TotalSize", ctypes.c_uint64))


class JOBOBJECT_IO_ATTRIBUTION_INFORMATION(ctypes.Structure):
    _fields_ = (("ControlFlags", ctypes.c_uint32), ("ReadStats", JOBOBJECT_IO_ATTRIBUTION_STATS),
                ("WriteStats", JOBOBJECT_IO_ATTRIBUTION_STATS))


def _process_id_list(slots: int) -> type[ctypes.Structure]:
    """JOBOBJECT_BASIC_PROCESS_ID_LIST with room for `slots` ids."""
    return type("JOBOBJECT_BASIC_PROCESS_ID_LIST", (ctypes.Structure,), {"_fields_": (
        ("NumberOfAssignedProcesses", DWORD), ("NumberOfProcessIdsInList", DWORD),
        ("ProcessIdList", SIZE_T * slots))})


class GROUP_AFFINITY(ctypes.Structure):
    _fields_ = (("Mask", SIZE_T), ("Group", ctypes.c_uint16), ("Reserved", ctypes.c_uint16 * 3))


class VM_COUNTERS_EX2(ctypes.Structure):
    _fields_ = (("PeakVirtualSize", SIZE_T), ("VirtualSize", SIZE_T), ("PageFaultCount", ctypes.c_uint32),
                ("PeakWorkingSetSize", SIZE_T), ("WorkingSetSize", SIZE_T), ("QuotaPeakPagedPoolUsage", SIZE_T),
                ("QuotaPagedPoolUsage", SIZE_T), ("QuotaPeakNonPagedPoolUsage", SIZE_T),
                ("QuotaNonPagedPoolUsage", SIZE_T), ("PagefileUsage", SIZE_T), ("PeakPagefileUsage", SIZE_T),
                ("PrivateUsage", SIZE_T), ("PrivateWorkingSetSize", SIZE_T), ("SharedCommitUsage", SIZE_T))


_PTR, _OUT_HANDLE = ctypes.c_void_p, ctypes.POINTER(HANDLE)
_NtOpenJobObject = NTDLL.export("NtOpenJobObject", NTSTATUS, _OUT_HANDLE, DWORD, ctypes.POINTER(OBJECT_ATTRIBUTES))
_NtQueryInformationProcess = NTDLL.export("NtQueryInformationProcess", NTSTATUS, HANDLE, DWORD, _PTR, DWORD,
                                          ctypes.POINTER(DWORD))
_RtlNtStatusToDosError = NTDLL.export("RtlNtStatusToDosError", DWORD, NTSTATUS)
_QueryInformationJobObject = KERNEL32.export("QueryInformationJobObject", BOOL, HANDLE, DWORD, _PTR, DWORD,
                                             ctypes.POINTER(DWORD))
_SetInformationJobObject = KERNEL32.export("SetInformationJobObject", BOOL, HANDLE, DWORD, _PTR, DWORD)
_CloseHandle = KERNEL32.export("CloseHandle", BOOL, HANDLE)
_OpenProcess = KERNEL32.export("OpenProcess", HANDLE, DWORD, BOOL, DWORD)
_IsProcessInJob = KERNEL32.export("IsProcessInJob", BOOL, HANDLE, HANDLE, ctypes.POINTER(BOOL))


def _win32_failure(function: str) -> Win32Error:
    """The failure of a kernel32 call that returned FALSE/NULL: its last error."""
    return Win32Error(hresult_from_win32(last_error() or 0x1F), function)  # ERROR_GEN_FAILURE if none was set


def _check_bool(ok: int, function: str) -> None:
    if not ok:
        raise _win32_failure(function)


def _check_status(status: int, function: str) -> None:
    """Raise for a failed NTSTATUS (severity error or warning), converted to its Win32 code."""
    if status & 0x80000000:
        raise Win32Error(hresult_from_win32(int(_RtlNtStatusToDosError(status))), function)


def _unicode_string(text: str) -> UNICODE_STRING:
    """A UNICODE_STRING for `text` (its buffer kept alive by the structure)."""
    data = text.encode("utf-16-le", "surrogatepass")
    if "\x00" in text or len(data) > 0xFFFC:
        raise ValueError(f"job object name not representable as a UNICODE_STRING: {text[:60]!r}")
    buffer = (ctypes.c_uint16 * (len(data) // 2 + 1)).from_buffer_copy(data + b"\x00\x00")
    return UNICODE_STRING(len(data), len(data), ctypes.cast(buffer, ctypes.POINTER(ctypes.c_uint16)))


def _close(handle: int, function: str = "CloseHandle") -> None:
    _check_bool(_CloseHandle(handle), function)


class JobObject:
    """An open job object handle: opened by name (`open`), closed once (`close`, or `with`)."""

    def __init__(self, handle: int, name: str = "") -> None:
        self.handle = handle
        self.name = name

    def __repr__(self) -> str:
        return f"<JobObject {self.name or hex(self.handle)}{' closed' if not self.handle else ''}>"

    @classmethod
    def open(cls, name: str, access: int = JOB_OBJECT_ALL_ACCESS) -> JobObject:
        """NtOpenJobObject: the job named `name` in the object namespace (a silo's is `\\Container_<id>`)."""
        unicode = _unicode_string(name)
        attributes = OBJECT_ATTRIBUTES(ctypes.sizeof(OBJECT_ATTRIBUTES), None, ctypes.pointer(unicode), 0, None, None)
        handle = HANDLE()
        _check_status(_NtOpenJobObject(ctypes.byref(handle), access, ctypes.byref(attributes)), "NtOpenJobObject")
        return cls(handle_value(handle), name)

    def close(self) -> None:
        """CloseHandle (idempotent)."""
        handle, self.handle = self.handle, 0
        if handle:
            _close(handle)

    def __enter__(self) -> JobObject:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _query(self, info_class: int, info: ctypes.Structure) -> int:
        """QueryInformationJobObject into `info`; the length the call returned."""
        if not self.handle:
            raise ValueError(f"{self!r}: the handle has already been closed")
        returned = DWORD()
        _check_bool(_QueryInformationJobObject(self.handle, info_class, ctypes.byref(info), ctypes.sizeof(info),
                                               ctypes.byref(returned)), "QueryInformationJobObject")
        return returned.value

    def basic_accounting(self) -> JOBOBJECT_BASIC_ACCOUNTING_INFORMATION:
        """JobObjectBasicAccountingInformation: user and kernel time (100 ns), page faults, process counts."""
        info = JOBOBJECT_BASIC_ACCOUNTING_INFORMATION()
        self._query(JOB_OBJECT_BASIC_ACCOUNTING_INFORMATION, info)
        return info

    def memory_usage(self) -> JOBOBJECT_MEMORY_USAGE_INFORMATION:
        """JobObjectMemoryUsageInformation: the job's committed memory and its peak."""
        info = JOBOBJECT_MEMORY_USAGE_INFORMATION()
        self._query(JOB_OBJECT_MEMORY_USAGE_INFORMATION, info)
        return info

    def io_attribution(self) -> JOBOBJECT_IO_ATTRIBUTION_INFORMATION:
        """JobObjectIoAttribution: read and write counts and sizes (fails unless I/O tracking is on for the job,
        as HCS has it for a silo)."""
        info = JOBOBJECT_IO_ATTRIBUTION_INFORMATION(ControlFlags=JOBOBJECT_IO_ATTRIBUTION_CONTROL_ENABLE)
        self._query(JOB_OBJECT_IO_ATTRIBUTION, info)
        return info

    def pids(self) -> list[int]:
        """JobObjectBasicProcessIdList: the ids of the processes in the job (queried again, larger, when they do
        not fit)."""
        slots = _LIST_SLOTS
        while True:
            info = _process_id_list(slots)()
            try:
                self._query(JOB_OBJECT_BASIC_PROCESS_ID_LIST, info)
            except Win32Error as err:
                assigned = int(info.NumberOfAssignedProcesses)  # type: ignore[attr-defined]
                if err.win32 != ERROR_MORE_DATA or assigned <= slots:
                    raise
                slots = assigned + _LIST_SLOTS  # room for processes that join meanwhile
                continue
            count = int(info.NumberOfProcessIdsInList)  # type: ignore[attr-defined]
            return [int(pid) for pid in info.ProcessIdList[:count]]  # type: ignore[attr-defined]

    def private_working_set(self) -> int:
        """The private working set of the job's processes, summed (upstream's QueryPrivateWorkingSet): each
        process opened with limited query access and checked to still be in the job (a pid may have been reused);
        one that cannot be opened has exited and counts nothing."""
        total = 0
        for pid in self.pids():
            process = handle_value(_OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid))
            if not process:
                continue
            try:
                total += self._private_working_set_of(process)
            finally:
                _close(process)
        return total

    def _private_working_set_of(self, process: int) -> int:
        in_job = BOOL()
        _check_bool(_IsProcessInJob(process, self.handle, ctypes.byref(in_job)), "IsProcessInJob")
        if not in_job.value:
            return 0
        counters = VM_COUNTERS_EX2()
        _check_status(_NtQueryInformationProcess(process, PROCESS_VM_COUNTERS, ctypes.byref(counters),
                                                 ctypes.sizeof(counters), None), "NtQueryInformationProcess")
        return int(counters.PrivateWorkingSetSize)

    def set_group_affinities(self, affinities: Sequence[tuple[int, int]]) -> None:
        """SetInformationJobObject(JobObjectGroupInformationEx): restrict the job to the processors of each
        (group, mask); at least one, a group in 0..65535, a mask a ULONG_PTR."""
        if not affinities:
            raise ValueError("affinities must be non-empty")
        limit = 1 << (8 * ctypes.sizeof(SIZE_T))
        array = (GROUP_AFFINITY * len(affinities))()
        for slot, (group, mask) in zip(array, affinities, strict=True):
            if not 0 <= group <= 0xFFFF or not 0 <= mask < limit:
                raise ValueError(f"invalid processor group affinity: group {group}, mask {mask:#x}")
            slot.Group, slot.Mask = group, mask
        if not self.handle:
            raise ValueError(f"{self!r}: the handle has already been closed")
        _check_bool(_SetInformationJobObject(self.handle, JOB_OBJECT_GROUP_INFORMATION_EX, ctypes.byref(array),
                                             ctypes.sizeof(array)), "SetInformationJobObject")
