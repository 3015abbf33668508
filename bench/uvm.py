"""Benchmark (`make bench-uvm`): utility VM boot on QEMU against the local floor, in one run.

    .venv/bin/python bench/uvm.py [--boot-files DIR] [--runs N] [--cpus N] [--memory MB] [--record]

Ours: `UtilityVM.start()` from the call to the GCS having negotiated (QEMU start, kernel, init, modules, the
Python GCS), then, in the same VM, to the first output of `echo` in a container (busybox layer made with our
tar2ext4 and a pre-formatted scratch, hot-added over SCSI, mounted, CombinedLayers, Create, init); and QEMU's
RSS at that point.
The floor: the same kernel (out/vmlinux), QEMU machine, memory, processors and kernel command line, booting
a one-file busybox initramfs whose init prints a marker on the serial console: the time from QEMU's start to
that marker. A second anchor, "python floor": the same, booting our initrd.cpio whose init starts
`python3 -IS -c print(...)` instead of the GCS (unpacking our initramfs, our init, the first Python process
of the VM: what any Python guest agent pays before its first line). Runs alternate floor/python floor/ours;
medians are reported. The issue's bar: GCS ready <= floor + 2 s.

Without --boot-files the boot files are built first (hcsshim.boot, the default Debian base) into a
temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from hcsshim.boot.bootfiles import build
from hcsshim.bridge.resources import CombinedLayers
from hcsshim.hcs.linux import accel as accel_mod
from hcsshim.runc.reaper import PidfdWaiter
from hcsshim.testing.images import busybox_layer_tar
from hcsshim.testing.rootfs import oci_spec
from hcsshim.uvm import UtilityVM, UVMOptions
from hcsshim.uvm.options import find_boot_files, kernel_cmdline

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MARKER = b"HCSSHIM-FLOOR-INIT"


def status(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def floor_initrd(work: Path) -> Path:
    root = work / "floor-root"
    (root / "bin").mkdir(parents=True)
    for d in ("dev", "proc"):
        (root / d).mkdir()
    shutil.copy("/bin/busybox", root / "bin/busybox")
    init = root / "init"
    init.write_text("#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\n"
                    f"/bin/busybox echo {MARKER.decode()} > /dev/ttyS0\n/bin/busybox poweroff -f\n")
    init.chmod(0o755)
    out = work / "floor.img"
    names = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0"], cwd=root, input=names, capture_output=True,
                          check=True).stdout
    out.write_bytes(subprocess.run(["gzip", "-1", "-n"], input=cpio, capture_output=True, check=True).stdout)
    return out


PY_MARKER = 0xC0FFEE  # python3 -c print(0xC0FFEE): no spaces or quotes on the kernel command line


def floor_run(boot: Path, initrd: Path, args: argparse.Namespace, accel: str, *, python: bool = False) -> float:
    """Seconds from QEMU's start to the floor's marker on the console; python: our initrd.cpio, whose init
    starts the first Python process of the VM (with a virtio-serial device, as init waits for its ports)."""
    opts = UVMOptions(id="floor", boot_files_path=str(boot), memory_mb=args.memory, cpus=args.cpus)
    cmdline = kernel_cmdline(opts, find_boot_files(opts)).split(" -- ")[0]
    marker = MARKER
    if python:
        cmdline += f" -- /usr/bin/python3 -IS -c print({PY_MARKER:#x})"
        marker = str(PY_MARKER).encode()
    argv = ["qemu-system-x86_64", "-machine", f"q35,accel={accel}", "-m", str(args.memory), "-smp", str(args.cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", str(boot / "vmlinux"), "-initrd", str(boot / "initrd.cpio" if python else initrd),
            "-append", cmdline]
    if python:
        argv += ["-device", "virtio-serial-pci"]
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    elapsed = None
    for line in proc.stdout:
        if marker in line and elapsed is None:
            elapsed = time.perf_counter() - t
    proc.wait(timeout=60)
    if elapsed is None:
        raise RuntimeError("the floor VM never printed its marker")
    return elapsed


def layer_image(work: Path) -> Path:
    tar = work / "busybox.tar"
    tar.write_bytes(busybox_layer_tar())
    out = work / "busybox.vhd"
    subprocess.run([sys.executable, "-m", "hcsshim.cmd.tar2ext4", "-overlay", "-vhd", "-i", str(tar), "-o",
                    str(out)], check=True)
    return out


async def ours_run(boot: Path, layer: Path, work: Path, args: argparse.Namespace, i: int, root_fs_type: str
                   ) -> tuple[float, float, int]:
    """(seconds to GCS ready, seconds to the container's first output, QEMU VmRSS KiB).

    The container gets a scratch disk formatted on the host beforehand, as hcsshim copies a formatted
    scratch template."""
    opts = UVMOptions(id=f"bench-{os.getpid()}-{i}", boot_files_path=str(boot), memory_mb=args.memory,
                      cpus=args.cpus, run_root="/run/hcsshim/uvm-bench", root_fs_type=root_fs_type,
                      template=False)  # a cold boot: bench/template.py measures clones
    scratch = work / f"scratch-{i}.img"
    with open(scratch, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(scratch)], check=True)
    vm = await UtilityVM.create(opts)
    try:
        t = time.perf_counter()
        await vm.start()
        gcs = time.perf_counter() - t
        assert vm.gcs is not None and vm.qemu_pid is not None
        layer_mount = await vm.scsi.add(str(layer), read_only=True)
        await vm.scsi.add(str(scratch), read_only=False, guest_path="/run/gcs/c/b1")
        root = "/run/gcs/c/b1/rootfs"
        assert layer_mount.guest_path is not None
        await vm.gcs.modify(CombinedLayers(container_id="b1", container_root_path=root,
                                           layers=[layer_mount.guest_path], scratch_path="/run/gcs/c/b1/scratch/b1"))
        container = await vm.gcs.create_container("b1", oci_spec(root, ["echo", "hello"]))
        init = await container.start_init()
        first = await init.stdout.recv()
        echo = time.perf_counter() - t
        if not first.startswith(b"hello"):
            raise RuntimeError(f"unexpected first output {first!r}")
        with open(f"/proc/{vm.qemu_pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        await init.communicate()
        return gcs, echo, rss
    finally:
        await vm.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/uvm.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--boot-files", type=Path, default=None, help="`make all` output (default: build one)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--cpus", type=int, default=1, help="processors per VM (default 1: TCG)")
    parser.add_argument("--memory", type=int, default=512, help="MB per VM (default 512)")
    parser.add_argument("--record", action="store_true", help=f"append the figures to {RESULTS.name}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hcsshim-bench-uvm-") as tmp:
        work = Path(tmp)
        boot = args.boot_files
        if boot is None:
            status("building the boot files")
            boot = work / "out"
            build(None, boot, Path(os.environ.get("HCSSHIM_TEST_CACHE", "/var/cache/hcsshim-test")) / "debs")
        initrd = floor_initrd(work)
        layer = layer_image(work)
        accel = asyncio.run(accel_mod.choose(str(boot / "vmlinux"), waiter=PidfdWaiter()))
        kinds = ("initrd", "vhd") if (boot / "rootfs.vhd").exists() else ("initrd",)
        floors: list[float] = []
        py_floors: list[float] = []
        gcs: dict[str, list[float]] = {k: [] for k in kinds}
        echo: dict[str, list[float]] = {k: [] for k in kinds}
        rss: list[int] = []
        for i in range(args.runs):
            floors.append(floor_run(boot, initrd, args, accel))
            py_floors.append(floor_run(boot, initrd, args, accel, python=True))
            for kind in kinds:
                g, e, r = asyncio.run(ours_run(boot, layer, work, args, i, kind))
                gcs[kind].append(g)
                echo[kind].append(e)
                rss.append(r)
                status(f"run {i}: floor {floors[-1]:.2f} s, python floor {py_floors[-1]:.2f} s; {kind}: GCS ready "
                       f"{g:.2f} s, echo {e:.2f} s, QEMU RSS {r // 1024} MiB")
    fl = statistics.median(floors)
    rows = ["| measure (median) | seconds |", "|---|---:|",
            f"| floor: busybox initramfs to init (same kernel, machine, cmdline) | {fl:.2f} |",
            f"| python floor: our initrd.cpio and init to the first line of `python3 -IS -c ...` | "
            f"{statistics.median(py_floors):.2f} |"]
    for kind in kinds:
        what = "initrd (initrd.cpio)" if kind == "initrd" else "rootfs.vhd on SCSI (initrd-vhd.cpio)"
        rows += [f"| ours, {what}: start to GCS negotiated | {statistics.median(gcs[kind]):.2f} |",
                 f"| ours, {what}: start to first output of `echo` in a container | "
                 f"{statistics.median(echo[kind]):.2f} |"]
    best = min(statistics.median(gcs[k]) for k in kinds)
    text = "\n".join([*rows, "",
                      f"Best GCS ready - floor: **{best - fl:+.2f} s** (bar: <= +2 s); python floor - floor: "
                      f"{statistics.median(py_floors) - fl:+.2f} s. QEMU VmRSS with the container: "
                      f"{statistics.median(rss) / 1024:.0f} MiB. Accelerator: {accel}, {args.cpus} vCPU, "
                      f"{args.memory} MB. Load average at the end: {os.getloadavg()[0]:.1f}."])
    print(text)
    if args.record:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(RESULTS, "a") as f:
            f.write(f"\n## {now}: utility VM boot (bench/uvm.py)\n\nMachine: {os.cpu_count()} CPUs, Linux "
                    f"{platform.release()}, Python {platform.python_version()}. {args.runs} alternating runs "
                    f"of each.\n\n{text}\n")
        status(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
