"""computecore.dll, the HCS v2 operation-based API: all 60 exports (spec 1.3), each as a thin blocking function.

Each Python function is named after its export (HcsStartComputeSystem -> start_compute_system), takes handles as
ints and documents as str, and returns what the export puts in its out-parameters: a handle, a result document
(str) or a ProcessInformation. A failed HRESULT raises hresult.Win32Error naming the export and, when the export
returned one, carrying the result document; every returned string is freed with CoTaskMemFree. Nothing is loaded
until a function is first called (loader).

Callbacks (HcsSetComputeSystemCallback, HcsSetProcessCallback, the operation callbacks) take a Python handler:
the bindings register it in callbacks.REGISTRY, pass its key as the context with the shared trampoline, and
release it when the handle is closed (close_operation/close_compute_system/close_process) or the callback is
replaced or cleared (handler None). The run-an-operation pattern (create, call, wait, cancel on timeout, close)
is hcsshim.hcs.win32.operation.
"""

from __future__ import annotations

import ctypes
from typing import Any

from hcsshim.hcs.backend import (
    EVENT_GROUP_LIVE_MIGRATION,
    EVENT_GROUP_OPERATION_INFO,
    EVENT_GROUP_VM_LIFECYCLE,
    EVENT_OPERATION_CALLBACK,
    EVENT_PROCESS_EXITED,
    EVENT_SERVICE_DISCONNECT,
    EVENT_SYSTEM_CRASH_INITIATED,
    EVENT_SYSTEM_CRASH_REPORT,
    EVENT_SYSTEM_EXITED,
    EVENT_SYSTEM_GUEST_CONNECTION_CLOSED,
    EVENT_SYSTEM_RDP_ENHANCED_MODE_STATE_CHANGED,
    EVENT_SYSTEM_SILO_JOB_CREATED,
)
from hcsshim.hcs.win32.callbacks import (
    EVENT_TRAMPOLINE,
    OPERATION_TRAMPOLINE,
    REGISTRY,
    CompletionHandler,
    EventHandler,
)
from hcsshim.hcs.win32.cdefs import (
    DWORD,
    HANDLE,
    HCS_EVENT_CALLBACK,
    HCS_OPERATION,
    HCS_OPERATION_COMPLETION,
    HCS_PROCESS,
    HCS_PROCESS_INFORMATION,
    HCS_SYSTEM,
    HRESULT,
    INFINITE,
    HcsOperation,
    HcsProcess,
    HcsSystem,
    ProcessInformation,
    handle_value,
)
from hcsshim.hcs.win32.hresult import ERROR_INVALID_PARAMETER, Win32Error, check_hresult, hresult_from_win32
from hcsshim.hcs.win32.loader import COMPUTECORE, Export, last_error
from hcsshim.hcs.win32.strings import PCWSTR, OutString, wstr

