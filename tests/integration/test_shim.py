"""containerd-shim-runhcs-v1 driven by the real containerd 1.6 and ctr, with runc creating the containers."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

from hcsshim.testing.containerd import Containerd
from hcsshim.testing.sockets import unix_exchange

RUNTIME = "io.containerd.runhcs.v1"


def run(cd: Containerd, ref: str, cid: str, *cmd: str, input: bytes | None = None, timeout: float = 60,
        extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    return cd.ctr("run", "--runtime", RUNTIME, "--rm", *extra, ref, cid, *cmd, input=input, timeout=timeout,
                  check=False)


def ctr_popen(cd: Containerd, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ctr", "-a", cd.address, "-n", "default", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def task_status(cd: Containerd, cid: str) -> str:
    out = cd.ctr("task", "ls", check=False).stdout.decode()
    for line in out.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    return ""


def shim_pids(cd: Containerd) -> list[int]:
    """Our shim daemons serving this containerd, by command line: a cold daemon keeps the `start` one, a daemon
    from the fork server has the title `containerd-shim-runhcs-v1 -namespace NS -id ID -address A`."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if len(argv) == 1:
            argv = argv[0].split(b" ")
        if (any(a.endswith(b"containerd-shim-runhcs-v1") for a in argv) and cd.address.encode() in argv
                and b"forkserver" not in argv):
            pids.append(int(entry))
    return pids


def task_topics(cd: Containerd, cid: str, action) -> tuple[list[str], str]:
    """Runs action() while `ctr events` listens; returns the /tasks/ topics seen for cid, and the raw output."""
    events = ctr_popen(cd, "events")
    try:
        time.sleep(0.3)
        action()
        time.sleep(0.5)
    finally:
        events.terminate()
        out, _ = events.communicate(timeout=10)
    text = out.decode()
    topics = [word for line in text.splitlines() if cid in line for word in line.split() if word.startswith("/tasks/")]
    return topics, text


# -- the trial -------------------------------------------------------------------------------------------

def test_the_trial_prints_hello_world(containerd: Containerd, busybox_ref: str, new_id) -> None:
    out = run(containerd, busybox_ref, new_id("hello"), "echo", "Hello World!")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"Hello World!\n"


def test_exit_code_of_the_container_is_ctr_exit_code(containerd: Containerd, busybox_ref: str, new_id) -> None:
    out = run(containerd, busybox_ref, new_id("exit"), "sh", "-c", "echo out; echo err >&2; exit 7")
    assert out.returncode == 7
    assert out.stdout == b"out\n"
    assert out.stderr == b"err\n"


def test_sigkill_of_a_long_task_gives_137(containerd: Containerd, busybox_ref: str, new_id) -> None:
    cid = new_id("kill")
    proc = ctr_popen(containerd, "run", "--runtime", RUNTIME, "--rm", busybox_ref, cid, "sleep", "100")
    try:
        wait_for(lambda: task_status(containerd, cid) == "RUNNING", what=f"{cid} running")
        containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
        assert proc.wait(timeout=30) == 137
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_reaches_a_task_that_traps_it(containerd: Containerd, busybox_ref: str, new_id) -> None:
    cid = new_id("term")
    script = 'trap "echo got-TERM; exit 3" TERM; echo ready; while true; do sleep 0.1; done'
    proc = ctr_popen(containerd, "run", "--runtime", RUNTIME, "--rm", busybox_ref, cid, "sh", "-c", script)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        containerd.ctr("task", "kill", cid)  # SIGTERM by default
        assert proc.wait(timeout=30) == 3
        assert proc.stdout.read() == b"got-TERM\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stdin_of_10_mib_comes_back_identical_through_cat(containerd: Containerd, busybox_ref: str,
                                                          new_id) -> None:
    data = os.urandom(10 << 20)
    out = run(containerd, busybox_ref, new_id("cat"), "cat", input=data, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout) == len(data)
    assert hashlib.sha256(out.stdout).hexdigest() == hashlib.sha256(data).hexdigest()


