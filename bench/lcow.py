"""Benchmark (`make bench-lcow`): the hypervisor-isolated trial end to end, cold and warm, broken down, with the
process-isolated trial and the boot floor measured in the same run; and QEMU's memory per idle task.

    .venv/bin/python bench/lcow.py [--runs N] [--cpus N] [--memory MB] [--record]

One private containerd with the busybox image imported. Each run, in this order (so that drift affects all alike):
  floor    QEMU with the boot files' kernel, the same machine, memory, processors and kernel command line, booting
           a one-file busybox initramfs whose init prints a marker: QEMU's start to the marker (bench/uvm.py's);
  process  `ctr run --rm --runtime io.containerd.runhcs.v1 REF ID echo "Hello World!"` (runc on the host);
  cold     the same with `--runtime-config-path` (SandboxIsolation = 1: a utility VM booted from the default
           boot files), after emptying the shim's layer cache: the layer image is built;
  warm     the same with the layer image already in the cache.
Each trial's time is ctr's wall time; "first output" is when "Hello World!" reached ctr's stdout. The breakdown
comes from the shim's own log lines in containerd's log (`timing ...`: VM start to GCS ready, layer conversion,
container create in the VM, the VM's close at delete); teardown is from the first output to ctr's exit.
Medians of N runs. Then one detached `sleep` task in a VM: QEMU's VmRSS and PSS (smaps_rollup).

Prints a markdown table; with --record appends it to bench/RESULTS.md with the date, the machine and what was
compared.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import uvm as uvm_bench  # bench/uvm.py (this script's directory is on sys.path): the floor

from hcsshim.testing.bootfiles import default_bootfiles
from hcsshim.testing.containerd import Containerd
from hcsshim.testing.images import DEFAULT_REF, build_busybox_image

RUNTIME = "io.containerd.runhcs.v1"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TIMING = re.compile(r'msg="[^"]*timing ([a-z-]+) ([0-9.]+)(?: built (\d+) create ([0-9.]+) \(disks ([0-9.]+), '
                    r'combine ([0-9.]+), shares ([0-9.]+), runc create ([0-9.]+)\))?')


def status(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def trial(cd: Containerd, cid: str, extra: list[str]) -> tuple[float, float]:
    """(seconds to the first output, seconds to ctr's exit) of `ctr run --rm ... echo Hello World!`."""
    cmd = ["ctr", "-a", cd.address, "-n", "default", "run", "--runtime", RUNTIME, *extra, "--rm", DEFAULT_REF, cid,
           "echo", "Hello World!"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    first = time.perf_counter() - t
    out, err = proc.communicate(timeout=600)
    total = time.perf_counter() - t
    if proc.returncode != 0 or line != b"Hello World!\n":
        raise RuntimeError(f"trial {cid}: status {proc.returncode}, output {line + out!r}: {err.decode()}")
    return first, total


def shim_timings(cd: Containerd, since: int) -> dict[str, float]:
    """The shim's `timing` log lines written to containerd's log after byte offset `since`."""
    with open(cd.log, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    found: dict[str, float] = {}
    for m in TIMING.finditer(text):
        if m.group(1) == "layers":
            for name, group in (("layers", 2), ("built", 3), ("create", 4), ("disks", 5), ("combine", 6),
                                ("shares", 7), ("runc-create", 8)):
                found[name] = float(m.group(group))
        else:
            found[m.group(1)] = float(m.group(2))
    return found


def qemu_memory(cd: Containerd, config: Path) -> tuple[int, int]:
    """(VmRSS, Pss) in KiB of the QEMU of an idle detached task."""
    cd.ctr("run", "--runtime", RUNTIME, "--runtime-config-path", str(config), "-d", DEFAULT_REF, "idle", "sleep",
           "1000", timeout=600)
    try:
        time.sleep(2.0)
        out = subprocess.run(["pgrep", "-f", f"{cd.uvm_root}/"], capture_output=True, text=True).stdout.split()
        pids = [int(p) for p in out if os.readlink(f"/proc/{p}/exe").rsplit("/", 1)[-1].startswith("qemu")]
        if len(pids) != 1:
            raise RuntimeError(f"expected one QEMU, found {pids}")
        with open(f"/proc/{pids[0]}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        with open(f"/proc/{pids[0]}/smaps_rollup") as f:
            pss = next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        return rss, pss
    finally:
        remove_task(cd, "idle")


def remove_task(cd: Containerd, cid: str) -> None:
    """SIGKILL a detached task, wait for its exit, delete it and its container."""
    cd.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and b"RUNNING" in cd.ctr("task", "ls", check=False).stdout:
        time.sleep(0.2)
    cd.ctr("task", "delete", cid, check=False, timeout=120)
    cd.ctr("container", "delete", cid, check=False)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/lcow.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--cpus", type=int, default=1, help="processors per VM (default 1: TCG)")
    parser.add_argument("--memory", type=int, default=512, help="MB per VM (default 512)")
    parser.add_argument("--record", action="store_true", help=f"append the figures to {RESULTS.name}")
    args = parser.parse_args()
    boot = default_bootfiles()
    with tempfile.TemporaryDirectory(prefix="hcsshim-bench-lcow-") as tmp:
        work = Path(tmp)
        config = work / "runhcs.toml"
        config.write_text(f"SandboxIsolation = 1\nVmProcessorCount = {args.cpus}\n"
                          f"VmMemorySizeInMb = {args.memory}\n")
        vm_args = ["--runtime-config-path", str(config)]
        initrd = uvm_bench.floor_initrd(work)
        with Containerd(work / "containerd", path_prepend=[str(Path(sys.executable).parent)]) as cd:
            tar = work / "busybox.tar"
            build_busybox_image(tar, DEFAULT_REF)
            cd.import_image(tar, DEFAULT_REF)
            trial(cd, "warmup", [])  # the shim's fork server
            accel = "tcg" if "accel=tcg" in _one_vm_cmdline(cd, vm_args) else "kvm"
            floors: list[float] = []
            rows: dict[str, dict[str, list[float]]] = {k: {} for k in ("process", "cold", "warm")}
            for i in range(args.runs):
                floors.append(uvm_bench.floor_run(boot, initrd, args, accel))
                for kind in ("process", "cold", "warm"):
                    if kind == "cold":
                        shutil.rmtree(cd.layer_cache / "images", ignore_errors=True)
                    since = cd.log.stat().st_size
                    first, total = trial(cd, f"{kind}{i}", [] if kind == "process" else vm_args)
                    time.sleep(0.3)  # the shim's last log lines
                    t = shim_timings(cd, since)
                    row = rows[kind]
                    for name, value in (("first", first), ("total", total), ("teardown", total - first), *t.items()):
                        row.setdefault(name, []).append(value)
                    status(f"run {i} {kind}: first output {first:.2f} s, total {total:.2f} s "
                           + " ".join(f"{k}={v:.2f}" for k, v in t.items()))
                status(f"run {i} floor: {floors[-1]:.2f} s")
            rss, pss = qemu_memory(cd, config)
            left = cd.leftovers()
            if left:
                raise RuntimeError(f"the benchmark left things behind: {left}")
    fl = med(floors)
    p, c, w = rows["process"], rows["cold"], rows["warm"]
    table = [
        "| measure (median) | process isolation | VM, cold layer cache | VM, warm layer cache |",
        "|---|---:|---:|---:|",
        f"| ctr run to first output | {med(p['first']):.2f} | {med(c['first']):.2f} | {med(w['first']):.2f} |",
        f"| ctr run, whole (to exit after --rm) | {med(p['total']):.2f} | {med(c['total']):.2f} | "
        f"{med(w['total']):.2f} |",
        f"| VM start to GCS ready | | {med(c.get('vm', [])):.2f} | {med(w.get('vm', [])):.2f} |",
        f"| layer conversion (images built: {med(c.get('built', [])):.0f} cold, {med(w.get('built', [])):.0f} warm)"
        f" | | {med(c.get('layers', [])):.3f} | {med(w.get('layers', [])):.3f} |",
        f"| container create in the VM | | {med(c.get('create', [])):.2f} | {med(w.get('create', [])):.2f} |",
        *(f"| of which {what} | | {med(c.get(k, [])):.2f} | {med(w.get(k, [])):.2f} |"
          for k, what in (("disks", "SCSI disks hot-added and mounted (layer, scratch)"),
                          ("combine", "overlay (CombinedLayers)"), ("runc-create", "`runc create` in the guest"))),
        f"| start in the VM (Start, ExecuteProcess: `runc start`) | | {med(c.get('start', [])):.2f} | "
        f"{med(w.get('start', [])):.2f} |",
        f"| teardown: first output to ctr's exit | {med(p['teardown']):.2f} | {med(c['teardown']):.2f} | "
        f"{med(w['teardown']):.2f} |",
        f"| of which the VM's close | | {med(c.get('vm-close', [])):.2f} | {med(w.get('vm-close', [])):.2f} |",
    ]
    text = "\n".join([*table, "",
                      f"Floor (busybox initramfs to init, same kernel, machine and command line): **{fl:.2f} s**; "
                      f"warm VM first output - floor: {med(w['first']) - fl:+.2f} s; warm VM / process isolation: "
                      f"{med(w['total']) / med(p['total']):.1f}x. QEMU of an idle task: VmRSS {rss / 1024:.0f} MiB, "
                      f"PSS {pss / 1024:.0f} MiB. Accelerator {accel}, {args.cpus} vCPU, {args.memory} MB. "
                      f"Load average at the end: {os.getloadavg()[0]:.1f}."])
    print(text)
    if args.record:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(RESULTS, "a") as f:
            f.write(f"\n## {now}: the trial in a utility VM (bench/lcow.py)\n\nMachine: {os.cpu_count()} CPUs, "
                    f"Linux {platform.release()}, Python {platform.python_version()}. {args.runs} runs of each, "
                    f"alternating floor, process, cold, warm.\n\n{text}\n")
        status(f"appended to {RESULTS}")
    return 0


def _one_vm_cmdline(cd: Containerd, vm_args: list[str]) -> str:
    """The accelerator the shim's VMs use: the QEMU command line of a short detached task."""
    cd.ctr("run", "--runtime", RUNTIME, *vm_args, "-d", DEFAULT_REF, "probe", "sleep", "60", timeout=600)
    try:
        return subprocess.run(["pgrep", "-af", f"{cd.uvm_root}/"], capture_output=True, text=True).stdout
    finally:
        remove_task(cd, "probe")


if __name__ == "__main__":
    sys.exit(main())
