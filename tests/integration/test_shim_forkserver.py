"""The shim's fork server (hcsshim.shim.forkserver) with the real containerd 1.6, ctr and runc.

The first task of a containerd instance gets a cold daemon, which starts the fork server; later tasks get
daemons from the fork server's spare. Whatever happens to the fork server, `start` must still work.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

from hcsshim.shim import forkserver
from hcsshim.testing.containerd import Containerd

RUNTIME = "io.containerd.runhcs.v1"


def run_rm(cd: Containerd, ref: str, cid: str, *cmd: str) -> bytes:
    out = cd.ctr("run", "--runtime", RUNTIME, "--rm", ref, cid, *cmd, timeout=60)
    return out.stdout


def fs_socket(cd: Containerd) -> Path:
    return Path(cd.state) / "runhcs" / forkserver.SOCKET_NAME


def server_pid(cd: Containerd) -> int:
    """The fork server itself (not its spare): the one whose parent is not another fork server process."""
    pids = cd.forkserver_pids()
    servers = [p for p in pids if ppid(p) not in pids]
    assert len(servers) == 1, f"fork server processes {pids}, servers {servers}"
    return servers[0]


def ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


def bundle_of(cd: Containerd, cid: str) -> Path:
    return Path(cd.state) / "io.containerd.runtime.v2.task" / "default" / cid


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def detached_daemon(cd: Containerd, ref: str, cid: str) -> int:
    """Runs `sleep 60` detached; the pid of the shim daemon serving it."""
    cd.ctr("run", "-d", "--runtime", RUNTIME, ref, cid, "sleep", "60", timeout=60)
    return int((bundle_of(cd, cid) / "shim.pid").read_text())


def warm_up(cd: Containerd, ref: str, cid: str) -> int:
    """One task through a cold daemon, which starts the fork server; the server's pid once its spare is up."""
    run_rm(cd, ref, cid, "true")
    wait_for(lambda: len(cd.forkserver_pids()) == 2, what="the fork server and its spare")
    return server_pid(cd)


def assert_next_daemon_comes_from(cd: Containerd, ref: str, cid: str, server: int) -> None:
    daemon = detached_daemon(cd, ref, cid)
    try:
        assert ppid(daemon) == server
    finally:
        remove(cd, cid)


def remove(cd: Containerd, cid: str) -> None:
    cd.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    wait_for(lambda: b"STOPPED" in cd.ctr("task", "ls", check=False).stdout or
             cid.encode() not in cd.ctr("task", "ls", check=False).stdout, what=f"{cid} stopped")
    cd.ctr("task", "delete", cid, check=False)
    cd.ctr("container", "delete", cid, check=False)


def test_the_first_task_starts_the_fork_server_and_later_tasks_come_from_it(
        containerd: Containerd, busybox_ref: str, new_id) -> None:
    assert containerd.forkserver_pids() == []
    assert run_rm(containerd, busybox_ref, new_id("fs-cold"), "echo", "cold") == b"cold\n"
    wait_for(lambda: fs_socket(containerd).is_socket(), what="the fork server socket")
    server = server_pid(containerd)
    assert "forkserver" in cmdline(server) and containerd.address in cmdline(server)
    cid = new_id("fs-warm")
    daemon = detached_daemon(containerd, busybox_ref, cid)
    try:
        assert ppid(daemon) == server
        title = cmdline(daemon)
        assert f"-id {cid}" in title and f"-address {containerd.address}" in title and "start" not in title.split()
        out = containerd.ctr("task", "exec", "--exec-id", "e1", cid, "echo", "warm").stdout
        assert out == b"warm\n"
    finally:
        remove(containerd, cid)
    wait_for(lambda: gone(daemon), what="the warm daemon to exit")
    assert run_rm(containerd, busybox_ref, new_id("fs-again"), "echo", "again") == b"again\n"
    assert server_pid(containerd) == server


def test_the_fork_server_exits_and_removes_its_socket_when_containerd_stops(
        tmp_path: Path, busybox_image_tar: Path, busybox_ref: str, new_id) -> None:
    cd = Containerd(tmp_path / "containerd", path_prepend=[str(Path(sys.executable).parent)])
    try:
        cd.start()
        cd.import_image(busybox_image_tar, busybox_ref)
        run_rm(cd, busybox_ref, new_id("fs-stop"), "true")
        wait_for(lambda: len(cd.forkserver_pids()) == 2, what="the fork server and its spare")
        pids = cd.forkserver_pids()
        sock = fs_socket(cd)
        assert sock.is_socket()
        cd._stop_daemon()  # containerd alone, not the harness's cleanup
        wait_for(lambda: all(gone(p) for p in pids), timeout=5, what="the fork server to exit")
        assert not sock.exists()
    finally:
        cd.stop()


def test_start_falls_back_to_a_cold_daemon_when_the_fork_server_was_killed(
        containerd: Containerd, busybox_ref: str, new_id) -> None:
    first = warm_up(containerd, busybox_ref, new_id("fs-a"))
    old = containerd.forkserver_pids()
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: all(gone(p) for p in old), what="the server and its spare (parent-death signal) to die")
    assert fs_socket(containerd).exists()  # stale: nobody listens
    assert run_rm(containerd, busybox_ref, new_id("fs-b"), "echo", "cold again") == b"cold again\n"
    # that cold daemon started a new server, which serves the next task
    wait_for(lambda: len(containerd.forkserver_pids()) == 2, what="a new fork server")
    server = server_pid(containerd)
    assert server not in old
    assert_next_daemon_comes_from(containerd, busybox_ref, new_id("fs-c"), server)


def test_garbage_on_the_fork_server_socket_is_refused_and_it_keeps_serving(
        containerd: Containerd, busybox_ref: str, new_id) -> None:
    server = warm_up(containerd, busybox_ref, new_id("fs-g"))
    for junk in (b"\x00\x00\x00\x05hello", b"\xff\xff\xff\xff", b"\x00\x00\x00\x02{}", b""):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(fs_socket(containerd)))
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        # an error frame or nothing, never a daemon
        assert b"pid" not in reply
    wait_for(lambda: len(containerd.forkserver_pids()) == 2, what="a fresh spare")
    assert server_pid(containerd) == server
    assert_next_daemon_comes_from(containerd, busybox_ref, new_id("fs-h"), server)


def test_a_daemon_without_the_go_ahead_exits_without_serving(
        containerd: Containerd, busybox_ref: str, new_id, tmp_path: Path) -> None:
    warm_up(containerd, busybox_ref, new_id("fs-n"))
    listener_path = tmp_path / "l.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(listener_path))
    listener.listen(1)
    bundle = bundle_of(containerd, "never")
    with listener:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(fs_socket(containerd)))
            request = {"v": forkserver.VERSION, "argv": ["-namespace", "default", "-id", "never", "start"],
                       "env": {"PATH": os.environ["PATH"]}, "bundle": str(bundle.parent), "options": b"",
                       "socket_path": str(listener_path), "socket_inode": listener_path.stat().st_ino}
            forkserver._send_frame(s, request, [listener.fileno()])
            reply, _ = forkserver._recv_frame(s)
            pid = reply["pid"]
            assert not gone(pid)
        # the connection closed without b"go": that daemon must go away without touching the listener
        wait_for(lambda: gone(pid), what="the daemon without a go-ahead to exit")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.3)
            probe.connect(str(listener_path))
        listener.settimeout(1)
        conn, _ = listener.accept()  # the probe is still queued: nobody else took anything from the listener
        conn.close()