# HCS_EVENT_TYPE: the contract's values (hcsshim.hcs.backend), and Invalid
EVENT_INVALID = 0x00000000
EVENT_TYPE_NAMES = {
    EVENT_INVALID: "Invalid", EVENT_SYSTEM_EXITED: "SystemExited",
    EVENT_SYSTEM_CRASH_INITIATED: "SystemCrashInitiated", EVENT_SYSTEM_CRASH_REPORT: "SystemCrashReport",
    EVENT_SYSTEM_RDP_ENHANCED_MODE_STATE_CHANGED: "SystemRdpEnhancedModeStateChanged",
    EVENT_SYSTEM_SILO_JOB_CREATED: "SystemSiloJobCreated",
    EVENT_SYSTEM_GUEST_CONNECTION_CLOSED: "SystemGuestConnectionClosed", EVENT_PROCESS_EXITED: "ProcessExited",
    EVENT_OPERATION_CALLBACK: "OperationCallback", EVENT_SERVICE_DISCONNECT: "ServiceDisconnect",
    EVENT_GROUP_VM_LIFECYCLE: "GroupVmLifecycle", EVENT_GROUP_LIVE_MIGRATION: "GroupLiveMigration",
    EVENT_GROUP_OPERATION_INFO: "GroupOperationInfo",
}
# HCS_EVENT_OPTIONS (HcsSetComputeSystemCallback / HcsSetProcessCallback)
EVENT_OPTION_NONE = 0
EVENT_OPTION_ENABLE_OPERATION_CALLBACKS = 1
EVENT_OPTION_ENABLE_LIVE_MIGRATION_EVENTS = 4
# HCS_OPERATION_OPTIONS (HcsCreateOperationWithNotifications)
OPERATION_OPTION_NONE = 0
OPERATION_OPTION_PROGRESS_UPDATE = 1
# HCS_RESOURCE_TYPE (HcsAddResourceToOperation)
RESOURCE_TYPE_NONE = 0
RESOURCE_TYPE_FILE = 1
RESOURCE_TYPE_JOB = 2
RESOURCE_TYPE_COM_OBJECT = 3
RESOURCE_TYPE_SOCKET = 4
# HCS_OPERATION_TYPE (HcsGetOperationType)
OPERATION_TYPE_NAMES = {
    -1: "None", 0: "Enumerate", 1: "Create", 2: "Start", 3: "Shutdown", 4: "Pause", 5: "Resume", 6: "Save",
    7: "Terminate", 8: "Modify", 9: "GetProperties", 10: "CreateProcess", 11: "SignalProcess",
    12: "GetProcessInfo", 13: "GetProcessProperties", 14: "ModifyProcess", 15: "Crash",
}
GENERIC_ALL = 0x10000000  # the requestedAccess hcsshim opens systems and processes with

_OP, _SYS, _PROC, _U32, _PTR = HCS_OPERATION, HCS_SYSTEM, HCS_PROCESS, DWORD, ctypes.c_void_p
_OUT_STR = ctypes.POINTER(PCWSTR)
_INFO = ctypes.POINTER(HCS_PROCESS_INFORMATION)
_fn = COMPUTECORE.export

# Operation management (18)
_HcsCreateOperation = _fn("HcsCreateOperation", _OP, _PTR, HCS_OPERATION_COMPLETION)
_HcsCreateOperationWithNotifications = _fn("HcsCreateOperationWithNotifications", _OP, _U32, _PTR,
                                           HCS_EVENT_CALLBACK)
_HcsCloseOperation = _fn("HcsCloseOperation", None, _OP)
_HcsGetOperationContext = _fn("HcsGetOperationContext", _PTR, _OP)
_HcsSetOperationContext = _fn("HcsSetOperationContext", HRESULT, _OP, _PTR)
_HcsGetComputeSystemFromOperation = _fn("HcsGetComputeSystemFromOperation", _SYS, _OP)
_HcsGetProcessFromOperation = _fn("HcsGetProcessFromOperation", _PROC, _OP)
_HcsGetOperationType = _fn("HcsGetOperationType", ctypes.c_int32, _OP)
_HcsGetOperationId = _fn("HcsGetOperationId", ctypes.c_uint64, _OP)
_HcsGetOperationResult = _fn("HcsGetOperationResult", HRESULT, _OP, _OUT_STR)
_HcsGetOperationResultAndProcessInfo = _fn("HcsGetOperationResultAndProcessInfo", HRESULT, _OP, _INFO, _OUT_STR)
_HcsAddResourceToOperation = _fn("HcsAddResourceToOperation", HRESULT, _OP, _U32, PCWSTR, HANDLE)
_HcsGetProcessorCompatibilityFromSavedState = _fn("HcsGetProcessorCompatibilityFromSavedState", HRESULT,
                                                  PCWSTR, _OUT_STR)
_HcsWaitForOperationResult = _fn("HcsWaitForOperationResult", HRESULT, _OP, _U32, _OUT_STR)
_HcsWaitForOperationResultAndProcessInfo = _fn("HcsWaitForOperationResultAndProcessInfo", HRESULT, _OP, _U32,
                                               _INFO, _OUT_STR)
