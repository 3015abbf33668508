"""The computecore (HCS v2) bindings and the shared native plumbing (loading, HRESULTs, UTF-16, CoTaskMemFree,
callbacks), exercised against the fake computecore built from tests/fakehcs/fakehcs.c."""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import fakehcs
import pytest

from hcsshim.hcs.win32 import computecore as cc
from hcsshim.hcs.win32 import hresult, loader, operation, strings
from hcsshim.hcs.win32.callbacks import EVENT_TRAMPOLINE, REGISTRY, Event
from hcsshim.hcs.win32.cdefs import HCS_EVENT, HCS_PROCESS_INFORMATION, INFINITE, ProcessInformation

# Handles that do not fit in 32 bits, and text with non-ASCII, a surrogate pair and JSON metacharacters.
SYS, PROC, OP, H = 0x2_0000_0000_0042, 0x3_0000_0000_0043, 0x1_0000_0000_0044, 0x7_0000_0000_0045
TEXT = '{"Name": "ünïcode 日本 😀", "Path": "C:\\\\x\\ty"}'
DOC = '{"Result": "ok ✓ 𝄞"}'


@pytest.fixture
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fakehcs.Fakes]:
    with fakehcs.installed(tmp_path_factory) as installed:
        yield installed


@pytest.fixture
def fake(fakes: fakehcs.Fakes) -> fakehcs.FakeDll:
    return fakes.computecore


def args_of(fake: fakehcs.FakeDll) -> dict[str, Any]:
    return fake.last_call()["args"]