def test_terminal_mode_gives_the_process_a_tty(containerd: Containerd, busybox_ref: str, new_id) -> None:
    out = containerd.ctr("run", "--runtime", RUNTIME, "--rm", "-t", busybox_ref, new_id("tty"), "sh", "-c",
                         "tty; sleep 1; stty size; exit 4", tty=True, check=False, timeout=60)
    text = out.stdout.decode(errors="replace")
    assert "/dev/pts/" in text, text
    assert "24 80" in text, text
    assert out.returncode == 4


# -- detached tasks, exec, task commands -------------------------------------------------------------------

def test_detached_task_answers_ls_ps_pause_resume_metrics_kill_and_delete(containerd: Containerd,
                                                                          busybox_ref: str, new_id) -> None:
    cid = new_id("det")
    containerd.ctr("run", "--runtime", RUNTIME, "-d", busybox_ref, cid, "sleep", "1000")
    try:
        assert task_status(containerd, cid) == "RUNNING"
        ps = containerd.ctr("task", "ps", cid).stdout.decode().splitlines()
        assert len(ps) == 2 and ps[1].split()[0].isdigit(), ps
        containerd.ctr("task", "pause", cid)
        assert task_status(containerd, cid) == "PAUSED"
        containerd.ctr("task", "resume", cid)
        assert task_status(containerd, cid) == "RUNNING"
        metrics = containerd.ctr("task", "metrics", cid).stdout.decode()
        assert "memory.usage_in_bytes" in metrics and "pids.current" in metrics, metrics
        metrics_json = json.loads(containerd.ctr("task", "metrics", "--format", "json", cid).stdout)
        assert metrics_json["pids"]["current"] >= 1
        containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
        wait_for(lambda: task_status(containerd, cid) == "STOPPED", what=f"{cid} stopped")
        containerd.ctr("task", "delete", cid)
        assert task_status(containerd, cid) == ""
    finally:
        containerd.ctr("task", "delete", "-f", cid, check=False)
        containerd.ctr("container", "delete", cid, check=False)


def test_exec_in_a_running_task_returns_its_output_and_exit_code(containerd: Containerd, busybox_ref: str,
                                                                 new_id) -> None:
    cid = new_id("exec")
    containerd.ctr("run", "--runtime", RUNTIME, "-d", busybox_ref, cid, "sleep", "1000")
    try:
        out = containerd.ctr("task", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo from-exec; exit 5",
                             check=False)
        assert out.returncode == 5, out.stderr
        assert out.stdout == b"from-exec\n"
        ps = containerd.ctr("task", "ps", cid).stdout.decode().splitlines()
        assert len(ps) == 2  # the exec is gone, only init is left
        again = containerd.ctr("task", "exec", "--exec-id", "e1", cid, "true", check=False)
        assert again.returncode == 0, again.stderr  # the exec id is free again after its delete
    finally:
        containerd.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
        wait_for(lambda: task_status(containerd, cid) in ("STOPPED", ""), what=f"{cid} stopped")
        containerd.ctr("task", "delete", cid, check=False)
        containerd.ctr("container", "delete", cid, check=False)


def test_events_are_published_once_each_in_order(containerd: Containerd, busybox_ref: str, new_id) -> None:
    cid = new_id("ev")

    def trial() -> None:
        out = run(containerd, busybox_ref, cid, "true")
        assert out.returncode == 0, out.stderr

    topics, text = task_topics(containerd, cid, trial)
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"], text


