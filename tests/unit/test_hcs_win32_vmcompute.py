"""The vmcompute (HCS v1) bindings, exercised against the fake vmcompute built from tests/fakehcs/fakehcs.c."""

from __future__ import annotations

import ctypes
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import fakehcs
import pytest

from hcsshim.hcs.win32 import hresult
from hcsshim.hcs.win32 import vmcompute as vm
from hcsshim.hcs.win32.callbacks import NOTIFICATION_TRAMPOLINE, REGISTRY, Notification
from hcsshim.hcs.win32.cdefs import ProcessInformation

SYS, PROC, CB = 0x2_0000_0000_0052, 0x3_0000_0000_0053, 0x4_0000_0000_0054
TEXT = '{"CommandLine": "cmd /c echo ünï 😀", "Quote": "\\""}'
DOC = '{"State": "Running ✓ 𝄞"}'
PENDING = hresult.ERROR_VMCOMPUTE_OPERATION_PENDING


@pytest.fixture
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fakehcs.Fakes]:
    with fakehcs.installed(tmp_path_factory) as installed:
        yield installed


@pytest.fixture
def fake(fakes: fakehcs.Fakes) -> fakehcs.FakeDll:
    return fakes.vmcompute


BINDINGS: list[tuple[str, Callable[[], Any], dict[str, Any]]] = [
    ("HcsEnumerateComputeSystems", lambda: vm.enumerate_compute_systems(TEXT), {"query": TEXT}),
    ("HcsCreateComputeSystem", lambda: vm.create_compute_system("c1", TEXT),
     {"id": "c1", "configuration": TEXT, "identity": 0}),
    ("HcsOpenComputeSystem", lambda: vm.open_compute_system("c1"), {"id": "c1"}),
    ("HcsCloseComputeSystem", lambda: vm.close_compute_system(SYS), {"computeSystem": SYS}),
    *[(f"Hcs{verb}ComputeSystem", (lambda f=f: f(SYS, TEXT)), {"computeSystem": SYS, "options": TEXT})
      for verb, f in [("Start", vm.start_compute_system), ("Shutdown", vm.shutdown_compute_system),
                      ("Terminate", vm.terminate_compute_system), ("Pause", vm.pause_compute_system),
                      ("Resume", vm.resume_compute_system), ("Save", vm.save_compute_system)]],
    ("HcsGetComputeSystemProperties", lambda: vm.get_compute_system_properties(SYS, TEXT),
     {"computeSystem": SYS, "propertyQuery": TEXT}),
    ("HcsModifyComputeSystem", lambda: vm.modify_compute_system(SYS, TEXT), {"computeSystem": SYS,
                                                                           "configuration": TEXT}),
    ("HcsGetServiceProperties", lambda: vm.get_service_properties(TEXT), {"propertyQuery": TEXT}),
    ("HcsModifyServiceSettings", lambda: vm.modify_service_settings(TEXT), {"settings": TEXT}),
    ("HcsRegisterComputeSystemCallback", lambda: vm.unregister_compute_system_callback(
        vm.register_compute_system_callback(SYS, lambda n: None)), None),
    ("HcsUnregisterComputeSystemCallback", lambda: vm.unregister_compute_system_callback(CB),
     {"callbackHandle": CB}),
    ("HcsCreateProcess", lambda: vm.create_process(SYS, TEXT), {"computeSystem": SYS, "processParameters": TEXT}),
    ("HcsOpenProcess", lambda: vm.open_process(SYS, 77), {"computeSystem": SYS, "processId": 77}),
    ("HcsCloseProcess", lambda: vm.close_process(PROC), {"process": PROC}),
    ("HcsTerminateProcess", lambda: vm.terminate_process(PROC), {"process": PROC}),
    ("HcsSignalProcess", lambda: vm.signal_process(PROC, TEXT), {"process": PROC, "options": TEXT}),
    ("HcsGetProcessInfo", lambda: vm.get_process_info(PROC), {"process": PROC}),
    ("HcsGetProcessProperties", lambda: vm.get_process_properties(PROC), {"process": PROC}),
    ("HcsModifyProcess", lambda: vm.modify_process(PROC, TEXT), {"process": PROC, "settings": TEXT}),
    ("HcsRegisterProcessCallback", lambda: vm.unregister_process_callback(
        vm.register_process_callback(PROC, lambda n: None)), None),
    ("HcsUnregisterProcessCallback", lambda: vm.unregister_process_callback(CB), {"callbackHandle": CB}),
]


def test_the_table_covers_all_26_vmcompute_exports() -> None:
    names = [name for name, _, _ in BINDINGS]
    assert len(names) == len(set(names)) == 26
    assert set(names) == set(vm.EXPORTS)


@pytest.mark.parametrize(("export", "call", "expected"), BINDINGS, ids=[b[0] for b in BINDINGS])
def test_each_binding_passes_its_arguments_to_the_export(fake: fakehcs.FakeDll, export: str,
                                                         call: Callable[[], Any],
                                                         expected: dict[str, Any] | None) -> None:
    call()
    record = next(c for c in fake.calls() if c["function"] == export)
    if expected is None:  # a registration: the context is a registry key, the callback the shared trampoline
        assert record["args"]["callback"] == ctypes.cast(NOTIFICATION_TRAMPOLINE, ctypes.c_void_p).value
        assert 0 < record["args"]["context"] < 2**20
    else:
        assert record["args"] == expected


