"""The HCS v1 backend (hcsshim.hcs.windows_v1) and its notification waits (hcsshim.hcs.waithelper): the waits alone
with notifications put by hand, then the backend driven through the object layer (create_compute_system(...,
backend=VmcomputeBackend()), System, Process) against the fake vmcompute (tests/fakehcs), where a test plays HCS
by answering a call "pending" and firing the completion from another thread.

Every test ends with nothing leaked: the fixture checks that every string the fake returned was freed once, that
no callback handler outlived its handle and that no callback stayed registered with the fake."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import fakehcs
import pytest

from hcsshim.hcs import blocking, errors, schema2, service, timeouts
from hcsshim.hcs import windows_v1 as V1
from hcsshim.hcs.backend import (
    EVENT_PROCESS_EXITED,
    EVENT_SERVICE_DISCONNECT,
    EVENT_SYSTEM_CRASH_REPORT,
    EVENT_SYSTEM_EXITED,
    EVENT_SYSTEM_GUEST_CONNECTION_CLOSED,
    CallError,
    Event,
)
from hcsshim.hcs.process import Process
from hcsshim.hcs.system import System, create_compute_system, open_compute_system
from hcsshim.hcs.waithelper import PROCESS_CHANNELS, SYSTEM_CHANNELS, Channels
from hcsshim.hcs.win32 import vmcompute as vm
from hcsshim.hcs.win32.callbacks import REGISTRY, Notification
from hcsshim.hcs.win32.hresult import ERROR_VMCOMPUTE_OPERATION_PENDING as PENDING

T = TypeVar("T")
PROPS = {"Id": "c1", "SystemType": "Container", "RuntimeOsType": "Windows", "Owner": "Tester"}
EVENTS_DOC = json.dumps({"Error": -2147024891, "ErrorMessage": "Access is denied.",
                         "ErrorEvents": [{"Message": "boom", "Provider": "hcs", "EventId": 7}]})
GIVE_UP = 5.0  # seconds: no wait in these tests should come near it
SHORT = 0.05  # seconds: the timeout of the waits meant to time out
FAST = dataclasses.replace(timeouts.DEFAULTS, system_create=SHORT, system_start=SHORT, system_pause=SHORT,
                           system_resume=SHORT, system_save=SHORT)

CREATED = vm.NOTIFICATION_SYSTEM_CREATE_COMPLETED
STARTED = vm.NOTIFICATION_SYSTEM_START_COMPLETED
EXITED = vm.NOTIFICATION_SYSTEM_EXITED
DISCONNECT = vm.NOTIFICATION_SERVICE_DISCONNECT


@pytest.fixture
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fakehcs.Fakes]:
    with fakehcs.installed(tmp_path_factory) as installed:
        yield installed
        assert installed.vmcompute.registrations() == 0, "a callback stayed registered with HCS"


@pytest.fixture
def fake(fakes: fakehcs.Fakes) -> fakehcs.FakeDll:
    fakes.vmcompute.set_result("HcsGetComputeSystemProperties", 0, None, json.dumps(PROPS))
    return fakes.vmcompute


def go(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(GIVE_UP):
        while not condition():
            await asyncio.sleep(0.001)


def called(fake: fakehcs.FakeDll, function: str, times: int = 1) -> Callable[[], bool]:
    return lambda: fake.functions().count(function) >= times


def out_of(fake: fakehcs.FakeDll, function: str, key: str) -> int:
    return [c for c in fake.calls() if c["function"] == function][-1]["out"][key]


def system_handle(fake: fakehcs.FakeDll) -> int:
    return out_of(fake, "HcsCreateComputeSystem", "computeSystem")


def process_handle(fake: fakehcs.FakeDll) -> int:
    return out_of(fake, "HcsCreateProcess", "process")


def notify(fake: fakehcs.FakeDll, handle: int, kind: int, status: int = 0, data: str | None = None) -> None:
    """Play HCS: send a notification to the callback registered on `handle`, from HCS's own thread."""
    assert fake.fire_notification(handle, kind, status, data, threaded=True) == 0


