"""Job objects: the kernel32/ntdll binding (hcsshim.hcs.win32.jobobject) against the fake job-object library
(tests/fakehcs/fakejob.c), and what System does with a container's silo through the Windows backend:
SetCPUGroupAffinities (B15) and the in-process Statistics of PropertiesV2 (D3). Every test ends with no
job-object or process handle left open (the fixture checks)."""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import fakehcs
import pytest

from hcsshim import gojson
from hcsshim.hcs import blocking, errors, schema2
from hcsshim.hcs.backend import GroupAffinity
from hcsshim.hcs.system import System, create_compute_system
from hcsshim.hcs.win32 import jobobject as J
from hcsshim.hcs.win32.hresult import MissingLibraryError, Win32Error
from hcsshim.hcs.windows import WindowsBackend

T = TypeVar("T")
SILO = "\\Container_c1"
STATUS_ACCESS_DENIED = 0xC0000022


@pytest.fixture
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fakehcs.Fakes]:
    with fakehcs.installed(tmp_path_factory) as installed:
        yield installed


@pytest.fixture
def jobs(fakes: fakehcs.Fakes) -> fakehcs.FakeJobs:
    return fakes.jobs


def go(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def calls_of(jobs: fakehcs.FakeJobs, function: str) -> list[dict[str, Any]]:
    return [c["args"] for c in jobs.calls() if c["function"] == function]


# -- the binding ----------------------------------------------------------------------------------------------


def test_the_structures_have_the_windows_x64_layouts() -> None:
    sizes = {J.UNICODE_STRING: 16, J.OBJECT_ATTRIBUTES: 48, J.JOBOBJECT_BASIC_ACCOUNTING_INFORMATION: 48,
             J.JOBOBJECT_MEMORY_USAGE_INFORMATION: 16, J.JOBOBJECT_IO_ATTRIBUTION_INFORMATION: 72,
             J.GROUP_AFFINITY: 16, J.VM_COUNTERS_EX2: 112}
    assert {cls.__name__: ctypes.sizeof(cls) for cls in sizes} == {cls.__name__: n for cls, n in sizes.items()}
    assert J.JOBOBJECT_IO_ATTRIBUTION_INFORMATION.ReadStats.offset == 8


def test_a_job_is_opened_by_its_nt_name_with_all_access_and_closed_once(jobs: fakehcs.FakeJobs) -> None:
    jobs.define(SILO)
    with J.JobObject.open(SILO) as job:
        handle = job.handle
        assert handle > 0xFFFFFFFF and jobs.open_handles() == 1  # a 64-bit handle survives the round trip
    job.close()  # idempotent
    assert calls_of(jobs, "NtOpenJobObject") == [{"name": "\\Container_c1", "access": 0x1F003F, "length": 48}]
    assert calls_of(jobs, "CloseHandle") == [{"handle": handle}]
    assert jobs.open_handles() == 0 and repr(job) == "<JobObject \\Container_c1 closed>"


def test_opening_a_missing_or_forbidden_job_fails_with_the_win32_code_of_the_status(jobs: fakehcs.FakeJobs) -> None:
    with pytest.raises(Win32Error) as caught:
        J.JobObject.open("\\Container_nope")
    assert (caught.value.function, caught.value.win32, caught.value.hresult) == ("NtOpenJobObject", 2, 0x80070002)
    jobs.define(SILO)
    jobs.fail("NtOpenJobObject", STATUS_ACCESS_DENIED)
    with pytest.raises(Win32Error) as caught:
        J.JobObject.open(SILO)
    assert caught.value.win32 == 5


def test_the_counters_come_from_their_information_classes(jobs: fakehcs.FakeJobs) -> None:
    index = jobs.define(SILO)
    jobs.set_counters(index, job_memory=100 << 20, peak_job_memory=150 << 20, user_time=7_000, kernel_time=3_000,
                      read_count=11, read_bytes=4096, write_count=5, write_bytes=1024)
    with J.JobObject.open(SILO) as job:
        accounting, memory, io = job.basic_accounting(), job.memory_usage(), job.io_attribution()
    assert (accounting.TotalUserTime, accounting.TotalKernelTime) == (7_000, 3_000)
    assert (memory.JobMemory, memory.PeakJobMemoryUsed) == (100 << 20, 150 << 20)
    assert (io.ReadStats.IoCount, io.ReadStats.TotalSize, io.WriteStats.IoCount, io.WriteStats.TotalSize) == (
        11, 4096, 5, 1024)
    queries = [(c["class"], c["length"]) for c in calls_of(jobs, "QueryInformationJobObject")]
    assert queries == [(1, 48), (28, 16), (42, 72)]


def test_io_attribution_of_a_job_without_io_tracking_fails(jobs: fakehcs.FakeJobs) -> None:
    jobs.set_counters(jobs.define(SILO), io_tracking=False)
    with J.JobObject.open(SILO) as job, pytest.raises(Win32Error) as caught:
        job.io_attribution()
    assert (caught.value.function, caught.value.win32) == ("QueryInformationJobObject", 87)


def test_pids_are_asked_again_with_room_for_all_when_they_do_not_fit(jobs: fakehcs.FakeJobs) -> None:
    index = jobs.define(SILO)
    for pid in range(1000, 1100):
        jobs.add_process(index, pid)
    jobs.add_process(index, 4242, in_job=False)  # gone from the job
    with J.JobObject.open(SILO) as job:
        assert job.pids() == list(range(1000, 1100))
    lists = [c["length"] for c in calls_of(jobs, "QueryInformationJobObject") if c["class"] == 3]
    assert lists == [8 + 64 * 8, 8 + (100 + 64) * 8]


def test_the_private_working_set_sums_the_processes_still_in_the_job(jobs: fakehcs.FakeJobs) -> None:
    silo, other = jobs.define(SILO), jobs.define("\\Container_c2")
    jobs.add_process(silo, 10, private_working_set=1 << 20)
    jobs.add_process(silo, 11, private_working_set=2 << 20)
    jobs.add_process(silo, 12, private_working_set=4 << 20)
    jobs.add_process(silo, 13, private_working_set=8 << 20, openable=False)  # exited before it was opened
    jobs.add_process(other, 12, private_working_set=16 << 20, in_job=False)  # pid 12 since reused outside
    with J.JobObject.open(SILO) as job:
        assert job.private_working_set() == 3 << 20
    assert [c["pid"] for c in calls_of(jobs, "OpenProcess")] == [10, 11, 12, 13]
    assert {c["access"] for c in calls_of(jobs, "OpenProcess")} == {0x1000}  # PROCESS_QUERY_LIMITED_INFORMATION
    assert [c["class"] for c in calls_of(jobs, "NtQueryInformationProcess")] == [3, 3]  # ProcessVmCounters
    assert jobs.open_handles() == 0


def test_a_process_query_failure_is_an_error_and_closes_the_process(jobs: fakehcs.FakeJobs) -> None:
    jobs.add_process(jobs.define(SILO), 10)
    jobs.fail("NtQueryInformationProcess", STATUS_ACCESS_DENIED)
    with J.JobObject.open(SILO) as job, pytest.raises(Win32Error) as caught:
        job.private_working_set()
    assert (caught.value.function, caught.value.win32) == ("NtQueryInformationProcess", 5)


def test_group_affinities_are_set_as_a_group_affinity_array(jobs: fakehcs.FakeJobs) -> None:
    index = jobs.define(SILO)
    with J.JobObject.open(SILO) as job:
        job.set_group_affinities([(0, 0xF), (1, (1 << 64) - 1)])
    assert jobs.affinities(index) == [(0, 0xF), (1, (1 << 64) - 1)]
    assert calls_of(jobs, "SetInformationJobObject")[0]["class"] == 14  # JobObjectGroupInformationEx
    assert calls_of(jobs, "SetInformationJobObject")[0]["length"] == 32


@pytest.mark.parametrize("affinities", [[], [(0x10000, 1)], [(0, -1)], [(0, 1 << 64)]])
def test_bad_group_affinities_are_refused_before_the_call(jobs: fakehcs.FakeJobs,
                                                         affinities: list[tuple[int, int]]) -> None:
    jobs.define(SILO)
    with J.JobObject.open(SILO) as job, pytest.raises(ValueError):
        job.set_group_affinities(affinities)
    assert "SetInformationJobObject" not in jobs.functions()


def test_the_libraries_load_on_first_call_and_are_redirected_like_the_others(fakes: fakehcs.Fakes) -> None:
    code = ("import ctypes, sys\nimport hcsshim.hcs.win32.jobobject as J\nfrom hcsshim.hcs.win32 import loader\n"
            "assert loader.LIBRARIES['kernel32'] is J.KERNEL32 and loader.LIBRARIES['ntdll'] is J.NTDLL\n"
            "assert J.KERNEL32._dll is None and J.NTDLL._dll is None\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    J.NTDLL.redirect("/nonexistent/libntdll.so")
    with pytest.raises(MissingLibraryError) as caught:
        J.JobObject.open(SILO)
    assert (caught.value.library, caught.value.function) == ("ntdll.dll", "NtOpenJobObject")


# -- System.set_cpu_group_affinities (B15) --------------------------------------------------------------------


async def created(fakes: fakehcs.Fakes, system_type: str = "Container") -> System:
    props = {"Id": "c1", "SystemType": system_type, "RuntimeOsType": "Windows"}
    fakes.computecore.set_result("HcsWaitForOperationResult", 0, json.dumps(props))
    return await create_compute_system("c1", "{}", backend=WindowsBackend())


def test_set_cpu_group_affinities_pins_the_container_silo(fakes: fakehcs.Fakes) -> None:
    index = fakes.jobs.define(SILO)

    async def body() -> None:
        async with await created(fakes) as system:
            await system.set_cpu_group_affinities([GroupAffinity(mask=0xF0), GroupAffinity(mask=0x3, group=1)])
        assert fakes.jobs.affinities(index) == [(0, 0xF0), (1, 0x3)]
        assert fakes.jobs.functions() == ["NtOpenJobObject", "SetInformationJobObject", "CloseHandle"]

    go(body())


def test_a_silo_that_cannot_be_opened_names_the_operation_the_function_and_the_silo(fakes: fakehcs.Fakes) -> None:
    fakes.jobs.define(SILO)
    fakes.jobs.fail("NtOpenJobObject", STATUS_ACCESS_DENIED)

    async def body() -> None:
        async with await created(fakes) as system:
            with pytest.raises(errors.SystemError) as caught:
                await system.set_cpu_group_affinities([GroupAffinity(1)])
            assert str(caught.value) == ("hcs::System::SetCPUGroupAffinities c1: NtOpenJobObject \\Container_c1: "
                                         "Access is denied.")
            assert errors.is_access_is_denied(caught.value)

    go(body())


def test_a_refused_affinity_closes_the_silo_again(fakes: fakehcs.Fakes) -> None:
    fakes.jobs.define(SILO)
    fakes.jobs.fail("SetInformationJobObject", 87)

    async def body() -> None:
        async with await created(fakes) as system:
            with pytest.raises(errors.SystemError, match=r"SetInformationJobObject \\Container_c1: "):
                await system.set_cpu_group_affinities([GroupAffinity(1)])
        assert fakes.jobs.functions()[-1] == "CloseHandle"

    go(body())


def test_set_cpu_group_affinities_is_for_open_containers_with_at_least_one_affinity(fakes: fakehcs.Fakes) -> None:
    async def body() -> None:
        async with await created(fakes, "VirtualMachine") as vm:
            with pytest.raises(errors.SystemError) as caught:
                await vm.set_cpu_group_affinities([GroupAffinity(1)])
            assert str(caught.value) == ("hcs::System::SetCPUGroupAffinities c1: cpu group affinities are only "
                                         "supported on container compute systems, got 'virtualmachine'")
            assert errors.is_not_supported(caught.value)
        system = await created(fakes)
        with pytest.raises(errors.SystemError, match=r"c1: affinities must be non-empty$"):
            await system.set_cpu_group_affinities([])
        await system.close()
        with pytest.raises(errors.SystemError) as caught:
            await system.set_cpu_group_affinities([GroupAffinity(1)])
        assert errors.is_already_closed(caught.value)
        assert fakes.jobs.calls() == []

    go(body())


class _SiloLessHandle:
    id = "c1"

    def set_event_sink(self, sink: Any) -> None:
        pass

    async def close(self) -> None:
        pass


def test_a_backend_without_silos_says_not_supported() -> None:
    async def body() -> None:
        system = System("c1", _SiloLessHandle(), WindowsBackend())  # type: ignore[arg-type]
        system._type = "container"
        with pytest.raises(errors.SystemError) as caught:
            await system.set_cpu_group_affinities([GroupAffinity(1)])
        assert errors.is_not_supported(caught.value)
        await system.close()

    go(body())


# -- System.properties_v2: Statistics in process (D3) ---------------------------------------------------------


def busy_silo(jobs: fakehcs.FakeJobs, **counters: Any) -> int:
    index = jobs.define(SILO)
    jobs.set_counters(index, **{"job_memory": 64 << 20, "peak_job_memory": 96 << 20, "user_time": 70,
                                "kernel_time": 30, "read_count": 3, "read_bytes": 3 << 12, "write_count": 2,
                                "write_bytes": 2 << 12, **counters})
    jobs.add_process(index, 8, private_working_set=5 << 20)
    jobs.add_process(index, 9, private_working_set=7 << 20)
    return index


def properties_queries(fakes: fakehcs.Fakes) -> list[str]:
    return [c["args"]["propertyQuery"] for c in fakes.computecore.calls()
            if c["function"] == "HcsGetComputeSystemProperties"]


def test_a_windows_container_statistics_come_from_its_silo_without_asking_hcs(fakes: fakehcs.Fakes) -> None:
    busy_silo(fakes.jobs)

    async def body() -> None:
        async with await created(fakes) as system:
            await system.start()
            asked = len(properties_queries(fakes))
            props = await system.properties_v2("Statistics")
            assert len(properties_queries(fakes)) == asked  # HCS was not asked
            assert (props.id, props.system_type, props.runtime_os_type) == ("c1", "container", "windows")
            stats = props.statistics
            assert stats is not None and stats.memory and stats.processor and stats.storage
            assert stats.memory.to_json() == {"MemoryUsageCommitBytes": 64 << 20,
                                              "MemoryUsageCommitPeakBytes": 96 << 20,
                                              "MemoryUsagePrivateWorkingSetBytes": 12 << 20}
            assert stats.processor.to_json() == {"TotalRuntime100ns": 100, "RuntimeUser100ns": 70,
                                                 "RuntimeKernel100ns": 30}
            assert stats.storage.to_json() == {"ReadCountNormalized": 3, "ReadSizeBytes": 3 << 12,
                                               "WriteCountNormalized": 2, "WriteSizeBytes": 2 << 12}
            assert stats.uptime_100ns > 0 and stats.timestamp.endswith("Z") and stats.timestamp >= \
                stats.container_start_time > "2000"
            assert schema2.Properties.from_json(json.loads(gojson.dumps(props))) == props  # a valid document
        assert fakes.jobs.open_handles() == 0

    go(body())


def test_other_types_asked_along_come_from_hcs_and_the_silo_statistics_win(fakes: fakehcs.Fakes) -> None:
    busy_silo(fakes.jobs)

    async def body() -> None:
        async with await created(fakes) as system:
            fakes.computecore.set_result("HcsWaitForOperationResult", 0, json.dumps(
                {"Id": "c1", "Owner": "HCS", "State": "Running", "Statistics": {"Uptime100ns": 1},
                 "ProcessList": [{"ProcessId": 4, "ImageName": "init"}]}))
            props = await system.properties_v2("Statistics", "ProcessList")
            assert properties_queries(fakes)[-1] == '{"PropertyTypes":["ProcessList"]}'
            assert (props.state, props.owner, props.process_list[0].image_name) == ("Running", "", "init")
            assert props.statistics is not None and props.statistics.memory is not None
            assert props.statistics.memory.memory_usage_private_working_set_bytes == 12 << 20

    go(body())


@pytest.mark.parametrize("trouble", ["no silo", "no io tracking"])
def test_when_the_silo_cannot_be_read_hcs_answers_for_statistics_too(fakes: fakehcs.Fakes, trouble: str,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    if trouble == "no io tracking":
        busy_silo(fakes.jobs, io_tracking=False)

    async def body() -> None:
        async with await created(fakes) as system:
            fakes.computecore.set_result("HcsWaitForOperationResult", 0, json.dumps(
                {"Id": "c1", "Statistics": {"Uptime100ns": 77}}))
            props = await system.properties_v2("Statistics", "Memory")
            assert properties_queries(fakes)[-1] == '{"PropertyTypes":["Statistics","Memory"]}'
            assert props.statistics is not None and props.statistics.uptime_100ns == 77
        assert fakes.jobs.open_handles() == 0

    with caplog.at_level(logging.WARNING, logger="hcsshim.hcs"):
        go(body())
    assert "failed to get statistics in-proc" in caplog.text


def test_a_container_this_object_did_not_start_has_no_uptime(fakes: fakehcs.Fakes) -> None:
    busy_silo(fakes.jobs)

    async def body() -> None:
        async with await created(fakes) as system:
            stats = (await system.properties_v2("Statistics")).statistics
            assert stats is not None and (stats.uptime_100ns, stats.container_start_time) == (0, gojson.ZERO_TIME)

    go(body())


@pytest.mark.parametrize(("system_type", "os"), [("VirtualMachine", "Windows"), ("Container", "Linux")])
def test_other_systems_ask_hcs_for_statistics(fakes: fakehcs.Fakes, system_type: str, os: str) -> None:
    busy_silo(fakes.jobs)

    async def body() -> None:
        props = {"Id": "c1", "SystemType": system_type, "RuntimeOsType": os}
        fakes.computecore.set_result("HcsWaitForOperationResult", 0, json.dumps(props))
        async with await create_compute_system("c1", "{}", backend=WindowsBackend()) as system:
            await system.properties_v2("Statistics")
            assert properties_queries(fakes)[-1] == '{"PropertyTypes":["Statistics"]}'
        assert fakes.jobs.calls() == []

    go(body())


def test_the_blocking_wrapper_pins_the_silo_as_well(fakes: fakehcs.Fakes) -> None:
    index = fakes.jobs.define(SILO)
    props = {"Id": "c1", "SystemType": "Container", "RuntimeOsType": "Windows"}
    fakes.computecore.set_result("HcsWaitForOperationResult", 0, json.dumps(props))
    with blocking.create_compute_system("c1", "{}", backend=WindowsBackend()) as system:
        system.set_cpu_group_affinities([GroupAffinity(mask=0x1)])
        with pytest.raises(errors.SystemError, match="hcs::System::CancelLiveMigration c1"):
            fakes.computecore.set_result("HcsWaitForOperationResult", 0x80070005, "")
            system.cancel_live_migration()
    assert fakes.jobs.affinities(index) == [(0, 0x1)]
