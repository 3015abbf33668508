"""vmcompute.dll, the HCS v1 API: its 26 compute-system and process exports (spec 1.2), each a thin blocking call.

Every v1 call returns its own result document through a `PWSTR* result` out-parameter; the bindings free it (and
any data out-parameter) with CoTaskMemFree and raise hresult.Win32Error carrying it when the HRESULT failed. A
result document that comes with success is dropped, as upstream only reads it on failure.

The seven calls that may complete asynchronously (create, start, shutdown, terminate, pause, resume, save) do not
raise for ERROR_VMCOMPUTE_OPERATION_PENDING: they return `pending=True`, and the caller waits for the completion
notification (NOTIFICATION_*) on the callback registered for the system. Create returns the handle with it.

Notification callbacks take a Python handler `handler(Notification)`; the binding keeps it in callbacks.REGISTRY
under an integer context until the registration is undone or the system/process handle is closed.
"""

from __future__ import annotations

import ctypes
from typing import Any

from hcsshim.hcs.win32.callbacks import NOTIFICATION_TRAMPOLINE, REGISTRY, NotificationHandler
from hcsshim.hcs.win32.cdefs import (
    DWORD,
    HANDLE,
    HCS_CALLBACK,
    HCS_NOTIFICATION_CALLBACK,
    HCS_PROCESS,
    HCS_PROCESS_INFORMATION,
    HCS_SYSTEM,
    HRESULT,
    HcsCallback,
    HcsProcess,
    HcsSystem,
    ProcessInformation,
    handle_value,
)
from hcsshim.hcs.win32.hresult import ERROR_VMCOMPUTE_OPERATION_PENDING, Win32Error, check_hresult
from hcsshim.hcs.win32.loader import VMCOMPUTE, Export
from hcsshim.hcs.win32.strings import PCWSTR, OutString, take_all, wstr

# hcsNotification: the notification types a v1 callback receives
NOTIFICATION_INVALID = 0x00000000
NOTIFICATION_SYSTEM_EXITED = 0x00000001
NOTIFICATION_SYSTEM_CREATE_COMPLETED = 0x00000002
NOTIFICATION_SYSTEM_START_COMPLETED = 0x00000003
NOTIFICATION_SYSTEM_PAUSE_COMPLETED = 0x00000004
NOTIFICATION_SYSTEM_RESUME_COMPLETED = 0x00000005
NOTIFICATION_SYSTEM_CRASH_REPORT = 0x00000006
NOTIFICATION_SYSTEM_SILO_JOB_CREATED = 0x00000007
NOTIFICATION_SYSTEM_SAVE_COMPLETED = 0x00000008
NOTIFICATION_SYSTEM_RDP_ENHANCED_MODE_STATE_CHANGED = 0x00000009
NOTIFICATION_SYSTEM_SHUTDOWN_FAILED = 0x0000000A
NOTIFICATION_SYSTEM_GET_PROPERTIES_COMPLETED = 0x0000000B
NOTIFICATION_SYSTEM_MODIFY_COMPLETED = 0x0000000C
NOTIFICATION_SYSTEM_CRASH_INITIATED = 0x0000000D
NOTIFICATION_SYSTEM_GUEST_CONNECTION_CLOSED = 0x0000000E
NOTIFICATION_PROCESS_EXITED = 0x00010000
NOTIFICATION_SERVICE_DISCONNECT = 0x01000000
NOTIFICATION_NAMES = {
    NOTIFICATION_INVALID: "Invalid", NOTIFICATION_SYSTEM_EXITED: "SystemExited",
    NOTIFICATION_SYSTEM_CREATE_COMPLETED: "SystemCreateCompleted",
    NOTIFICATION_SYSTEM_START_COMPLETED: "SystemStartCompleted",
    NOTIFICATION_SYSTEM_PAUSE_COMPLETED: "SystemPauseCompleted",
    NOTIFICATION_SYSTEM_RESUME_COMPLETED: "SystemResumeCompleted",
    NOTIFICATION_SYSTEM_CRASH_REPORT: "SystemCrashReport",
    NOTIFICATION_SYSTEM_SILO_JOB_CREATED: "SystemSiloJobCreated",
    NOTIFICATION_SYSTEM_SAVE_COMPLETED: "SystemSaveCompleted",
    NOTIFICATION_SYSTEM_RDP_ENHANCED_MODE_STATE_CHANGED: "SystemRdpEnhancedModeStateChanged",
    NOTIFICATION_SYSTEM_SHUTDOWN_FAILED: "SystemShutdownFailed",
    NOTIFICATION_SYSTEM_GET_PROPERTIES_COMPLETED: "SystemGetPropertiesCompleted",
    NOTIFICATION_SYSTEM_MODIFY_COMPLETED: "SystemModifyCompleted",
    NOTIFICATION_SYSTEM_CRASH_INITIATED: "SystemCrashInitiated",
    NOTIFICATION_SYSTEM_GUEST_CONNECTION_CLOSED: "SystemGuestConnectionClosed",
    NOTIFICATION_PROCESS_EXITED: "ProcessExited", NOTIFICATION_SERVICE_DISCONNECT: "ServiceDisconnect",
}

