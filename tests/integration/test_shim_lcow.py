"""Hypervisor isolation through the shim: real containerd 1.6 and ctr, the trial inside a QEMU utility VM (TCG here)
booted from the default boot files, with the image's layers as ext4 disks from the shim's layer cache."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from google.protobuf.any_pb2 import Any
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from hcsshim.api.containerd.task.v2 import shim_pb2 as api
from hcsshim.shim.service import RESOURCES_LINUX
from hcsshim.testing.containerd import Containerd
from hcsshim.ttrpc import Client

RUNTIME = "io.containerd.runhcs.v1"
VM_TIMEOUT = 240  # seconds for one ctr command that boots a VM under TCG (about 10 s on an idle machine)


def write_config(path: Path, **options: object) -> Path:
    """A runtime config file (the CRI options table's keys) for `ctr run --runtime-config-path`."""
    lines = []
    for key, value in {"SandboxIsolation": 1, "VmProcessorCount": 1, "VmMemorySizeInMb": 512,
                       "DefaultContainerScratchSizeInGb": 2, **options}.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def vm_config(tmp_path: Path, boot_files: Path) -> Path:
    """Hypervisor isolation with the default boot files (the `boot_files` fixture makes sure they are installed)."""
    return write_config(tmp_path / "runhcs.toml")


def run_vm(cd: Containerd, config: Path, ref: str, cid: str, *cmd: str, extra: tuple[str, ...] = (),
           input: bytes | None = None, timeout: float = VM_TIMEOUT, tty: bool = False,
           rm: bool = True) -> subprocess.CompletedProcess[bytes]:
    return cd.ctr("run", "--runtime", RUNTIME, "--runtime-config-path", str(config), *(["--rm"] if rm else []),
                  *extra, ref, cid, *cmd, input=input, timeout=timeout, check=False, tty=tty)


def qemu_pids(cd: Containerd) -> list[int]:
    """QEMU processes of this containerd's utility VMs (their command lines name its VM run root)."""
    out = subprocess.run(["pgrep", "-f", f"{cd.uvm_root}/"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if os.path.exists(f"/proc/{p}/exe")
            and os.path.basename(os.readlink(f"/proc/{p}/exe")).startswith("qemu-system")]


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def task_status(cd: Containerd, cid: str) -> str:
    for line in cd.ctr("task", "ls", check=False).stdout.decode().splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    return ""


def shim_call(cd: Containerd, cid: str, method: str, request: Message, response_type: type[Message]) -> Message:
    """One call of the shim's Task service on the task's socket (a second client, as containerd is one)."""
    address = (cd.state / "io.containerd.runtime.v2.task" / "default" / cid / "address").read_text()

    async def call() -> Message:
        client = await Client.connect(address.removeprefix("unix://"), timeout=10)
        try:
            return await client.call("containerd.task.v2.Task", method, request, response_type, timeout=120,
                                     metadata={"containerd-namespace-ttrpc": "default"})
        finally:
            await client.close()

    return asyncio.run(call())


def cleanup(cd: Containerd, *ids: str) -> None:
    for cid in ids:
        cd.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    for cid in ids:
        cd.ctr("task", "delete", "-f", cid, check=False, timeout=VM_TIMEOUT)
        cd.ctr("container", "delete", cid, check=False)


def layer_images(cd: Containerd) -> dict[str, int]:
    """The cache's finished layer images: name -> inode (a rebuilt image has a new inode)."""
    images = cd.layer_cache / "images"
    return {p.name: p.stat().st_ino for p in images.glob("*.ext4")} if images.is_dir() else {}


# -- the trial ------------------------------------------------------------------------------------------------

def test_the_trial_in_a_utility_vm_prints_hello_world_on_the_boot_files_kernel(
        containerd: Containerd, busybox_ref: str, vm_config: Path, boot_files: Path, new_id) -> None:
    out = run_vm(containerd, vm_config, busybox_ref, new_id("hello"), "echo", "Hello World!")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"Hello World!\n"
    out = run_vm(containerd, vm_config, busybox_ref, new_id("uname"), "uname", "-r")
    assert out.returncode == 0, out.stderr
    release = out.stdout.decode().strip()
    assert release != os.uname().release
    assert release == (boot_files / "info" / "kernel.version").read_text().strip() or release.endswith("-amd64")


def test_exit_codes_are_the_containers_and_sigkill_is_137(containerd: Containerd, busybox_ref: str,
                                                          vm_config: Path, new_id) -> None:
    out = run_vm(containerd, vm_config, busybox_ref, new_id("exit"), "sh", "-c", "echo out; echo err >&2; exit 7")
    assert out.returncode == 7, out.stderr
    assert out.stdout == b"out\n" and out.stderr == b"err\n"
    # A container's init is its pid namespace's PID 1, which no signal from inside kills (runc on the host gives
    # the same): the shell that kills itself here is a child of the init, whose status it passes on.
    out = run_vm(containerd, vm_config, busybox_ref, new_id("kill"), "sh", "-c", "sh -c 'kill -9 $$'; exit $?")
    assert out.returncode == 137, out.stderr


def test_ten_mib_of_stdin_come_back_identical_and_closing_stdin_ends_cat(containerd: Containerd, busybox_ref: str,
                                                                         vm_config: Path, new_id) -> None:
    data = os.urandom(10 << 20)
    out = run_vm(containerd, vm_config, busybox_ref, new_id("cat"), "cat", input=data)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout) == len(data)
    assert hashlib.sha256(out.stdout).hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_terminal_task_in_a_vm_has_a_tty_of_the_clients_size(containerd: Containerd, busybox_ref: str,
                                                              vm_config: Path, new_id) -> None:
    out = run_vm(containerd, vm_config, busybox_ref, new_id("tty"), "sh", "-c", "tty; sleep 1; stty size; exit 4",
                 extra=("-t",), tty=True)
    text = out.stdout.decode(errors="replace")
    assert "/dev/pts/" in text, text
    assert "24 80" in text, text  # ctr resized the pty to its own terminal's size
    assert out.returncode == 4


def test_a_detached_vm_task_takes_execs_ps_metrics_pause_resume_and_delete(containerd: Containerd,
                                                                          busybox_ref: str, vm_config: Path,
                                                                          new_id) -> None:
    cid = new_id("det")
    try:
        out = run_vm(containerd, vm_config, busybox_ref, cid, "sleep", "1000", extra=("-d",), rm=False)
        assert out.returncode == 0, out.stderr
        assert task_status(containerd, cid) == "RUNNING"
        assert len(qemu_pids(containerd)) == 1
        out = containerd.ctr("task", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo from-exec; exit 5",
                             check=False, timeout=VM_TIMEOUT)
        assert out.returncode == 5, out.stderr
        assert out.stdout == b"from-exec\n"
        ps = containerd.ctr("task", "ps", cid).stdout.decode().splitlines()
        assert len(ps) >= 2 and ps[1].split()[0].isdigit(), ps
        metrics = json.loads(containerd.ctr("task", "metrics", "--format", "json", cid).stdout)
        assert metrics["pids"]["current"] >= 1 and metrics["memory"]["usage"]["usage"] > 0, metrics
        # Update (no ctr command for it in 1.6: a second ttrpc client on the shim's socket, as containerd is)
        limit = 96 << 20
        update = api.UpdateTaskRequest(id=cid, resources=Any(type_url=RESOURCES_LINUX,
                                                             value=json.dumps({"memory": {"limit": limit}}).encode()))
        shim_call(containerd, cid, "Update", update, Empty)
        metrics = json.loads(containerd.ctr("task", "metrics", "--format", "json", cid).stdout)
        assert metrics["memory"]["usage"]["limit"] == limit, metrics
        # and an exec after the others still works (its FIFOs' descriptors were reused by the ttrpc connection)
        out = containerd.ctr("task", "exec", "--exec-id", "e2", cid, "echo", "again", timeout=VM_TIMEOUT)
        assert out.stdout == b"again\n"
        containerd.ctr("task", "pause", cid)
        assert task_status(containerd, cid) == "PAUSED"
        containerd.ctr("task", "resume", cid)
        assert task_status(containerd, cid) == "RUNNING"
        containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
        wait_for(lambda: task_status(containerd, cid) == "STOPPED", what=f"{cid} stopped")
        deleted = containerd.ctr("task", "delete", cid, timeout=VM_TIMEOUT).stderr.decode()
        assert "exit code 137" in deleted, deleted  # ctr warns of the status of the task it deleted
        containerd.ctr("container", "delete", cid)
        wait_for(lambda: qemu_pids(containerd) == [], what="the VM to go with its task")
    finally:
        cleanup(containerd, cid)


def test_vm_tasks_are_clones_of_a_template_unless_the_annotation_turns_it_off(containerd: Containerd,
                                                                               busybox_ref: str, vm_config: Path,
                                                                               new_id) -> None:
    clone, cold = new_id("clone"), new_id("cold")
    try:
        for cid, extra in ((clone, ()), (cold, ("--annotation", "io.hcsshim.uvm.template=false"))):
            out = run_vm(containerd, vm_config, busybox_ref, cid, "sleep", "1000", extra=("-d", *extra), rm=False)
            assert out.returncode == 0, out.stderr
        argv = {}
        for pid in qemu_pids(containerd):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            argv[next(cid for cid in (clone, cold) if any(f"/{cid}@vm/" in a for a in args))] = args
        assert sorted(argv) == sorted([clone, cold]), argv
        # a clone maps its template's RAM file privately and waits for the saved state; a cold VM does neither
        assert "-incoming" in argv[clone] and any("memory-backend-file" in a and "share=off" in a
                                                  for a in argv[clone]), argv[clone]
        assert "-incoming" not in argv[cold] and not any("memory-backend-file" in a for a in argv[cold]), argv[cold]
        for cid in (clone, cold):
            out = containerd.ctr("task", "exec", "--exec-id", "e1", cid, "echo", cid, timeout=VM_TIMEOUT)
            assert out.stdout == f"{cid}\n".encode()
    finally:
        cleanup(containerd, clone, cold)
    wait_for(lambda: qemu_pids(containerd) == [], what="the VMs to go with their tasks")


def test_bind_mounts_become_shares_into_the_vm_and_read_only_is_honoured(containerd: Containerd, busybox_ref: str,
                                                                         vm_config: Path, tmp_path: Path,
                                                                         new_id) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "hello.txt").write_text("from the host\n")
    script = ("cat /ro/hello.txt; echo written > /rw/out.txt; touch /ro/nope 2>/dev/null || echo read-only; "
              "grep ' /dev/shm ' /proc/mounts | cut -d' ' -f3; grep -c localhost /etc/hosts")
    out = run_vm(containerd, vm_config, busybox_ref, new_id("mounts"), "sh", "-c", script,
                 extra=("--mount", f"type=bind,src={ro},dst=/ro,options=rbind:ro",
                        "--mount", f"type=bind,src={rw},dst=/rw,options=rbind:rw"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split("\n")[:3] == ["from the host", "read-only", "tmpfs"], out.stdout
    assert (rw / "out.txt").read_text() == "written\n"  # through the share, on the host
    assert not (ro / "nope").exists()


# -- pods ---------------------------------------------------------------------------------------------------

def test_a_pod_runs_its_sandbox_and_two_containers_in_one_vm_each_with_its_own_rootfs(
        containerd: Containerd, busybox_ref: str, vm_config: Path, new_id) -> None:
    pod, c1, c2 = new_id("pod"), new_id("c1"), new_id("c2")

    def annotations(ctype: str) -> tuple[str, ...]:
        return ("--annotation", f"io.kubernetes.cri.container-type={ctype}",
                "--annotation", f"io.kubernetes.cri.sandbox-id={pod}")

    try:
        out = run_vm(containerd, vm_config, busybox_ref, pod, "sleep", "1000", rm=False,
                     extra=("-d", *annotations("sandbox")))
        assert out.returncode == 0, out.stderr
        shared = ("--mount", "type=bind,src=sandbox://shared,dst=/shared,options=rbind:rw")
        for cid in (c1, c2):
            out = run_vm(containerd, vm_config, busybox_ref, cid, "sh", "-c", f"echo {cid} > /mine; sleep 1000",
                         rm=False, extra=("-d", *annotations("container"), *shared))
            assert out.returncode == 0, out.stderr
        assert len(qemu_pids(containerd)) == 1  # one VM for the pod

        def in_(cid: str, script: str) -> bytes:
            return containerd.ctr("task", "exec", "--exec-id", "look", cid, "sh", "-c", script,
                                  timeout=VM_TIMEOUT).stdout

        for cid in (c1, c2):
            assert in_(cid, "cat /mine") == f"{cid}\n".encode()  # its own rootfs: the other one wrote elsewhere
        # the pod's containers share the sandbox's /etc/hostname and hosts, and sandbox:// directories
        assert in_(c1, "cat /etc/hostname /etc/hosts") == in_(c2, "cat /etc/hostname /etc/hosts") == \
            in_(pod, "cat /etc/hostname /etc/hosts")
        in_(c1, "echo from-c1 > /shared/note")
        assert in_(c2, "cat /shared/note") == b"from-c1\n"
        paused = containerd.ctr("task", "pause", c1, check=False)
        assert paused.returncode != 0 and b"not implemented" in paused.stderr, paused.stderr  # as upstream
        for cid in (c1, c2):
            containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
            wait_for(lambda cid=cid: task_status(containerd, cid) == "STOPPED", what=f"{cid} stopped")
            containerd.ctr("task", "delete", cid, timeout=VM_TIMEOUT)
            containerd.ctr("container", "delete", cid)
        assert task_status(containerd, pod) == "RUNNING" and len(qemu_pids(containerd)) == 1
        containerd.ctr("task", "kill", "-s", "SIGKILL", pod)
        wait_for(lambda: task_status(containerd, pod) == "STOPPED", what=f"{pod} stopped")
        containerd.ctr("task", "delete", pod, timeout=VM_TIMEOUT)
        containerd.ctr("container", "delete", pod)
        wait_for(lambda: qemu_pids(containerd) == [], what="the pod's VM to go with its last task")
    finally:
        cleanup(containerd, c1, c2, pod)


# -- the layer cache --------------------------------------------------------------------------------------------

def test_a_second_run_of_an_image_builds_no_layer_image(containerd: Containerd, busybox_ref: str,
                                                        vm_config: Path, new_id) -> None:
    assert run_vm(containerd, vm_config, busybox_ref, new_id("first"), "true").returncode == 0
    built = layer_images(containerd)
    assert len(built) == 1, built  # the busybox image has one layer
    assert run_vm(containerd, vm_config, busybox_ref, new_id("second"), "true").returncode == 0
    assert layer_images(containerd) == built  # the same file: nothing was rebuilt


def test_two_concurrent_first_runs_build_the_layer_image_once(containerd: Containerd, busybox_ref: str,
                                                              vm_config: Path, new_id) -> None:
    ids = [new_id("conc"), new_id("conc")]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda cid: run_vm(containerd, vm_config, busybox_ref, cid, "echo", cid), ids))
    for cid, out in zip(ids, results, strict=True):
        assert out.returncode == 0, out.stderr
        assert out.stdout == f"{cid}\n".encode()
    assert len(layer_images(containerd)) == 1
    log = containerd.log.read_text(errors="replace")
    assert log.count("built layer image") == 1, log  # the cache logs each build; the other shim waited and hit