def test_a_pending_create_returns_the_handle_and_pending(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsCreateComputeSystem", PENDING)
    system, pending = vm.create_compute_system("c1", "{}")
    assert pending and system == fake.last_call()["out"]["computeSystem"] and system > 2**32
    fake.set_result("HcsCreateComputeSystem", 0)
    assert vm.create_compute_system("c2", "{}")[1] is False
    assert "HcsCloseComputeSystem" not in fake.functions()


def test_lifecycle_calls_report_pending_instead_of_raising(fake: fakehcs.FakeDll) -> None:
    for name, call in [("HcsStartComputeSystem", vm.start_compute_system),
                       ("HcsShutdownComputeSystem", vm.shutdown_compute_system),
                       ("HcsTerminateComputeSystem", vm.terminate_compute_system),
                       ("HcsPauseComputeSystem", vm.pause_compute_system),
                       ("HcsResumeComputeSystem", vm.resume_compute_system),
                       ("HcsSaveComputeSystem", vm.save_compute_system)]:
        assert call(SYS) is False
        fake.set_result(name, PENDING)
        assert call(SYS) is True


def test_pending_is_an_error_for_calls_that_are_never_asynchronous(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsModifyComputeSystem", PENDING)
    with pytest.raises(hresult.Win32Error) as caught:
        vm.modify_compute_system(SYS, "{}")
    assert caught.value.win32 == PENDING


def test_a_failed_create_closes_the_handle_and_carries_the_result(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsCreateComputeSystem", 0x80070057, '{"ErrorMessage": "bad config ✗", "ErrorEvents": []}')
    with pytest.raises(hresult.Win32Error) as caught:
        vm.create_compute_system("c1", "{}")
    assert (caught.value.win32, caught.value.error_message) == (0x57, "bad config ✗")
    created, closed = fake.calls()
    assert closed["function"] == "HcsCloseComputeSystem"
    assert closed["args"]["computeSystem"] == created["out"]["computeSystem"]


def test_data_and_result_documents_are_both_returned_and_freed(fakes: fakehcs.Fakes) -> None:
    fake = fakes.vmcompute
    fake.set_result("HcsGetComputeSystemProperties", 0, '{"warning": "ignored on success"}', DOC)
    assert vm.get_compute_system_properties(SYS, "{}") == DOC
    fake.set_result("HcsEnumerateComputeSystems", 0x8037010E, '{"ErrorMessage": "denied"}', "[]")
    with pytest.raises(hresult.Win32Error, match="denied"):
        vm.enumerate_compute_systems("{}")
    assert fakes.com.total_allocations() == 4 and fakes.com.live_allocations() == 0


def test_create_process_returns_the_handle_and_the_process_information(fake: fakehcs.FakeDll) -> None:
    fake.set_process_info(4242, 0x1_0000_0010, 0x1_0000_0011, 0x1_0000_0012)
    process, info = vm.create_process(SYS, TEXT)
    assert process == fake.last_call()["out"]["process"]
    assert info == ProcessInformation(4242, 0x1_0000_0010, 0x1_0000_0011, 0x1_0000_0012)
    assert vm.get_process_info(process) == info
    fake.set_result("HcsGetProcessProperties", 0, None, '{"ExitCode": 3, "Exited": true}')
    assert vm.get_process_properties(process) == '{"ExitCode": 3, "Exited": true}'


def test_closing_reports_a_failed_hresult(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsCloseProcess", 0x80070006)
    with pytest.raises(hresult.Win32Error) as caught:
        vm.close_process(PROC)
    assert (caught.value.win32, caught.value.function) == (6, "HcsCloseProcess")


def test_a_notification_reaches_the_handler_with_its_status_and_data(fake: fakehcs.FakeDll) -> None:
    seen: list[tuple[Notification, str]] = []
    callback = vm.register_compute_system_callback(
        SYS, lambda n: seen.append((n, threading.current_thread().name)))
    assert callback == fake.last_call()["out"]["callbackHandle"] and callback > 2**32
    assert fake.fire_notification(callback, vm.NOTIFICATION_SYSTEM_START_COMPLETED, 0, None) == 0
    data = '{"ExitType": "UnexpectedExit", "é": "😀"}'
    assert fake.fire_notification(callback, vm.NOTIFICATION_SYSTEM_EXITED, 0x8037011F, data, threaded=True) == 0
    main = threading.current_thread().name
    assert seen[0] == (Notification(vm.NOTIFICATION_SYSTEM_START_COMPLETED, 0, ""), main)
    assert seen[1][0] == Notification(vm.NOTIFICATION_SYSTEM_EXITED, 0x8037011F, data) and seen[1][1] != main
    assert vm.NOTIFICATION_NAMES[seen[1][0].type] == "SystemExited"
    vm.unregister_compute_system_callback(callback)
    assert len(REGISTRY) == 0 and fake.fire_notification(callback, 1, 0, None) == -1


def test_a_handler_lives_until_unregistered_or_its_handle_is_closed(fake: fakehcs.FakeDll) -> None:
    exits: list[int] = []
    vm.register_process_callback(PROC, lambda n: exits.append(n.type))  # the registry holds the only reference
    gc.collect()
    assert fake.fire_notification(PROC, vm.NOTIFICATION_PROCESS_EXITED, 0, '{"ExitCode": 0}', threaded=True) == 0
    assert exits == [vm.NOTIFICATION_PROCESS_EXITED]
    vm.close_process(PROC)  # closing the process drops what was still registered on it
    assert len(REGISTRY) == 0


def test_a_refused_registration_keeps_no_handler(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsRegisterComputeSystemCallback", 0x80070005)
    with pytest.raises(hresult.Win32Error):
        vm.register_compute_system_callback(SYS, lambda n: None)
    assert len(REGISTRY) == 0