_SYS, _PROC, _U32 = HCS_SYSTEM, HCS_PROCESS, DWORD
_OUT = ctypes.POINTER(PCWSTR)
_INFO = ctypes.POINTER(HCS_PROCESS_INFORMATION)
_fn = VMCOMPUTE.export

_HcsEnumerateComputeSystems = _fn("HcsEnumerateComputeSystems", HRESULT, PCWSTR, _OUT, _OUT)
_HcsCreateComputeSystem = _fn("HcsCreateComputeSystem", HRESULT, PCWSTR, PCWSTR, HANDLE, ctypes.POINTER(_SYS), _OUT)
_HcsOpenComputeSystem = _fn("HcsOpenComputeSystem", HRESULT, PCWSTR, ctypes.POINTER(_SYS), _OUT)
_HcsCloseComputeSystem = _fn("HcsCloseComputeSystem", HRESULT, _SYS)
_HcsStartComputeSystem = _fn("HcsStartComputeSystem", HRESULT, _SYS, PCWSTR, _OUT)
_HcsShutdownComputeSystem = _fn("HcsShutdownComputeSystem", HRESULT, _SYS, PCWSTR, _OUT)
_HcsTerminateComputeSystem = _fn("HcsTerminateComputeSystem", HRESULT, _SYS, PCWSTR, _OUT)
_HcsPauseComputeSystem = _fn("HcsPauseComputeSystem", HRESULT, _SYS, PCWSTR, _OUT)
_HcsResumeComputeSystem = _fn("HcsResumeComputeSystem", HRESULT, _SYS, PCWSTR, _OUT)
_HcsSaveComputeSystem = _fn("HcsSaveComputeSystem", HRESULT, _SYS, PCWSTR, _OUT)
_HcsGetComputeSystemProperties = _fn("HcsGetComputeSystemProperties", HRESULT, _SYS, PCWSTR, _OUT, _OUT)
_HcsModifyComputeSystem = _fn("HcsModifyComputeSystem", HRESULT, _SYS, PCWSTR, _OUT)
_HcsGetServiceProperties = _fn("HcsGetServiceProperties", HRESULT, PCWSTR, _OUT, _OUT)
_HcsModifyServiceSettings = _fn("HcsModifyServiceSettings", HRESULT, PCWSTR, _OUT)
_HcsRegisterComputeSystemCallback = _fn("HcsRegisterComputeSystemCallback", HRESULT, _SYS,
                                        HCS_NOTIFICATION_CALLBACK, ctypes.c_void_p, ctypes.POINTER(HCS_CALLBACK))
_HcsUnregisterComputeSystemCallback = _fn("HcsUnregisterComputeSystemCallback", HRESULT, HCS_CALLBACK)
_HcsCreateProcess = _fn("HcsCreateProcess", HRESULT, _SYS, PCWSTR, _INFO, ctypes.POINTER(_PROC), _OUT)
_HcsOpenProcess = _fn("HcsOpenProcess", HRESULT, _SYS, _U32, ctypes.POINTER(_PROC), _OUT)
_HcsCloseProcess = _fn("HcsCloseProcess", HRESULT, _PROC)
_HcsTerminateProcess = _fn("HcsTerminateProcess", HRESULT, _PROC, _OUT)
_HcsSignalProcess = _fn("HcsSignalProcess", HRESULT, _PROC, PCWSTR, _OUT)
_HcsGetProcessInfo = _fn("HcsGetProcessInfo", HRESULT, _PROC, _INFO, _OUT)
_HcsGetProcessProperties = _fn("HcsGetProcessProperties", HRESULT, _PROC, _OUT, _OUT)
_HcsModifyProcess = _fn("HcsModifyProcess", HRESULT, _PROC, PCWSTR, _OUT)
_HcsRegisterProcessCallback = _fn("HcsRegisterProcessCallback", HRESULT, _PROC, HCS_NOTIFICATION_CALLBACK,
                                  ctypes.c_void_p, ctypes.POINTER(HCS_CALLBACK))