# (export, the Python call, the arguments the fake must record)
BINDINGS: list[tuple[str, Callable[[], Any], dict[str, Any]]] = [
    ("HcsCreateOperation", lambda: cc.create_operation(), {"context": 0, "callback": 0}),
    ("HcsCreateOperationWithNotifications", lambda: cc.create_operation_with_notifications(1),
     {"eventTypes": 1, "context": 0, "callback": 0}),
    ("HcsCloseOperation", lambda: cc.close_operation(OP), {"operation": OP}),
    ("HcsGetOperationContext", lambda: cc.get_operation_context(OP), {"operation": OP}),
    ("HcsSetOperationContext", lambda: cc.set_operation_context(OP, 77), {"operation": OP, "context": 77}),
    ("HcsGetComputeSystemFromOperation", lambda: cc.get_compute_system_from_operation(OP), {"operation": OP}),
    ("HcsGetProcessFromOperation", lambda: cc.get_process_from_operation(OP), {"operation": OP}),
    ("HcsGetOperationType", lambda: cc.get_operation_type(OP), {"operation": OP}),
    ("HcsGetOperationId", lambda: cc.get_operation_id(OP), {"operation": OP}),
    ("HcsGetOperationResult", lambda: cc.get_operation_result(OP), {"operation": OP}),
    ("HcsGetOperationResultAndProcessInfo", lambda: cc.get_operation_result_and_process_info(OP),
     {"operation": OP}),
    ("HcsAddResourceToOperation", lambda: cc.add_resource_to_operation(OP, cc.RESOURCE_TYPE_SOCKET, TEXT, H),
     {"operation": OP, "resourceType": 4, "uri": TEXT, "handle": H}),
    ("HcsGetProcessorCompatibilityFromSavedState", lambda: cc.get_processor_compatibility_from_saved_state(TEXT),
     {"runtimeFileName": TEXT}),
    ("HcsWaitForOperationResult", lambda: cc.wait_for_operation_result(OP, 1500),
     {"operation": OP, "timeoutMs": 1500}),
    ("HcsWaitForOperationResultAndProcessInfo", lambda: cc.wait_for_operation_result_and_process_info(OP),
     {"operation": OP, "timeoutMs": INFINITE}),
    ("HcsSetOperationCallback", lambda: cc.set_operation_callback(OP, None),
     {"operation": OP, "context": 0, "callback": 0}),
    ("HcsCancelOperation", lambda: cc.cancel_operation(OP), {"operation": OP}),
    ("HcsGetOperationProperties", lambda: cc.get_operation_properties(OP, TEXT), {"operation": OP, "options": TEXT}),
    ("HcsEnumerateComputeSystems", lambda: cc.enumerate_compute_systems(TEXT, OP), {"query": TEXT, "operation": OP}),
    ("HcsEnumerateComputeSystemsInNamespace", lambda: cc.enumerate_compute_systems_in_namespace("ns", None, OP),
     {"idNamespace": "ns", "query": None, "operation": OP}),
    ("HcsCreateComputeSystem", lambda: cc.create_compute_system("c1", TEXT, OP),
     {"id": "c1", "configuration": TEXT, "operation": OP, "securityDescriptor": 0}),
    ("HcsCreateComputeSystemInNamespace", lambda: cc.create_compute_system_in_namespace("ns", "c1", TEXT, OP, H),
     {"idNamespace": "ns", "id": "c1", "configuration": TEXT, "operation": OP, "options": H}),
    ("HcsOpenComputeSystem", lambda: cc.open_compute_system("c1"), {"id": "c1", "requestedAccess": cc.GENERIC_ALL}),
    ("HcsOpenComputeSystemInNamespace", lambda: cc.open_compute_system_in_namespace("ns", "c1", 1),
     {"idNamespace": "ns", "id": "c1", "requestedAccess": 1}),
    ("HcsCloseComputeSystem", lambda: cc.close_compute_system(SYS), {"computeSystem": SYS}),
    *[(f"Hcs{verb}ComputeSystem", (lambda f=f: f(SYS, OP, TEXT)),
       {"computeSystem": SYS, "operation": OP, "options": TEXT})
      for verb, f in [("Start", cc.start_compute_system), ("ShutDown", cc.shut_down_compute_system),
                      ("Terminate", cc.terminate_compute_system), ("Crash", cc.crash_compute_system),
                      ("Pause", cc.pause_compute_system), ("Resume", cc.resume_compute_system),
                      ("Save", cc.save_compute_system)]],
    ("HcsGetComputeSystemProperties", lambda: cc.get_compute_system_properties(SYS, OP, TEXT),
     {"computeSystem": SYS, "operation": OP, "propertyQuery": TEXT}),
    ("HcsModifyComputeSystem", lambda: cc.modify_compute_system(SYS, OP, TEXT, H),
     {"computeSystem": SYS, "operation": OP, "configuration": TEXT, "identity": H}),
    ("HcsWaitForComputeSystemExit", lambda: cc.wait_for_compute_system_exit(SYS, 0),
     {"computeSystem": SYS, "timeoutMs": 0}),
    ("HcsSetComputeSystemCallback", lambda: cc.set_compute_system_callback(SYS, None, 4),
     {"computeSystem": SYS, "callbackOptions": 4, "context": 0, "callback": 0}),
    *[(name, (lambda f=f: f(SYS, OP, TEXT)), {"computeSystem": SYS, "operation": OP, "options": TEXT})
      for name, f in [("HcsInitializeLiveMigrationOnSource", cc.initialize_live_migration_on_source),
                      ("HcsStartLiveMigrationOnSource", cc.start_live_migration_on_source),
                      ("HcsStartLiveMigrationTransfer", cc.start_live_migration_transfer),
                      ("HcsFinalizeLiveMigration", cc.finalize_live_migration),
                      ("HcsCancelLiveMigration", cc.cancel_live_migration)]],
    ("HcsCreateProcess", lambda: cc.create_process(SYS, TEXT, OP),
     {"computeSystem": SYS, "processParameters": TEXT, "operation": OP, "securityDescriptor": 0}),
    ("HcsOpenProcess", lambda: cc.open_process(SYS, 4242),
     {"computeSystem": SYS, "processId": 4242, "requestedAccess": cc.GENERIC_ALL}),
    ("HcsCloseProcess", lambda: cc.close_process(PROC), {"process": PROC}),
    ("HcsTerminateProcess", lambda: cc.terminate_process(PROC, OP), {"process": PROC, "operation": OP, "options": ""}),
    ("HcsSignalProcess", lambda: cc.signal_process(PROC, OP, TEXT),
     {"process": PROC, "operation": OP, "options": TEXT}),
    ("HcsGetProcessInfo", lambda: cc.get_process_info(PROC, OP), {"process": PROC, "operation": OP}),
    ("HcsGetProcessProperties", lambda: cc.get_process_properties(PROC, OP, TEXT),
     {"process": PROC, "operation": OP, "propertyQuery": TEXT}),
    ("HcsModifyProcess", lambda: cc.modify_process(PROC, OP, TEXT),
     {"process": PROC, "operation": OP, "settings": TEXT}),
    ("HcsSetProcessCallback", lambda: cc.set_process_callback(PROC, None),
     {"process": PROC, "callbackOptions": 0, "context": 0, "callback": 0}),
    ("HcsWaitForProcessExit", lambda: cc.wait_for_process_exit(PROC, 10), {"process": PROC, "timeoutMs": 10}),
    ("HcsGetServiceProperties", lambda: cc.get_service_properties(TEXT), {"propertyQuery": TEXT}),
    ("HcsModifyServiceSettings", lambda: cc.modify_service_settings(TEXT), {"settings": TEXT}),
    ("HcsSubmitWerReport", lambda: cc.submit_wer_report(TEXT), {"settings": TEXT}),
    ("HcsCreateEmptyGuestStateFile", lambda: cc.create_empty_guest_state_file(TEXT), {"guestStateFilePath": TEXT}),
    ("HcsCreateEmptyRuntimeStateFile", lambda: cc.create_empty_runtime_state_file(TEXT),
     {"runtimeStateFilePath": TEXT}),
    ("HcsGrantVmAccess", lambda: cc.grant_vm_access("vm1", TEXT), {"vmId": "vm1", "filePath": TEXT}),
    ("HcsRevokeVmAccess", lambda: cc.revoke_vm_access("vm1", TEXT), {"vmId": "vm1", "filePath": TEXT}),
    ("HcsGrantVmGroupAccess", lambda: cc.grant_vm_group_access(TEXT), {"filePath": TEXT}),
    ("HcsRevokeVmGroupAccess", lambda: cc.revoke_vm_group_access(TEXT), {"filePath": TEXT}),
]