def test_pod_containers_share_their_sandboxs_shim_until_the_last_task_goes(containerd: Containerd,
                                                                            busybox_ref: str, new_id) -> None:
    pod, member = new_id("pod"), new_id("member")

    def annotations(ctype: str) -> list[str]:
        return ["--annotation", f"io.kubernetes.cri.container-type={ctype}",
                "--annotation", f"io.kubernetes.cri.sandbox-id={pod}"]

    bundles = Path(containerd.state) / "io.containerd.runtime.v2.task" / "default"
    containerd.ctr("run", "--runtime", RUNTIME, "-d", *annotations("sandbox"), busybox_ref, pod, "sleep", "1000")
    try:
        containerd.ctr("run", "--runtime", RUNTIME, "-d", *annotations("container"), busybox_ref, member,
                       "sleep", "1000")
        assert (bundles / member / "address").read_text() == (bundles / pod / "address").read_text()
        assert len(shim_pids(containerd)) == 1
        assert task_status(containerd, pod) == task_status(containerd, member) == "RUNNING"
        out = containerd.ctr("task", "exec", "--exec-id", "e1", member, "echo", "member").stdout
        assert out == b"member\n"
        containerd.ctr("task", "kill", "-s", "SIGKILL", member)
        wait_for(lambda: task_status(containerd, member) == "STOPPED", what=f"{member} stopped")
        containerd.ctr("task", "delete", member)
        containerd.ctr("container", "delete", member)
        # the sandbox's task is still served by the same shim
        assert task_status(containerd, pod) == "RUNNING" and len(shim_pids(containerd)) == 1
        containerd.ctr("task", "kill", "-s", "SIGKILL", pod)
        wait_for(lambda: task_status(containerd, pod) == "STOPPED", what=f"{pod} stopped")
        containerd.ctr("task", "delete", pod)
        wait_for(lambda: shim_pids(containerd) == [], what="the pod's shim to exit after its last task")
    finally:
        for cid in (member, pod):
            containerd.ctr("task", "delete", "-f", cid, check=False)
            containerd.ctr("container", "delete", cid, check=False)


# -- scale, crashes --------------------------------------------------------------------------------------

def test_twenty_concurrent_containers_all_succeed_and_leave_nothing(containerd: Containerd, busybox_ref: str,
                                                                    new_id) -> None:
    ids = [new_id(f"par{i}") for i in range(20)]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda cid: run(containerd, busybox_ref, cid, "sh", "-c", f"echo {cid}",
                                                timeout=120), ids))
    for cid, out in zip(ids, results, strict=True):
        assert out.returncode == 0, (cid, out.stderr)
        assert out.stdout == f"{cid}\n".encode()
    assert containerd.leftovers() == []


def test_kill_9_of_a_shim_is_cleaned_up_by_delete(containerd: Containerd, busybox_ref: str, new_id) -> None:
    cid = new_id("crash")
    containerd.ctr("run", "--runtime", RUNTIME, "-d", busybox_ref, cid, "sleep", "1000")
    pids = shim_pids(containerd)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    # containerd notices the disconnect, runs `delete`, and reports the task as gone.
    wait_for(lambda: task_status(containerd, cid) == "", what="containerd to drop the task")
    containerd.ctr("container", "delete", cid)
    # `ctr run -d` leaves its FIFOs for `ctr task delete`, which has nothing to delete now: the client's to remove.
    for fifo_dir in containerd.fifo_dir.iterdir():
        if any(p.name.startswith(cid) for p in fifo_dir.iterdir()):
            shutil.rmtree(fifo_dir)
    assert containerd.leftovers() == []


def test_tasks_survive_a_containerd_restart_and_are_served_again(containerd: Containerd, busybox_ref: str,
                                                                  new_id) -> None:
    cid = new_id("restart")
    containerd.ctr("run", "--runtime", RUNTIME, "-d", busybox_ref, cid, "sh", "-c", "sleep 1000; exit 3")
    try:
        shims = shim_pids(containerd)
        containerd.restart()
        assert shim_pids(containerd) == shims  # the shim outlived containerd
        assert task_status(containerd, cid) == "RUNNING"
        out = containerd.ctr("task", "exec", "--exec-id", "e1", cid, "echo", "after restart").stdout
        assert out == b"after restart\n"

        def kill() -> None:
            containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
            wait_for(lambda: task_status(containerd, cid) == "STOPPED", what=f"{cid} stopped")

        topics, text = task_topics(containerd, cid, kill)  # the exit reaches the new containerd
        assert "/tasks/exit" in topics, text
        containerd.ctr("task", "delete", cid)
        wait_for(lambda: shim_pids(containerd) == [], what="the shim to exit")
        # new tasks start normally (the fork server went with the old containerd; a cold start makes a new one)
        assert run(containerd, busybox_ref, new_id("after"), "echo", "new").stdout == b"new\n"
    finally:
        containerd.ctr("task", "delete", "-f", cid, check=False)
        containerd.ctr("container", "delete", cid, check=False)