_HcsUnregisterProcessCallback = _fn("HcsUnregisterProcessCallback", HRESULT, HCS_CALLBACK)

# Every bound export, by C name.
EXPORTS: dict[str, Export] = {e.name: e for e in globals().copy().values() if isinstance(e, Export)}

_SYSTEM, _PROCESS, _CALLBACK = "vmcompute.system", "vmcompute.process", "vmcompute.callback"


def _call(export: Export, *args: Any, pending_ok: bool = False) -> bool:
    """Call an export whose last parameter is the result document; True when it went pending (if allowed)."""
    result = OutString()
    hr = export(*args, result.ref)
    doc = result.take()
    if pending_ok and hr & 0xFFFFFFFF == ERROR_VMCOMPUTE_OPERATION_PENDING:
        return True
    check_hresult(hr, export.name, doc)
    return False


def _call_data(export: Export, *args: Any) -> str:
    """Call an export ending in (PWSTR* data, PWSTR* result): the data document."""
    data, result = OutString(), OutString()
    hr = export(*args, data.ref, result.ref)
    text, doc = take_all(data, result)
    check_hresult(hr, export.name, doc)
    return text


def _call_handle(export: Export, close: Export, *args: Any, pending_ok: bool = False) -> tuple[int, bool]:
    """Call an export ending in (HANDLE* out, PWSTR* result); a handle left by a failure is closed."""
    handle = ctypes.c_void_p()
    try:
        pending = _call(export, *args, ctypes.byref(handle), pending_ok=pending_ok)
    except Win32Error:
        if handle_value(handle):
            close(handle_value(handle))
        raise
    return handle_value(handle), pending


def _register(export: Export, handle: int, owner_kind: str, handler: NotificationHandler) -> HcsCallback:
    key = REGISTRY.register(handler, owner=(owner_kind, handle))
    callback = ctypes.c_void_p()
    try:
        check_hresult(export(handle, NOTIFICATION_TRAMPOLINE, key, ctypes.byref(callback)), export.name)
    except BaseException:
        REGISTRY.unregister(key)
        raise
    REGISTRY.attach(key, (_CALLBACK, handle_value(callback)))
    return HcsCallback(handle_value(callback))


def _unregister(export: Export, callback: HcsCallback) -> None:
    check_hresult(export(callback), export.name)
    REGISTRY.release((_CALLBACK, callback))


# Compute systems

def enumerate_compute_systems(query: str | None) -> str:
    """HcsEnumerateComputeSystems: the JSON array of the systems matching `query`."""
    return _call_data(_HcsEnumerateComputeSystems, wstr(query))


def create_compute_system(id: str, configuration: str, identity: int = 0) -> tuple[HcsSystem, bool]:
    """HcsCreateComputeSystem: (handle, pending); when pending, wait for SystemCreateCompleted."""
    handle, pending = _call_handle(_HcsCreateComputeSystem, _HcsCloseComputeSystem, wstr(id), wstr(configuration),
                                   identity or None, pending_ok=True)
    return HcsSystem(handle), pending


def open_compute_system(id: str) -> HcsSystem:
    """HcsOpenComputeSystem: a handle to an existing system."""
    return HcsSystem(_call_handle(_HcsOpenComputeSystem, _HcsCloseComputeSystem, wstr(id))[0])


def close_compute_system(system: HcsSystem) -> None:
    """HcsCloseComputeSystem, then drop the callbacks registered on the system."""
    try:
        check_hresult(_HcsCloseComputeSystem(system), "HcsCloseComputeSystem")
    finally:
        REGISTRY.release((_SYSTEM, system))


def start_compute_system(system: HcsSystem, options: str | None = "") -> bool:
    """HcsStartComputeSystem; True when pending (wait for SystemStartCompleted)."""
    return _call(_HcsStartComputeSystem, system, wstr(options), pending_ok=True)


def shutdown_compute_system(system: HcsSystem, options: str | None = "") -> bool:
    """HcsShutdownComputeSystem; True when pending (accepted: completion is SystemExited)."""
    return _call(_HcsShutdownComputeSystem, system, wstr(options), pending_ok=True)


def terminate_compute_system(system: HcsSystem, options: str | None = "") -> bool:
    """HcsTerminateComputeSystem; True when pending (accepted: completion is SystemExited)."""
    return _call(_HcsTerminateComputeSystem, system, wstr(options), pending_ok=True)


def pause_compute_system(system: HcsSystem, options: str | None = "") -> bool:
    """HcsPauseComputeSystem; True when pending (wait for SystemPauseCompleted)."""
    return _call(_HcsPauseComputeSystem, system, wstr(options), pending_ok=True)


