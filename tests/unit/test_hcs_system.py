"""hcsshim.hcs's System and Process (and the module functions and blocking wrappers), driven through the Windows
backend against the fake computecore (tests/fakehcs): what reaches HCS, what comes back, and how errors read.

The fake answers each export with one canned result; a test sets them before the calls it makes. Every test
ends with nothing leaked: the fixture checks that every returned string was freed once and no callback handler
outlived its handle, and tests check that no operation stayed open."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import fakehcs
import pytest

from hcsshim.hcs import blocking, errors, schema1, schema2, service, timeouts
from hcsshim.hcs import process as process_module
from hcsshim.hcs.backend import EVENT_PROCESS_EXITED, EVENT_SERVICE_DISCONNECT, EVENT_SYSTEM_EXITED, CallError
from hcsshim.hcs.process import Process
from hcsshim.hcs.system import ErrNotExited, System, create_compute_system, open_compute_system
from hcsshim.hcs.windows import WindowsBackend

T = TypeVar("T")
PROPS = {"Id": "c1", "SystemType": "Container", "RuntimeOsType": "Linux", "Owner": "Tester"}
EVENTS_DOC = json.dumps({"Error": -2147024891, "ErrorMessage": "Access is denied.",
                         "ErrorEvents": [{"Message": "boom", "Provider": "hcs", "EventId": 7}]})
GIVE_UP = 5.0  # seconds: no wait in these tests should come near it


@pytest.fixture
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fakehcs.Fakes]:
    with fakehcs.installed(tmp_path_factory) as installed:
        yield installed
        assert installed.computecore.open_operations() == 0, "an HCS operation was left open"


@pytest.fixture
def fake(fakes: fakehcs.Fakes) -> fakehcs.FakeDll:
    return fakes.computecore


def go(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def out_of(fake: fakehcs.FakeDll, function: str, key: str) -> int:
    """What the fake handed out in its last call of `function`."""
    return [c for c in fake.calls() if c["function"] == function][-1]["out"][key]


def args_of(fake: fakehcs.FakeDll, function: str) -> dict[str, Any]:
    return [c for c in fake.calls() if c["function"] == function][-1]["args"]


async def created(fake: fakehcs.FakeDll, props: dict[str, Any] = PROPS, id: str = "c1") -> System:
    fake.set_result("HcsWaitForOperationResult", 0, json.dumps(props))
    return await create_compute_system(id, '{"SchemaVersion":{"Major":2,"Minor":1}}', backend=WindowsBackend())


async def eventually(awaitable: Coroutine[Any, Any, T]) -> T:
    return await asyncio.wait_for(awaitable, GIVE_UP)


def system_handle(fake: fakehcs.FakeDll) -> int:
    return out_of(fake, "HcsCreateComputeSystem", "computeSystem")


# -- create, open, enumerate ----------------------------------------------------------------------------------


def test_create_sends_the_document_and_caches_type_os_and_owner_lowercased(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await created(fake)
        assert (system.id, system.system_type(), system.os(), system.owner()) == ("c1", "container", "linux",
                                                                                  "tester")
        assert system.is_oci() and not system.stopped
        assert args_of(fake, "HcsCreateComputeSystem")["configuration"] == '{"SchemaVersion":{"Major":2,"Minor":1}}'
        assert args_of(fake, "HcsGetComputeSystemProperties")["propertyQuery"] == "{}"
        assert args_of(fake, "HcsSetComputeSystemCallback")["callbackOptions"] == 4  # live-migration events
        assert fake.registrations() == 1
        await system.close()
        assert fake.registrations() == 0 and fake.functions()[-1] == "HcsCloseComputeSystem"

    go(body())


def test_create_writes_a_typed_document_as_go_does(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        fake.set_result("HcsWaitForOperationResult", 0, json.dumps(PROPS))
        doc = schema2.ComputeSystem(owner="me", schema_version=schema2.Version(major=2, minor=1))
        async with await create_compute_system("c1", doc, backend=WindowsBackend()):
            assert args_of(fake, "HcsCreateComputeSystem") == {
                "id": "c1", "configuration": '{"Owner":"me","SchemaVersion":{"Major":2,"Minor":1}}',
                "operation": args_of(fake, "HcsCreateComputeSystem")["operation"], "securityDescriptor": 0}

    go(body())


def test_a_container_without_an_os_is_windows_as_before_rs5(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake, {"Id": "c1", "SystemType": "Container"}) as system:
            assert system.os() == "windows" and not system.is_oci()
        async with await created(fake, {"Id": "c1", "SystemType": "VirtualMachine"}) as vm:
            assert (vm.os(), vm.system_type()) == ("", "virtualmachine")

    go(body())


def test_a_create_whose_wait_fails_terminates_and_closes_the_system(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsWaitForOperationResult", 0x80070005, EVENTS_DOC)
    with pytest.raises(errors.SystemError) as caught:
        go(create_compute_system("c1", "{}", backend=WindowsBackend()))
    err = caught.value
    assert str(err) == "hcs::CreateComputeSystem c1: Access is denied.\n[Event Detail: boom Provider: hcs EventID: 7]"
    assert (err.id, err.op, err.hresult) == ("c1", "hcs::CreateComputeSystem", 0x80070005)
    assert errors.is_access_is_denied(err) and [e.message for e in err.events] == ["boom"]
    assert fake.functions()[-4:] == ["HcsCreateOperation", "HcsTerminateComputeSystem", "HcsCloseOperation",
                                     "HcsCloseComputeSystem"]
    assert args_of(fake, "HcsCloseComputeSystem")["computeSystem"] == system_handle(fake)
    assert args_of(fake, "HcsWaitForOperationResult")["timeoutMs"] == int(timeouts.TIMEOUTS.system_create * 1000)


def test_a_create_whose_properties_query_fails_terminates_and_closes_the_system(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsGetComputeSystemProperties", 0xC037010E)
    with pytest.raises(errors.SystemError) as caught:
        go(created(fake))
    assert str(caught.value) == "hcs::System::Properties c1: The compute system does not exist."
    assert errors.is_not_exist(caught.value)
    assert fake.functions()[-4:] == ["HcsCreateOperation", "HcsTerminateComputeSystem", "HcsCloseOperation",
                                     "HcsCloseComputeSystem"]
    assert fake.registrations() == 0


def test_open_asks_for_full_access_and_an_open_whose_query_fails_only_closes(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        fake.set_result("HcsWaitForOperationResult", 0, json.dumps(PROPS))
        async with await open_compute_system("c9", backend=WindowsBackend()) as system:
            assert args_of(fake, "HcsOpenComputeSystem") == {"id": "c9", "requestedAccess": 0x10000000}
            assert system.os() == "linux"
        fake.reset()
        fake.set_result("HcsGetComputeSystemProperties", 0x80004005)
        with pytest.raises(errors.SystemError, match=r"^hcs::System::Properties c9: "):
            await open_compute_system("c9", backend=WindowsBackend())
        assert "HcsTerminateComputeSystem" not in fake.functions()
        assert fake.functions()[-1] == "HcsCloseComputeSystem"

    go(body())


def test_opening_a_missing_system_names_it(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsOpenComputeSystem", 0xC037010E)
    with pytest.raises(errors.SystemError) as caught:
        go(open_compute_system("nope", backend=WindowsBackend()))
    assert str(caught.value) == "hcs::OpenComputeSystem nope: The compute system does not exist."
    assert errors.is_not_exist(caught.value)


def test_get_compute_systems_sends_the_query_and_reads_the_list(fake: fakehcs.FakeDll) -> None:
    listing = [{"Id": "a", "SystemType": "Container", "Owner": "o"}, {"Id": "b", "State": "Running"}]
    fake.set_result("HcsWaitForOperationResult", 0, json.dumps(listing))
    found = go(service.get_compute_systems(schema1.ComputeSystemQuery(owners=["o"]), backend=WindowsBackend()))
    assert [(p.id, p.system_type, p.state) for p in found] == [("a", "Container", ""), ("b", "", "Running")]
    assert args_of(fake, "HcsEnumerateComputeSystems")["query"] == '{"Owners":["o"]}'
    go(service.get_compute_systems(backend=WindowsBackend()))
    assert args_of(fake, "HcsEnumerateComputeSystems")["query"] == "{}"


def test_get_compute_systems_refuses_an_empty_or_malformed_answer(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsWaitForOperationResult", 0, "")
    with pytest.raises(errors.HcsError, match=r"^hcs::GetComputeSystems: unexpected value returned from hcs$"):
        go(service.get_compute_systems(backend=WindowsBackend()))
    fake.set_result("HcsWaitForOperationResult", 0, '[{"Id": 5}]')
    with pytest.raises(errors.HcsError, match=r"ContainerProperties\[0\]: field Id: expected string"):
        go(service.get_compute_systems(backend=WindowsBackend()))
    fake.set_result("HcsWaitForOperationResult", 0, "null")
    assert go(service.get_compute_systems(backend=WindowsBackend())) == []


def test_service_properties_and_settings_reach_hcs_and_name_the_operation(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsGetServiceProperties", 0, '{"Properties":[{"SupportedSchemaVersions":[]}]}')
    props = go(service.get_service_properties(schema2.PropertyQuery(property_types=["Basic"]),
                                              backend=WindowsBackend()))
    assert props.properties == [{"SupportedSchemaVersions": []}]
    assert args_of(fake, "HcsGetServiceProperties")["propertyQuery"] == '{"PropertyTypes":["Basic"]}'
    fake.set_result("HcsModifyServiceSettings", 0x80070057, EVENTS_DOC)
    request = schema2.ModificationRequest(property_type="CpuGroup", settings={"Operation": "CreateGroup"})
    with pytest.raises(errors.HcsError) as caught:
        go(service.modify_service_settings(request, backend=WindowsBackend()))
    assert str(caught.value).startswith("hcs::ModifyServiceSettings: Access is denied.\n[Event Detail: boom")
    assert args_of(fake, "HcsModifyServiceSettings")["settings"] == (
        '{"PropertyType":"CpuGroup","Settings":{"Operation":"CreateGroup"}}')


# -- lifecycle ------------------------------------------------------------------------------------------------


def test_start_pause_resume_and_save_wait_for_hcs_within_the_watchdog_timeouts(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            assert system.started_time is None
            await system.start()
            assert system.started_time is not None
            await system.pause()
            await system.resume()
            await system.save(schema2.SaveOptions(save_type="ToFile", save_state_file_path="C:\\s.vmrs"))
            waits = [c["args"]["timeoutMs"] for c in fake.calls() if c["function"] == "HcsWaitForOperationResult"]
            t = timeouts.TIMEOUTS
            assert waits[-4:] == [int(x * 1000) for x in (t.system_start, t.system_pause, t.system_resume,
                                                         t.system_save)]
            assert args_of(fake, "HcsSaveComputeSystem")["options"] == (
                '{"SaveType":"ToFile","SaveStateFilePath":"C:\\\\s.vmrs"}')

    go(body())


def test_a_failed_start_names_the_system_and_the_operation(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            fake.set_result("HcsWaitForOperationResult", 0xC0370105)
            with pytest.raises(errors.SystemError) as caught:
                await system.start()
            assert str(caught.value) == ("hcs::System::Start c1: The compute system is in an invalid state for "
                                         "the operation.")
            assert errors.is_operation_invalid_state(caught.value) and system.started_time is None

    go(body())


@pytest.mark.parametrize("code", [0xC0370110, 0x80370110, 0xC037010E, 0xC0370103])
@pytest.mark.parametrize("verb", ["shutdown", "terminate"])
def test_shutdown_and_terminate_count_stopped_gone_and_pending_as_done(fake: fakehcs.FakeDll, verb: str,
                                                                       code: int) -> None:
    export = {"shutdown": "HcsShutDownComputeSystem", "terminate": "HcsTerminateComputeSystem"}[verb]

    async def body() -> None:
        async with await created(fake) as system:
            fake.set_result(export, code)
            await getattr(system, verb)()
            after = fake.functions()[fake.functions().index(export):]
            assert after == [export, "HcsGetOperationResult", "HcsCloseOperation"]  # submitted, not waited for

    go(body())


@pytest.mark.parametrize(("verb", "op"), [("shutdown", "Shutdown"), ("terminate", "Terminate")])
def test_shutdown_and_terminate_report_other_failures(fake: fakehcs.FakeDll, verb: str, op: str) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            fake.set_result(f"Hcs{'ShutDown' if verb == 'shutdown' else 'Terminate'}ComputeSystem", 0x80070005)
            with pytest.raises(errors.SystemError, match=rf"^hcs::System::{op} c1: Access is denied\.$"):
                await getattr(system, verb)()

    go(body())


def test_shutdown_and_terminate_do_nothing_once_stopped_or_closed(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await created(fake)
        fake.fire_event(system_handle(fake), EVENT_SYSTEM_EXITED, '{"Status": 0, "ExitType": "GracefulExit"}')
        await eventually(system.wait())
        calls = len(fake.calls())
        await system.shutdown()
        await system.terminate()
        assert len(fake.calls()) == calls
        await system.close()
        await system.terminate()
        assert fake.functions()[-1] == "HcsCloseComputeSystem"

    go(body())


def test_properties_v1_v2_and_v3_send_their_queries_and_read_their_documents(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            fake.set_result("HcsWaitForOperationResult", 0, json.dumps(
                {"Id": "c1", "Statistics": {"Uptime100ns": 5, "Memory": {"MemoryUsageCommitBytes": 4096}},
                 "ProcessList": [{"ProcessId": 4, "ImageName": "init"}]}))
            v1 = await system.properties(schema1.PropertyType.STATISTICS, schema1.PropertyType.PROCESS_LIST)
            assert args_of(fake, "HcsGetComputeSystemProperties")["propertyQuery"] == (
                '{"PropertyTypes":["Statistics","ProcessList"]}')
            assert (v1.statistics.uptime_100ns, v1.statistics.memory.usage_commit_bytes) == (5, 4096)
            assert [(p.process_id, p.image_name) for p in v1.process_list] == [(4, "init")]
            v2 = await system.properties_v2("Statistics")
            assert v2.statistics is not None and v2.statistics.uptime_100ns == 5
            assert v2.process_list[0].process_id == 4
            query = schema2.PropertyQuery(property_types=["Memory"], queries={"Memory": {}})
            await system.properties_v3(query)
            assert args_of(fake, "HcsGetComputeSystemProperties")["propertyQuery"] == (
                '{"PropertyTypes":["Memory"],"Queries":{"Memory":{}}}')
            # the OS and type were cached at create and do not change
            assert (system.os(), system.system_type()) == ("linux", "container")

    go(body())


def test_an_empty_or_malformed_properties_answer_is_an_error_naming_the_system(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            fake.set_result("HcsWaitForOperationResult", 0, "")
            with pytest.raises(errors.SystemError, match=r"^hcs::System::PropertiesV2 c1: unexpected value"):
                await system.properties_v2("Memory")
            fake.set_result("HcsWaitForOperationResult", 0, '{"Stopped": "no"}')
            with pytest.raises(errors.SystemError, match=r"^hcs::System::Properties c1: .*field Stopped"):
                await system.properties()

    go(body())


def test_modify_sends_the_request_document(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            request = schema2.ModifySettingRequest(resource_path="VirtualMachine/Devices/Scsi/0/Attachments/1",
                                                   request_type="Add", settings={"Path": "C:\\x.vhdx"})
            await system.modify(request)
            assert args_of(fake, "HcsModifyComputeSystem")["configuration"] == (
                '{"ResourcePath":"VirtualMachine/Devices/Scsi/0/Attachments/1","RequestType":"Add",'
                '"Settings":{"Path":"C:\\\\x.vhdx"}}')
            fake.set_result("HcsModifyComputeSystem", 0x8037010D)
            with pytest.raises(errors.SystemError, match=r"^hcs::System::Modify c1: "):
                await system.modify("{}")

    go(body())


# -- waiting and closing --------------------------------------------------------------------------------------


def test_an_unexpected_exit_releases_wait_and_is_the_exit_error(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            with pytest.raises(errors.SystemError, match=r"^hcs::System::ExitError c1: container not exited$"):
                system.exit_error()
            data = json.dumps({"Status": -2147023895, "ExitType": "UnexpectedExit"})
            assert fake.fire_event(system_handle(fake), EVENT_SYSTEM_EXITED, data, threaded=True) == 0
            await eventually(system.wait())
            assert system.stopped and system.stopped_time is not None
            err = system.exit_error()
            assert isinstance(err, errors.SystemError)
            assert str(err) == "hcs::System::waitBackground c1: The compute system exited unexpectedly."
            assert errors.is_any(err, errors.ErrVmcomputeUnexpectedExit)
            await system.wait()  # again: the same answer

    go(body())


def test_a_clean_exit_has_no_exit_error_and_ends_the_event_streams(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            stream = system.events()
            fake.fire_event(system_handle(fake), 6, None, threaded=True)  # SystemGuestConnectionClosed
            fake.fire_event(system_handle(fake), EVENT_SYSTEM_EXITED, '{"Status":0,"ExitType":"GracefulExit"}')
            seen = [(e.type, e.data) async for e in stream]
            assert seen == [(6, ""), (EVENT_SYSTEM_EXITED, '{"Status":0,"ExitType":"GracefulExit"}')]
            assert system.exit_error() is None
            assert [e async for e in system.events()] == []  # subscribed after the end

    go(body())


def test_a_service_disconnect_makes_wait_fail_with_the_lost_connection(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            fake.fire_event(system_handle(fake), EVENT_SERVICE_DISCONNECT, None, threaded=True)
            with pytest.raises(errors.SystemError) as caught:
                await eventually(system.wait())
            assert str(caught.value) == "hcs::System::waitBackground c1: lost communication with compute service"
            assert system.exit_error() is caught.value

    go(body())


def test_after_close_operations_fail_naming_the_operation_and_waiters_are_released(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await created(fake)
        waiter = asyncio.ensure_future(system.wait())
        await asyncio.sleep(0)
        await system.close()
        await system.close()  # idempotent
        assert [c["function"] for c in fake.calls()].count("HcsCloseComputeSystem") == 1
        with pytest.raises(errors.SystemError, match=r"^hcs::System::Wait c1: hcsshim: the handle has already"):
            await eventually(waiter)
        for call, op in [(system.start(), "Start"), (system.pause(), "Pause"), (system.resume(), "Resume"),
                         (system.modify("{}"), "Modify"), (system.properties(), "Properties"),
                         (system.properties_v2(), "PropertiesV2"), (system.save("{}"), "Save"),
                         (system.create_process("{}"), "CreateProcess"), (system.open_process(4), "OpenProcess")]:
            with pytest.raises(errors.SystemError) as caught:
                await call
            assert str(caught.value).startswith(f"hcs::System::{op} c1: ") and errors.is_already_closed(caught.value)
        assert system.stopped and errors.is_already_closed(system.exit_error())
        assert fake.functions()[-1] == "HcsCloseComputeSystem"

    go(body())


def test_events_after_close_are_dropped(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await created(fake)
        handle = system_handle(fake)
        await system.close()
        assert fake.fire_event(handle, EVENT_SYSTEM_EXITED, "{}") == -1  # HCS has no callback any more
        assert errors.is_already_closed(system.exit_error())

    go(body())


# -- processes ------------------------------------------------------------------------------------------------


class Pipes:
    """The three pipes of a process: the fake hands out the host ends (the descriptors become the Process's);
    the test holds the other ends."""

    def __init__(self) -> None:
        self.stdin_r, self.stdin_w = os.pipe()
        self.stdout_r, self.stdout_w = os.pipe()
        self.stderr_r, self.stderr_w = os.pipe()

    def give(self, fake: fakehcs.FakeDll, pid: int) -> None:
        fake.set_process_info(pid, self.stdin_w, self.stdout_r, self.stderr_r)

    def close_ours(self) -> None:
        for fd in (self.stdin_r, self.stdout_w, self.stderr_w):
            os.close(fd)


def process_handle(fake: fakehcs.FakeDll) -> int:
    return out_of(fake, "HcsCreateProcess", "process")


async def started(fake: fakehcs.FakeDll, system: System, pid: int = 7) -> Process:
    fake.set_process_info(pid, 0, 0, 0)
    return await system.create_process(schema2.ProcessParameters(command_line="sh -c true"))


def test_create_process_gives_the_pipes_as_files_the_process_owns(fake: fakehcs.FakeDll) -> None:
    pipes = Pipes()

    async def body() -> None:
        async with await created(fake) as system:
            pipes.give(fake, 42)
            params = schema2.ProcessParameters(command_line="cat", create_std_in_pipe=True,
                                               create_std_out_pipe=True, create_std_err_pipe=True)
            process = await system.create_process(params)
            assert (process.pid, process.system_id, process.exited) == (42, "c1", False)
            assert args_of(fake, "HcsCreateProcess")["processParameters"] == (
                '{"CommandLine":"cat","CreateStdInPipe":true,"CreateStdOutPipe":true,"CreateStdErrPipe":true}')
            stdin, stdout, stderr = process.stdio()
            assert stdin is not None and stdout is not None and stderr is not None
            stdin.write(b"to the process")
            assert os.read(pipes.stdin_r, 100) == b"to the process"
            os.write(pipes.stdout_w, b"out")
            os.write(pipes.stderr_w, b"err")
            assert (stdout.read(3), stderr.read(3)) == (b"out", b"err")
            await process.close()
            assert stdin.closed and stdout.closed and stderr.closed and process.stdio() == (None, None, None)
            assert fake.functions()[-1] == "HcsCloseProcess"

    try:
        go(body())
    finally:
        pipes.close_ours()


def test_a_failed_create_process_names_the_command_line(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            fake.set_result("HcsCreateProcess", 0x80070002)
            with pytest.raises(errors.SystemError) as caught:
                await system.create_process(schema1.ProcessConfig(command_line="cmd /c dir"))
            assert str(caught.value).startswith("hcs::System::CreateProcess: cmd /c dir c1: ")
            assert caught.value.hresult == 0x80070002

    go(body())


def test_a_process_exit_event_gives_wait_and_the_exit_code(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            with pytest.raises(errors.ProcessError) as caught:
                process.exit_code()
            assert str(caught.value) == ("hcs::Process::ExitCode c1:7: the process is in an invalid state for "
                                         "the attempted operation")
            status = {"ProcessId": 7, "Exited": True, "ExitCode": 3, "LastWaitResult": 0}
            fake.fire_event(process_handle(fake), EVENT_PROCESS_EXITED, json.dumps(status), threaded=True)
            await eventually(process.wait())
            assert process.exited and process.exit_code() == 3

    go(body())


def test_a_failed_last_wait_gives_exit_code_minus_one(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            status = {"ProcessId": 7, "Exited": True, "ExitCode": 3, "LastWaitResult": 5}
            fake.fire_event(process_handle(fake), EVENT_PROCESS_EXITED, json.dumps(status))
            await eventually(process.wait())
            assert process.exit_code() == -1

    go(body())


def test_a_malformed_exit_payload_is_the_wait_error(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            fake.fire_event(process_handle(fake), EVENT_PROCESS_EXITED, '{"ExitCode": "three"}')
            with pytest.raises(errors.ProcessError, match=r"^hcs::Process::waitBackground c1:7: .*ExitCode"):
                await eventually(process.wait())
            with pytest.raises(errors.ProcessError):
                process.exit_code()

    go(body())


def test_signal_sends_the_options_and_says_whether_it_was_delivered(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            assert await process.signal({"Signal": 15}) is True
            assert args_of(fake, "HcsSignalProcess")["options"] == '{"Signal":15}'
            fake.set_result("HcsSignalProcess", 0x80070057)  # refused for another reason: not delivered, no error
            assert await process.signal('{"Signal":"CtrlC"}') is False
            await asyncio.sleep(0.05)
            assert not process.exited

    go(body())


def test_a_signal_finding_the_process_gone_releases_its_waits_after_a_while(fake: fakehcs.FakeDll,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_module, "FORCE_UNBLOCK_DELAY", 0.01)

    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            fake.set_result("HcsSignalProcess", 0x80370105)
            assert await process.signal({"Signal": 9}) is False
            assert not process.exited
            with pytest.raises(errors.ProcessError) as caught:
                await eventually(process.wait())
            assert str(caught.value).startswith("hcs::Process::Signal c1:7: ")
            assert errors.is_any(caught.value, errors.ErrInvalidState)
            with pytest.raises(errors.ProcessError):
                process.exit_code()

    go(body())


def test_an_exit_reported_in_time_wins_over_the_force_unblock(fake: fakehcs.FakeDll,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_module, "FORCE_UNBLOCK_DELAY", 0.05)

    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            fake.set_result("HcsSignalProcess", 0x80070490)
            assert await process.signal({"Signal": 9}) is False
            fake.fire_event(process_handle(fake), EVENT_PROCESS_EXITED, '{"ExitCode": 137}')
            await eventually(process.wait())
            await asyncio.sleep(0.1)
            assert process.exit_code() == 137

    go(body())


def test_kill_terminates_through_a_second_system_and_process_handle(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system, pid=11) as process:
            first = system_handle(fake)
            fake.reset()
            assert await process.kill() is True
            calls = fake.calls()
            assert [c["function"] for c in calls] == [
                "HcsOpenComputeSystem", "HcsSetComputeSystemCallback", "HcsOpenProcess", "HcsSetProcessCallback",
                "HcsCreateOperation", "HcsTerminateProcess", "HcsWaitForOperationResult", "HcsCloseOperation",
                "HcsCloseProcess", "HcsCloseComputeSystem"]
            second = calls[0]["out"]["computeSystem"]
            assert second != first and calls[0]["args"]["id"] == "c1"
            assert calls[2]["args"] == {"computeSystem": second, "processId": 11, "requestedAccess": 0x10000000}
            assert calls[5]["args"]["process"] == calls[2]["out"]["process"]
            assert await process.kill() is True  # one kill only
            assert len(fake.calls()) == len(calls)

    go(body())


@pytest.mark.parametrize("code", [0x80070005, 0x8037011F, 0x80070490])
def test_kill_counts_access_denied_and_already_stopped_as_delivered(fake: fakehcs.FakeDll, code: int) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            fake.set_result("HcsTerminateProcess", code)
            assert await process.kill() is True

    go(body())


def test_kill_of_a_process_that_cannot_be_opened_again_because_it_is_gone_is_delivered(
        fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            fake.set_result("HcsOpenProcess", 0x80070490)
            assert await process.kill() is True
            assert "HcsTerminateProcess" not in fake.functions()
            fake.set_result("HcsOpenProcess", 0x80070006)
            with pytest.raises(errors.SystemError, match=r"^hcs::System::OpenProcess c1: The handle is invalid"):
                await process.kill()

    go(body())


def test_kill_when_the_system_cannot_be_opened_terminates_and_closes_the_system(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            fake.set_result("HcsOpenComputeSystem", 0x80070005)
            assert await process.kill() is True
            assert "HcsTerminateComputeSystem" in fake.functions() and system.closed

    go(body())


def test_a_kill_refused_because_the_process_is_gone_is_not_delivered_and_releases_the_waits(
        fake: fakehcs.FakeDll, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_module, "FORCE_UNBLOCK_DELAY", 0.01)

    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            fake.set_result("HcsTerminateProcess", 0xC0370105)
            assert await process.kill() is False
            with pytest.raises(errors.ProcessError, match=r"^hcs::Process::Kill c1:7: "):
                await eventually(process.wait())

    go(body())


def test_kill_after_the_exit_is_an_error(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            fake.fire_event(process_handle(fake), EVENT_PROCESS_EXITED, '{"ExitCode": 0}')
            await eventually(process.wait())
            with pytest.raises(errors.ProcessError) as caught:
                await process.kill()
            assert str(caught.value) == "hcs::Process::Kill c1:7: The process has already exited."
            assert errors.is_already_stopped(caught.value)

    go(body())


def test_resize_console_and_close_stdin_send_process_modify_requests(fake: fakehcs.FakeDll) -> None:
    pipes = Pipes()

    async def body() -> None:
        async with await created(fake) as system:
            pipes.give(fake, 5)
            async with await system.create_process("{}") as process:
                await process.resize_console(120, 40)
                assert args_of(fake, "HcsModifyProcess")["settings"] == (
                    '{"Operation":"ConsoleSize","ConsoleSize":{"Height":40,"Width":120}}')
                stdin = process.stdio()[0]
                await process.close_stdin()
                assert args_of(fake, "HcsModifyProcess")["settings"] == (
                    '{"Operation":"CloseHandle","CloseHandle":{"Handle":"StdIn"}}')
                assert stdin is not None and stdin.closed and process.stdio()[0] is None
                fake.set_result("HcsModifyProcess", 0x80070006)
                with pytest.raises(errors.ProcessError, match=r"^hcs::Process::ResizeConsole c1:5: "):
                    await process.resize_console(1, 1)

    try:
        go(body())
    finally:
        pipes.close_ours()


def test_close_stdin_after_the_exit_only_closes_the_local_pipe(fake: fakehcs.FakeDll) -> None:
    pipes = Pipes()

    async def body() -> None:
        async with await created(fake) as system:
            pipes.give(fake, 5)
            async with await system.create_process("{}") as process:
                fake.fire_event(process_handle(fake), EVENT_PROCESS_EXITED, '{"ExitCode": 0}')
                await eventually(process.wait())
                await process.close_stdin()
                assert "HcsModifyProcess" not in fake.functions() and process.stdio()[0] is None

    try:
        go(body())
    finally:
        pipes.close_ours()


def test_stdio_legacy_hands_over_the_pipes_then_asks_hcs_for_fresh_ones(fake: fakehcs.FakeDll) -> None:
    first, second = Pipes(), Pipes()

    async def body() -> None:
        async with await created(fake) as system:
            first.give(fake, 8)
            process = await system.create_process("{}")
            mine = await process.stdio_legacy()
            assert process.stdio() == (None, None, None) and "HcsGetProcessInfo" not in fake.functions()
            second.give(fake, 8)
            fresh = await process.stdio_legacy()
            assert "HcsGetProcessInfo" in fake.functions()
            await process.close()
            for f in (*mine, *fresh):  # the caller's: still open after the process is closed
                assert f is not None and not f.closed
                f.close()

    try:
        go(body())
    finally:
        first.close_ours()
        second.close_ours()


def test_open_process_registers_for_its_events_and_has_no_stdio(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            process = await system.open_process(77)
            assert args_of(fake, "HcsOpenProcess")["processId"] == 77 and process.stdio() == (None, None, None)
            fake.fire_event(out_of(fake, "HcsOpenProcess", "process"), EVENT_PROCESS_EXITED, '{"ExitCode": 1}')
            await eventually(process.wait())
            assert process.exit_code() == 1
            await process.close()

    go(body())


def test_a_closed_process_refuses_operations_and_releases_its_waiters(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            process = await started(fake, system)
            await process.close()
            await process.close()
            assert fake.registrations() == 1  # the system's only
            with pytest.raises(errors.ProcessError, match=r"^hcs::Process::Wait c1:7: hcsshim: the handle"):
                await process.wait()
            with pytest.raises(errors.ProcessError) as caught:
                await process.signal({"Signal": 1})
            assert str(caught.value).startswith("hcs::Process::Signal c1:7: ")
            assert errors.is_already_closed(caught.value)
            with pytest.raises(errors.ProcessError, match=r"^hcs::Process::Kill c1:7: "):
                await process.kill()

    go(body())


def test_a_service_disconnect_fails_the_process_wait(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system, await started(fake, system) as process:
            fake.fire_event(process_handle(fake), EVENT_SERVICE_DISCONNECT, None, threaded=True)
            with pytest.raises(errors.ProcessError, match="lost communication with compute service"):
                await eventually(process.wait())

    go(body())


# -- errors crossing the boundary -----------------------------------------------------------------------------


def test_backend_errors_keep_their_code_events_and_result_document(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            fake.set_result("HcsWaitForOperationResult", 0x80070005, EVENTS_DOC)
            with pytest.raises(errors.SystemError) as caught:
                await system.pause()
            inner = caught.value.inner
            assert isinstance(inner, CallError)
            assert (inner.code, inner.function, inner.result) == (5, "HcsWaitForOperationResult", EVENTS_DOC)
            assert caught.value.events == inner.events and inner.events[0].event_id == 7

    go(body())


# -- the backend choice ---------------------------------------------------------------------------------------


def test_the_backend_is_chosen_by_platform_unless_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(service.ENV_BACKEND, raising=False)
    assert service.backend_name() == ("windows" if sys.platform == "win32" else "linux")
    assert service.backend_name({service.ENV_BACKEND: " Windows "}) == "windows"
    with pytest.raises(ValueError, match=r"HCSSHIM_HCS_BACKEND='qemu' names no HCS backend \(one of windows, linux"):
        service.backend_name({service.ENV_BACKEND: "qemu"})
    monkeypatch.setenv(service.ENV_BACKEND, "windows")
    backend = service.default_backend()
    assert isinstance(backend, WindowsBackend) and service.default_backend() is backend


def test_the_default_backend_serves_calls_without_a_backend_argument(fake: fakehcs.FakeDll,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(service.ENV_BACKEND, "windows")
    fake.set_result("HcsWaitForOperationResult", 0, "[]")
    assert go(service.get_compute_systems()) == []


def test_importing_the_object_layer_imports_no_backend() -> None:
    code = ("import sys, hcsshim.hcs.system, hcsshim.hcs.blocking\n"
            "assert not any(m.startswith(('hcsshim.hcs.linux', 'hcsshim.hcs.windows')) for m in sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- blocking -------------------------------------------------------------------------------------------------


def test_the_blocking_wrappers_run_the_same_calls_on_their_own_loop(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsWaitForOperationResult", 0, json.dumps(PROPS))
    backend = WindowsBackend()
    with blocking.create_compute_system("c1", "{}", backend=backend) as system:
        assert (system.id, system.os(), system.is_oci()) == ("c1", "linux", True)
        system.start()
        fake.set_process_info(9, 0, 0, 0)
        with system.create_process(schema2.ProcessParameters(command_line="true")) as process:
            with pytest.raises(TimeoutError):
                process.wait(timeout=0.01)
            assert process.signal({"Signal": 15})
            fake.fire_event(process_handle(fake), EVENT_PROCESS_EXITED, '{"ExitCode": 4}', threaded=True)
            process.wait(timeout=GIVE_UP)
            assert (process.exited, process.exit_code()) == (True, 4)
        with pytest.raises(errors.SystemError, match=r"^hcs::System::ExitError"):
            system.exit_error()
        fake.fire_event(system_handle(fake), EVENT_SYSTEM_EXITED, '{"ExitType":"UnexpectedExit"}', threaded=True)
        system.wait(timeout=GIVE_UP)
        assert system.stopped and errors.is_any(system.exit_error(), errors.ErrVmcomputeUnexpectedExit)
    fake.set_result("HcsWaitForOperationResult", 0, "[]")
    assert blocking.get_compute_systems(backend=backend) == []


def test_the_blocking_wrappers_refuse_to_run_on_their_own_loop() -> None:
    async def nested() -> None:
        blocking.run(asyncio.sleep(0))

    with pytest.raises(RuntimeError, match="its own event loop thread"):
        blocking.run(nested())


def test_exit_error_is_refused_while_running_with_the_not_exited_error(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await created(fake) as system:
            with pytest.raises(errors.SystemError) as caught:
                system.exit_error()
            assert isinstance(caught.value.inner, ErrNotExited)

    go(body())