# -- bad input -------------------------------------------------------------------------------------------

def test_a_missing_rootfs_fails_create_clearly_and_leaves_nothing(containerd: Containerd, tmp_path: Path,
                                                                  new_id) -> None:
    cid = new_id("norootfs")
    out = containerd.ctr("run", "--runtime", RUNTIME, "--rm", "--rootfs", str(tmp_path / "missing"), cid,
                         "true", check=False)
    assert out.returncode != 0
    assert b"rootfs" in out.stderr and b"no such directory" in out.stderr, out.stderr
    containerd.ctr("container", "delete", cid, check=False)


def test_an_invalid_config_json_fails_create_clearly_and_leaves_nothing(containerd: Containerd, busybox_ref: str,
                                                                        tmp_path: Path, new_id) -> None:
    cid = new_id("badspec")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"ociVersion": "1.0.2", "process": {"args": [], "cwd": "/"},
                                "root": {"path": "rootfs"}}))
    out = containerd.ctr("run", "--runtime", RUNTIME, "--rm", "--config", str(spec), cid, check=False)
    assert out.returncode != 0
    assert b"process.args must be a non-empty list" in out.stderr, out.stderr
    containerd.ctr("container", "delete", cid, check=False)


def _shim_socket(cd: Containerd, cid: str) -> str:
    address = (cd.state / "io.containerd.runtime.v2.task" / "default" / cid / "address").read_text()
    return address.removeprefix("unix://")


def test_malformed_ttrpc_frames_do_not_kill_the_shim(containerd: Containerd, busybox_ref: str, new_id) -> None:
    cid = new_id("frames")
    containerd.ctr("run", "--runtime", RUNTIME, "-d", busybox_ref, cid, "sleep", "1000")
    try:
        path = _shim_socket(containerd, cid)
        unix_exchange(path, b"\x00\x00")                                          # short header, then EOF
        unix_exchange(path, struct.pack(">IIBB", 64 << 20, 1, 1, 0) + b"x" * 100)  # declared length far over 4 MiB
        unix_exchange(path, struct.pack(">IIBB", 5, 1, 1, 0) + b"\xff\xff\xff\xff\xff")  # garbage protobuf
        reply = unix_exchange(path, struct.pack(">IIBB", 3, 1, 1, 0) + b"\x0a\x01")  # truncated Request
        assert reply == b"" or len(reply) >= 10
        assert task_status(containerd, cid) == "RUNNING"   # the shim still answers State
        out = containerd.ctr("task", "exec", "--exec-id", "after", cid, "echo", "alive", check=False)
        assert out.stdout == b"alive\n", out.stderr
    finally:
        containerd.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
        wait_for(lambda: task_status(containerd, cid) in ("STOPPED", ""), what=f"{cid} stopped")
        containerd.ctr("task", "delete", cid, check=False)
        containerd.ctr("container", "delete", cid, check=False)


def test_an_oom_kill_is_published_as_tasks_oom(containerd: Containerd, busybox_ref: str, new_id) -> None:
    cid = new_id("oom")

    def hog() -> None:
        # 16 MiB limit, and a shell that keeps growing a variable until the kernel kills it.
        out = run(containerd, busybox_ref, cid, "sh", "-c", 'x=0123456789abcdef; while true; do x="$x$x"; done',
                  extra=("--memory-limit", str(16 << 20)), timeout=120)
        assert out.returncode == 137, out.stderr

    topics, text = task_topics(containerd, cid, hog)
    assert "/tasks/oom" in topics, text
    assert topics.index("/tasks/oom") < topics.index("/tasks/exit")