def test_the_table_covers_all_60_computecore_exports() -> None:
    names = [name for name, _, _ in BINDINGS]
    assert len(names) == len(set(names)) == 60
    assert set(names) == set(cc.EXPORTS)


@pytest.mark.parametrize(("export", "call", "expected"), BINDINGS, ids=[b[0] for b in BINDINGS])
def test_each_binding_passes_its_arguments_to_the_export(fake: fakehcs.FakeDll, export: str,
                                                         call: Callable[[], Any], expected: dict[str, Any]) -> None:
    call()
    record = fake.last_call()
    assert record["function"] == export
    assert record["args"] == expected


def test_importing_the_bindings_loads_no_library() -> None:
    code = (
        "import hcsshim.hcs.win32.computecore as c, hcsshim.hcs.win32.vmcompute as v, hcsshim.hcs.win32.operation\n"
        "from hcsshim.hcs.win32 import loader\n"
        "assert all(lib._dll is None for lib in loader.LIBRARIES.values())\n"
        "assert all(e._fn is None for e in [*c.EXPORTS.values(), *v.EXPORTS.values()])\n")
    env = {**os.environ, "HCSSHIM_FAKE_COMPUTECORE": "/nonexistent/libnothing.so"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_a_missing_library_is_an_error_naming_the_dll_and_the_function(fakes: fakehcs.Fakes) -> None:
    loader.set_library("computecore", "/nonexistent/libcomputecore.so")
    with pytest.raises(hresult.MissingLibraryError) as caught:
        cc.open_compute_system("c1")
    err = caught.value
    assert (err.win32, err.function, err.library) == (hresult.ERROR_MOD_NOT_FOUND, "HcsOpenComputeSystem",
                                                      "computecore.dll")
    assert "computecore.dll" in str(err) and "HcsOpenComputeSystem" in str(err)
    loader.set_library("computecore", fakes.built.computecore)  # not cached: the next call loads
    assert cc.open_compute_system("c1")


def test_off_windows_an_unredirected_library_says_how_to_redirect_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HCSSHIM_FAKE_VMCOMPUTE", raising=False)
    loader.set_library("vmcompute", None)
    with pytest.raises(hresult.MissingLibraryError, match="HCSSHIM_FAKE_VMCOMPUTE"):
        loader.VMCOMPUTE.load("HcsOpenProcess")


def test_the_environment_variable_redirects_a_library(fakes: fakehcs.Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    loader.set_library("computecore", None)
    monkeypatch.setenv("HCSSHIM_FAKE_COMPUTECORE", str(fakes.built.computecore))
    cc.submit_wer_report("{}")
    assert fakes.computecore.last_call()["function"] == "HcsSubmitWerReport"


def test_a_missing_export_raises_proc_not_found_and_the_rest_still_works(fakes: fakehcs.Fakes) -> None:
    loader.set_library("computecore", fakes.built.computecore_old)
    with pytest.raises(hresult.MissingExportError) as caught:
        cc.start_live_migration_on_source(SYS, OP)
    err = caught.value
    assert (err.win32, err.hresult, err.function) == (0x7F, 0x8007007F, "HcsStartLiveMigrationOnSource")
    assert "computecore.dll" in str(err)
    assert not cc.EXPORTS["HcsGetProcessorCompatibilityFromSavedState"].available()
    assert cc.EXPORTS["HcsStartComputeSystem"].available()
    cc.start_compute_system(SYS, OP)
    assert fakes.computecore_old.last_call()["function"] == "HcsStartComputeSystem"


@pytest.mark.parametrize(("hr", "code"), [
    (0x80070490, 0x490), (0x80070005, 0x5), (0xC0370103, 0xC0370103), (0x80370118, 0x80370118),
    (0xC0070002, 0x2), (0x8037011F, 0x8037011F),
])
def test_a_failed_hresult_folds_facility_win32_and_keeps_others_whole(fake: fakehcs.FakeDll, hr: int,
                                                                       code: int) -> None:
    assert hresult.win32_from_hresult(hr) == code
    fake.set_result("HcsStartComputeSystem", hr)
    with pytest.raises(hresult.Win32Error) as caught:
        cc.start_compute_system(SYS, OP)
    assert (caught.value.hresult, caught.value.win32, caught.value.function) == (hr, code, "HcsStartComputeSystem")


def test_success_codes_are_not_errors(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsPauseComputeSystem", 1)  # S_FALSE
    cc.pause_compute_system(SYS, OP)
    assert not hresult.failed(0x7FFFFFFF) and hresult.failed(-1) and hresult.failed(0x80000000)


def test_a_failure_carries_the_parsed_result_document(fake: fakehcs.FakeDll) -> None:
    doc = {"Error": -2147024809, "ErrorMessage": "Le paramètre est incorrect 😀",
           "ErrorEvents": [{"Message": "bad layer", "Provider": "{17103E3F}", "EventId": 12, "Source": "hcs"}]}
    fake.set_result("HcsWaitForOperationResult", 0x80070057, json.dumps(doc, ensure_ascii=False))
    with pytest.raises(hresult.Win32Error) as caught:
        cc.wait_for_operation_result(OP)
    err = caught.value
    assert err.result_json == doc
    assert err.error_message == doc["ErrorMessage"] and err.error_events == doc["ErrorEvents"]
    assert str(err) == "HcsWaitForOperationResult: Le paramètre est incorrect 😀 (0x57)"
    assert isinstance(err, OSError) and err.winerror == 0x57


def test_strings_reach_the_dll_as_exact_utf16_units(fake: fakehcs.FakeDll) -> None:
    tricky = "a\u00e9\u65e5\U0001F600\U0001D11E\ud800z\"\\\n"  # includes a lone surrogate, passed as is
    cc.grant_vm_access(tricky, "")
    assert args_of(fake) == {"vmId": tricky, "filePath": ""}
    cc.grant_vm_group_access(None)  # type: ignore[arg-type]
    assert args_of(fake) == {"filePath": None}


def test_a_nul_inside_a_string_is_refused_before_the_call(fake: fakehcs.FakeDll) -> None:
    with pytest.raises(ValueError, match="NUL"):
        cc.grant_vm_group_access("a\x00b")
    assert fake.calls() == []


def test_returned_strings_are_decoded_and_freed_exactly_once(fakes: fakehcs.Fakes) -> None:
    fakes.computecore.set_result("HcsGetServiceProperties", 0, DOC)
    assert cc.get_service_properties("{}") == DOC
    assert cc.get_service_properties("{}") == DOC
    assert fakes.com.total_allocations() == 2 and fakes.com.live_allocations() == 0


def test_a_result_document_is_freed_when_the_call_fails(fakes: fakehcs.Fakes) -> None:
    fakes.computecore.set_result("HcsModifyServiceSettings", 0x80004005, '{"ErrorMessage": "no"}')
    with pytest.raises(hresult.Win32Error, match="no"):
        cc.modify_service_settings("{}")
    assert fakes.com.total_allocations() == 1 and fakes.com.live_allocations() == 0


def test_a_long_string_spanning_pages_is_read_whole(fake: fakehcs.FakeDll) -> None:
    big = json.dumps({"Items": ["é😀" * 7 + str(i) for i in range(1500)]}, ensure_ascii=False)
    fake.set_result("HcsWaitForComputeSystemExit", 0, big)
    assert cc.wait_for_compute_system_exit(SYS) == big


def test_an_out_string_slot_is_taken_once() -> None:
    slot = strings.OutString()
    assert slot.take() == "" and slot.address == 0
    assert strings.read_wstr(0) == ""
    buffer = strings.wstr("x😀")
    assert buffer is not None and list(buffer) == [0x78, 0xD83D, 0xDE00, 0]
    assert strings.read_wstr(ctypes.addressof(buffer)) == "x😀"


def test_unpaired_surrogates_coming_back_decode_to_the_replacement_character() -> None:
    units = (ctypes.c_uint16 * 4)(0x61, 0xD800, 0x62, 0)
    assert strings.read_wstr(ctypes.addressof(units)) == "a\ufffdb"


def test_handles_keep_all_64_bits_both_ways(fake: fakehcs.FakeDll) -> None:
    op = cc.create_operation()
    system = cc.create_compute_system("c1", "{}", op)
    assert op > 2**32 and system > 2**32
    assert system == fake.last_call()["out"]["computeSystem"]
    assert cc.get_compute_system_from_operation(op) == system
    assert cc.get_operation_id(op) >= 2**63  # uint64 return
    assert cc.get_operation_type(op) == -1  # int32 return: "not used yet"
    fake.set_result("HcsGetOperationType", 1)
    assert cc.OPERATION_TYPE_NAMES[cc.get_operation_type(op)] == "Create"
    cc.close_compute_system(system)
    cc.close_operation(op)


def test_process_information_comes_back_from_the_struct(fake: fakehcs.FakeDll) -> None:
    assert ctypes.sizeof(HCS_PROCESS_INFORMATION) == 32 and ctypes.sizeof(HCS_EVENT) == 24
    fake.set_process_info(4242, 0x1_0000_0001, 0x1_0000_0002, 0)
    fake.set_result("HcsWaitForOperationResultAndProcessInfo", 0, DOC)
    info, doc = cc.wait_for_operation_result_and_process_info(OP, 5)
    assert info == ProcessInformation(4242, 0x1_0000_0001, 0x1_0000_0002, 0) and doc == DOC


def test_create_operation_failure_reports_the_last_error(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsCreateOperation", 0x8007000E)  # the fake returns NULL with last error 0xE
    with pytest.raises(hresult.Win32Error) as caught:
        cc.create_operation(lambda op: None)
    assert (caught.value.win32, caught.value.function) == (0xE, "HcsCreateOperation")
    assert len(REGISTRY) == 0


def test_a_handle_returned_with_a_failure_is_closed(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsCreateComputeSystem", 0x80070005)
    with pytest.raises(hresult.Win32Error):
        cc.create_compute_system("c1", "{}", OP)
    created, closed = fake.calls()
    assert closed == {"function": "HcsCloseComputeSystem", "args": {"computeSystem": created["out"]["computeSystem"]},
                      "out": {}}


# run_operation and friends

def test_run_operation_creates_calls_waits_and_closes(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsWaitForOperationResult", 0, DOC)
    value, doc = operation.run_operation(lambda op: cc.start_compute_system(SYS, op, TEXT) or "started", 2.5)
    assert (value, doc) == ("started", DOC)
    calls = fake.calls()
    assert [c["function"] for c in calls] == ["HcsCreateOperation", "HcsStartComputeSystem",
                                              "HcsWaitForOperationResult", "HcsCloseOperation"]
    op = calls[0]["out"]["operation"]
    assert calls[1]["args"]["operation"] == op and calls[3]["args"]["operation"] == op
    assert calls[2]["args"] == {"operation": op, "timeoutMs": 2500}
    assert fake.open_operations() == 0


def test_run_operation_cancels_when_the_wait_times_out(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsWaitForOperationResult", hresult.HCS_E_OPERATION_TIMEOUT)
    with pytest.raises(hresult.Win32Error) as caught:
        operation.run_operation(lambda op: cc.shut_down_compute_system(SYS, op), timeout=0.01)
    assert caught.value.hresult == hresult.HCS_E_OPERATION_TIMEOUT
    assert fake.functions() == ["HcsCreateOperation", "HcsShutDownComputeSystem", "HcsWaitForOperationResult",
                                "HcsCancelOperation", "HcsCloseOperation"]
    assert fake.calls()[2]["args"]["timeoutMs"] == 10


def test_run_operation_reports_a_failed_call_with_the_operations_result(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsModifyComputeSystem", 0x80370100)
    fake.set_result("HcsGetOperationResult", 0x80370100, '{"ErrorMessage": "bad request"}')
    with pytest.raises(hresult.Win32Error) as caught:
        operation.run_operation(lambda op: cc.modify_compute_system(SYS, op, "{}"))
    assert (caught.value.function, caught.value.error_message) == ("HcsModifyComputeSystem", "bad request")
    assert fake.functions() == ["HcsCreateOperation", "HcsModifyComputeSystem", "HcsGetOperationResult",
                                "HcsCloseOperation"]


def test_run_operation_without_a_deadline_waits_forever(fake: fakehcs.FakeDll) -> None:
    operation.run_operation(lambda op: cc.enumerate_compute_systems("{}", op))
    assert fake.calls()[2]["args"]["timeoutMs"] == INFINITE
    assert [operation.timeout_ms(t) for t in (None, -1, 0, 0.0015, 1e12)] == [INFINITE, 0, 0, 1, INFINITE - 1]


def test_run_process_operation_returns_the_process_information(fake: fakehcs.FakeDll) -> None:
    fake.set_process_info(7, 11, 12, 13)
    process, info, doc = operation.run_process_operation(lambda op: cc.create_process(SYS, TEXT, op))
    assert info == ProcessInformation(7, 11, 12, 13) and doc == ""
    assert fake.functions()[2] == "HcsWaitForOperationResultAndProcessInfo"
    assert process == fake.calls()[1]["out"]["process"]
    cc.close_process(process)


def test_submit_operation_does_not_wait(fake: fakehcs.FakeDll) -> None:
    operation.submit_operation(lambda op: cc.terminate_compute_system(SYS, op))
    assert fake.functions() == ["HcsCreateOperation", "HcsTerminateComputeSystem", "HcsCloseOperation"]


# Callbacks

def test_a_system_event_fired_by_the_dll_reaches_the_handler(fake: fakehcs.FakeDll) -> None:
    seen: list[tuple[Event, str]] = []
    cc.set_compute_system_callback(SYS, lambda e: seen.append((e, threading.current_thread().name)),
                                   cc.EVENT_OPTION_ENABLE_LIVE_MIGRATION_EVENTS)
    record = args_of(fake)
    assert record["callbackOptions"] == 4 and record["callback"] == ctypes.cast(EVENT_TRAMPOLINE, ctypes.c_void_p).value
    assert record["context"] in REGISTRY and record["context"] < 2**20  # a registry key, not an address
    data = '{"Status": -2147023895, "ExitType": "UnexpectedExit", "Note": "é😀"}'
    assert fake.fire_event(SYS, cc.EVENT_SYSTEM_EXITED, data) == 0
    assert fake.fire_event(SYS, cc.EVENT_SERVICE_DISCONNECT, None, OP, threaded=True) == 0
    main = threading.current_thread().name
    assert seen[0] == (Event(cc.EVENT_SYSTEM_EXITED, data, 0), main)
    assert seen[1][0] == Event(cc.EVENT_SERVICE_DISCONNECT, "", OP) and seen[1][1] != main
    cc.close_compute_system(SYS)


def test_the_registry_keeps_the_handler_alive_until_the_handle_is_closed(fake: fakehcs.FakeDll) -> None:
    seen: list[int] = []

    def make_handler() -> Callable[[Event], None]:
        return lambda e: seen.append(e.type)

    cc.set_process_callback(PROC, make_handler())  # nothing else references the handler
    key = args_of(fake)["context"]
    gc.collect()
    assert fake.fire_event(PROC, cc.EVENT_PROCESS_EXITED, '{"ExitCode": 3}', threaded=True) == 0
    assert seen == [cc.EVENT_PROCESS_EXITED]
    cc.close_process(PROC)
    assert key not in REGISTRY and len(REGISTRY) == 0
    assert fake.fire_event(PROC, cc.EVENT_PROCESS_EXITED, None) == -1  # the DLL forgot it too
    event = HCS_EVENT(cc.EVENT_PROCESS_EXITED, None, None)
    EVENT_TRAMPOLINE(ctypes.pointer(event), key)  # a late call with the stale context is dropped
    assert seen == [cc.EVENT_PROCESS_EXITED]


def test_setting_a_callback_again_replaces_the_handler(fake: fakehcs.FakeDll) -> None:
    first: list[int] = []
    second: list[int] = []
    cc.set_compute_system_callback(SYS, lambda e: first.append(e.type))
    cc.set_compute_system_callback(SYS, lambda e: second.append(e.type))
    assert len(REGISTRY) == 1
    fake.fire_event(SYS, 6, None)
    assert (first, second) == ([], [6])
    cc.set_compute_system_callback(SYS, None)
    assert len(REGISTRY) == 0 and fake.registrations() == 0


def test_a_refused_registration_keeps_no_handler(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsSetComputeSystemCallback", 0x80070006)
    with pytest.raises(hresult.Win32Error):
        cc.set_compute_system_callback(SYS, lambda e: None)
    assert len(REGISTRY) == 0


def test_a_handler_exception_is_logged_not_raised_into_the_dll(fake: fakehcs.FakeDll,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    cc.set_compute_system_callback(SYS, broken)
    with caplog.at_level(logging.ERROR, logger="hcsshim.hcs.win32"):
        assert fake.fire_event(SYS, 1, None, threaded=True) == 0
    assert "boom" in caplog.text
    cc.close_compute_system(SYS)


def test_an_operation_completion_callback_gets_the_operation(fake: fakehcs.FakeDll) -> None:
    done: list[int] = []
    op = cc.create_operation(done.append)
    key = fake.last_call()["args"]["context"]
    assert cc.get_operation_context(op) == key and key in REGISTRY
    assert fake.complete_operation(op, threaded=True) == 0
    assert done == [op]
    cc.set_operation_callback(op, lambda o: done.append(-o))
    assert key not in REGISTRY and len(REGISTRY) == 1
    fake.complete_operation(op)
    assert done == [op, -op]
    cc.close_operation(op)
    assert len(REGISTRY) == 0 and fake.complete_operation(op) == -1


def test_an_operation_with_notifications_delivers_events(fake: fakehcs.FakeDll) -> None:
    events: list[Event] = []
    op = cc.create_operation_with_notifications(cc.OPERATION_OPTION_PROGRESS_UPDATE, events.append)
    fake.complete_operation(op, cc.EVENT_GROUP_OPERATION_INFO, '{"Progress": 50}')
    assert events == [Event(cc.EVENT_GROUP_OPERATION_INFO, '{"Progress": 50}', op)]
    assert cc.EVENT_TYPE_NAMES[events[0].type] == "GroupOperationInfo"
    cc.close_operation(op)


# The fake's build and the error type

def test_without_a_c_compiler_the_fake_build_fails_loudly(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(fakehcs.CompilerMissing, match="make setup"):
        fakehcs.build(tmp_path)
    monkeypatch.setenv("CC", "no-such-cc")
    with pytest.raises(fakehcs.CompilerMissing, match="no-such-cc"):
        fakehcs.find_compiler()


def test_win32_errors_survive_pickling_with_their_fields() -> None:
    errors = [hresult.Win32Error(0x80070490, "HcsOpenProcess", '{"ErrorMessage": "gone"}'),
              hresult.MissingExportError("computecore.dll", "HcsCancelLiveMigration"),
              hresult.MissingLibraryError("vmcompute.dll", "HcsOpenProcess", "not found")]
    for err in errors:
        copy = pickle.loads(pickle.dumps(err))
        assert (type(copy), str(copy), copy.hresult, copy.win32, copy.function, copy.result_json) == (
            type(err), str(err), err.hresult, err.win32, err.function, err.result_json)
    assert hresult.hresult_from_win32(5) == 0x80070005 and hresult.hresult_from_win32(0) == 0
    assert hresult.parse_result_document("not json") is None and hresult.parse_result_document("[]") is None