# -- faults -----------------------------------------------------------------------------------------------------

def exit_events(text: str, cid: str) -> dict[str, int]:
    """How many /tasks/exit events `ctr events` printed for each process (init: the task id) of task cid."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if "/tasks/exit" not in line or "{" not in line:
            continue
        event = json.loads(line[line.index("{"):])
        if event.get("container_id") == cid:
            counts[event.get("id", "")] = counts.get(event.get("id", ""), 0) + 1
    return counts


def _run_detached(cd: Containerd, config: Path, ref: str, cid: str) -> None:
    out = run_vm(cd, config, ref, cid, "sleep", "1000", extra=("-d",), rm=False)
    assert out.returncode == 0, out.stderr


def test_kill_9_of_qemu_gives_one_exit_and_delete_and_rm_work(containerd: Containerd, busybox_ref: str,
                                                             vm_config: Path, new_id) -> None:
    cid = new_id("qemu")
    try:
        _run_detached(containerd, vm_config, busybox_ref, cid)
        events = subprocess.Popen(["ctr", "-a", containerd.address, "events"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            (pid,) = qemu_pids(containerd)
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: task_status(containerd, cid) == "STOPPED", what=f"{cid} stopped")
            time.sleep(1.0)
        finally:
            events.terminate()
            text = events.communicate(timeout=10)[0].decode()
        assert exit_events(text, cid) == {cid: 1}, text
        containerd.ctr("task", "delete", cid, timeout=VM_TIMEOUT)
        containerd.ctr("container", "delete", cid)
        assert qemu_pids(containerd) == []
    finally:
        cleanup(containerd, cid)


def test_the_gcs_dying_stops_the_vm_and_its_task_exits_once(containerd: Containerd, busybox_ref: str,
                                                              vm_config: Path, new_id) -> None:
    cid = new_id("gcs")
    try:
        # In the utility VM's own pid namespace (the path is the guest's), the container's exec can see the GCS.
        out = run_vm(containerd, vm_config, busybox_ref, cid, "sleep", "1000", rm=False,
                     extra=("-d", "--with-ns", "pid:/proc/1/ns/pid"))
        assert out.returncode == 0, out.stderr
        events = subprocess.Popen(["ctr", "-a", containerd.address, "events"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            kill_gcs = "for p in /proc/[0-9]*; do grep -q /bin/gcs $p/cmdline 2>/dev/null && kill -9 ${p#/proc/}; done"
            containerd.ctr("task", "exec", "--exec-id", "k", cid, "sh", "-c", kill_gcs, check=False,
                           timeout=VM_TIMEOUT)
            wait_for(lambda: task_status(containerd, cid) == "STOPPED", what=f"{cid} stopped")
            wait_for(lambda: qemu_pids(containerd) == [], what="the VM to stop without its GCS")
            time.sleep(1.0)
        finally:
            events.terminate()
            text = events.communicate(timeout=10)[0].decode()
        exits = exit_events(text, cid)
        assert exits.get(cid) == 1, text  # the init's exit, once (the exec's, if it got one, once as well)
        assert all(n == 1 for n in exits.values()), text
        containerd.ctr("task", "delete", cid, timeout=VM_TIMEOUT)
        containerd.ctr("container", "delete", cid)
    finally:
        cleanup(containerd, cid)


def test_kill_9_of_the_shim_takes_its_vm_and_delete_frees_everything(containerd: Containerd, busybox_ref: str,
                                                                     vm_config: Path, new_id) -> None:
    cid = new_id("shim")
    try:
        _run_detached(containerd, vm_config, busybox_ref, cid)
        bundle = containerd.state / "io.containerd.runtime.v2.task" / "default" / cid
        shim = int((bundle / "shim.pid").read_text())
        os.kill(shim, signal.SIGKILL)
        wait_for(lambda: task_status(containerd, cid) == "", what="containerd to drop the task")
        wait_for(lambda: qemu_pids(containerd) == [], what="the dead shim's QEMU to go")
        containerd.ctr("container", "delete", cid)
        for fifo_dir in containerd.fifo_dir.iterdir():  # ctr run -d leaves its FIFOs to `ctr task delete`
            if any(p.name.startswith(cid) for p in fifo_dir.iterdir()):
                for p in fifo_dir.iterdir():
                    p.unlink()
                fifo_dir.rmdir()
        assert containerd.leftovers() == []
    finally:
        cleanup(containerd, cid)


# -- bad input -------------------------------------------------------------------------------------------------

def test_missing_boot_files_fail_create_clearly_and_leave_nothing(containerd: Containerd, busybox_ref: str,
                                                                  tmp_path: Path, new_id) -> None:
    config = write_config(tmp_path / "missing.toml", BootFilesRootPath=str(tmp_path / "no-boot-files"))
    cid = new_id("noboot")
    out = run_vm(containerd, config, busybox_ref, cid, "true")
    assert out.returncode != 0
    assert b"no-boot-files" in out.stderr and b"no such directory" in out.stderr, out.stderr
    containerd.ctr("container", "delete", cid, check=False)
    assert containerd.leftovers() == []


@pytest.mark.parametrize(("annotation", "value", "message"), [
    ("io.microsoft.virtualmachine.computetopology.memory.sizeinmb", "lots", b"not a number"),
    ("io.microsoft.virtualmachine.computetopology.processor.count", "0", b"must be positive"),
    ("io.microsoft.virtualmachine.lcow.preferredrootfstype", "floppy", b"not initrd or vhd"),
])
def test_a_bad_vm_annotation_is_an_invalid_argument_naming_it(containerd: Containerd, busybox_ref: str,
                                                              vm_config: Path, new_id, annotation: str, value: str,
                                                              message: bytes) -> None:
    cid = new_id("badann")
    out = run_vm(containerd, vm_config, busybox_ref, cid, "true", extra=("--annotation", f"{annotation}={value}"))
    assert out.returncode != 0
    assert annotation.encode() in out.stderr and message in out.stderr, out.stderr
    assert b"invalid argument" in out.stderr, out.stderr
    containerd.ctr("container", "delete", cid, check=False)
    assert qemu_pids(containerd) == []


def test_a_bad_option_value_in_the_runtime_config_is_an_invalid_argument(containerd: Containerd, busybox_ref: str,
                                                                         tmp_path: Path, new_id) -> None:
    cid = new_id("badopt")
    config = write_config(tmp_path / "bad.toml", VmMemorySizeInMb="a lot")
    out = run_vm(containerd, config, busybox_ref, cid, "true")
    assert out.returncode != 0
    assert b"VmMemorySizeInMb" in out.stderr and b"expected a number" in out.stderr, out.stderr
    containerd.ctr("container", "delete", cid, check=False)
    bad_toml = tmp_path / "broken.toml"
    bad_toml.write_text("SandboxIsolation = \n")
    out = run_vm(containerd, bad_toml, busybox_ref, cid, "true")
    assert out.returncode != 0 and b"invalid TOML" in out.stderr, out.stderr
    containerd.ctr("container", "delete", cid, check=False)
    assert containerd.leftovers() == []
