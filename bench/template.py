"""Benchmark (`make bench-template`): utility VMs restored from a template against cold boots and the floor, in
one run; the hypervisor trial through containerd with and without templates; and the memory idle clones share.

    .venv/bin/python bench/template.py [--runs N] [--cpus N] [--memory MB] [--record]

All in a private template store. Rows, each run alternating (so that drift affects all alike):
  floor       QEMU booting the boot files' kernel with a one-file busybox initramfs to its marker (bench/uvm.py's)
  cold        UtilityVM.start() without a template: QEMU's start to the GCS negotiated
  restore (b) a clone: the template's RAM file mapped private (share=off, x-ignore-shared), its device state
              restored (hcsshim.uvm.template, what VMs use by default)
  restore (a) the same VM restored from one migration stream with its whole RAM (a template saved with plain RAM)
  trial       `ctr run --rm --runtime-config-path runhcs.toml ... echo Hello World!` through a private containerd:
              once cold (annotation io.hcsshim.uvm.template=false), once from the template (the very first such
              run built it: reported separately), and the process-isolated trial
Then N = 1, 4 and 8 idle clones at once: QEMU's PSS (smaps_rollup) per clone, which must fall as clones are
added (they share the template's pages through the page cache). Medians of the runs.

Prints a markdown table; with --record appends it to bench/RESULTS.md with the date, the machine and what was
compared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import uvm as uvm_bench  # bench/uvm.py (this script's directory is on sys.path): the floor

from hcsshim.hcs.linux import accel as accel_mod
from hcsshim.hcs.schema2 import SaveOptions
from hcsshim.runc.reaper import PidfdWaiter
from hcsshim.testing.bootfiles import default_bootfiles
from hcsshim.testing.containerd import Containerd
from hcsshim.testing.images import DEFAULT_REF, build_busybox_image
from hcsshim.uvm import UtilityVM, UVMOptions
from hcsshim.uvm.template import TemplateStore

RUNTIME = "io.containerd.runhcs.v1"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
RUN_ROOT = "/run/hcsshim/uvm-bench"


def status(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def opts(boot: Path, name: str, args: argparse.Namespace, **kw: object) -> UVMOptions:
    return UVMOptions(id=f"{name}-{os.getpid()}", boot_files_path=str(boot), memory_mb=args.memory, cpus=args.cpus,
                      run_root=RUN_ROOT, **kw)


async def vm_start(boot: Path, name: str, args: argparse.Namespace, store: TemplateStore, *,
                   template: bool) -> tuple[float, bool]:
    """(seconds from start() to the GCS negotiated, whether it was restored from a template)."""
    vm = await UtilityVM.create(opts(boot, name, args, template=template))
    vm.templates = store
    try:
        t = time.perf_counter()
        await vm.start()
        return time.perf_counter() - t, vm.template is not None
    finally:
        await vm.close()


async def stream_template(boot: Path, args: argparse.Namespace, path: Path) -> None:
    """Way (a): a template saved as one migration stream with its whole RAM (plain RAM, no memory file)."""
    vm = await UtilityVM.create(opts(boot, "stream-tpl", args, template=False))
    try:
        await vm.start()
        await vm.wait_modules_ready()
        assert vm.system is not None
        await vm.system.save(SaveOptions(save_type="ToFile", save_state_file_path=str(path)))
    finally:
        await vm.close()


async def stream_restore(boot: Path, args: argparse.Namespace, path: Path, i: int) -> float:
    vm = await UtilityVM.create(opts(boot, f"stream-{i}", args, template=False))
    try:
        t = time.perf_counter()
        await vm.start_restored(str(path), gcs_timeout=30)
        return time.perf_counter() - t
    finally:
        await vm.close()


async def idle_clones(boot: Path, args: argparse.Namespace, store: TemplateStore, n: int) -> float:
    """Median PSS (KiB) per QEMU of n idle clones running at once."""
    vms = [await UtilityVM.create(opts(boot, f"idle{n}-{i}", args)) for i in range(n)]
    try:
        for vm in vms:
            vm.templates = store
        await asyncio.gather(*(vm.start() for vm in vms))
        if not all(vm.template for vm in vms):
            raise RuntimeError(f"an idle clone booted cold: {[vm.cold_boot_reason for vm in vms]}")
        await asyncio.sleep(3.0)
        pss = []
        for vm in vms:
            assert vm.qemu_pid is not None
            with open(f"/proc/{vm.qemu_pid}/smaps_rollup") as f:
                pss.append(next(int(line.split()[1]) for line in f if line.startswith("Pss:")))
        return statistics.median(pss)
    finally:
        await asyncio.gather(*(vm.close() for vm in vms))


def trial(cd: Containerd, cid: str, extra: list[str]) -> float:
    t = time.perf_counter()
    out = cd.ctr("run", "--runtime", RUNTIME, *extra, "--rm", DEFAULT_REF, cid, "echo", "Hello World!",
                 timeout=600, check=False)
    if out.returncode != 0 or out.stdout != b"Hello World!\n":
        raise RuntimeError(f"trial {cid}: {out.returncode} {out.stdout!r} {out.stderr!r}")
    return time.perf_counter() - t


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/template.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each (default 5)")
    parser.add_argument("--cpus", type=int, default=1, help="processors per VM (default 1: TCG)")
    parser.add_argument("--memory", type=int, default=512, help="MB per VM (default 512)")
    parser.add_argument("--record", action="store_true", help=f"append the figures to {RESULTS.name}")
    args = parser.parse_args()
    boot = default_bootfiles()
    with tempfile.TemporaryDirectory(prefix="hcsshim-bench-template-") as tmp:
        work = Path(tmp)
        store = TemplateStore(str(work / "templates"))
        os.environ["HCSSHIM_TEMPLATE_CACHE"] = store.root  # the shims' store too (containerd passes it on)
        initrd = uvm_bench.floor_initrd(work)
        accel = asyncio.run(accel_mod.choose(str(boot / "vmlinux"), waiter=PidfdWaiter()))
        t = time.perf_counter()
        first, _ = asyncio.run(vm_start(boot, "first", args, store, template=True))
        status(f"first VM (builds the template, then restores it): {first:.2f} s")
        stream = work / "stream.state"
        asyncio.run(stream_template(boot, args, stream))
        status(f"stream template: {stream.stat().st_size >> 20} MiB (built in {time.perf_counter() - t:.1f} s)")
        tpl_size = sum(f.stat().st_blocks * 512 for f in Path(store.root).rglob("*") if f.is_file())
        rows: dict[str, list[float]] = {k: [] for k in ("floor", "cold", "restore-b", "restore-a", "trial-process",
                                                        "trial-cold", "trial-template")}
        config = work / "runhcs.toml"
        config.write_text(f"SandboxIsolation = 1\nVmProcessorCount = {args.cpus}\nVmMemorySizeInMb = {args.memory}\n")
        vm_args = ["--runtime-config-path", str(config)]
        with Containerd(work / "containerd", path_prepend=[str(Path(sys.executable).parent)]) as cd:
            build_busybox_image(work / "busybox.tar", DEFAULT_REF)
            cd.import_image(work / "busybox.tar", DEFAULT_REF)
            trial(cd, "warmup", [])
            first_trial = trial(cd, "warm-tpl", vm_args)  # the template exists (built above): layer cache cold
            for i in range(args.runs):
                rows["floor"].append(uvm_bench.floor_run(boot, initrd, args, accel))
                rows["cold"].append(asyncio.run(vm_start(boot, f"cold{i}", args, store, template=False))[0])
                b, ok = asyncio.run(vm_start(boot, f"clone{i}", args, store, template=True))
                if not ok:
                    raise RuntimeError("a clone booted cold")
                rows["restore-b"].append(b)
                rows["restore-a"].append(asyncio.run(stream_restore(boot, args, stream, i)))
                rows["trial-process"].append(trial(cd, f"p{i}", []))
                rows["trial-cold"].append(trial(cd, f"c{i}", [*vm_args, "--annotation",
                                                                "io.hcsshim.uvm.template=false"]))
                rows["trial-template"].append(trial(cd, f"t{i}", vm_args))
                status(f"run {i}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rows.items()))
            left = cd.leftovers()
            if left:
                raise RuntimeError(f"the benchmark left things behind: {left}")
        pss = {n: asyncio.run(idle_clones(boot, args, store, n)) for n in (1, 4, 8)}
        stream_mib = stream.stat().st_size >> 20
    fl = med(rows["floor"])
    text = "\n".join([
        "| measure (median) | seconds |", "|---|---:|",
        f"| floor: busybox initramfs to init (same kernel, machine, cmdline) | {fl:.2f} |",
        f"| cold boot: start to GCS negotiated | {med(rows['cold']):.2f} |",
        f"| restore (b), the default: template RAM file mapped private + device state, to GCS negotiated | "
        f"{med(rows['restore-b']):.2f} |",
        f"| restore (a): one migration stream with the whole RAM ({stream_mib} MiB), to GCS "
        f"negotiated | {med(rows['restore-a']):.2f} |",
        f"| first VM ever (cold boot, save the template, restore it) | {first:.2f} |",
        f"| `ctr run --rm ... echo`, process isolation | {med(rows['trial-process']):.2f} |",
        f"| `ctr run --rm ... echo` in a VM, cold boot | {med(rows['trial-cold']):.2f} |",
        f"| `ctr run --rm ... echo` in a VM from the template | {med(rows['trial-template']):.2f} |",
        f"| (its first run, layer cache cold) | {first_trial:.2f} |",
        "",
        "| idle clones at once | PSS per clone (MiB) |", "|---:|---:|",
        *(f"| {n} | {p / 1024:.1f} |" for n, p in pss.items()),
        "",
        f"Restore (b) - floor: {med(rows['restore-b']) - fl:+.2f} s; the template on disk: {tpl_size >> 20} MiB "
        f"(RAM file allocated blocks + state). Accelerator {accel}, {args.cpus} vCPU, {args.memory} MB. Load average "
        f"at the end: {os.getloadavg()[0]:.1f}.",
    ])
    print(text)
    if args.record:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(RESULTS, "a") as f:
            f.write(f"\n## {now}: utility VM templates (bench/template.py)\n\nMachine: {os.cpu_count()} CPUs, Linux "
                    f"{platform.release()}, Python {platform.python_version()}. {args.runs} runs of each, "
                    f"alternating.\n\n{text}\n")
        status(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