_HcsSetOperationCallback = _fn("HcsSetOperationCallback", HRESULT, _OP, _PTR, HCS_OPERATION_COMPLETION)
_HcsCancelOperation = _fn("HcsCancelOperation", HRESULT, _OP)
_HcsGetOperationProperties = _fn("HcsGetOperationProperties", HRESULT, _OP, PCWSTR, _OUT_STR)
# Compute systems (18)
_HcsEnumerateComputeSystems = _fn("HcsEnumerateComputeSystems", HRESULT, PCWSTR, _OP)
_HcsEnumerateComputeSystemsInNamespace = _fn("HcsEnumerateComputeSystemsInNamespace", HRESULT, PCWSTR, PCWSTR, _OP)
_HcsCreateComputeSystem = _fn("HcsCreateComputeSystem", HRESULT, PCWSTR, PCWSTR, _OP, _PTR, ctypes.POINTER(_SYS))
_HcsCreateComputeSystemInNamespace = _fn("HcsCreateComputeSystemInNamespace", HRESULT, PCWSTR, PCWSTR, PCWSTR,
                                         _OP, _PTR, ctypes.POINTER(_SYS))
_HcsOpenComputeSystem = _fn("HcsOpenComputeSystem", HRESULT, PCWSTR, _U32, ctypes.POINTER(_SYS))
_HcsOpenComputeSystemInNamespace = _fn("HcsOpenComputeSystemInNamespace", HRESULT, PCWSTR, PCWSTR, _U32,
                                       ctypes.POINTER(_SYS))
_HcsCloseComputeSystem = _fn("HcsCloseComputeSystem", None, _SYS)
_HcsStartComputeSystem = _fn("HcsStartComputeSystem", HRESULT, _SYS, _OP, PCWSTR)
_HcsShutDownComputeSystem = _fn("HcsShutDownComputeSystem", HRESULT, _SYS, _OP, PCWSTR)
_HcsTerminateComputeSystem = _fn("HcsTerminateComputeSystem", HRESULT, _SYS, _OP, PCWSTR)
_HcsCrashComputeSystem = _fn("HcsCrashComputeSystem", HRESULT, _SYS, _OP, PCWSTR)
_HcsPauseComputeSystem = _fn("HcsPauseComputeSystem", HRESULT, _SYS, _OP, PCWSTR)
_HcsResumeComputeSystem = _fn("HcsResumeComputeSystem", HRESULT, _SYS, _OP, PCWSTR)
_HcsSaveComputeSystem = _fn("HcsSaveComputeSystem", HRESULT, _SYS, _OP, PCWSTR)
_HcsGetComputeSystemProperties = _fn("HcsGetComputeSystemProperties", HRESULT, _SYS, _OP, PCWSTR)
_HcsModifyComputeSystem = _fn("HcsModifyComputeSystem", HRESULT, _SYS, _OP, PCWSTR, HANDLE)
_HcsWaitForComputeSystemExit = _fn("HcsWaitForComputeSystemExit", HRESULT, _SYS, _U32, _OUT_STR)
_HcsSetComputeSystemCallback = _fn("HcsSetComputeSystemCallback", HRESULT, _SYS, _U32, _PTR, HCS_EVENT_CALLBACK)
# Live migration (5)
_HcsInitializeLiveMigrationOnSource = _fn("HcsInitializeLiveMigrationOnSource", HRESULT, _SYS, _OP, PCWSTR)
_HcsStartLiveMigrationOnSource = _fn("HcsStartLiveMigrationOnSource", HRESULT, _SYS, _OP, PCWSTR)
_HcsStartLiveMigrationTransfer = _fn("HcsStartLiveMigrationTransfer", HRESULT, _SYS, _OP, PCWSTR)
_HcsFinalizeLiveMigration = _fn("HcsFinalizeLiveMigration", HRESULT, _SYS, _OP, PCWSTR)
_HcsCancelLiveMigration = _fn("HcsCancelLiveMigration", HRESULT, _SYS, _OP, PCWSTR)
# Processes (10)
_HcsCreateProcess = _fn("HcsCreateProcess", HRESULT, _SYS, PCWSTR, _OP, _PTR, ctypes.POINTER(_PROC))
_HcsOpenProcess = _fn("HcsOpenProcess", HRESULT, _SYS, _U32, _U32, ctypes.POINTER(_PROC))
_HcsCloseProcess = _fn("HcsCloseProcess", None, _PROC)
_HcsTerminateProcess = _fn("HcsTerminateProcess", HRESULT, _PROC, _OP, PCWSTR)
_HcsSignalProcess = _fn("HcsSignalProcess", HRESULT, _PROC, _OP, PCWSTR)
_HcsGetProcessInfo = _fn("HcsGetProcessInfo", HRESULT, _PROC, _OP)
_HcsGetProcessProperties = _fn("HcsGetProcessProperties", HRESULT, _PROC, _OP, PCWSTR)
_HcsModifyProcess = _fn("HcsModifyProcess", HRESULT, _PROC, _OP, PCWSTR)
_HcsSetProcessCallback = _fn("HcsSetProcessCallback", HRESULT, _PROC, _U32, _PTR, HCS_EVENT_CALLBACK)
_HcsWaitForProcessExit = _fn("HcsWaitForProcessExit", HRESULT, _PROC, _U32, _OUT_STR)
# Service (3)
_HcsGetServiceProperties = _fn("HcsGetServiceProperties", HRESULT, PCWSTR, _OUT_STR)
_HcsModifyServiceSettings = _fn("HcsModifyServiceSettings", HRESULT, PCWSTR, _OUT_STR)
_HcsSubmitWerReport = _fn("HcsSubmitWerReport", HRESULT, PCWSTR)
# Files and VM access (6)
_HcsCreateEmptyGuestStateFile = _fn("HcsCreateEmptyGuestStateFile", HRESULT, PCWSTR)
_HcsCreateEmptyRuntimeStateFile = _fn("HcsCreateEmptyRuntimeStateFile", HRESULT, PCWSTR)
_HcsGrantVmAccess = _fn("HcsGrantVmAccess", HRESULT, PCWSTR, PCWSTR)
_HcsRevokeVmAccess = _fn("HcsRevokeVmAccess", HRESULT, PCWSTR, PCWSTR)
_HcsGrantVmGroupAccess = _fn("HcsGrantVmGroupAccess", HRESULT, PCWSTR)
_HcsRevokeVmGroupAccess = _fn("HcsRevokeVmGroupAccess", HRESULT, PCWSTR)

