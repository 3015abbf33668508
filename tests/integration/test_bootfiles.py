"""The default boot files in a real QEMU under TCG: init's mounts, modules, ports, child and power-off.

The boot files are the installed default ones (hcsshim.boot.installed, rebuilt when the guest's sources change);
on a clean machine the first build downloads ~85 MB of Debian packages into /var/cache/hcsshim-test and takes about
a minute.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from hcsshim.testing.bootfiles import default_bootfiles
from hcsshim.testing.bootvm import boot

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                 reason="qemu-system-x86 is installed by make setup")]


@pytest.fixture(scope="module")
def out() -> Path:
    return default_bootfiles()


FACTS = ";".join([
    "uname -r >&2",
    "echo controllers=$(cat /sys/fs/cgroup/cgroup.controllers) >&2",
    "i=0; while [ ! -e /run/hcsshim/modules.ready ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done",
    "echo modules=$(wc -l < /proc/modules) >&2",
    "echo ports=$(ls /dev/virtio-ports) >&2",
    "echo sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$ term=$TERM. >&2",
    "echo nofile=$(ulimit -Sn)/$(ulimit -Hn) >&2",
    "echo lo=$(cat /sys/class/net/lo/operstate) >&2",
    "echo mounts=$(cut -d' ' -f2 /proc/mounts | tr '\\n' ,) >&2",
    "python3 -c 'import asyncio, json, hcsshim.guest.main; print(json.dumps([asyncio.__name__]))'",
    "runc --version >&2",
    "mkfs.ext4 -V 2>&1 | head -1 >&2",
])


@pytest.mark.timeout(300)
def test_the_child_runs_with_stdio_on_named_ports_and_the_vm_stops_when_it_exits(out: Path) -> None:
    run = boot(out / "vmlinux", out / "initrd.img", ["-e", "uvm.log", "-o", "uvm.out", "/bin/sh", "-c", FACTS],
               ports=("uvm.log", "uvm.out"), timeout=240)
    log = run.ports["uvm.log"].decode(errors="replace")
    context = f"\n--- uvm.log:\n{log}\n--- console:\n{run.console_text()[-3000:]}"
    assert run.returncode == 0, context
    release = (out / "info/kernel.version").read_text().strip()
    assert log.splitlines()[0] == release, context
    assert "memory" in re.search(r"controllers=(.*)", log).group(1), context  # cgroup v2, controllers enabled
    assert int(re.search(r"modules=(\d+)", log).group(1)) >= 40, context
    assert set(re.search(r"ports=(.*)", log).group(1).split()) == {"uvm.log", "uvm.out"}, context
    sid, pid = re.search(r"sid=(\d+) pid=(\d+)", log).groups()
    assert sid == pid, "the child must lead a new session" + context
    assert "term=." in log, "the child's environment holds only PATH" + context
    assert "nofile=1024/1048576" in log, context
    assert re.search(r"lo=(unknown|up)", log), context
    mounts = re.search(r"mounts=(.*)", log).group(1).split(",")
    assert {"/dev", "/proc", "/sys", "/run", "/tmp", "/dev/pts", "/dev/shm", "/sys/fs/cgroup"} <= set(mounts), context
    assert "runc version 1.1" in log and "mke2fs 1.47" in log, context
    assert run.ports["uvm.out"] == b'["asyncio"]\n', context
    console = run.console_text()
    assert "hcsshim-init: child started" in console
    assert "hcsshim-init: child pid=" in console and "exited with status 0" in console


@pytest.mark.timeout(300)
def test_a_failing_child_powers_the_vm_off_after_its_orphans_are_reaped(out: Path) -> None:
    # The orphan (sleep) is re-parented to PID 1 and exits while the child still runs; PID 1 must reap it.
    script = ("(sleep 0.3 &); sleep 4; echo zombies=$(grep -l ') Z ' /proc/[0-9]*/stat 2>/dev/null | wc -l) >&2;"
              " exit 3")
    run = boot(out / "kernel", out / "initrd.cpio", ["-e", "uvm.log", "/bin/sh", "-c", script],
               cmdline="console=ttyS0 panic=-1 quiet", timeout=240)
    log = run.ports["uvm.log"].decode(errors="replace")
    assert "zombies=0" in log, f"{log}\n{run.console_text()[-2000:]}"
    assert run.returncode == 0
    assert "exited with status 3; powering off" in run.console_text()


# A container from a one-binary rootfs; the kernel command line cannot carry double quotes, so sed
# re-uses the ones already in runc's default config.json.
RUNC = ";".join([
    "mkdir -p /tmp/b/rootfs/bin && cp /bin/busybox /tmp/b/rootfs/bin/ && ln -s busybox /tmp/b/rootfs/bin/sh",
    "cd /tmp/b && runc spec",
    "sed -i -e 's/\\(terminal.\\): true/\\1: false/'"
    " -e 's/^\\([[:space:]]*\\)\\(.\\)sh\\(.\\)$/\\1\\2sh\\3, \\2-c\\3, \\2echo hello from runc;"
    " cat \\/proc\\/self\\/cgroup\\3/' config.json",
    "runc --root /run/runc run --no-pivot t1",
    "echo runc-exit=$?",
])


@pytest.mark.timeout(300)
def test_runc_runs_a_container_in_the_guest_under_cgroup_v2(out: Path) -> None:
    run = boot(out / "vmlinux", out / "initrd.cpio", ["-e", "uvm.log", "-o", "uvm.log", "/bin/sh", "-c", RUNC],
               cmdline="console=ttyS0 panic=-1 quiet", timeout=240)
    log = run.ports["uvm.log"].decode(errors="replace")
    assert "hello from runc\n0::/\nrunc-exit=0" in log, f"{log}\n{run.console_text()[-2000:]}"


@pytest.mark.timeout(200)
def test_a_corrupt_initrd_stops_the_vm_with_a_kernel_panic_in_bounded_time(out: Path, tmp_path: Path) -> None:
    bad = tmp_path / "initrd.img"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(4096))
    run = boot(out / "vmlinux", bad, ["/bin/true"], cmdline="console=ttyS0 panic=-1", timeout=150)
    console = run.console_text()
    assert "Kernel panic" in console and "Unable to mount root fs" in console, console[-2000:]
    assert "hcsshim-init" not in console


def test_a_missing_kernel_fails_at_once_naming_the_file(out: Path, tmp_path: Path) -> None:
    run = boot(tmp_path / "no-vmlinux", out / "initrd.img", ["/bin/true"], timeout=30)
    assert run.returncode != 0
    assert "no-vmlinux" in run.console_text() and run.elapsed < 20


def test_the_default_base_has_only_the_stdlib_the_guest_imports_as_bytecode(out: Path) -> None:
    from hcsshim.boot.archive import FILE, SYMLINK, read_archive

    root = read_archive((out / "initrd.cpio").read_bytes())
    lib = f"usr/lib/python{json.loads((out / 'info/build.json').read_text())['python']}"
    stdlib = {p[len(lib) + 1:] for p in root.entries if p.startswith(lib + "/") and root.entries[p].kind == FILE}
    # what the agent imports, and the codecs the interpreter starts with, as sourceless .pyc files
    for need in ("asyncio/base_events.pyc", "json/decoder.pyc", "logging/__init__.pyc", "encodings/utf_8.pyc",
                 "encodings/__init__.pyc", "os.pyc", "ctypes/__init__.pyc", "shlex.pyc"):
        assert need in stdlib, need
    assert any(p.startswith("lib-dynload/_asyncio.") for p in stdlib)
    assert not [p for p in stdlib if p.endswith(".py")], "stdlib sources shipped"
    for never in ("email/", "tkinter/", "unittest/", "multiprocessing/", "ssl.pyc", "encodings/cp1252.pyc",
                  "lib-dynload/_codecs_jp"):
        assert not [p for p in stdlib if p.startswith(never)], never
    assert sum(len(root.entries[f"{lib}/{p}"].data) for p in stdlib) < 8 << 20
    # one busybox, the one init runs on; /bin/gcs is the Python script itself (no shell, no runpy)
    assert root.entries["bin/busybox"].kind == SYMLINK
    assert root.entries["bin/gcs"].data.startswith(b"#!/usr/bin/python3 -IS\n")
