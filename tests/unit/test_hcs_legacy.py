"""The root package's legacy API (hcsshim.legacy, reached as hcsshim.CreateContainer ...), blocking, on the Windows
backend against the fake computecore (tests/fakehcs): upstream's quirks, error wording and the additional-JSON
merge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import fakehcs
import pytest

import hcsshim
from hcsshim import legacy
from hcsshim.hcs import errors, service
from hcsshim.hcs.backend import EVENT_PROCESS_EXITED, EVENT_SYSTEM_EXITED

PROPS = {"Id": "c1", "SystemType": "Container", "RuntimeOsType": "Windows", "Owner": "docker"}


@pytest.fixture
def fake(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[fakehcs.FakeDll]:
    monkeypatch.setenv(service.ENV_BACKEND, "windows")
    monkeypatch.setattr(legacy, "create_container_additional_json", "")
    with fakehcs.installed(tmp_path_factory) as installed:
        installed.computecore.set_result("HcsWaitForOperationResult", 0, json.dumps(PROPS))
        yield installed.computecore
        assert installed.computecore.open_operations() == 0


def last_args(fake: fakehcs.FakeDll, function: str) -> dict[str, Any]:
    return [c for c in fake.calls() if c["function"] == function][-1]["args"]


def last_out(fake: fakehcs.FakeDll, function: str) -> dict[str, Any]:
    return [c for c in fake.calls() if c["function"] == function][-1]["out"]


def config() -> legacy.ContainerConfig:
    return legacy.ContainerConfig(system_type="Container", name="c1", owner="docker",
                                  layers=[legacy.Layer(id="9b9f0b6a-0000-0000-0000-000000000000", path="C:\\l")])


# -- the package root -----------------------------------------------------------------------------------------


def test_the_package_root_lends_the_legacy_names_without_importing_hcs_up_front() -> None:
    code = ("import sys, hcsshim\n"
            "assert not [m for m in sys.modules if m.startswith(('hcsshim.', 'json'))], sorted(sys.modules)\n"
            "from hcsshim import CreateContainer, IsPending\n"
            "import hcsshim.legacy as legacy\n"
            "assert CreateContainer is legacy.CreateContainer and hcsshim.ErrTimeout is legacy.ErrTimeout\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(hcsshim._LEGACY) == set(legacy.__all__)
    assert {"CreateContainer", "IsNotExist", "__version__"} <= set(dir(hcsshim))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        hcsshim.NoSuchThing  # noqa: B018


def test_the_error_variables_are_upstreams() -> None:
    assert (legacy.ErrComputeSystemDoesNotExist, legacy.ErrElementNotFound, legacy.ErrNotSupported,
            legacy.ErrInvalidData, legacy.ErrVmcomputeOperationPending) == (0xC037010E, 0x490, 0x32, 0xD, 0xC0370103)
    assert str(legacy.ErrTimeout()) == "hcsshim: timeout waiting for notification"
    assert str(legacy.ErrAlreadyClosed()) == "hcsshim: the handle has already been closed"
    assert (legacy.WaitErrExecFailed, legacy.TimeoutInfinite) == (32767, 0xFFFFFFFF)
    assert (legacy.Add, legacy.Remove, legacy.Network) == ("Add", "Remove", "Network")
    assert len([n for n in legacy.__all__ if n.startswith("Err")]) == 21


# -- the additional JSON --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("additional", "merged"), [
    ("", '{"SystemType":"Container","Name":"c1","Layers":null,"HvPartition":false}'),
    ('{"Name":"x"}', '{"HvPartition":false,"Layers":null,"Name":"x","SystemType":"Container"}'),
    ('{"HvRuntime":{"ImagePath":"C:\\\\u"}}',
     '{"HvPartition":false,"HvRuntime":{"ImagePath":"C:\\\\u"},"Layers":null,"Name":"c1","SystemType":"Container"}'),
    ("null", '{"HvPartition":false,"Layers":null,"Name":"c1","SystemType":"Container"}'),
    ('{"MemoryMaximumInMB": 18446744073709551615, "Zeta": [1, {"b": 1, "a": 2}]}',
     '{"HvPartition":false,"Layers":null,"MemoryMaximumInMB":18446744073709552000,"Name":"c1",'
     '"SystemType":"Container","Zeta":[1,{"a":2,"b":1}]}'),
])
def test_additional_json_merges_as_upstreams_mergemaps(additional: str, merged: str) -> None:
    assert legacy.merge_json(legacy.ContainerConfig(system_type="Container", name="c1"), additional) == merged


def test_merging_keeps_an_object_against_a_null_and_replaces_anything_else() -> None:
    base = '{"A":{"x":1},"B":{"y":2},"C":3}'
    assert legacy.merge_json(base, '{"A":null,"B":7,"C":{"z":true}}') == '{"A":{"x":1},"B":7,"C":{"z":true}}'
    assert legacy.merge_json(base, '{"A":{"w":0}}') == '{"A":{"w":0,"x":1},"B":{"y":2},"C":3}'


def test_create_container_sends_the_merged_configuration(fake: fakehcs.FakeDll,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(legacy, "create_container_additional_json", '{"HostName":"h","Name":"other"}')
    container = hcsshim.CreateContainer("c1", config())
    sent = json.loads(last_args(fake, "HcsCreateComputeSystem")["configuration"])
    assert list(sent) == sorted(sent) and (sent["HostName"], sent["Name"], sent["Owner"]) == ("h", "other",
                                                                                             "docker")
    container.close()


def test_bad_additional_json_fails_the_create_saying_what_it_was(fake: fakehcs.FakeDll,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(legacy, "create_container_additional_json", "[1]")
    with pytest.raises(ValueError, match=r"^failed to merge additional JSON '\[1\]': json: cannot unmarshal array"):
        hcsshim.CreateContainer("c1", config())
    assert "HcsCreateComputeSystem" not in fake.functions()


def test_the_additional_json_is_read_from_the_environment_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    code = "import hcsshim.legacy as l; print(l.create_container_additional_json)"
    env = {**os.environ, legacy.ENV_ADDITIONAL_JSON: '{"Servicing":true}'}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == '{"Servicing":true}'


# -- containers -----------------------------------------------------------------------------------------------


def test_shutdown_and_terminate_raise_pending_when_accepted(fake: fakehcs.FakeDll) -> None:
    container = hcsshim.CreateContainer("c1", config())
    for method, op in [(container.shutdown, "Shutdown"), (container.terminate, "Terminate")]:
        with pytest.raises(legacy.ContainerError) as caught:
            method()
        err = caught.value
        assert hcsshim.IsPending(err) and err.operation == f"hcsshim::ComputeSystem::{op}"
        assert str(err) == (f"container c1 encountered an error during hcsshim::ComputeSystem::{op}: failure in a "
                            "Windows system call: The operation is pending. (0xc0370103)")
    fake.set_result("HcsShutDownComputeSystem", 0x80070005)
    with pytest.raises(legacy.ContainerError) as caught:
        container.shutdown()
    assert caught.value.operation == "hcs::System::Shutdown" and hcsshim.IsAccessIsDenied(caught.value)
    assert not hcsshim.IsPending(caught.value)
    container.close()


def test_a_failed_start_is_a_container_error_naming_the_call(fake: fakehcs.FakeDll) -> None:
    container = hcsshim.CreateContainer("c1", config())
    container.start()
    fake.set_result("HcsWaitForOperationResult", 0xC0370105)
    with pytest.raises(legacy.ContainerError) as caught:
        container.start()
    assert str(caught.value) == ("container c1 encountered an error during hcs::System::Start: failure in a Windows "
                                 "system call: The compute system is in an invalid state for the operation. "
                                 "(0xc0370105)")
    assert hcsshim.IsOperationInvalidState(caught.value) and caught.value.container is container
    container.close()


def test_wait_raises_the_unexpected_exit_and_wait_timeout_times_out(fake: fakehcs.FakeDll) -> None:
    container = hcsshim.CreateContainer("c1", config())
    with pytest.raises(legacy.ContainerError) as caught:
        container.wait_timeout(0.01)
    assert hcsshim.IsTimeout(caught.value) and caught.value.operation == "hcsshim::ComputeSystem::Wait"
    handle = last_out(fake, "HcsCreateComputeSystem")["computeSystem"]
    fake.fire_event(handle, EVENT_SYSTEM_EXITED, '{"Status":-1,"ExitType":"UnexpectedExit"}', threaded=True)
    with pytest.raises(legacy.ContainerError) as caught:
        container.wait()
    assert errors.is_any(caught.value, errors.ErrVmcomputeUnexpectedExit)
    assert caught.value.operation == "hcs::System::waitBackground"
    with pytest.raises(legacy.ContainerError):
        container.wait_timeout(1)
    container.close()


def test_a_clean_exit_lets_wait_return(fake: fakehcs.FakeDll) -> None:
    container = hcsshim.CreateContainer("c1", config())
    handle = last_out(fake, "HcsCreateComputeSystem")["computeSystem"]
    fake.fire_event(handle, EVENT_SYSTEM_EXITED, '{"Status":0,"ExitType":"GracefulExit"}')
    container.wait()
    container.wait_timeout(0.01)
    container.close()


def test_the_v1_queries_read_statistics_processes_and_disks(fake: fakehcs.FakeDll) -> None:
    container = hcsshim.OpenContainer("c1")
    fake.set_result("HcsWaitForOperationResult", 0, json.dumps({
        "Id": "c1", "Statistics": {"Processor": {"TotalRuntime100ns": 9}},
        "ProcessList": [{"ProcessId": 4, "ImageName": "cmd.exe"}],
        "MappedVirtualDiskControllers": {"0": {"MappedVirtualDisks": {"1": {"HostPath": "C:\\d.vhdx"}}}}}))
    assert container.statistics().processor.total_runtime_100ns == 9
    assert [p.image_name for p in container.process_list()] == ["cmd.exe"]
    assert container.mapped_virtual_disks()[0].mapped_virtual_disks[1].host_path == "C:\\d.vhdx"
    assert last_args(fake, "HcsGetComputeSystemProperties")["propertyQuery"] == (
        '{"PropertyTypes":["MappedVirtualDisk"]}')
    assert container.has_pending_updates() is False
    container.modify(legacy.ResourceModificationRequestResponse(resource=legacy.Network, data="ep1",
                                                                request=legacy.Add))
    assert last_args(fake, "HcsModifyComputeSystem")["configuration"] == (
        '{"ResourceType":"Network","Settings":"ep1","RequestType":"Add"}')
    container.pause()
    container.resume()
    container.close()


def test_a_closed_container_refuses_with_already_closed(fake: fakehcs.FakeDll) -> None:
    container = hcsshim.CreateContainer("c1", config())
    container.close()
    container.close()
    with pytest.raises(legacy.ContainerError) as caught:
        container.start()
    assert hcsshim.IsAlreadyClosed(caught.value)
    assert str(caught.value) == ("container c1 encountered an error during hcs::System::Start: "
                                 "hcsshim: the handle has already been closed")


def test_open_and_get_containers_report_hcs_errors_as_they_are(fake: fakehcs.FakeDll) -> None:
    fake.set_result("HcsOpenComputeSystem", 0xC037010E)
    with pytest.raises(errors.SystemError) as caught:
        hcsshim.OpenContainer("gone")
    assert hcsshim.IsNotExist(caught.value)
    fake.set_result("HcsWaitForOperationResult", 0, json.dumps([PROPS]))
    assert [p.owner for p in hcsshim.GetContainers(legacy.ComputeSystemQuery(ids=["c1"]))] == ["docker"]


# -- processes ------------------------------------------------------------------------------------------------


def test_a_process_runs_reports_its_exit_and_hands_over_its_stdio(fake: fakehcs.FakeDll) -> None:
    container = hcsshim.CreateContainer("c1", config())
    stdout_r, stdout_w = os.pipe()
    fake.set_process_info(21, 0, stdout_r, 0)
    process = container.create_process(legacy.ProcessConfig(command_line="cmd /c echo hi", create_std_out_pipe=True))
    assert process.pid() == 21
    stdin, stdout, stderr = process.stdio()
    assert stdin is None and stderr is None and stdout is not None
    os.write(stdout_w, b"hi")
    assert stdout.read(2) == b"hi"
    process.resize_console(80, 25)
    process.close_stdin()
    with pytest.raises(legacy.ProcessError) as caught:
        process.exit_code()
    assert str(caught.value) == ("process 21 in container c1 encountered an error during hcs::Process::ExitCode: "
                                 "the process is in an invalid state for the attempted operation")
    with pytest.raises(legacy.ProcessError) as caught:
        process.wait_timeout(0.01)
    assert hcsshim.IsTimeout(caught.value) and caught.value.operation == "hcsshim::Process::Wait"
    fake.fire_event(last_out(fake, "HcsCreateProcess")["process"], EVENT_PROCESS_EXITED, '{"ExitCode": 2}',
                    threaded=True)
    process.wait()
    assert process.exit_code() == 2
    process.close()
    stdout.close()
    os.close(stdout_w)
    container.close()


def test_kill_that_delivers_nothing_raises_element_not_found(fake: fakehcs.FakeDll) -> None:
    container = hcsshim.CreateContainer("c1", config())
    process = container.open_process(33)
    process.kill()  # delivered
    other = container.open_process(34)
    fake.set_result("HcsTerminateProcess", 0x80070057)  # refused: not delivered
    with pytest.raises(legacy.ProcessError) as caught:
        other.kill()
    assert hcsshim.IsNotExist(caught.value) and caught.value.operation == "hcsshim::Process::Kill"
    assert str(caught.value) == ("process 34 in container c1 encountered an error during hcsshim::Process::Kill: "
                                 "failure in a Windows system call: Element not found. (0x490)")
    for p in (process, other):
        p.close()
    with pytest.raises(legacy.ProcessError) as caught:
        process.kill()
    assert hcsshim.IsAlreadyClosed(caught.value)
    container.close()


def test_a_failed_create_process_is_a_container_error(fake: fakehcs.FakeDll) -> None:
    container = hcsshim.CreateContainer("c1", config())
    fake.set_result("HcsCreateProcess", 0x80070002)
    with pytest.raises(legacy.ContainerError) as caught:
        container.create_process(legacy.ProcessConfig(command_line="nope.exe"))
    assert caught.value.operation == "hcs::System::CreateProcess: nope.exe"
    assert "failure in a Windows system call" in str(caught.value) and "(0x2)" in str(caught.value)
    container.close()


def test_the_predicates_see_through_both_wrappers() -> None:
    inner = errors.make_system_error("c1", "hcs::System::Start", errors.Errno(0xC0370110))
    outer = legacy.ContainerError(None, "op", inner)
    assert hcsshim.IsAlreadyStopped(outer) and not hcsshim.IsNotExist(outer)
    assert str(outer).startswith("unexpected nil container for error: hcs::System::Start c1:")
    assert str(legacy.ProcessError(None, "", errors.ErrTimeout())) == (
        "Unexpected nil process for error: hcsshim: timeout waiting for notification")