# Every bound export, by C name.
EXPORTS: dict[str, Export] = {e.name: e for e in globals().copy().values() if isinstance(e, Export)}

_OPERATION, _SYSTEM, _PROCESS = "computecore.operation", "computecore.system", "computecore.process"


def _call(export: Export, *args: Any) -> None:
    check_hresult(export(*args), export.name)


def _call_doc(export: Export, *args: Any) -> str:
    """Call an export whose last parameter is a PWSTR* document; return the document, raise with it."""
    out = OutString()
    hr = export(*args, out.ref)
    doc = out.take()
    check_hresult(hr, export.name, doc)
    return doc


def _call_info(export: Export, *args: Any) -> tuple[ProcessInformation, str]:
    info, out = HCS_PROCESS_INFORMATION(), OutString()
    hr = export(*args, ctypes.byref(info), out.ref)
    doc = out.take()
    check_hresult(hr, export.name, doc)
    return ProcessInformation.from_struct(info), doc


def _call_handle(export: Export, close: Export, *args: Any) -> int:
    """Call an export whose last parameter receives a handle; a handle left behind by a failure is closed."""
    handle = ctypes.c_void_p()
    hr = export(*args, ctypes.byref(handle))
    value = handle_value(handle)
    try:
        check_hresult(hr, export.name)
    except Win32Error:
        if value:
            close(value)
        raise
    return value


def _new_operation(export: Export, handler: Any, trampoline: Any, *args: Any) -> HcsOperation:
    key = REGISTRY.register(handler) if handler is not None else 0
    operation = handle_value(export(*args, key or None, trampoline if key else type(trampoline)()))
    if not operation:
        if key:
            REGISTRY.unregister(key)
        raise Win32Error(hresult_from_win32(last_error() or ERROR_INVALID_PARAMETER), export.name)
    if key:
        REGISTRY.attach(key, (_OPERATION, operation))
    return HcsOperation(operation)


