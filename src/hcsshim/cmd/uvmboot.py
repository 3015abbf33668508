"""uvmboot: boot Linux utility VMs (LCOW) on QEMU, optionally run a command in them, and time it.

    uvmboot [--cpus N] [--memory MB] [--count N] [--parallel N] [--measure] [--accel kvm|tcg] [--no-template]
            lcow --boot-files-path DIR [--root-fs-type initrd|vhd] [--kernel-args ARGS] [--exec CMD]
            [--fwd-stdout] [--fwd-stderr] [--mount-scsi HOST:GUEST[:ro]] [--share HOST:GUEST[:ro]]

The flags are upstream's (cmd/uvmboot), plus --no-template. Each VM is restored from its template
(hcsshim.uvm.template: built by the first VM that needs it, in $HCSSHIM_TEMPLATE_CACHE or
/var/lib/hcsshim/templates), or with --no-template booted cold, until its GCS has negotiated, mounts what --mount-scsi
and --share ask for, runs --exec (a process in the UVM, outside any container; its stdout/stderr are printed
with --fwd-stdout/--fwd-stderr) and is then terminated. --measure prints each VM's boot time (start to GCS
ready) and the total.

Exit status: the --exec command's exit status when one VM runs it (so `uvmboot ... --exec false` exits 1);
otherwise 0 when every VM booted (and its command succeeded), 1 when one did not, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import sys
import time
import uuid
from dataclasses import dataclass

from hcsshim.uvm import UtilityVM, UVMError, UVMOptions


@dataclass
class Mapping:
    host: str
    guest: str
    read_only: bool


def _mapping(kind: str):
    def parse(value: str) -> Mapping:
        parts = value.split(":")
        ro = False
        if len(parts) == 3 and parts[2] in ("ro", "rw"):
            ro = parts[2] == "ro"
            parts = parts[:2]
        if len(parts) != 2 or not parts[0] or not parts[1].startswith("/"):
            raise argparse.ArgumentTypeError(f"{kind} {value!r}: expected HOST:GUEST[:ro] with an absolute GUEST")
        return Mapping(os.path.abspath(parts[0]), parts[1], ro)

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="uvmboot", description=__doc__.split("\n\n")[0],
                                epilog="Example: uvmboot --measure lcow --boot-files-path out "
                                       '--exec "uname -r" --fwd-stdout')
    p.add_argument("--cpus", type=int, default=2, help="processors per VM (default 2)")
    p.add_argument("--memory", type=int, default=1024, help="memory per VM in MB (default 1024)")
    p.add_argument("--count", type=int, default=1, help="how many VMs to boot (default 1)")
    p.add_argument("--parallel", type=int, default=1, help="how many to boot at once (default 1)")
    p.add_argument("--measure", action="store_true", help="print boot times")
    p.add_argument("--accel", choices=("kvm", "tcg"), default=None,
                   help="QEMU accelerator (default: KVM when a guest really runs on it, else TCG)")
    p.add_argument("--no-template", action="store_true",
                   help="boot every VM cold instead of restoring it from a template of a booted VM")
    p.add_argument("--debug", action="store_true", help="log what happens, and the guest's log, on stderr")
    sub = p.add_subparsers(dest="kind", metavar="lcow", required=True)
    lcow = sub.add_parser("lcow", help="a Linux utility VM")
    lcow.add_argument("--boot-files-path", required=True, help="directory with vmlinux/kernel, initrd.img, "
                      "rootfs.vhd (as made by `make all`)")
    lcow.add_argument("--root-fs-type", choices=("initrd", "vhd"), default="initrd")
    lcow.add_argument("--kernel-args", default="", help="extra kernel command-line tokens")
    lcow.add_argument("--exec", dest="exec_", default="", metavar="CMD", help="command to run in each UVM")
    lcow.add_argument("--fwd-stdout", action="store_true", help="print the command's stdout")
    lcow.add_argument("--fwd-stderr", action="store_true", help="print the command's stderr")
    lcow.add_argument("--mount-scsi", action="append", default=[], type=_mapping("--mount-scsi"),
                      metavar="HOST:GUEST[:ro]", help="attach a disk image over SCSI and mount it in the guest")
    lcow.add_argument("--share", action="append", default=[], type=_mapping("--share"),
                      metavar="HOST:GUEST[:ro]", help="share a host directory or file with the guest")
    args = p.parse_args(argv)
    for name in ("cpus", "memory", "count", "parallel"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


class BootFailed(Exception):
    pass


async def boot_one(args: argparse.Namespace, index: int) -> tuple[float, int | None, str]:
    """(seconds from start to GCS ready, exit status of --exec or None, how the VM started)."""
    opts = UVMOptions(id=f"uvmboot-{os.getpid()}-{index}-{uuid.uuid4().hex[:6]}",
                      boot_files_path=args.boot_files_path, root_fs_type=args.root_fs_type, memory_mb=args.memory,
                      cpus=args.cpus, kernel_args=args.kernel_args, accel=args.accel,
                      gcs_log_level="debug" if args.debug else "info", template=not args.no_template)
    try:
        vm = await UtilityVM.create(opts)
    except UVMError as exc:
        raise BootFailed(str(exc)) from None
    try:
        t0 = time.perf_counter()
        await vm.start()
        boot = time.perf_counter() - t0
        how = (f"restored from template {vm.template.key.digest[:12]}" if vm.template else
               f"cold ({vm.cold_boot_reason})" if vm.cold_boot_reason else "cold")
        assert vm.gcs is not None
        for m in args.mount_scsi:  # attached and mounted; vm.close() releases them
            await vm.scsi.add(m.host, read_only=m.read_only, guest_path=m.guest)
        for m in args.share:
            await vm.shares.add(m.host, m.guest, read_only=m.read_only)
        status = None
        if args.exec_:
            proc = await vm.gcs.exec_in_uvm(shlex.split(args.exec_), stdout=True, stderr=True)
            out, err = await proc.communicate()
            status = await proc.wait()
            if args.fwd_stdout and out:
                sys.stdout.buffer.write(out)
                sys.stdout.flush()
            if args.fwd_stderr and err:
                sys.stderr.buffer.write(err)
                sys.stderr.flush()
        return boot, status, how
    except UVMError as exc:
        raise BootFailed(str(exc)) from None
    except (OSError, TimeoutError) as exc:
        raise BootFailed(f"uvm {opts.id}: {exc}") from None
    finally:
        await vm.close()


async def run(args: argparse.Namespace) -> int:
    sem = asyncio.Semaphore(args.parallel)
    t0 = time.perf_counter()
    failures: list[str] = []
    results: list[tuple[float, int | None]] = []

    async def one(i: int) -> None:
        async with sem:
            try:
                boot, status, how = await boot_one(args, i)
            except BootFailed as exc:
                failures.append(str(exc))
                print(f"uvmboot: {exc}", file=sys.stderr)
                return
            results.append((boot, status))
            if args.measure:
                print(f"uvmboot: VM {i}: booted in {boot:.2f} s, {how}", file=sys.stderr)

    await asyncio.gather(*(one(i) for i in range(args.count)))
    if args.measure:
        print(f"uvmboot: {len(results)} of {args.count} VM(s) in {time.perf_counter() - t0:.2f} s",
              file=sys.stderr)
    if failures:
        return 1
    statuses = [s for _, s in results if s is not None]
    if args.count == 1 and statuses:
        return statuses[0]
    return 1 if any(s != 0 for s in statuses) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.debug:
        logging.getLogger("qemu").setLevel(logging.ERROR)
        logging.getLogger("hcsshim.uvm.guest").setLevel(logging.ERROR)
    if not os.path.isdir(args.boot_files_path):
        print(f"uvmboot: boot files path {args.boot_files_path}: no such directory", file=sys.stderr)
        return 1
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
