"""The test harness itself, checked against Debian's runc shim (runtime io.containerd.runc.v2).

If these fail, every other integration test is suspect: the image, the private containerd or its cleanup.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hcsshim.testing.containerd import RUNC_SHIM_ROOT, SHIM_SOCKET_DIR, Containerd, CtrError
from hcsshim.testing.images import build_busybox_image, busybox_rootfs, image_digest

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

RUNC = "io.containerd.runc.v2"
FIFO_ROOT = Path("/run/containerd/fifo")  # ctr's default --fifo-dir, shared by every instance


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_ctr_run_rm_of_the_imported_image_prints_hello_world(
        containerd: Containerd, busybox_ref: str, new_id: Callable[[str], str]) -> None:
    r = containerd.ctr("run", "--runtime", RUNC, "--rm", busybox_ref, new_id("hello"), "echo", "Hello World!")
    assert r.stdout == b"Hello World!\n"


def test_the_image_has_the_applets_and_files_tests_rely_on(
        containerd: Containerd, busybox_ref: str, new_id: Callable[[str], str]) -> None:
    script = ("for a in sh echo cat true false sleep ls env md5sum sha256sum head dd ps id hostname stty wc "
              "tr kill; do command -v $a >/dev/null || echo missing $a; done; "
              "id -un; stat -c %a /tmp; echo $PATH; test -d /proc -a -d /sys -a -d /dev && echo dirs")
    r = containerd.ctr("run", "--runtime", RUNC, "--rm", busybox_ref, new_id("applets"), "sh", "-c", script)
    assert r.stdout.decode().splitlines() == [
        "root", "1777", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "dirs"]


def test_the_image_digest_is_identical_when_built_twice(tmp_path: Path) -> None:
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    assert build_busybox_image(first) == build_busybox_image(second) == "docker.io/hcsshim/busybox:latest"
    assert image_digest(first) == image_digest(second)
    assert first.read_bytes() == second.read_bytes()


def test_the_imported_image_has_the_digest_of_the_built_tar(
        containerd: Containerd, busybox_image_tar: Path, busybox_ref: str) -> None:
    listing = containerd.ctr("images", "ls").stdout.decode().splitlines()
    row = next(line.split() for line in listing if line.startswith(busybox_ref + " "))
    assert row[2] == image_digest(busybox_image_tar)


def test_leftovers_is_empty_after_ctr_run_rm(
        containerd: Containerd, busybox_ref: str, new_id: Callable[[str], str]) -> None:
    containerd.ctr("run", "--runtime", RUNC, "--rm", busybox_ref, new_id("clean"), "true")
    assert containerd.leftovers() == []


def test_leftovers_lists_a_detached_task_until_it_is_removed(
        containerd: Containerd, busybox_ref: str, new_id: Callable[[str], str]) -> None:
    cid = new_id("detached")
    containerd.ctr("run", "--runtime", RUNC, "-d", busybox_ref, cid, "sleep", "600")
    found = containerd.leftovers(settle=0)
    assert any(line.startswith("process ") and f"-id {cid}" in line for line in found)
    assert any(line.startswith("ctr fifo dir ") and f"{cid}-stdout" in line for line in found)
    assert any(line.startswith(f"runc container {cid} ") for line in found)
    assert any(line.startswith("mount ") and line.endswith(f"/{cid}/rootfs") for line in found)
    containerd.ctr("task", "kill", "-s", "KILL", cid)
    containerd.ctr("task", "rm", "-f", cid)
    containerd.ctr("containers", "rm", cid)
    assert containerd.leftovers() == []


def test_ctr_run_with_a_tty_gets_a_terminal(
        containerd: Containerd, busybox_ref: str, new_id: Callable[[str], str]) -> None:
    r = containerd.ctr("run", "--runtime", RUNC, "-t", "--rm", busybox_ref, new_id("tty"),
                       "sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty", tty=True)
    assert r.returncode == 0
    assert r.stdout.rstrip() == b"on-a-tty"


def test_ctr_run_of_a_busybox_rootfs_directory_works(
        containerd: Containerd, tmp_path: Path, new_id: Callable[[str], str]) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    r = containerd.ctr("run", "--runtime", RUNC, "--rm", "--rootfs", str(rootfs), new_id("rootfs"),
                       "/bin/cat", "/etc/passwd")  # ctr sets no PATH without an image config
    assert r.stdout.startswith(b"root:x:0:0:")


def test_a_failing_ctr_command_raises_ctr_error_with_the_log_tail(containerd: Containerd) -> None:
    with pytest.raises(CtrError) as info:
        containerd.ctr("run", "--runtime", RUNC, "--rm", "docker.io/library/no-such:image", "x", "true")
    assert info.value.returncode == 1
    assert b"not found" in info.value.stderr
    assert "containerd successfully booted" in info.value.log_tail
    assert not isinstance(info.value, AssertionError)


def test_ctr_with_check_false_returns_the_failure(containerd: Containerd) -> None:
    r = containerd.ctr("task", "rm", "no-such-task", check=False)
    assert r.returncode != 0


def test_stop_of_an_instance_with_a_detached_running_task_leaves_nothing_behind(
        tmp_path: Path, busybox_image_tar: Path, busybox_ref: str, new_id: Callable[[str], str]) -> None:
    cd = Containerd(tmp_path / "containerd")
    try:
        cd.start()
        cd.import_image(busybox_image_tar, busybox_ref)
        cid = new_id("orphan")
        cd.ctr("run", "--runtime", RUNC, "-d", busybox_ref, cid, "sleep", "600")
        task_pid = int(cd.ctr("task", "ls").stdout.decode().splitlines()[1].split()[1])
        shims = [int(line.split()[1].rstrip(":")) for line in cd.leftovers(settle=0)
                 if line.startswith("process ")]
        socket = next(SHIM_SOCKET_DIR / line.rsplit("/", 1)[1] for line in cd.leftovers(settle=0)
                      if line.startswith("shim socket "))
        containerd_pid = cd.pid
        assert containerd_pid is not None and shims and _alive(task_pid) and socket.exists()
    finally:
        cd.stop()
    assert not _alive(containerd_pid)
    assert not _alive(task_pid)
    assert not any(_alive(pid) for pid in shims)
    assert not socket.exists()
    assert not cd.workdir.exists()
    with open("/proc/self/mountinfo") as f:
        assert str(cd.workdir) not in f.read()
    listing = subprocess.run(["runc", "--root", str(RUNC_SHIM_ROOT / "default"), "list", "--format", "json"],
                             capture_output=True, check=True).stdout
    assert cid not in [c["id"] for c in json.loads(listing or b"null") or []]
    assert cd.leftovers(settle=0) == []
    assert not any(name.startswith(cid) for d in FIFO_ROOT.glob("*") for name in os.listdir(d))


def test_stop_is_idempotent_and_works_before_start(tmp_path: Path) -> None:
    never_started = Containerd(tmp_path / "never")
    never_started.stop()
    never_started.stop()
    with Containerd(tmp_path / "started") as cd:
        assert cd.running
    cd.stop()
    assert not cd.running
    assert not (tmp_path / "started").exists()


def test_sockets_move_to_a_short_directory_when_the_work_directory_is_deep(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with Containerd(deep) as cd:
        assert len(cd.ttrpc_address) <= 100
        assert cd.ctr("version").returncode == 0
        sockdir = cd.sockdir
    assert not os.path.exists(sockdir)
    assert not deep.exists()
