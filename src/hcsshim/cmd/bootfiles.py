"""The bootfiles command: `python -m hcsshim.cmd.bootfiles build [--base BASE] [--out out] [--cache DIR]` and
`python -m hcsshim.cmd.bootfiles install [--path DIR]`.

`build` makes the guest boot files (hcsshim.boot) the way upstream's `make all` does. `install` puts the default
boot files where the shim looks when no BootFilesRootPath is given (hcsshim.uvm.bootpath), rebuilding them only
when this code's guest sources changed (`make setup` runs it). Exit codes: 0 success,
1 the build failed (one line on stderr naming the step and input; nothing half-written left in --out),
2 a usage error. Progress goes to stderr: a bar on a TTY (tqdm), plain lines otherwise with -v.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hcsshim.boot.archive import ArchiveError
from hcsshim.boot.bootfiles import STAGES, BuildError, build
from hcsshim.boot.installed import ensure_installed, is_current
from hcsshim.boot.modules import ModuleError
from hcsshim.uvm.bootpath import installed_boot_files_path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hcsshim.cmd.bootfiles",
                                description="Build the Linux utility VM boot files (kernel, vmlinux, initrd.img, "
                                            "rootfs.tar.gz, delta.tar.gz, rootfs.vhd, info/).")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    b = sub.add_parser("build", help="build the boot files",
                       description="BASE rootfs + our delta (init, gcs, kernel modules) -> OUT. Without --base, "
                                   "the base is made from Debian packages (busybox-static, python3, runc, mke2fs).")
    b.add_argument("--base", type=Path, help="base rootfs: tar, tar.gz, newc cpio or cpio.gz (detected by content)")
    b.add_argument("--out", type=Path, default=Path("out"), help="output directory (default: out)")
    b.add_argument("--cache", type=Path, help="download cache for .debs (default: ~/.cache/hcsshim/debs)")
    b.add_argument("--no-vhd", action="store_true", help="do not make rootfs.vhd")
    b.add_argument("--no-raw-initrd", action="store_true",
                   help="do not write initrd.cpio (the uncompressed initrd the host boots faster under TCG)")
    b.add_argument("--keep-module-signatures", action="store_true",
                   help="ship kernel modules signed (the guest then spends ~1.7 s more checking them under TCG)")
    b.add_argument("-v", "--verbose", action="store_true", help="print each step and detail")
    i = sub.add_parser("install", help="install the default boot files (rebuilt only when the guest code changed)",
                       description="Builds the default boot files (no BASE) into the directory the shim uses by "
                                   "default, unless the ones there were built from the same guest sources.")
    i.add_argument("--path", type=Path, default=None,
                   help=f"where to install (default: {installed_boot_files_path()})")
    i.add_argument("--cache", type=Path, help="download cache for .debs (default: ~/.cache/hcsshim/debs)")
    return p


def install(args: argparse.Namespace) -> int:
    path = args.path or installed_boot_files_path()
    t0 = time.monotonic()
    try:
        if is_current(path):
            print(f"bootfiles: {path} is up to date", file=sys.stderr)
            return 0
        ensure_installed(path, cache=args.cache, log=lambda m: print(f"bootfiles: {m}", file=sys.stderr))
    except (BuildError, ArchiveError, ModuleError, OSError) as e:
        print(f"bootfiles: install {path}: {e}", file=sys.stderr)
        return 1
    print(f"bootfiles: installed {path} ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "install":
        return install(args)

    bar = None
    if sys.stderr.isatty() and not args.verbose:
        from tqdm import tqdm

        bar = tqdm(total=len(STAGES), unit="step", file=sys.stderr, leave=False)

    def stage(name: str) -> None:
        if bar is not None:
            bar.set_description(name)
            bar.update(1)
        elif args.verbose:
            print(f"bootfiles: {name}", file=sys.stderr)

    def log(msg: str) -> None:
        if bar is not None:
            bar.write(f"bootfiles: {msg}", file=sys.stderr)
        elif args.verbose:
            print(f"bootfiles: {msg}", file=sys.stderr)

    t0 = time.monotonic()
    try:
        res = build(args.base, args.out, args.cache, vhd=not args.no_vhd, raw_initrd=not args.no_raw_initrd,
                    strip_module_signatures=not args.keep_module_signatures, log=log, stage=stage)
    except (BuildError, ArchiveError, ModuleError, OSError) as e:
        if bar is not None:
            bar.close()
        print(f"bootfiles: build {args.out}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print("bootfiles: interrupted", file=sys.stderr)
        return 130
    if bar is not None:
        bar.close()
    for n in res.notes:
        print(f"bootfiles: {n}", file=sys.stderr)
    top = sorted(n for n in res.files if "/" not in n)
    print(f"bootfiles: built {', '.join(top)} and info/ in {args.out} (kernel {res.kernel_release}, "
          f"{time.monotonic() - t0:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
