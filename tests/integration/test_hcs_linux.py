"""hcsshim.hcs over its Linux backend (hcsshim.hcs.linux) on real QEMU: compute systems from schema2 documents,
their lifecycle, modify requests, properties, notifications, open by id from another process, and cleanup."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hcsshim import mount
from hcsshim.hcs import errors, resourcepaths, schema2
from hcsshim.hcs.backend import EVENT_SYSTEM_EXITED
from hcsshim.hcs.linux import cgroups, hvsock, procfs, registry
from hcsshim.hcs.linux.backend import LinuxBackend
from hcsshim.hcs.service import get_compute_systems
from hcsshim.hcs.system import create_compute_system, open_compute_system

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "schema2" / "lcow_compute_system.json"
LOG = hvsock.vsock_service_id(109)
READY = "hcs-linux-ready"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 300))


@pytest.fixture
def root(tmp_path: Path):
    """A private registry root; afterwards no QEMU of it runs and no directory (or mount) is left in it."""
    r = tmp_path / "hcs"
    yield str(r)
    left = registry.list_ids(str(r))
    for id in left:
        registry.cleanup_stale(str(r), id)
    assert left == [], f"compute systems left behind: {left}"
    assert not any(r.iterdir()) if r.exists() else True


def document(boot_files: Path, *, command: str = f"echo {READY} >&2; exec sleep 100000",
             **devices: object) -> dict:
    """upstream's LCOW document (tests/golden), with this machine's boot files and a shell as init's child that
    says READY on the log port; its Windows-only parts (VirtualPMem's capacity) are kept: they map to nothing."""
    doc = json.loads(GOLDEN.read_text())
    vm = doc["VirtualMachine"]
    kd = vm["Chipset"]["LinuxKernelDirect"]
    kd["KernelFilePath"] = str(boot_files / "vmlinux")
    kd["InitRdPath"] = str(boot_files / "initrd.cpio")
    kd["KernelCmdLine"] = f'panic=-1 quiet -- -e vsock.109 /bin/sh -c "{command}"'
    vm["ComputeTopology"]["Memory"]["SizeInMB"] = 256
    vm["ComputeTopology"]["Processor"]["Count"] = 1
    vm["Devices"]["HvSocket"]["HvSocketConfig"]["ServiceTable"][LOG] = {"AllowWildcardBinds": True}
    vm["Devices"].update(devices)
    return doc


async def started(backend: LinuxBackend, id: str, doc: dict):
    """The system created, its log service listened on, started, and READY read from its guest."""
    system = await create_compute_system(id, json.dumps(doc), backend=backend)
    listener = hvsock.listen(os.path.join(backend.root, id), LOG)
    try:
        await system.start()
        loop = asyncio.get_running_loop()
        conn, _ = await asyncio.wait_for(loop.sock_accept(listener), 30)
        got = b""
        while READY.encode() not in got:
            data = await asyncio.wait_for(loop.sock_recv(conn, 4096), 120)
            assert data, f"the guest's log port closed: {got!r}"
            got += data
        conn.close()
    except BaseException:
        await system.terminate()
        await system.close()
        raise
    finally:
        listener.close()
    return system


def qemu_of(root: str, id: str) -> int:
    record = registry.qemu_running(os.path.join(root, id))
    assert record is not None
    return record.pid


def test_upstreams_lcow_document_boots_and_runs_its_lifecycle(boot_files: Path, root: str, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * (8 << 20))

    async def body() -> None:
        backend = LinuxBackend(root)
        system = await started(backend, "life", document(boot_files))
        try:
            assert (system.os(), system.system_type(), system.owner()) == (
                "linux", "virtualmachine", "containerd-shim-runhcs-v1.exe")
            props = await system.properties_v2("Statistics", "Memory")
            assert props.state == "Running" and props.runtime_os_type == "Linux"
            assert props.statistics is not None and props.statistics.processor is not None
            assert props.statistics.processor.total_runtime_100ns > 0
            assert props.statistics.memory is not None and props.statistics.memory.memory_usage_commit_bytes > 0
            assert props.memory is not None and props.memory.virtual_machine_memory.assigned_memory == 256 * 256
            await system.pause()
            assert (await system.properties_v2()).state == "Paused"
            await system.resume()
            assert (await system.properties_v2()).state == "Running"
            # SCSI attach and detach by modify: QEMU sees the disk come and go
            path = resourcepaths.scsi_attachment("df6d0690-79e5-55b6-a5ec-c1e2f77f580a", 3)
            await system.modify(schema2.ModifySettingRequest(
                resource_path=path, request_type="Add",
                settings=schema2.Attachment(type="VirtualDisk", path=str(disk)).to_json()))
            with pytest.raises(errors.HcsError, match="LUN 3 is in use"):
                await system.modify(schema2.ModifySettingRequest(
                    resource_path=path, request_type="Add",
                    settings=schema2.Attachment(type="VirtualDisk", path=str(disk)).to_json()))
            await system.modify(schema2.ModifySettingRequest(resource_path=path, request_type="Remove"))
            with pytest.raises(errors.HcsError, match="nothing is attached at LUN 3"):
                await system.modify(schema2.ModifySettingRequest(resource_path=path, request_type="Remove"))
            listed = await get_compute_systems(backend=backend)
            assert [(p.id, p.state, p.system_type, p.runtime_os_type) for p in listed] == [
                ("life", "Running", "VirtualMachine", "Linux")]
            # save: the state (with the RAM: no RAM file) written, the system paused
            state = tmp_path / "saved.state"
            await system.save(schema2.SaveOptions(save_type="ToFile", save_state_file_path=str(state)))
            assert state.stat().st_size > 16 << 20 and (await system.properties_v2()).state == "Paused"
            async with system.events() as events:
                await system.terminate()
                await system.wait()
                got = [e async for e in events]
            assert [e.type for e in got] == [EVENT_SYSTEM_EXITED]
            assert json.loads(got[0].data) == {"Status": 0, "ExitType": "ForcedExit"}
            assert system.exit_error() is None
            assert (await system.properties_v2()).state == "Stopped"
        finally:
            await system.close()
        assert not os.path.exists(os.path.join(root, "life"))

    run(body())


def test_a_saved_system_restores_into_a_new_one(boot_files: Path, root: str, tmp_path: Path) -> None:
    async def body() -> None:
        backend = LinuxBackend(root)
        doc = document(boot_files, command=f"echo {READY} >&2; while true; do sleep 0.2; echo tick >&2; done")
        system = await started(backend, "orig", doc)
        state = tmp_path / "saved.state"
        try:
            await system.save(schema2.SaveOptions(save_type="ToFile", save_state_file_path=str(state)))
        finally:
            await system.terminate()
            await system.close()
        doc["VirtualMachine"]["RestoreState"] = {"SaveStateFilePath": str(state)}
        clone = await create_compute_system("clone", json.dumps(doc), backend=backend)
        listener = hvsock.listen(os.path.join(root, "clone"), LOG)
        try:
            await clone.start()
            loop = asyncio.get_running_loop()
            conn, _ = await asyncio.wait_for(loop.sock_accept(listener), 30)
            data = await asyncio.wait_for(loop.sock_recv(conn, 4096), 30)  # the restored loop goes on ticking
            assert b"tick" in data
            conn.close()
            assert (await clone.properties_v2()).state == "Running"
        finally:
            listener.close()
            await clone.terminate()
            await clone.close()

    run(body())


def test_kill_9_of_qemu_is_an_unexpected_exit_notification_and_close_leaves_nothing(boot_files: Path,
                                                                                     root: str) -> None:
    async def body() -> None:
        backend = LinuxBackend(root)
        system = await started(backend, "killed", document(boot_files))
        try:
            async with system.events() as events:
                os.kill(qemu_of(root, "killed"), signal.SIGKILL)
                await asyncio.wait_for(system.wait(), 30)
                got = [e async for e in events]
            status = json.loads(got[0].data)
            assert status["ExitType"] == "UnexpectedExit" and status["Status"] != 0
            assert errors.is_any(system.exit_error(), errors.ErrVmcomputeUnexpectedExit)
            with pytest.raises(errors.HcsError):
                await system.pause()
        finally:
            await system.close()

    run(body())


OPENER = """
import asyncio, json, sys
from hcsshim.hcs.linux.backend import LinuxBackend
from hcsshim.hcs.service import get_compute_systems
from hcsshim.hcs.system import open_compute_system

async def main():
    root, id = sys.argv[1:]
    backend = LinuxBackend(root)
    print(json.dumps([p.id for p in await get_compute_systems(backend=backend)]), flush=True)
    system = await open_compute_system(id, backend=backend)
    print(system.owner(), (await system.properties_v2()).state, flush=True)
    await system.pause()
    print((await system.properties_v2()).state, flush=True)
    await system.resume()
    await system.terminate()
    await asyncio.wait_for(system.wait(), 30)
    print("stopped", flush=True)
    await system.close()

asyncio.run(main())
"""


def test_another_process_opens_the_system_by_id_and_drives_it(boot_files: Path, root: str) -> None:
    async def body() -> None:
        backend = LinuxBackend(root)
        system = await started(backend, "shared", document(boot_files))
        try:
            out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", OPENER, root, "shared"],
                                          capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            assert out.stdout.splitlines() == ['["shared"]', "containerd-shim-runhcs-v1.exe Running", "Paused",
                                               "stopped"]
            await asyncio.wait_for(system.wait(), 30)  # the owner sees the opener's terminate as a forced exit
            assert system.exit_error() is None
        finally:
            await system.close()
        with pytest.raises(errors.HcsError) as info:
            await open_compute_system("shared", backend=backend)
        assert errors.is_not_exist(info.value)

    run(body())


OWNER = """
import asyncio, sys
from hcsshim.hcs.linux.backend import LinuxBackend
from hcsshim.hcs.system import create_compute_system

async def main():
    root, doc, share = sys.argv[1:]
    system = await create_compute_system("orphan", doc, backend=LinuxBackend(root))
    await system.start()
    await system.modify({"ResourcePath": "VirtualMachine/Devices/Plan9/Shares", "RequestType": "Add",
                         "Settings": {"Name": "s", "Path": share}})
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_what_a_sigkilled_owner_left_is_stale_and_cleaned_up(boot_files: Path, root: str, tmp_path: Path) -> None:
    (tmp_path / "share").mkdir()
    (tmp_path / "share" / "keep").write_text("mine\n")
    doc = document(boot_files)
    doc["ShouldTerminateOnLastHandleClosed"] = False  # QEMU outlives its owner
    owner = subprocess.Popen([sys.executable, "-c", OWNER, root, json.dumps(doc), str(tmp_path / "share")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        directory = os.path.join(root, "orphan")
        assert mount.mounted_under(os.path.join(directory, "shares")) == [os.path.join(directory, "shares", "s")]
        qemu = qemu_of(root, "orphan")
        record = procfs.PidRecord.read(directory)
        assert record is not None
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert procfs.alive(record.pid, record.start_time)  # not its owner's to take along
        rec = registry.read_record(root, "orphan")
        assert rec is not None and not registry.is_stale(root, rec)  # QEMU runs: still a system
        assert registry.cleanup_stale(root, "orphan") == []
        assert not procfs.alive(qemu, record.start_time) and not os.path.exists(directory)
        assert (tmp_path / "share" / "keep").read_text() == "mine\n"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


@pytest.mark.parametrize("change, field, code", [
    (lambda d: d["VirtualMachine"]["Devices"]["VirtualPMem"].update(Devices={"0": {"HostPath": "/x"}}),
     "VirtualMachine.Devices.VirtualPMem.Devices: not supported", "not supported"),
    (lambda d: d["VirtualMachine"]["Devices"].update(Battery={}), "VirtualMachine.Devices.Battery", "not supported"),
    (lambda d: d["VirtualMachine"]["Chipset"].update(Uefi={"Console": "ComPort1"}), "VirtualMachine.Chipset.Uefi",
     "not supported"),
    (lambda d: d["VirtualMachine"]["ComputeTopology"]["Memory"].update(SizeInMB="lots"),
     "field SizeInMB: expected uint64", "invalid"),
    (lambda d: d["VirtualMachine"]["Chipset"]["LinuxKernelDirect"].update(KernelFilePath="/no/such/vmlinux"),
     "VirtualMachine.Chipset.LinuxKernelDirect.KernelFilePath: /no/such/vmlinux: no such file", "invalid"),
    (lambda d: d["VirtualMachine"]["Devices"]["Scsi"].update({"9": {}}), 'VirtualMachine.Devices.Scsi["9"]',
     "invalid"),
])
def test_a_bad_document_is_refused_naming_the_field_and_nothing_is_started_or_left(
        boot_files: Path, root: str, change, field: str, code: str) -> None:
    doc = document(boot_files)
    change(doc)

    async def body() -> None:
        with pytest.raises(errors.HcsError) as info:
            await create_compute_system("bad", json.dumps(doc), backend=LinuxBackend(root))
        assert field in str(info.value) and "hcs::CreateComputeSystem bad" in str(info.value)
        wanted = errors.ErrNotSupported if code == "not supported" else errors.ErrVmcomputeInvalidJSON
        assert errors.is_any(info.value, wanted), info.value

    t = time.monotonic()
    run(body())
    assert time.monotonic() - t < 5  # refused before anything boots
    assert not os.path.exists(os.path.join(root, "bad"))


def test_bad_modify_requests_are_refused_naming_the_path(boot_files: Path, root: str) -> None:
    async def body() -> None:
        system = await create_compute_system("mod", json.dumps(document(boot_files)),
                                             backend=LinuxBackend(root))
        try:
            await system.start()
            cases = [
                ({"ResourcePath": "VirtualMachine/Devices/Nope", "RequestType": "Add"},
                 "not a known HCS modify resource path"),
                ({"ResourcePath": "VirtualMachine/ComputeTopology/Memory/SizeInMB", "RequestType": "Update",
                  "Settings": 512}, "not supported by the Linux (QEMU) backend"),
                ({"ResourcePath": "VirtualMachine/Devices/Scsi/0/Attachments/1", "RequestType": "Add",
                  "Settings": {"Type": "VirtualDisk", "Path": "/no/such.img"}}, "/no/such.img': no such file"),
                ({"ResourcePath": "VirtualMachine/Devices/Scsi/7/Attachments/1", "RequestType": "Add",
                  "Settings": {"Type": "VirtualDisk", "Path": "/dev/null"}}, "SCSI controller '7'"),
                ({"ResourcePath": "VirtualMachine/Devices/Scsi/0/Attachments/1", "RequestType": "Add",
                  "Settings": {"Type": "VirtualDisk", "Path": 5}}, "field Path: expected string"),
                ({"ResourcePath": "VirtualMachine/Devices/Plan9/Shares", "RequestType": "Sideways"},
                 "'Sideways' is not Add, Remove or Update"),
            ]
            for request, message in cases:
                with pytest.raises(errors.HcsError, match="hcs::System::Modify mod: ") as info:
                    await system.modify(request)
                assert message in str(info.value), info.value
            assert (await system.properties_v2()).state == "Running"  # none of it hurt the system
        finally:
            await system.terminate()
            await system.close()

    run(body())


def test_enumerate_filters_and_skips_stale_systems(boot_files: Path, root: str) -> None:
    async def body() -> None:
        backend = LinuxBackend(root)
        a = await create_compute_system("a", json.dumps(document(boot_files)), backend=backend)
        try:
            stale = Path(root) / "stale"  # what a create cut short by a dead owner leaves
            stale.mkdir()
            registry.SystemRecord("stale", "x", "0", 0.0, 2**22 + 1, 1, True).write(str(stale))
            q = json.dumps({"Owners": ["containerd-shim-runhcs-v1.exe"]})
            assert [p.id for p in await get_compute_systems(q, backend=backend)] == ["a"]
            assert await get_compute_systems(json.dumps({"Ids": ["zzz"]}), backend=backend) == []
            assert [p.state for p in await get_compute_systems(backend=backend)] == ["Created"]
            assert registry.cleanup_stale(root, "stale") == []
        finally:
            await a.close()

    run(body())


def test_processor_limits_put_qemu_in_a_cgroup_that_goes_with_the_system(boot_files: Path, root: str) -> None:
    async def body() -> None:
        system = await create_compute_system("cpu", json.dumps(document(boot_files)), backend=LinuxBackend(root))
        try:
            await system.start()
            await system.modify(schema2.ModifySettingRequest(
                resource_path=resourcepaths.CPU_LIMITS_RESOURCE_PATH, request_type="Update",
                settings=schema2.ProcessorLimits(limit=50_000, weight=200).to_json()))
            group = Path(cgroups.path_of(os.path.join(root, "cpu")))
            assert str(qemu_of(root, "cpu")) in (group / "cgroup.procs").read_text().split()
            if (group / "cpu.max").exists():  # cgroup v2
                assert (group / "cpu.max").read_text().split() == ["50000", "100000"]
                assert (group / "cpu.weight").read_text().strip() == "200"
            else:  # one processor, half of it
                assert (group / "cpu.cfs_quota_us").read_text().strip() == "50000"
                assert (group / "cpu.shares").read_text().strip() == "2048"
            with pytest.raises(errors.HcsError, match=r"Settings\.Reservation: not supported"):
                await system.modify(schema2.ModifySettingRequest(
                    resource_path=resourcepaths.CPU_LIMITS_RESOURCE_PATH, request_type="Update",
                    settings=schema2.ProcessorLimits(reservation=10).to_json()))
            with pytest.raises(errors.HcsError, match="Limit 200000 is out of range"):
                await system.modify(schema2.ModifySettingRequest(
                    resource_path=resourcepaths.CPU_LIMITS_RESOURCE_PATH, request_type="Update",
                    settings=schema2.ProcessorLimits(limit=200_000).to_json()))
            await system.terminate()
            await system.wait()
            assert not group.exists()
        finally:
            await system.close()

    run(body())