async def created(fake: fakehcs.FakeDll, backend: V1.VmcomputeBackend | None = None) -> System:
    return await create_compute_system("c1", '{"SchemaVersion":{"Major":1,"Minor":0}}',
                                       backend=backend or V1.VmcomputeBackend())


async def answered_pending(fake: fakehcs.FakeDll, function: str, call: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Start `call`, whose vmcompute `function` answers pending; return once HCS has been called."""
    fake.queue_result(function, PENDING)
    before = fake.functions().count(function)
    task = asyncio.ensure_future(call)
    await until(called(fake, function, before + 1))
    return task


# -- the waits alone ------------------------------------------------------------------------------------------


def test_a_wait_returns_its_notification_even_one_that_came_before_it() -> None:
    async def body() -> None:
        channels = Channels(SYSTEM_CHANNELS)
        assert channels.put(Notification(STARTED, 0x80070005, "early"))
        assert await channels.wait_for(STARTED, 1) == Notification(STARTED, 0x80070005, "early")
        waiting = asyncio.ensure_future(channels.wait_for(STARTED, GIVE_UP))
        await asyncio.sleep(0)
        channels.put(Notification(STARTED))
        assert await waiting == Notification(STARTED)

    go(body())


def test_a_system_exit_during_a_wait_is_an_unexpected_container_exit_for_every_later_wait_too() -> None:
    async def body() -> None:
        channels = Channels(SYSTEM_CHANNELS)
        waiting = asyncio.ensure_future(channels.wait_for(STARTED, GIVE_UP))
        await asyncio.sleep(0)
        channels.put(Notification(EXITED, 0xC0370106))
        with pytest.raises(errors.ErrUnexpectedContainerExit, match=r"^unexpected container exit$"):
            await waiting
        with pytest.raises(errors.ErrUnexpectedContainerExit):
            await channels.wait_for(vm.NOTIFICATION_SYSTEM_PAUSE_COMPLETED, GIVE_UP)
        assert await channels.wait_for(EXITED, None) == Notification(EXITED, 0xC0370106)  # the raw one, expected

    go(body())


def test_a_service_disconnect_during_a_wait_is_an_unexpected_process_abort() -> None:
    async def body() -> None:
        for types, expected in [(SYSTEM_CHANNELS, CREATED), (PROCESS_CHANNELS, vm.NOTIFICATION_PROCESS_EXITED)]:
            channels = Channels(types)
            waiting = asyncio.ensure_future(channels.wait_for(expected, GIVE_UP))
            await asyncio.sleep(0)
            channels.put(Notification(DISCONNECT))
            with pytest.raises(errors.ErrUnexpectedProcessAbort, match=r"^lost communication with compute service$"):
                await waiting

    go(body())


def test_closing_the_channels_ends_the_waits_with_handle_close() -> None:
    async def body() -> None:
        channels = Channels(SYSTEM_CHANNELS)
        waiting = asyncio.ensure_future(channels.wait_for(CREATED, GIVE_UP))
        await asyncio.sleep(0)
        channels.close()
        with pytest.raises(errors.ErrHandleClose, match="handle generating this notification has been closed"):
            await waiting
        assert not channels.put(Notification(CREATED))
        with pytest.raises(errors.ErrHandleClose):
            await channels.wait_for(CREATED, GIVE_UP)

    go(body())


def test_a_wait_past_its_timeout_is_err_timeout() -> None:
    async def body() -> None:
        channels = Channels(SYSTEM_CHANNELS)
        with pytest.raises(errors.ErrTimeout) as caught:
            await channels.wait_for(STARTED, SHORT)
        assert errors.is_timeout(caught.value) and str(caught.value) == "hcsshim: timeout waiting for notification"

    go(body())


def test_the_first_outcome_to_arrive_wins() -> None:
    async def body() -> None:
        channels = Channels(SYSTEM_CHANNELS)
        channels.put(Notification(STARTED, 1))
        channels.put(Notification(EXITED))
        assert await channels.wait_for(STARTED, GIVE_UP) == Notification(STARTED, 1)  # it came before the exit
        channels.put(Notification(STARTED, 2))
        with pytest.raises(errors.ErrUnexpectedContainerExit):  # this one came after
            await channels.wait_for(STARTED, GIVE_UP)

    go(body())


def test_discarding_drops_a_completion_nobody_waited_for() -> None:
    async def body() -> None:
        channels = Channels(SYSTEM_CHANNELS)
        channels.put(Notification(STARTED, 0x80004005))
        channels.discard(STARTED)
        channels.put(Notification(STARTED))
        assert await channels.wait_for(STARTED, GIVE_UP) == Notification(STARTED)

    go(body())


def test_a_wait_for_a_type_without_a_channel_is_an_invalid_notification_type() -> None:
    async def body() -> None:
        channels = Channels(PROCESS_CHANNELS)
        with pytest.raises(errors.ErrInvalidNotificationType):
            await channels.wait_for(STARTED, GIVE_UP)
        assert not channels.put(Notification(vm.NOTIFICATION_SYSTEM_CRASH_REPORT))

    go(body())


# -- the translation of notifications ------------------------------------------------------------------------


def test_a_failed_completion_is_a_call_error_with_the_result_document() -> None:
    err = V1.notification_error(Notification(STARTED, 0x80070005, EVENTS_DOC), "HcsStartComputeSystem")
    assert isinstance(err, CallError)
    assert (err.code, err.hresult, str(err), err.function, err.result) == (
        5, 0x80070005, "Access is denied.", "HcsStartComputeSystem", EVENTS_DOC)
    assert [e.event_id for e in err.events] == [7]
    plain = V1.notification_error(Notification(STARTED, 0xC0370105), "HcsStartComputeSystem")
    assert plain is not None and plain.events == [] and errors.is_operation_invalid_state(plain)
    assert V1.notification_error(Notification(STARTED, 0, "ignored"), "HcsStartComputeSystem") is None


def test_a_system_exit_status_is_hcs_own_or_made_from_the_notification_status() -> None:
    theirs = '{"Status":0,"ExitType":"GracefulExit"}'
    assert V1.exit_status(Notification(EXITED, 0, theirs)) == theirs
    assert json.loads(V1.exit_status(Notification(EXITED, 0))) == {"Status": 0}
    assert json.loads(V1.exit_status(Notification(EXITED, 0xC0370106, '{"Detail":"x"}'))) == {
        "Detail": "x", "Status": -1070137082, "ExitType": "UnexpectedExit"}
    assert json.loads(V1.exit_status(Notification(EXITED, 0x80004005, "not json"))) == {
        "Status": -2147467259, "ExitType": "UnexpectedExit"}


def test_v1_notification_codes_become_the_contract_event_types() -> None:
    assert V1.EVENT_TYPES[vm.NOTIFICATION_SERVICE_DISCONNECT] == EVENT_SERVICE_DISCONNECT == 0x02000000
    assert V1.EVENT_TYPES[vm.NOTIFICATION_SYSTEM_CRASH_REPORT] == EVENT_SYSTEM_CRASH_REPORT == 3
    assert V1.EVENT_TYPES[vm.NOTIFICATION_SYSTEM_GUEST_CONNECTION_CLOSED] == EVENT_SYSTEM_GUEST_CONNECTION_CLOSED
    completions = {vm.NOTIFICATION_SYSTEM_CREATE_COMPLETED, vm.NOTIFICATION_SYSTEM_START_COMPLETED,
                   vm.NOTIFICATION_SYSTEM_PAUSE_COMPLETED, vm.NOTIFICATION_SYSTEM_RESUME_COMPLETED,
                   vm.NOTIFICATION_SYSTEM_SAVE_COMPLETED, vm.NOTIFICATION_SYSTEM_GET_PROPERTIES_COMPLETED,
                   vm.NOTIFICATION_SYSTEM_MODIFY_COMPLETED, vm.NOTIFICATION_SYSTEM_SHUTDOWN_FAILED}
    assert not completions & set(V1.EVENT_TYPES)
    assert set(V1.EVENT_TYPES) | completions | {vm.NOTIFICATION_INVALID} == set(vm.NOTIFICATION_NAMES)


# -- create, open and the lifecycle ---------------------------------------------------------------------------


def test_a_create_and_a_start_that_go_pending_complete_when_hcs_notifies(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        creating = await answered_pending(fake, "HcsCreateComputeSystem", created(fake))
        await until(called(fake, "HcsRegisterComputeSystemCallback"))
        await asyncio.sleep(SHORT)
        assert not creating.done()  # waiting for SystemCreateCompleted
        notify(fake, system_handle(fake), CREATED)
        system = await asyncio.wait_for(creating, GIVE_UP)
        assert (system.os(), system.system_type(), system.owner()) == ("windows", "container", "tester")
        assert fake.functions() == ["HcsCreateComputeSystem", "HcsRegisterComputeSystemCallback",
                                    "HcsGetComputeSystemProperties"]
        starting = await answered_pending(fake, "HcsStartComputeSystem", system.start())
        notify(fake, system_handle(fake), STARTED)
        await asyncio.wait_for(starting, GIVE_UP)
        assert system.started_time is not None
        callback = out_of(fake, "HcsRegisterComputeSystemCallback", "callbackHandle")
        await system.close()
        assert fake.functions()[-2:] == ["HcsUnregisterComputeSystemCallback", "HcsCloseComputeSystem"]
        assert [c["args"] for c in fake.calls()][-2:] == [{"callbackHandle": callback},
                                                         {"computeSystem": system_handle(fake)}]

    go(body())


def test_calls_answered_at_once_do_not_wait(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake, V1.VmcomputeBackend(FAST)) as system:
            await system.start()
            await system.pause()
            await system.resume()
            await system.save(schema2.SaveOptions(save_type="ToFile", save_state_file_path="C:\\s.vmrs"))
            assert [c["args"].get("options") for c in fake.calls()][-4:] == [
                "", "", "", '{"SaveType":"ToFile","SaveStateFilePath":"C:\\\\s.vmrs"}']

    go(body())


@pytest.mark.parametrize(("verb", "function", "completion"), [
    ("pause", "HcsPauseComputeSystem", vm.NOTIFICATION_SYSTEM_PAUSE_COMPLETED),
    ("resume", "HcsResumeComputeSystem", vm.NOTIFICATION_SYSTEM_RESUME_COMPLETED),
    ("save", "HcsSaveComputeSystem", vm.NOTIFICATION_SYSTEM_SAVE_COMPLETED),
])
def test_pause_resume_and_save_wait_for_their_own_completion(fake: fakehcs.FakeDll, verb: str, function: str,
                                                             completion: int) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            args = ("{}",) if verb == "save" else ()
            task = await answered_pending(fake, function, getattr(system, verb)(*args))
            notify(fake, system_handle(fake), STARTED)  # another call's completion: not this one
            await asyncio.sleep(SHORT)
            assert not task.done()
            notify(fake, system_handle(fake), completion)
            await asyncio.wait_for(task, GIVE_UP)

    go(body())


def test_a_failed_completion_names_the_system_and_the_operation_with_hcs_events(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            starting = await answered_pending(fake, "HcsStartComputeSystem", system.start())
            notify(fake, system_handle(fake), STARTED, 0x80070005, EVENTS_DOC)
            with pytest.raises(errors.SystemError) as caught:
                await asyncio.wait_for(starting, GIVE_UP)
            err = caught.value
            assert str(err) == "hcs::System::Start c1: Access is denied.\n[Event Detail: boom Provider: hcs EventID: 7]"
            assert errors.is_access_is_denied(err) and system.started_time is None
            assert isinstance(err.inner, CallError) and err.inner.function == "HcsStartComputeSystem"

    go(body())


def test_a_pending_create_that_times_out_terminates_and_closes_the_system(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsCreateComputeSystem", PENDING)
    with pytest.raises(errors.SystemError) as caught:
        go(created(fake, V1.VmcomputeBackend(FAST)))
    assert str(caught.value) == "hcs::CreateComputeSystem c1: hcsshim: timeout waiting for notification"
    assert errors.is_timeout(caught.value)
    assert fake.functions() == ["HcsCreateComputeSystem", "HcsRegisterComputeSystemCallback",
                                "HcsTerminateComputeSystem", "HcsUnregisterComputeSystemCallback",
                                "HcsCloseComputeSystem"]


def test_a_pending_start_times_out_after_the_environment_timeout(fake: fakehcs.FakeDll,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeouts, "TIMEOUTS", timeouts.load({"HCSSHIM_TIMEOUT_SYSTEMSTART": "1"}))

    async def body() -> None:
        async with await created(fake) as system:
            fake.queue_result("HcsStartComputeSystem", PENDING)
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(errors.SystemError, match=r"^hcs::System::Start c1: hcsshim: timeout waiting"):
                await system.start()
            assert 1.0 <= loop.time() - began < GIVE_UP

    go(body())


def test_a_late_completion_does_not_complete_the_next_call(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake, V1.VmcomputeBackend(FAST)) as system:
            fake.queue_result("HcsStartComputeSystem", PENDING)
            with pytest.raises(errors.SystemError, match="timeout"):
                await system.start()
            notify(fake, system_handle(fake), STARTED)  # the first start's, too late
            await asyncio.sleep(0.01)
            fake.queue_result("HcsStartComputeSystem", PENDING)
            with pytest.raises(errors.SystemError, match="timeout"):
                await system.start()

    go(body())


@pytest.mark.parametrize(("status", "exit_error"), [(0, None), (0xC0370106, errors.ErrVmcomputeUnexpectedExit)])
def test_a_system_exit_during_a_pending_start_fails_it_and_stops_the_system(fake: fakehcs.FakeDll, status: int,
                                                                           exit_error: int | None) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            starting = await answered_pending(fake, "HcsStartComputeSystem", system.start())
            notify(fake, system_handle(fake), EXITED, status)
            with pytest.raises(errors.SystemError) as caught:
                await asyncio.wait_for(starting, GIVE_UP)
            assert str(caught.value) == "hcs::System::Start c1: unexpected container exit"
            await asyncio.wait_for(system.wait(), GIVE_UP)
            assert system.stopped
            if exit_error is None:
                assert system.exit_error() is None
            else:
                assert errors.is_any(system.exit_error(), exit_error)

    go(body())


def test_a_service_disconnect_during_a_pending_pause_fails_it_and_the_system_wait(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            pausing = await answered_pending(fake, "HcsPauseComputeSystem", system.pause())
            notify(fake, system_handle(fake), DISCONNECT)
            with pytest.raises(errors.SystemError, match=r"^hcs::System::Pause c1: lost communication with compute"):
                await asyncio.wait_for(pausing, GIVE_UP)
            with pytest.raises(errors.SystemError, match=r"^hcs::System::waitBackground c1: lost communication"):
                await asyncio.wait_for(system.wait(), GIVE_UP)

    go(body())


def test_closing_the_system_during_a_pending_start_ends_it_with_handle_close(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await created(fake)
        starting = await answered_pending(fake, "HcsStartComputeSystem", system.start())
        await asyncio.sleep(0.01)
        await asyncio.wait_for(system.close(), GIVE_UP)
        with pytest.raises(errors.SystemError) as caught:
            await asyncio.wait_for(starting, GIVE_UP)
        assert str(caught.value) == ("hcs::System::Start c1: hcsshim: the handle generating this notification has "
                                     "been closed")
        assert errors.is_any(caught.value, errors.ErrHandleClose)
        assert fake.functions()[-2:] == ["HcsUnregisterComputeSystemCallback", "HcsCloseComputeSystem"]

    go(body())


def test_a_caller_cancelled_during_a_pending_create_leaves_nothing_behind(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        creating = await answered_pending(fake, "HcsCreateComputeSystem", created(fake))
        await until(called(fake, "HcsRegisterComputeSystemCallback"))
        await asyncio.sleep(0.01)
        creating.cancel()
        with pytest.raises(asyncio.CancelledError):
            await creating
        await until(called(fake, "HcsCloseComputeSystem"))
        assert fake.functions()[-3:] == ["HcsTerminateComputeSystem", "HcsUnregisterComputeSystemCallback",
                                         "HcsCloseComputeSystem"]

    go(body())


@pytest.mark.parametrize("verb", ["shutdown", "terminate"])
def test_shutdown_and_terminate_answered_pending_are_accepted_without_a_wait(fake: fakehcs.FakeDll,
                                                                             verb: str) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            fake.set_result(f"Hcs{verb.title()}ComputeSystem", PENDING)
            await asyncio.wait_for(getattr(system, verb)(), SHORT * 10)
            notify(fake, system_handle(fake), EXITED, 0, '{"Status":0,"ExitType":"ForcedExit"}')
            await asyncio.wait_for(system.wait(), GIVE_UP)
            assert system.exit_error() is None

    go(body())


def test_a_create_refused_outright_names_the_system_and_closes_the_handle(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsCreateComputeSystem", 0x80070057, EVENTS_DOC)
    with pytest.raises(errors.SystemError) as caught:
        go(created(fake))
    assert str(caught.value).startswith("hcs::CreateComputeSystem c1: Access is denied.\n[Event Detail: boom")
    assert fake.functions() == ["HcsCreateComputeSystem", "HcsCloseComputeSystem"]


def test_a_create_whose_callback_is_refused_terminates_and_closes_the_system(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsRegisterComputeSystemCallback", 0x80070006)
    with pytest.raises(errors.SystemError, match=r"^hcs::CreateComputeSystem c1: The handle is invalid\.$"):
        go(created(fake))
    assert fake.functions() == ["HcsCreateComputeSystem", "HcsRegisterComputeSystemCallback",
                                "HcsTerminateComputeSystem", "HcsCloseComputeSystem"]


def test_open_registers_a_callback_and_an_open_refused_names_the_system(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await open_compute_system("c9", backend=V1.VmcomputeBackend()) as system:
            assert system.os() == "windows"
            assert fake.functions() == ["HcsOpenComputeSystem", "HcsRegisterComputeSystemCallback",
                                        "HcsGetComputeSystemProperties"]
        fake.set_result("HcsOpenComputeSystem", 0xC037010E)
        with pytest.raises(errors.SystemError) as caught:
            await open_compute_system("nope", backend=V1.VmcomputeBackend())
        assert str(caught.value) == "hcs::OpenComputeSystem nope: The compute system does not exist."
        fake.set_result("HcsOpenComputeSystem", 0)
        fake.set_result("HcsRegisterComputeSystemCallback", 0x80070006)
        with pytest.raises(errors.SystemError, match=r"^hcs::OpenComputeSystem c9: The handle is invalid"):
            await open_compute_system("c9", backend=V1.VmcomputeBackend())
        assert fake.functions()[-3:] == ["HcsOpenComputeSystem", "HcsRegisterComputeSystemCallback",
                                         "HcsCloseComputeSystem"]

    go(body())


def test_events_reach_the_sink_as_contract_events_on_the_loop_thread(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await V1.VmcomputeBackend().create_system("c1", "{}")
        handle = system_handle(fake)
        notify(fake, handle, vm.NOTIFICATION_SYSTEM_CRASH_REPORT, 0, '{"x":1}')
        notify(fake, handle, STARTED)  # a completion: only for waits
        notify(fake, handle, vm.NOTIFICATION_SYSTEM_SHUTDOWN_FAILED)  # no such event: dropped
        notify(fake, handle, EXITED, 0xC0370106)
        notify(fake, handle, EXITED)  # once only
        await asyncio.sleep(0.01)
        seen: list[tuple[Event, threading.Thread]] = []
        system.set_event_sink(lambda e: seen.append((e, threading.current_thread())))
        assert [e for e, _ in seen] == [
            Event(EVENT_SYSTEM_CRASH_REPORT, '{"x":1}'),
            Event(EVENT_SYSTEM_EXITED, '{"Status":-1070137082,"ExitType":"UnexpectedExit"}')]
        notify(fake, handle, vm.NOTIFICATION_SYSTEM_GUEST_CONNECTION_CLOSED)
        await asyncio.sleep(0.01)
        assert seen[-1][0] == Event(EVENT_SYSTEM_GUEST_CONNECTION_CLOSED, "")
        assert all(thread is threading.main_thread() for _, thread in seen)
        await system.close()
        assert fake.fire_notification(handle, EXITED, 0, None) == -1 and len(REGISTRY) == 0

    go(body())


def test_a_notification_that_races_the_close_delivers_nothing_after_it(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await V1.VmcomputeBackend().create_system("c1", "{}")
        seen: list[Event] = []
        system.set_event_sink(seen.append)
        (key,) = REGISTRY.keys(("vmcompute.system", system.handle))
        handler = REGISTRY.lookup(key)
        assert handler is not None
        await system.close()
        handler(Notification(EXITED))  # HCS was already inside the callback when the handle closed
        await asyncio.sleep(0.01)
        assert seen == []

    go(body())


def test_enumerate_and_the_service_calls_go_to_vmcompute(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsEnumerateComputeSystems", 0, None, '[{"Id": "a", "Owner": "o"}]')
    found = go(service.get_compute_systems(backend=V1.VmcomputeBackend()))
    assert [(p.id, p.owner) for p in found] == [("a", "o")]
    fake.set_result("HcsGetServiceProperties", 0, None, '{"Properties":[]}')
    props = go(service.get_service_properties('{"PropertyTypes":["Basic"]}', backend=V1.VmcomputeBackend()))
    assert props.properties == []
    fake.set_result("HcsModifyServiceSettings", 0x80070057, EVENTS_DOC)
    with pytest.raises(errors.HcsError, match=r"^hcs::ModifyServiceSettings: Access is denied\."):
        go(service.modify_service_settings("{}", backend=V1.VmcomputeBackend()))
    assert fake.functions() == ["HcsEnumerateComputeSystems", "HcsGetServiceProperties", "HcsModifyServiceSettings"]


def test_the_backend_is_chosen_by_the_name_windows_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    assert service.backend_name({service.ENV_BACKEND: "Windows-V1"}) == "windows-v1"
    monkeypatch.setenv(service.ENV_BACKEND, "windows-v1")
    backend = service.default_backend()
    assert isinstance(backend, V1.VmcomputeBackend) and backend.name == "windows-v1"


# -- processes ------------------------------------------------------------------------------------------------


async def started(fake: fakehcs.FakeDll, system: System, pid: int = 7) -> Process:
    fake.set_process_info(pid, 0, 0, 0)
    return await system.create_process(schema2.ProcessParameters(command_line="cmd /c exit 3"))


def test_a_process_exit_reads_the_exit_code_from_the_process_properties(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            assert fake.functions()[-2:] == ["HcsCreateProcess", "HcsRegisterProcessCallback"]
            status = {"ProcessId": 7, "Exited": True, "ExitCode": 3, "LastWaitResult": 0}
            fake.set_result("HcsGetProcessProperties", 0, None, json.dumps(status))
            async with process.events() as stream:
                notify(fake, process_handle(fake), vm.NOTIFICATION_PROCESS_EXITED)
                notify(fake, process_handle(fake), DISCONNECT)  # after the exit: kept behind it
                await asyncio.wait_for(process.wait(), GIVE_UP)
                assert process.exit_code() == 3
                assert [(e.type, e.data) async for e in stream] == [(EVENT_PROCESS_EXITED, json.dumps(status))]
            assert fake.functions()[-1] == "HcsGetProcessProperties"
        assert fake.functions()[-4:] == ["HcsUnregisterProcessCallback", "HcsCloseProcess",
                                         "HcsUnregisterComputeSystemCallback", "HcsCloseComputeSystem"]

    go(body())


def test_a_process_whose_status_cannot_be_read_exits_with_minus_one(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            fake.set_result("HcsGetProcessProperties", 0x80070006)
            notify(fake, process_handle(fake), vm.NOTIFICATION_PROCESS_EXITED)
            await asyncio.wait_for(process.wait(), GIVE_UP)
            assert process.exit_code() == -1

    go(body())


def test_a_service_disconnect_fails_the_process_wait(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            notify(fake, process_handle(fake), DISCONNECT)
            with pytest.raises(errors.ProcessError, match=r"^hcs::Process::waitBackground c1:7: lost communication"):
                await asyncio.wait_for(process.wait(), GIVE_UP)

    go(body())


def test_closing_a_process_while_its_exit_status_is_read_delivers_nothing(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            process = await started(fake, system)
            fake.set_result("HcsGetProcessProperties", 0, None, '{"ExitCode": 3}')
            notify(fake, process_handle(fake), vm.NOTIFICATION_PROCESS_EXITED)
            await process.close()
            with pytest.raises(errors.ProcessError, match=r"^hcs::Process::Wait c1:7: hcsshim: the handle has"):
                await process.wait()
            functions = fake.functions()
            assert functions[-2:] == ["HcsUnregisterProcessCallback", "HcsCloseProcess"]

    go(body())


def test_process_calls_reach_their_vmcompute_functions(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system, pid=12) as process:
            handle = process_handle(fake)
            assert await process.signal({"Signal": "CtrlC"}) is True
            await process.resize_console(80, 25)
            fake.set_result("HcsSignalProcess", 0xC0370105)
            assert await process.signal({"Signal": "CtrlC"}) is False
            fake.set_result("HcsModifyProcess", 0x80070006)
            with pytest.raises(errors.ProcessError, match=r"^hcs::Process::ResizeConsole c1:12: The handle is inv"):
                await process.resize_console(1, 1)
            records = [c for c in fake.calls() if c["function"] in ("HcsSignalProcess", "HcsModifyProcess")]
            assert [r["args"] for r in records] == [
                {"process": handle, "options": '{"Signal":"CtrlC"}'},
                {"process": handle, "settings": '{"Operation":"ConsoleSize","ConsoleSize":{"Height":25,"Width":80}}'},
                {"process": handle, "options": '{"Signal":"CtrlC"}'},
                {"process": handle, "settings": '{"Operation":"ConsoleSize","ConsoleSize":{"Height":1,"Width":1}}'}]

    go(body())


def test_kill_terminates_through_a_second_system_and_process_handle(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system, pid=11) as process:
            first = system_handle(fake)
            before = len(fake.calls())
            assert await process.kill() is True
            calls = fake.calls()[before:]
            assert [c["function"] for c in calls] == [
                "HcsOpenComputeSystem", "HcsRegisterComputeSystemCallback", "HcsOpenProcess",
                "HcsRegisterProcessCallback", "HcsTerminateProcess", "HcsUnregisterProcessCallback",
                "HcsCloseProcess", "HcsUnregisterComputeSystemCallback", "HcsCloseComputeSystem"]
            second = calls[0]["out"]["computeSystem"]
            assert second != first and calls[2]["args"] == {"computeSystem": second, "processId": 11}
            assert calls[4]["args"] == {"process": calls[2]["out"]["process"]}

    go(body())


def test_a_failed_create_process_names_the_command_line_and_leaves_no_callback(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            fake.set_result("HcsCreateProcess", 0x80070002)
            with pytest.raises(errors.SystemError) as caught:
                await started(fake, system)
            assert str(caught.value).startswith("hcs::System::CreateProcess: cmd /c exit 3 c1: ")
            assert fake.functions()[-2:] == ["HcsCreateProcess", "HcsCloseProcess"]
            fake.set_result("HcsCreateProcess", 0)
            fake.set_result("HcsRegisterProcessCallback", 0x80070005)
            with pytest.raises(errors.SystemError, match="Access is denied"):
                await started(fake, system)
            assert fake.functions()[-2:] == ["HcsRegisterProcessCallback", "HcsCloseProcess"]

    go(body())


def test_the_blocking_wrappers_drive_the_v1_backend_from_their_own_loop(fake: fakehcs.FakeDll) -> None:
    backend = V1.VmcomputeBackend()
    fake.queue_result("HcsCreateComputeSystem", PENDING)
    done = threading.Event()

    def play_hcs() -> None:  # HCS completing the create while the blocking call waits
        while "HcsRegisterComputeSystemCallback" not in fake.functions():
            threading.Event().wait(0.001)
        notify(fake, system_handle(fake), CREATED)
        done.set()

    player = threading.Thread(target=play_hcs)
    player.start()
    try:
        with blocking.create_compute_system("c1", "{}", backend=backend) as system:
            assert done.is_set() and system.os() == "windows"
            notify(fake, system_handle(fake), EXITED)
            system.wait(timeout=GIVE_UP)
            assert system.stopped
    finally:
        player.join(GIVE_UP)
