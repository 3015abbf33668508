"""The Windows backend (hcsshim.hcs.windows) at the level of the Backend contract: JSON text in and out, against the
fake computecore (tests/fakehcs). How events travel, what a failed create leaves behind, how errors are translated,
the process-creation recovery, and that a handle is never released under a running call."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import fakehcs
import pytest

from hcsshim.hcs import timeouts
from hcsshim.hcs import windows as W
from hcsshim.hcs import winshared as S
from hcsshim.hcs.backend import EVENT_PROCESS_EXITED, EVENT_SYSTEM_EXITED, CallError, Event, ProcessInfo
from hcsshim.hcs.errors import is_not_exist
from hcsshim.hcs.win32 import callbacks, loader
from hcsshim.hcs.win32.callbacks import REGISTRY
from hcsshim.hcs.win32.cdefs import ProcessInformation
from hcsshim.hcs.win32.hresult import HCS_E_OPERATION_TIMEOUT, Win32Error

T = TypeVar("T")


@pytest.fixture
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fakehcs.Fakes]:
    with fakehcs.installed(tmp_path_factory) as installed:
        yield installed
        assert installed.computecore.open_operations() == 0


@pytest.fixture
def fake(fakes: fakehcs.Fakes) -> fakehcs.FakeDll:
    return fakes.computecore


def go(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_events_wait_for_a_sink_then_arrive_in_order_on_the_loop_thread(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await W.WindowsBackend().create_system("c1", "{}")
        assert len(REGISTRY.keys(("computecore.system", system.handle))) == 1  # kept alive for the handle
        fake.fire_event(system.handle, 6, None, threaded=True)
        fake.fire_event(system.handle, EVENT_SYSTEM_EXITED, '{"ExitType":"GracefulExit"}', threaded=True)
        fake.fire_event(system.handle, EVENT_SYSTEM_EXITED, '{"ExitType":"again"}', threaded=True)
        await asyncio.sleep(0.01)
        seen: list[tuple[Event, threading.Thread]] = []
        system.set_event_sink(lambda e: seen.append((e, threading.current_thread())))
        assert [e for e, _ in seen] == [Event(6, ""), Event(EVENT_SYSTEM_EXITED, '{"ExitType":"GracefulExit"}')]
        fake.fire_event(system.handle, 5, '{"x":1}', threaded=True)
        await asyncio.sleep(0.01)
        assert seen[-1][0] == Event(5, '{"x":1}')
        assert all(thread is threading.main_thread() for _, thread in seen)
        await system.close()
        assert len(REGISTRY) == 0 and fake.fire_event(system.handle, 5, None) == -1

    go(body())


def test_a_callback_that_races_the_close_delivers_nothing_after_it(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await W.WindowsBackend().create_system("c1", "{}")
        seen: list[Event] = []
        system.set_event_sink(seen.append)
        (key,) = REGISTRY.keys(("computecore.system", system.handle))
        handler = REGISTRY.lookup(key)
        assert handler is not None
        await system.close()
        handler(callbacks.Event(6, ""))  # HCS was already inside the callback when the handle closed
        await asyncio.sleep(0.01)
        assert seen == []

    go(body())


def test_a_create_refused_outright_closes_the_handle_without_terminating(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsCreateComputeSystem", 0xC037010F)
    with pytest.raises(CallError) as caught:
        go(W.WindowsBackend().create_system("c1", "{}"))
    assert (caught.value.code, caught.value.function) == (0xC037010F, "HcsCreateComputeSystem")
    functions = fake.functions()
    assert "HcsTerminateComputeSystem" not in functions and functions.count("HcsCloseComputeSystem") == 1


def test_a_create_whose_callback_cannot_be_set_terminates_and_closes_the_system(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsSetComputeSystemCallback", 0x80070006)
    with pytest.raises(CallError, match=r"^The handle is invalid\.$"):
        go(W.WindowsBackend().create_system("c1", "{}"))
    assert fake.functions()[-4:] == ["HcsCreateOperation", "HcsTerminateComputeSystem", "HcsCloseOperation",
                                     "HcsCloseComputeSystem"]


def test_an_open_whose_callback_cannot_be_set_closes_the_handle(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsSetComputeSystemCallback", 0x80070006)
    with pytest.raises(CallError):
        go(W.WindowsBackend().open_system("c1"))
    assert fake.functions() == ["HcsOpenComputeSystem", "HcsSetComputeSystemCallback", "HcsCloseComputeSystem"]


def test_a_failed_call_keeps_its_code_message_document_and_events() -> None:
    doc = json.dumps({"Error": -2143878898, "ErrorMessage": "no such system",
                      "ErrorEvents": [{"Message": "m", "Source": "s"}]})
    err = W.call_error(Win32Error(0xC037010E, "HcsOpenComputeSystem", doc))
    assert (err.code, err.hresult, str(err), err.function, err.result) == (
        0xC037010E, 0xC037010E, "no such system", "HcsOpenComputeSystem", doc)
    assert [(e.message, e.source) for e in err.events] == [("m", "s")] and is_not_exist(err)
    plain = W.call_error(Win32Error(0x80070490, "HcsOpenProcess"))
    assert (plain.code, plain.hresult, str(plain), plain.events) == (0x490, 0x80070490, "Element not found.", [])
    assert W.call_error(Win32Error(5, "HcsX", "{not json")).events == []  # logged, not fatal


def test_a_missing_computecore_is_a_call_error_naming_the_dll(fakes: fakehcs.Fakes) -> None:
    loader.set_library("computecore", "/nonexistent/libcomputecore.so")
    with pytest.raises(CallError) as caught:
        go(W.WindowsBackend().open_system("c1"))
    assert caught.value.code == 0x7E and "computecore.dll" in str(caught.value)


def test_a_wait_that_times_out_cancels_the_operation(fake: fakehcs.FakeDll, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeouts, "TIMEOUTS", timeouts.Timeouts(system_start=1.5))

    async def body() -> None:
        system = await W.WindowsBackend().open_system("c1")
        fake.set_result("HcsWaitForOperationResult", HCS_E_OPERATION_TIMEOUT)
        with pytest.raises(CallError) as caught:
            await system.start()
        assert caught.value.hresult == HCS_E_OPERATION_TIMEOUT
        assert fake.functions()[-3:] == ["HcsWaitForOperationResult", "HcsCancelOperation", "HcsCloseOperation"]
        waits = [c for c in fake.calls() if c["function"] == "HcsWaitForOperationResult"]
        assert waits[-1]["args"]["timeoutMs"] == 1500
        await system.close()

    go(body())


def test_a_spurious_create_process_wait_failure_is_recovered_from_the_process_info(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await W.WindowsBackend().open_system("c1")
        fake.set_process_info(31, 0, 0, 0)
        fake.queue_result("HcsWaitForOperationResultAndProcessInfo", 0x80070057)
        process, info = await system.create_process('{"CommandLine":"x"}')
        assert (process.pid, info) == (31, ProcessInfo(31))
        functions = fake.functions()
        assert functions[functions.index("HcsCreateProcess"):] == [
            "HcsCreateProcess", "HcsWaitForOperationResultAndProcessInfo", "HcsCloseOperation",
            "HcsCreateOperation", "HcsGetProcessInfo", "HcsWaitForOperationResultAndProcessInfo",
            "HcsCloseOperation", "HcsSetProcessCallback"]
        await process.close()
        await system.close()

    go(body())


def test_when_the_recovery_fails_too_the_create_error_is_reported_and_the_process_closed(
        fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await W.WindowsBackend().open_system("c1")
        fake.queue_result("HcsWaitForOperationResultAndProcessInfo", 0x80070057)
        fake.queue_result("HcsWaitForOperationResultAndProcessInfo", 0x800706BA)
        with pytest.raises(CallError) as caught:
            await system.create_process("{}")
        assert caught.value.code == 0x57
        assert fake.functions()[-1] == "HcsCloseProcess"
        await system.close()

    go(body())


def test_process_calls_send_their_documents(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await W.WindowsBackend().open_system("c1")
        process = await system.open_process(12)
        await process.signal('{"Signal":2}')
        await process.modify('{"Operation":"CloseHandle"}')
        await process.terminate()
        fake.set_result("HcsWaitForOperationResult", 0, '{"ProcessId":12,"Exited":true}')
        assert await process.properties("{}") == '{"ProcessId":12,"Exited":true}'
        args = {c["function"]: c["args"] for c in fake.calls()}
        assert args["HcsSignalProcess"]["options"] == '{"Signal":2}'
        assert args["HcsModifyProcess"]["settings"] == '{"Operation":"CloseHandle"}'
        assert args["HcsTerminateProcess"]["options"] == ""
        fake.fire_event(process.handle, EVENT_PROCESS_EXITED, '{"ExitCode":0}')
        seen: list[Event] = []
        process.set_event_sink(seen.append)
        await asyncio.sleep(0.01)
        assert seen == [Event(EVENT_PROCESS_EXITED, '{"ExitCode":0}')]
        await process.close()
        await system.close()

    go(body())


def test_null_and_invalid_stdio_handles_are_no_pipe() -> None:
    info = ProcessInformation(3, 0, W._INVALID_HANDLE_VALUE, 0)
    assert S.descriptors(info) == ProcessInfo(3, None, None, None)


def test_service_calls_reach_computecore(fake: fakehcs.FakeDll) -> None:
    backend = W.WindowsBackend()
    fake.set_result("HcsGetServiceProperties", 0, '{"Properties":[]}')
    assert go(backend.service_properties('{"PropertyTypes":["Basic"]}')) == '{"Properties":[]}'
    go(backend.modify_service('{"PropertyType":"CpuGroup"}'))
    fake.set_result("HcsWaitForOperationResult", 0, "[]")
    assert go(backend.enumerate_systems('{"Ids":["a"]}')) == "[]"
    assert {c["function"]: c["args"] for c in fake.calls()}["HcsEnumerateComputeSystems"]["query"] == '{"Ids":["a"]}'


# -- calls in flight ------------------------------------------------------------------------------------------


def test_drain_waits_for_a_call_whose_caller_was_cancelled() -> None:
    async def body() -> None:
        calls = S.Calls()
        release = threading.Event()
        finished: list[str] = []

        def blocking() -> str:
            release.wait(5)
            finished.append("done")
            return "handle"

        caller = asyncio.ensure_future(calls.run(blocking))
        await asyncio.sleep(0.01)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        drained = asyncio.ensure_future(calls.drain())
        await asyncio.sleep(0.01)
        assert not drained.done() and finished == []  # the thread still runs: nothing may be released yet
        release.set()
        await asyncio.wait_for(drained, 5)
        assert finished == ["done"]

    go(body())


def test_what_a_cancelled_call_returns_is_released() -> None:
    async def body() -> None:
        calls = S.Calls()
        release = threading.Event()
        released: list[str] = []
        caller = asyncio.ensure_future(calls.run(lambda: release.wait(5) and "handle", released.append))
        await asyncio.sleep(0.01)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        for _ in range(500):
            await asyncio.sleep(0.01)
            if released:
                break
        await calls.drain()
        assert released == ["handle"]

    go(body())


def test_a_cancelled_create_leaves_no_system_behind(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        creating = asyncio.ensure_future(W.WindowsBackend().create_system("c1", "{}"))
        await asyncio.sleep(0)  # the call has been handed to a thread
        creating.cancel()
        with pytest.raises(asyncio.CancelledError):
            await creating
        for _ in range(500):
            await asyncio.sleep(0.01)
            if "HcsCloseComputeSystem" in fake.functions():
                break
        assert fake.functions()[-4:] == ["HcsCreateOperation", "HcsTerminateComputeSystem", "HcsCloseOperation",
                                         "HcsCloseComputeSystem"]
        assert len(REGISTRY) == 0

    go(body())
