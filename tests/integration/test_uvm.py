"""Linux utility VMs on real QEMU (TCG here: KVM guests hang on this machine) booted from `make all`'s files."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hcsshim.bridge.resources import CombinedLayers
from hcsshim.hcs import errors as hcs_errors
from hcsshim.uvm import State, UtilityVM, UVMError, UVMOptions

RUN_ROOT = "/run/hcsshim/uvm-test"


def options(boot_files: Path, name: str, **kw) -> UVMOptions:
    return UVMOptions(id=f"{name}-{os.getpid()}", boot_files_path=str(boot_files), memory_mb=512, cpus=1,
                      run_root=RUN_ROOT, **kw)


def ours(vm_id: str) -> bool:
    """A VM of this test process: options() ends every id with our pid (other runs may share RUN_ROOT)."""
    return vm_id.endswith(f"-{os.getpid()}")


def qemu_processes() -> list[int]:
    """QEMU processes running a VM of ours: their argv names a run dir RUN_ROOT/<our id>/ (QEMU of other test
    runs and other run roots on this machine are not ours)."""
    run_dir = re.compile(re.escape(RUN_ROOT).encode() + rb"/([^/,]+)/")
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]).startswith(b"qemu-system") and any(
                ours(m.group(1).decode()) for arg in argv for m in run_dir.finditer(arg)):
            found.append(int(pid))
    return found


def run_dirs() -> list[str]:
    return [d for d in os.listdir(RUN_ROOT) if ours(d)] if os.path.isdir(RUN_ROOT) else []


@pytest.fixture
def no_vm_left():
    yield
    assert qemu_processes() == [], "a QEMU of ours is still running"
    assert run_dirs() == [], f"run dirs left behind: {run_dirs()}"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 300))


def test_a_vm_boots_from_the_initrd_and_its_gcs_negotiates(boot_files: Path, no_vm_left) -> None:
    async def body() -> None:
        async with await UtilityVM.create(options(boot_files, "initrd")) as vm:
            await vm.start()
            assert vm.state is State.RUNNING and vm.gcs is not None
            proc = await vm.gcs.exec_in_uvm(["cat", "/proc/cmdline"])
            out, _ = await proc.communicate()
            assert await proc.wait() == 0
            assert b"panic=-1" in out and b"/bin/gcs" in out
        assert vm.state is State.CLOSED and not vm.unexpected

    run(body())


def test_a_vm_boots_from_rootfs_vhd_and_its_gcs_negotiates(boot_files: Path, no_vm_left) -> None:
    async def body() -> None:
        async with await UtilityVM.create(options(boot_files, "vhd", root_fs_type="vhd")) as vm:
            await vm.start()
            assert vm.gcs is not None
            proc = await vm.gcs.exec_in_uvm(["sh", "-c", "grep ' / ' /proc/mounts"])
            out, err = await proc.communicate()
            assert await proc.wait() == 0, err
            assert out.startswith(b"/dev/sda / ext4 ro"), out

    run(body())


def test_uvmboot_exec_prints_the_guest_kernel_release(boot_files: Path, no_vm_left) -> None:
    release = (boot_files / "info" / "kernel.version").read_text().strip() if (
        boot_files / "info" / "kernel.version").exists() else None
    out = subprocess.run([sys.executable, "-m", "hcsshim.cmd.uvmboot", "--memory", "512", "--cpus", "1",
                          "--measure", "lcow", "--boot-files-path", str(boot_files), "--exec", "uname -r",
                          "--fwd-stdout"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    printed = out.stdout.strip()
    assert printed.endswith("-amd64"), out.stdout
    if release:
        assert release in printed
    assert "booted in" in out.stderr and "restored from template" in out.stderr  # templates are the default


def test_uvmboot_no_template_boots_cold(boot_files: Path, no_vm_left) -> None:
    out = subprocess.run([sys.executable, "-m", "hcsshim.cmd.uvmboot", "--memory", "512", "--cpus", "1",
                          "--measure", "--no-template", "lcow", "--boot-files-path", str(boot_files),
                          "--exec", "true"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "booted in" in out.stderr and ", cold" in out.stderr and "template" not in out.stderr, out.stderr


def test_uvmboot_exits_with_the_commands_status(boot_files: Path, no_vm_left) -> None:
    out = subprocess.run([sys.executable, "-m", "hcsshim.cmd.uvmboot", "--memory", "512", "--cpus", "1", "lcow",
                          "--boot-files-path", str(boot_files), "--exec", "sh -c 'exit 3'"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, out.stderr


async def guest_sh(vm: UtilityVM, script: str) -> tuple[int, bytes, bytes]:
    assert vm.gcs is not None
    proc = await vm.gcs.exec_in_uvm(["sh", "-c", script])
    out, err = await proc.communicate()
    return await proc.wait(), out, err


def ext4_image(path: Path, files: dict[str, str], size: str = "16M") -> Path:
    content = path.with_suffix(".content")
    content.mkdir()
    for name, text in files.items():
        (content / name).write_text(text)
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(path)], check=True)
    return path


def test_shares_and_scsi_disks_are_added_on_both_halves_shared_by_reference_and_released(
        boot_files: Path, tmp_path: Path, no_vm_left) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello.txt").write_text("from the host\n")
    single = tmp_path / "single.conf"
    single.write_text("one file\n")
    disk = ext4_image(tmp_path / "disk.ext4", {"on-disk.txt": "from the disk\n"})
    other_disk = tmp_path / "raw.img"
    subprocess.run(["truncate", "-s", "8M", str(other_disk)], check=True)

    async def body() -> None:
        async with await UtilityVM.create(options(boot_files, "devices")) as vm:
            await vm.start()
            s = await vm.shares.add(str(share), "/run/host-share", read_only=True)
            f = await vm.shares.add(str(single), "/run/etc/single.conf", read_only=True)
            d = await vm.scsi.add(str(disk))  # read-only, mounted at the first free /run/mounts/scsi/m<k>
            assert (d.controller, d.guest_path, d.read_only) == (0, "/run/mounts/scsi/m0", True)
            status, out, err = await guest_sh(vm, "cat /run/host-share/hello.txt /run/etc/single.conf "
                                                  "/run/mounts/scsi/m0/on-disk.txt; touch /run/host-share/x")
            assert out == b"from the host\none file\nfrom the disk\n" and status != 0, err  # read-only share
            # a second user of the same disk and config shares the LUN and the guest mount
            again = await vm.scsi.add(str(disk))
            assert (again.lun, again.guest_path) == (d.lun, d.guest_path)
            assert [a.refs for a in vm.scsi.attachments] == [2] and [m.refs for m in vm.scsi.mounts] == [2]
            # another config of the same disk is another mount of the same attachment
            other = await vm.scsi.add(str(disk), guest_path="/run/data", options=["noatime"])
            assert other.lun == d.lun and len(vm.scsi.mounts) == 2 and vm.scsi.attachments[0].refs == 3
            # attach only
            raw = await vm.scsi.add(str(other_disk), read_only=False, mount=False)
            assert raw.guest_path is None and raw.lun != d.lun
            for handle in (again, other, raw):
                await vm.scsi.release(handle)
            assert [m.guest_path for m in vm.scsi.mounts] == ["/run/mounts/scsi/m0"]
            status, out, _ = await guest_sh(vm, f"grep -c ' /run/data ' /proc/mounts; ls /sys/bus/scsi/devices/"
                                                f" | grep -c ':0:0:{raw.lun}$'")
            assert out.split() == [b"0", b"0"]  # unmounted, and the guest deleted the SCSI device
            await vm.scsi.release(d)  # the last user: unmounted, ejected, detached
            assert vm.scsi.attachments == [] and vm.scsi.mounts == []
            with pytest.raises(UVMError, match="already released"):
                await vm.scsi.release(d)
            status, out, _ = await guest_sh(vm, "grep -c /run/mounts/scsi /proc/mounts; ls /sys/bus/scsi/devices/"
                                                " | grep -c ':0:0:[1-9]'")
            assert out.split() == [b"0", b"0"]
            await vm.shares.release(f)
            await vm.shares.release(s)
            assert vm.shares.mounts == [] and vm.shares.host_shares == []
            assert os.listdir(vm.path("shares")) == []
            status, out, _ = await guest_sh(vm, "test -e /run/host-share || test -e /run/etc/single.conf; echo $?")
            assert out == b"1\n"

    run(body())


def test_a_failed_guest_mount_rolls_the_attachment_back(boot_files: Path, tmp_path: Path, no_vm_left) -> None:
    blank = tmp_path / "blank.img"
    subprocess.run(["truncate", "-s", "8M", str(blank)], check=True)  # no file system: the guest mount fails

    async def body() -> None:
        async with await UtilityVM.create(options(boot_files, "rollback")) as vm:
            await vm.start()
            with pytest.raises(UVMError, match=r"uvm rollback-\d+: add scsi .*blank.img: mount lun 1 at "
                                               r"/run/mounts/scsi/m0"):
                await vm.scsi.add(str(blank))
            assert vm.scsi.attachments == [] and vm.scsi.mounts == []
            _, out, _ = await guest_sh(vm, "ls /sys/bus/scsi/devices/ | grep -c ':0:0:1$'")
            assert out == b"0\n"
            with pytest.raises(UVMError, match="no such file"):
                await vm.scsi.add(str(tmp_path / "missing.img"))

    run(body())


def test_a_paused_vm_resumes_and_reports_its_cpu_time_and_memory(boot_files: Path, no_vm_left) -> None:
    async def body() -> None:
        async with await UtilityVM.create(options(boot_files, "pause")) as vm:
            with pytest.raises(UVMError, match="pause: the VM is created"):
                await vm.pause()
            await vm.start()
            before = await vm.stats()
            assert before.total_runtime_ns > 0 and before.working_set_bytes > 64 << 20
            assert before.pss_bytes is None or 0 < before.pss_bytes <= before.working_set_bytes
            assert before.total_runtime_100ns == before.total_runtime_ns // 100
            await vm.pause()
            assert vm.state is State.PAUSED
            with pytest.raises(UVMError, match=r"add scsi .*: the VM is paused"):
                await vm.scsi.add("/dev/null")
            paused = await vm.stats()
            await asyncio.sleep(0.5)
            assert (await vm.stats()).total_runtime_ns - paused.total_runtime_ns < 300_000_000  # halted vCPUs: ~no CPU
            await vm.resume()
            assert vm.state is State.RUNNING
            status, out, _ = await guest_sh(vm, "echo awake")
            assert (status, out) == (0, b"awake\n")
            assert (await vm.stats()).total_runtime_ns > before.total_runtime_ns
        with pytest.raises(UVMError, match="stats: the VM is closed"):
            await vm.stats()

    run(body())


def test_releases_after_qemu_died_only_drop_the_bookkeeping(boot_files: Path, tmp_path: Path,
                                                            no_vm_left) -> None:
    share = tmp_path / "share"
    share.mkdir()
    disk = ext4_image(tmp_path / "disk.ext4", {"a": "a\n"})

    async def body() -> None:
        async with await UtilityVM.create(options(boot_files, "died")) as vm:
            await vm.start()
            d = await vm.scsi.add(str(disk))
            s = await vm.shares.add(str(share), "/run/s")
            assert vm.qemu_pid is not None
            os.kill(vm.qemu_pid, signal.SIGKILL)
            await asyncio.wait_for(vm.wait(), 30)
            t = time.monotonic()
            await vm.scsi.release(d)
            await vm.shares.release(s)  # the backend removed the bind mounts when QEMU exited
            assert time.monotonic() - t < 1
            assert vm.scsi.attachments == [] and vm.shares.host_shares == [] and os.listdir(vm.path("shares")) == []

    run(body())


def test_kill_9_of_qemu_is_an_unexpected_exit_and_leaves_nothing(boot_files: Path, no_vm_left) -> None:
    async def body() -> None:
        async with await UtilityVM.create(options(boot_files, "killed")) as vm:
            await vm.start()
            assert vm.qemu_pid is not None
            proc = await vm.gcs.exec_in_uvm(["sleep", "1000"])
            os.kill(vm.qemu_pid, signal.SIGKILL)
            await asyncio.wait_for(vm.wait(), 30)
            assert vm.unexpected and vm.state is State.STOPPED
            # the compute system's SystemExited said UnexpectedExit
            assert hcs_errors.is_any(vm.exit_error, hcs_errors.ErrVmcomputeUnexpectedExit), vm.exit_error
            with pytest.raises((ConnectionError, OSError)):
                await asyncio.wait_for(proc.wait(), 30)

    run(body())


def test_two_vms_run_at_once(boot_files: Path, no_vm_left) -> None:
    async def body() -> None:
        vms = [await UtilityVM.create(options(boot_files, f"pair{i}")) for i in range(2)]
        try:
            await asyncio.gather(*(vm.start() for vm in vms))
            outs = []
            for vm in vms:
                proc = await vm.gcs.exec_in_uvm(["cat", "/proc/sys/kernel/random/boot_id"])
                out, _ = await proc.communicate()
                outs.append(out)
            assert outs[0] != outs[1] and all(outs)
        finally:
            await asyncio.gather(*(vm.close() for vm in vms))

    run(body())


def test_missing_kernel_is_a_clear_error_at_once(tmp_path: Path, no_vm_left) -> None:
    (tmp_path / "initrd.img").write_bytes(b"")
    with pytest.raises(UVMError, match=r"no kernel \(vmlinux or kernel\)"):
        run(UtilityVM.create(options(tmp_path, "nokernel")))


def test_a_corrupt_initrd_fails_the_start_within_a_bounded_time(boot_files: Path, tmp_path: Path,
                                                                no_vm_left) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    os.symlink(boot_files / "vmlinux", bad / "vmlinux")
    (bad / "initrd.img").write_bytes(os.urandom(4096))

    async def body() -> None:
        vm = await UtilityVM.create(options(bad, "corrupt"))
        t = time.monotonic()
        try:
            with pytest.raises(UVMError, match=r"stopped .* before its GCS connected"):
                await vm.start(gcs_timeout=120)
            assert time.monotonic() - t < 90
        finally:
            await vm.close()

    run(body())


ABANDONED_OWNER = """
import asyncio, sys
from hcsshim.uvm import UtilityVM, UVMOptions