def _set_callback(export: Export, owner: tuple[str, int], handler: Any, trampoline: Any, *args: Any) -> None:
    """Register `handler` for a handle through `export`, replacing (or, with None, clearing) the previous one."""
    if handler is None:
        _call(export, *args, None, type(trampoline)())  # a NULL callback of the right type
        REGISTRY.release(owner)
        return
    key = REGISTRY.register(handler)
    try:
        _call(export, *args, key, trampoline)
    except BaseException:
        REGISTRY.unregister(key)
        raise
    REGISTRY.release(owner)  # the registration HCS just replaced
    REGISTRY.attach(key, owner)


# Operation management

def create_operation(handler: CompletionHandler | None = None) -> HcsOperation:
    """HcsCreateOperation: a new operation; `handler(operation)` is called when it completes."""
    return _new_operation(_HcsCreateOperation, handler, OPERATION_TRAMPOLINE)


def create_operation_with_notifications(event_types: int, handler: EventHandler | None = None) -> HcsOperation:
    """HcsCreateOperationWithNotifications: an operation whose events (HCS_OPERATION_OPTIONS) reach `handler`."""
    return _new_operation(_HcsCreateOperationWithNotifications, handler, EVENT_TRAMPOLINE, event_types)


def close_operation(operation: HcsOperation) -> None:
    """HcsCloseOperation, then drop the operation's callback."""
    _HcsCloseOperation(operation)
    REGISTRY.release((_OPERATION, operation))


def get_operation_context(operation: HcsOperation) -> int:
    """HcsGetOperationContext: the raw context (the callback's registry key when a handler was given)."""
    return handle_value(_HcsGetOperationContext(operation))


def set_operation_context(operation: HcsOperation, context: int) -> None:
    """HcsSetOperationContext: replace the raw context (re-routes the operation's callback to that key)."""
    _call(_HcsSetOperationContext, operation, context or None)


def get_compute_system_from_operation(operation: HcsOperation) -> HcsSystem:
    """HcsGetComputeSystemFromOperation: the system the operation tracks (0 if none)."""
    return HcsSystem(handle_value(_HcsGetComputeSystemFromOperation(operation)))


def get_process_from_operation(operation: HcsOperation) -> HcsProcess:
    """HcsGetProcessFromOperation: the process the operation tracks (0 if none)."""
    return HcsProcess(handle_value(_HcsGetProcessFromOperation(operation)))


def get_operation_type(operation: HcsOperation) -> int:
    """HcsGetOperationType: an HCS_OPERATION_TYPE (OPERATION_TYPE_NAMES); -1 when not used yet."""
    return int(_HcsGetOperationType(operation))


def get_operation_id(operation: HcsOperation) -> int:
    """HcsGetOperationId: the operation's 64-bit id."""
    return int(_HcsGetOperationId(operation))


def get_operation_result(operation: HcsOperation) -> str:
    """HcsGetOperationResult: the result document, without waiting."""
    return _call_doc(_HcsGetOperationResult, operation)


def get_operation_result_and_process_info(operation: HcsOperation) -> tuple[ProcessInformation, str]:
    """HcsGetOperationResultAndProcessInfo: the process information and result document, without waiting."""
    return _call_info(_HcsGetOperationResultAndProcessInfo, operation)


def add_resource_to_operation(operation: HcsOperation, resource_type: int, uri: str, handle: int) -> None:
    """HcsAddResourceToOperation: hand HCS a handle (RESOURCE_TYPE_*) for the resource at `uri`."""
    _call(_HcsAddResourceToOperation, operation, resource_type, wstr(uri), handle or None)


def get_processor_compatibility_from_saved_state(runtime_file_name: str) -> str:
    """HcsGetProcessorCompatibilityFromSavedState: the processor features a saved runtime state needs."""
    return _call_doc(_HcsGetProcessorCompatibilityFromSavedState, wstr(runtime_file_name))