def resume_compute_system(system: HcsSystem, options: str | None = "") -> bool:
    """HcsResumeComputeSystem; True when pending (wait for SystemResumeCompleted)."""
    return _call(_HcsResumeComputeSystem, system, wstr(options), pending_ok=True)


def save_compute_system(system: HcsSystem, options: str | None = "") -> bool:
    """HcsSaveComputeSystem (`options`: a SaveOptions document); True when pending (SystemSaveCompleted)."""
    return _call(_HcsSaveComputeSystem, system, wstr(options), pending_ok=True)


def get_compute_system_properties(system: HcsSystem, query: str | None = "") -> str:
    """HcsGetComputeSystemProperties: the properties document for `query` (a PropertyQuery)."""
    return _call_data(_HcsGetComputeSystemProperties, system, wstr(query))


def modify_compute_system(system: HcsSystem, configuration: str) -> None:
    """HcsModifyComputeSystem (`configuration`: a ModifySettingRequest document)."""
    _call(_HcsModifyComputeSystem, system, wstr(configuration))


def register_compute_system_callback(system: HcsSystem, handler: NotificationHandler) -> HcsCallback:
    """HcsRegisterComputeSystemCallback: deliver the system's notifications to `handler(Notification)`."""
    return _register(_HcsRegisterComputeSystemCallback, system, _SYSTEM, handler)


def unregister_compute_system_callback(callback: HcsCallback) -> None:
    """HcsUnregisterComputeSystemCallback (waits for running callbacks), then drop the handler."""
    _unregister(_HcsUnregisterComputeSystemCallback, callback)


# Service

def get_service_properties(query: str | None) -> str:
    """HcsGetServiceProperties: the service's properties document."""
    return _call_data(_HcsGetServiceProperties, wstr(query))


def modify_service_settings(settings: str) -> None:
    """HcsModifyServiceSettings."""
    _call(_HcsModifyServiceSettings, wstr(settings))


# Processes

def create_process(system: HcsSystem, parameters: str) -> tuple[HcsProcess, ProcessInformation]:
    """HcsCreateProcess: the process handle and its pid and stdio handles."""
    info = HCS_PROCESS_INFORMATION()
    handle, _ = _call_handle(_HcsCreateProcess, _HcsCloseProcess, system, wstr(parameters), ctypes.byref(info))
    return HcsProcess(handle), ProcessInformation.from_struct(info)


def open_process(system: HcsSystem, pid: int) -> HcsProcess:
    """HcsOpenProcess: a handle to process `pid` of the system."""
    return HcsProcess(_call_handle(_HcsOpenProcess, _HcsCloseProcess, system, pid)[0])


def close_process(process: HcsProcess) -> None:
    """HcsCloseProcess, then drop the callbacks registered on the process."""
    try:
        check_hresult(_HcsCloseProcess(process), "HcsCloseProcess")
    finally:
        REGISTRY.release((_PROCESS, process))


def terminate_process(process: HcsProcess) -> None:
    """HcsTerminateProcess."""
    _call(_HcsTerminateProcess, process)


def signal_process(process: HcsProcess, options: str) -> None:
    """HcsSignalProcess (`options`: a signal options document)."""
    _call(_HcsSignalProcess, process, wstr(options))


def get_process_info(process: HcsProcess) -> ProcessInformation:
    """HcsGetProcessInfo: the pid and fresh stdio handles."""
    info = HCS_PROCESS_INFORMATION()
    _call(_HcsGetProcessInfo, process, ctypes.byref(info))
    return ProcessInformation.from_struct(info)


def get_process_properties(process: HcsProcess) -> str:
    """HcsGetProcessProperties: the ProcessStatus document (ExitCode, LastWaitResult, ...)."""
    return _call_data(_HcsGetProcessProperties, process)


def modify_process(process: HcsProcess, settings: str) -> None:
    """HcsModifyProcess (`settings`: a ProcessModifyRequest document)."""
    _call(_HcsModifyProcess, process, wstr(settings))


def register_process_callback(process: HcsProcess, handler: NotificationHandler) -> HcsCallback:
    """HcsRegisterProcessCallback: deliver the process's notifications to `handler(Notification)`."""
    return _register(_HcsRegisterProcessCallback, process, _PROCESS, handler)


def unregister_process_callback(callback: HcsCallback) -> None:
    """HcsUnregisterProcessCallback (waits for running callbacks), then drop the handler."""
    _unregister(_HcsUnregisterProcessCallback, callback)