async def main():
    vm_id, boot, run_root, share = sys.argv[1:]
    vm = await UtilityVM.create(UVMOptions(id=vm_id, boot_files_path=boot, memory_mb=512, cpus=1, run_root=run_root))
    await vm.start()
    await vm.shares.add(share, "/run/s")
    print("ready", vm.qemu_pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_cleanup_stale_frees_what_a_sigkilled_owner_left(boot_files: Path, tmp_path: Path, no_vm_left) -> None:
    """A shim SIGKILLed with a running VM: its QEMU, the shares' bind mounts and the run dir are freed by
    cleanup_stale (as the shim's delete action does), which is then a fast no-op."""
    from hcsshim.hcs.linux import procfs
    from hcsshim.hcs.linux.registry import cleanup_stale
    from hcsshim.mount import mounted_under

    share = tmp_path / "share"
    share.mkdir()
    (share / "keep.txt").write_text("the host's file\n")
    vm_id = options(boot_files, "abandoned").id
    owner = subprocess.Popen([sys.executable, "-c", ABANDONED_OWNER, vm_id, str(boot_files), RUN_ROOT, str(share)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line.startswith("ready"), f"the owner did not start its VM: {line!r}"
        qemu = int(line.split()[1])
        run_dir = os.path.join(RUN_ROOT, vm_id)
        record = procfs.PidRecord.read(run_dir)
        assert record is not None and record.pid == qemu and record.start_time == procfs.start_time(qemu)
        assert mounted_under(run_dir)
    finally:
        owner.kill()
        owner.wait()
    assert cleanup_stale(RUN_ROOT, vm_id) == []
    assert not procfs.alive(record.pid, record.start_time)
    assert not os.path.exists(run_dir) and mounted_under(run_dir) == []
    assert (share / "keep.txt").read_text() == "the host's file\n"  # unmounted before the run dir went
    t = time.monotonic()
    assert cleanup_stale(RUN_ROOT, vm_id) == []
    assert time.monotonic() - t < 0.1


def _layer(files: dict[str, bytes], *, base: bytes = b"") -> bytes:
    """A layer tar: the members of `base` (a tar) followed by `files`."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        if base:
            with tarfile.open(fileobj=io.BytesIO(base)) as src:
                for member in src.getmembers():
                    tf.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _tar2ext4(tar: bytes, out: Path) -> Path:
    src = out.with_suffix(".tar")
    src.write_bytes(tar)
    subprocess.run([sys.executable, "-m", "hcsshim.cmd.tar2ext4", "-overlay", "-vhd", "-i", str(src),
                    "-o", str(out)], check=True, capture_output=True, timeout=120)
    return out


def test_a_container_runs_on_two_scsi_layers_and_a_scratch_with_whiteouts_exec_and_a_share(
        boot_files: Path, tmp_path: Path, no_vm_left) -> None:
    """The hypervisor-isolated container path: layers as ext4 images (tar2ext4 -overlay) attached read-only,
    a scratch disk the guest formats, CombinedLayers, Create, init, exec, and a host share bind-mounted in."""
    from hcsshim.testing.images import busybox_layer_tar
    from hcsshim.testing.rootfs import oci_spec

    base = _tar2ext4(_layer({"etc/lower-only.txt": b"lower\n", "etc/hidden.txt": b"must be hidden\n"},
                            base=busybox_layer_tar()), tmp_path / "base.vhd")
    upper = _tar2ext4(_layer({"upper.txt": b"from the upper layer\n", "etc/.wh.hidden.txt": b""}),
                      tmp_path / "upper.vhd")
    scratch = tmp_path / "scratch.img"
    with open(scratch, "wb") as f:
        f.truncate(64 << 20)
    share = tmp_path / "share"
    share.mkdir()
    (share / "note.txt").write_text("shared\n")
    cid = "c1"
    root = f"/run/gcs/c/{cid}"

    async def body() -> None:
        async with await UtilityVM.create(options(boot_files, "ctr")) as vm:
            await vm.start()
            gc = vm.gcs
            assert gc is not None
            layers = [await vm.scsi.add(str(layer), read_only=True) for layer in (upper, base)]  # top-most first
            scratch_disk = await vm.scsi.add(str(scratch), read_only=False, guest_path=root, ensure_filesystem=True)
            combined = CombinedLayers(container_id=cid, container_root_path=f"{root}/rootfs",
                                      layers=[m.guest_path for m in layers], scratch_path=f"{root}/scratch/{cid}")
            await gc.modify(combined, "Add")
            s = await vm.shares.add(str(share), f"{root}/mounts/m0", read_only=True)
            spec = oci_spec(f"{root}/rootfs", ["sh", "-c", "cat /upper.txt /etc/lower-only.txt /mnt/share/note.txt;"
                                               " test -e /etc/hidden.txt && echo VISIBLE; sleep 1000"])
            spec["mounts"].append({"destination": "/mnt/share", "type": "bind", "source": f"{root}/mounts/m0",
                                   "options": ["rbind", "ro"]})
            container = await gc.create_container(cid, spec)
            init = await container.start_init()
            first = await asyncio.wait_for(init.stdout.recv_exactly(len(b"from the upper layer\nlower\nshared\n")),
                                           60)
            assert first == b"from the upper layer\nlower\nshared\n"
            proc = await container.exec({"args": ["sh", "-c", "ls /etc/hidden.txt 2>&1; echo exec-ok"]})
            out, _ = await proc.communicate()
            assert await proc.wait() == 0
            assert b"No such file" in out and out.endswith(b"exec-ok\n")
            await container.terminate()
            rest, err = await init.communicate()
            assert b"VISIBLE" not in rest, err
            assert await init.wait(timeout=60) == 137
            await container.wait(timeout=60)
            # upstream's teardown order: the container's state, the overlay, shares, scratch, then the layers
            await container.delete_state()
            await gc.modify(CombinedLayers(container_root_path=f"{root}/rootfs"), "Remove")
            await vm.shares.release(s)
            await vm.scsi.release(scratch_disk)
            for m in layers:
                await vm.scsi.release(m)
            assert vm.scsi.attachments == [] and vm.shares.host_shares == []

    run(body())


def test_a_network_adapter_is_hot_plugged_on_a_host_tap_and_found_by_its_mac(boot_files: Path,
                                                                             no_vm_left) -> None:
    tap = f"hcstap{os.getpid() % 100000}"
    subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
    try:
        async def body() -> None:
            async with await UtilityVM.create(options(boot_files, "nic")) as vm:
                await vm.start()
                nic = await vm.nics.add(tap)
                assert vm.nics.adapters == [nic] and nic.mac.startswith("02:")

                async def guest_macs() -> bytes:
                    proc = await vm.gcs.exec_in_uvm(["sh", "-c", "cat /sys/class/net/*/address"])
                    out, _ = await proc.communicate()
                    await proc.wait()
                    return out

                deadline = time.monotonic() + 60
                while nic.mac.encode() not in await guest_macs():
                    assert time.monotonic() < deadline, "the guest never saw the adapter"
                    await asyncio.sleep(0.5)
                with pytest.raises(UVMError, match="already added"):
                    await vm.nics.add(tap)
                await vm.nics.release(nic)
                assert vm.nics.adapters == []

        run(body())
    finally:
        subprocess.run(["ip", "link", "delete", tap], check=False)


def test_uvmboot_mounts_a_scsi_disk_and_a_share_for_the_command(boot_files: Path, tmp_path: Path,
                                                                  no_vm_left) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "a.txt").write_text("share\n")
    content = tmp_path / "content"
    content.mkdir()
    (content / "b.txt").write_text("disk\n")
    disk = tmp_path / "disk.ext4"
    subprocess.run(["truncate", "-s", "8M", str(disk)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(disk)], check=True)
    out = subprocess.run([sys.executable, "-m", "hcsshim.cmd.uvmboot", "--memory", "512", "--cpus", "1", "lcow",
                          "--boot-files-path", str(boot_files), "--share", f"{share}:/run/s:ro",
                          "--mount-scsi", f"{disk}:/run/d:ro", "--exec", "cat /run/s/a.txt /run/d/b.txt",
                          "--fwd-stdout"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "share\ndisk\n"


def test_uvmboot_rejects_a_bad_mapping_with_status_2() -> None:
    out = subprocess.run([sys.executable, "-m", "hcsshim.cmd.uvmboot", "lcow", "--boot-files-path", "/x",
                          "--share", "relative-guest-path"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "expected HOST:GUEST[:ro]" in out.stderr and "Traceback" not in out.stderr