def wait_for_operation_result(operation: HcsOperation, timeout_ms: int = INFINITE) -> str:
    """HcsWaitForOperationResult: block until the operation completes; HCS_E_OPERATION_TIMEOUT on timeout."""
    return _call_doc(_HcsWaitForOperationResult, operation, timeout_ms)


def wait_for_operation_result_and_process_info(operation: HcsOperation,
                                               timeout_ms: int = INFINITE) -> tuple[ProcessInformation, str]:
    """HcsWaitForOperationResultAndProcessInfo: the wait, also returning the process information."""
    return _call_info(_HcsWaitForOperationResultAndProcessInfo, operation, timeout_ms)


def set_operation_callback(operation: HcsOperation, handler: CompletionHandler | None) -> None:
    """HcsSetOperationCallback: call `handler(operation)` on completion (None clears it)."""
    _set_callback(_HcsSetOperationCallback, (_OPERATION, operation), handler, OPERATION_TRAMPOLINE, operation)


def cancel_operation(operation: HcsOperation) -> None:
    """HcsCancelOperation: ask HCS to abort the tracked call."""
    _call(_HcsCancelOperation, operation)


def get_operation_properties(operation: HcsOperation, options: str | None = "") -> str:
    """HcsGetOperationProperties: the operation's properties document."""
    return _call_doc(_HcsGetOperationProperties, operation, wstr(options))


# Compute systems

def enumerate_compute_systems(query: str | None, operation: HcsOperation) -> None:
    """HcsEnumerateComputeSystems: the operation's result is the JSON array of matching systems."""
    _call(_HcsEnumerateComputeSystems, wstr(query), operation)


def enumerate_compute_systems_in_namespace(namespace: str, query: str | None, operation: HcsOperation) -> None:
    """HcsEnumerateComputeSystemsInNamespace."""
    _call(_HcsEnumerateComputeSystemsInNamespace, wstr(namespace), wstr(query), operation)


def create_compute_system(id: str, configuration: str, operation: HcsOperation,
                          security_descriptor: Any = None) -> HcsSystem:
    """HcsCreateComputeSystem: the new system's handle (the operation tracks its creation)."""
    return HcsSystem(_call_handle(_HcsCreateComputeSystem, _HcsCloseComputeSystem, wstr(id), wstr(configuration),
                                  operation, security_descriptor))


def create_compute_system_in_namespace(namespace: str, id: str, configuration: str, operation: HcsOperation,
                                       options: Any = None) -> HcsSystem:
    """HcsCreateComputeSystemInNamespace (`options`: a pointer to HCS_CREATE_OPTIONS, or None)."""
    return HcsSystem(_call_handle(_HcsCreateComputeSystemInNamespace, _HcsCloseComputeSystem, wstr(namespace),
                                  wstr(id), wstr(configuration), operation, options))


def open_compute_system(id: str, requested_access: int = GENERIC_ALL) -> HcsSystem:
    """HcsOpenComputeSystem: a handle to an existing system."""
    return HcsSystem(_call_handle(_HcsOpenComputeSystem, _HcsCloseComputeSystem, wstr(id), requested_access))


def open_compute_system_in_namespace(namespace: str, id: str, requested_access: int = GENERIC_ALL) -> HcsSystem:
    """HcsOpenComputeSystemInNamespace."""
    return HcsSystem(_call_handle(_HcsOpenComputeSystemInNamespace, _HcsCloseComputeSystem, wstr(namespace),
                                  wstr(id), requested_access))


def close_compute_system(system: HcsSystem) -> None:
    """HcsCloseComputeSystem (no callback runs after it returns), then drop the system's callback."""
    _HcsCloseComputeSystem(system)
    REGISTRY.release((_SYSTEM, system))


def start_compute_system(system: HcsSystem, operation: HcsOperation, options: str | None = "") -> None:
    """HcsStartComputeSystem."""
    _call(_HcsStartComputeSystem, system, operation, wstr(options))


def shut_down_compute_system(system: HcsSystem, operation: HcsOperation, options: str | None = "") -> None:
    """HcsShutDownComputeSystem: a clean shutdown request."""
    _call(_HcsShutDownComputeSystem, system, operation, wstr(options))


def terminate_compute_system(system: HcsSystem, operation: HcsOperation, options: str | None = "") -> None:
    """HcsTerminateComputeSystem."""
    _call(_HcsTerminateComputeSystem, system, operation, wstr(options))


def crash_compute_system(system: HcsSystem, operation: HcsOperation, options: str | None = "") -> None:
    """HcsCrashComputeSystem."""
    _call(_HcsCrashComputeSystem, system, operation, wstr(options))


def pause_compute_system(system: HcsSystem, operation: HcsOperation, options: str | None = "") -> None:
    """HcsPauseComputeSystem."""
    _call(_HcsPauseComputeSystem, system, operation, wstr(options))


def resume_compute_system(system: HcsSystem, operation: HcsOperation, options: str | None = "") -> None:
    """HcsResumeComputeSystem."""
    _call(_HcsResumeComputeSystem, system, operation, wstr(options))


def save_compute_system(system: HcsSystem, operation: HcsOperation, options: str | None = "") -> None:
    """HcsSaveComputeSystem (`options`: a SaveOptions document)."""
    _call(_HcsSaveComputeSystem, system, operation, wstr(options))


def get_compute_system_properties(system: HcsSystem, operation: HcsOperation, query: str | None = "") -> None:
    """HcsGetComputeSystemProperties: the operation's result is the properties document."""
    _call(_HcsGetComputeSystemProperties, system, operation, wstr(query))


def modify_compute_system(system: HcsSystem, operation: HcsOperation, configuration: str, identity: int = 0) -> None:
    """HcsModifyComputeSystem (`configuration`: a ModifySettingRequest document)."""
    _call(_HcsModifyComputeSystem, system, operation, wstr(configuration), identity or None)


def wait_for_compute_system_exit(system: HcsSystem, timeout_ms: int = INFINITE) -> str:
    """HcsWaitForComputeSystemExit: block until the system exits; its result document."""
    return _call_doc(_HcsWaitForComputeSystemExit, system, timeout_ms)


def set_compute_system_callback(system: HcsSystem, handler: EventHandler | None,
                                options: int = EVENT_OPTION_NONE) -> None:
    """HcsSetComputeSystemCallback: deliver the system's events to `handler(Event)` until it is closed."""
    _set_callback(_HcsSetComputeSystemCallback, (_SYSTEM, system), handler, EVENT_TRAMPOLINE, system, options)


# Live migration

def initialize_live_migration_on_source(system: HcsSystem, operation: HcsOperation, options: str | None = "") -> None:
    """HcsInitializeLiveMigrationOnSource."""
    _call(_HcsInitializeLiveMigrationOnSource, system, operation, wstr(options))


def start_live_migration_on_source(system: HcsSystem, operation: HcsOperation, options: str | None = "") -> None:
    """HcsStartLiveMigrationOnSource."""
    _call(_HcsStartLiveMigrationOnSource, system, operation, wstr(options))


def start_live_migration_transfer(system: HcsSystem, operation: HcsOperation, options: str | None = "") -> None:
    """HcsStartLiveMigrationTransfer."""
    _call(_HcsStartLiveMigrationTransfer, system, operation, wstr(options))


def finalize_live_migration(system: HcsSystem, operation: HcsOperation, options: str | None = "") -> None:
    """HcsFinalizeLiveMigration."""
    _call(_HcsFinalizeLiveMigration, system, operation, wstr(options))


def cancel_live_migration(system: HcsSystem, operation: HcsOperation, options: str | None = "") -> None:
    """HcsCancelLiveMigration."""
    _call(_HcsCancelLiveMigration, system, operation, wstr(options))


# Processes

def create_process(system: HcsSystem, parameters: str, operation: HcsOperation,
                   security_descriptor: Any = None) -> HcsProcess:
    """HcsCreateProcess: the new process's handle; its ProcessInformation is the operation's (…AndProcessInfo)."""
    return HcsProcess(_call_handle(_HcsCreateProcess, _HcsCloseProcess, system, wstr(parameters), operation,
                                   security_descriptor))


def open_process(system: HcsSystem, pid: int, requested_access: int = GENERIC_ALL) -> HcsProcess:
    """HcsOpenProcess: a handle to process `pid` of the system."""
    return HcsProcess(_call_handle(_HcsOpenProcess, _HcsCloseProcess, system, pid, requested_access))


def close_process(process: HcsProcess) -> None:
    """HcsCloseProcess, then drop the process's callback."""
    _HcsCloseProcess(process)
    REGISTRY.release((_PROCESS, process))


def terminate_process(process: HcsProcess, operation: HcsOperation, options: str | None = "") -> None:
    """HcsTerminateProcess."""
    _call(_HcsTerminateProcess, process, operation, wstr(options))


def signal_process(process: HcsProcess, operation: HcsOperation, options: str | None = "") -> None:
    """HcsSignalProcess (`options`: a signal options document)."""
    _call(_HcsSignalProcess, process, operation, wstr(options))


def get_process_info(process: HcsProcess, operation: HcsOperation) -> None:
    """HcsGetProcessInfo: the operation yields fresh stdio handles (wait with …AndProcessInfo)."""
    _call(_HcsGetProcessInfo, process, operation)


def get_process_properties(process: HcsProcess, operation: HcsOperation, query: str | None = "") -> None:
    """HcsGetProcessProperties: the operation's result is the ProcessStatus document."""
    _call(_HcsGetProcessProperties, process, operation, wstr(query))


def modify_process(process: HcsProcess, operation: HcsOperation, settings: str) -> None:
    """HcsModifyProcess (`settings`: a ProcessModifyRequest document)."""
    _call(_HcsModifyProcess, process, operation, wstr(settings))


def set_process_callback(process: HcsProcess, handler: EventHandler | None, options: int = EVENT_OPTION_NONE) -> None:
    """HcsSetProcessCallback: deliver the process's events to `handler(Event)` until it is closed."""
    _set_callback(_HcsSetProcessCallback, (_PROCESS, process), handler, EVENT_TRAMPOLINE, process, options)


def wait_for_process_exit(process: HcsProcess, timeout_ms: int = INFINITE) -> str:
    """HcsWaitForProcessExit: block until the process exits; its result document."""
    return _call_doc(_HcsWaitForProcessExit, process, timeout_ms)


# Service

def get_service_properties(query: str | None) -> str:
    """HcsGetServiceProperties: the service's properties document."""
    return _call_doc(_HcsGetServiceProperties, wstr(query))


def modify_service_settings(settings: str) -> str:
    """HcsModifyServiceSettings: the result document."""
    return _call_doc(_HcsModifyServiceSettings, wstr(settings))


def submit_wer_report(settings: str) -> None:
    """HcsSubmitWerReport."""
    _call(_HcsSubmitWerReport, wstr(settings))


# Files and VM access

def create_empty_guest_state_file(path: str) -> None:
    """HcsCreateEmptyGuestStateFile."""
    _call(_HcsCreateEmptyGuestStateFile, wstr(path))


def create_empty_runtime_state_file(path: str) -> None:
    """HcsCreateEmptyRuntimeStateFile."""
    _call(_HcsCreateEmptyRuntimeStateFile, wstr(path))


def grant_vm_access(vm_id: str, path: str) -> None:
    """HcsGrantVmAccess: let the VM `vm_id` open `path`."""
    _call(_HcsGrantVmAccess, wstr(vm_id), wstr(path))


def revoke_vm_access(vm_id: str, path: str) -> None:
    """HcsRevokeVmAccess."""
    _call(_HcsRevokeVmAccess, wstr(vm_id), wstr(path))


def grant_vm_group_access(path: str) -> None:
    """HcsGrantVmGroupAccess: let every VM open `path`."""
    _call(_HcsGrantVmGroupAccess, wstr(path))


def revoke_vm_group_access(path: str) -> None:
    """HcsRevokeVmGroupAccess."""
    _call(_HcsRevokeVmGroupAccess, wstr(path))
