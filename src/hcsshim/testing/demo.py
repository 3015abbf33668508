"""The project's main job (`make demo`): run "Hello World!" in a container through our shim, end to end, twice:
with process isolation (runc on the host), then inside a utility VM (hypervisor isolation).

    python -m hcsshim.testing.demo [--runtime io.containerd.runhcs.v1] [--isolation both|process|hypervisor]
                                   [--boot-files DIR] [--keep] [--debug]

Steps, each reported by one status line on stderr: start a private containerd in a run directory (a
temporary one, or ./run/ with --keep), build and import the busybox image, run the trial
`ctr run --runtime RUNTIME --rm REF demo echo "Hello World!"`, then the same with
`--runtime-config-path runhcs.toml` (`SandboxIsolation = 1`: a QEMU utility VM booted from the default boot files,
which `make setup` installs, or --boot-files), each with its time; check that nothing was left behind (no shim,
container, mount, socket, VM or layer reference), stop containerd and remove everything (also on failure, Ctrl-C
or SIGTERM). The containers' output goes to stdout.

Exit status: the first failing trial's exit status; 1 when the harness fails (a missing program, containerd not
starting, the image not importing) or when the trials succeeded but left something behind; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from hcsshim.testing.containerd import Containerd, ContainerdError, CtrError
from hcsshim.testing.images import DEFAULT_REF, build_busybox_image

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_RUNTIME = "io.containerd.runhcs.v1"
CONTAINER_ID = "demo"
KEEP_DIR = Path("run")


class HarnessError(Exception):
    """An expected failure of the demo's own machinery: reported in one line, without a traceback."""


def status(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def shim_binary(runtime: str) -> str:
    """containerd's binary name for a runtime: io.containerd.runhcs.v1 -> containerd-shim-runhcs-v1."""
    if runtime.startswith("/"):
        return runtime
    parts = runtime.split(".")
    if len(parts) < 3:
        raise HarnessError(f"runtime {runtime!r}: not a runtime name (expected like io.containerd.runhcs.v1)")
    return f"containerd-shim-{parts[-2]}-{parts[-1]}"


_interrupted_by = [signal.SIGINT]


def _raise_interrupt(signum: int, frame: object) -> NoReturn:
    _interrupted_by[0] = signal.Signals(signum)
    raise KeyboardInterrupt


def _trial(cd: Containerd, label: str, step: str, runtime: str, extra: list[str]) -> int:
    argv = ["run", "--runtime", runtime, *extra, "--rm", DEFAULT_REF, CONTAINER_ID, "echo", "Hello World!"]
    status(f"{step} trial, {label}: ctr {' '.join(_quote(a) for a in argv)}")
    t = time.perf_counter()
    result = cd.ctr(*argv, check=False, timeout=600)
    elapsed = time.perf_counter() - t
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    if result.stderr:
        sys.stderr.buffer.write(result.stderr)
        sys.stderr.flush()
    rc = result.returncode
    status(f"      {label}: exited with status {rc} in {elapsed:.2f}s")
    if rc != 0:
        status(f"      containerd.log (tail):\n{cd.log_tail(20)}")
    return rc


def run(runtime: str, keep: bool, debug: bool, isolation: str = "both", boot_files: str | None = None) -> int:
    if os.geteuid() != 0:
        raise HarnessError("the demo needs root: containerd, runc and the container's mounts do")
    venv_bin = str(Path(sys.executable).parent)
    if keep:
        rundir = KEEP_DIR.absolute()
        if rundir.exists():
            status(f"removing the previous run directory {rundir}")
            try:
                Containerd(rundir / "containerd").stop()  # also ends what a killed run left running
            except ContainerdError as e:
                raise HarnessError(f"clean previous run {rundir}: {e}") from e
            shutil.rmtree(rundir)
        rundir.mkdir(parents=True)
    else:
        rundir = Path(tempfile.mkdtemp(prefix="hcsshim-demo-"))
    cd: Containerd | None = None
    try:
        cd = Containerd(rundir / "containerd", path_prepend=[venv_bin], debug=debug)
        binary = shim_binary(runtime)
        found = shutil.which(binary, path=cd.env()["PATH"])
        if found is None:
            raise HarnessError(f"runtime {runtime}: {binary} not found on containerd's PATH "
                               f"({venv_bin} first; run `make setup`)")

        total = 3 + (isolation in ("both", "process")) + (isolation in ("both", "hypervisor"))
        status(f"[1/{total + 1}] starting a private containerd in {cd.workdir} (log: {cd.log})")
        t = time.perf_counter()
        cd.start()
        status(f"      containerd is up ({time.perf_counter() - t:.2f}s); shim for {runtime}: {found}")

        status(f"[2/{total + 1}] building the busybox image")
        tar = rundir / "busybox.tar"
        build_busybox_image(tar, DEFAULT_REF)
        status(f"[3/{total + 1}] importing {DEFAULT_REF}")
        cd.import_image(tar, DEFAULT_REF)

        rc = 0
        n = total + 1
        step = 4
        if isolation in ("both", "process"):
            rc = _trial(cd, "process isolation", f"[{step}/{n}]", runtime, [])
            step += 1
        if isolation in ("both", "hypervisor") and rc == 0:
            config = rundir / "runhcs.toml"
            config.write_text("SandboxIsolation = 1  # HYPERVISOR: a utility VM per task\n"
                              + (f"BootFilesRootPath = {json.dumps(boot_files)}\n" if boot_files else ""))
            rc = _trial(cd, "in a utility VM", f"[{step}/{n}]", runtime,
                        ["--runtime-config-path", str(config)])
            step += 1

        status(f"[{step}/{n}] checking that nothing was left behind, stopping containerd")
        left = cd.leftovers()
        for line in left:
            status(f"      left behind: {line}")
        if left and rc == 0:
            status("FAIL: the trials succeeded but left the above behind (removed now)")
            rc = 1
        return rc
    finally:
        previous = [(s, signal.signal(s, signal.SIG_IGN)) for s in (signal.SIGINT, signal.SIGTERM)]
        try:  # signals wait until the cleanup is done
            if cd is not None:
                cd.stop(keep=keep)
            if not keep:
                shutil.rmtree(rundir, ignore_errors=True)
            else:
                status(f"kept {rundir} (config.toml, containerd.log, busybox.tar)")
        finally:
            for signum, handler in previous:
                signal.signal(signum, handler)


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./:=@" for c in arg) else repr(arg)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hcsshim.testing.demo",
        description="Run 'Hello World!' in a busybox container through a private containerd and our shim.")
    parser.add_argument("--runtime", default=DEFAULT_RUNTIME,
                        help=f"containerd runtime (default {DEFAULT_RUNTIME}; "
                        "io.containerd.runc.v2 to compare)")
    parser.add_argument("--isolation", choices=("both", "process", "hypervisor"), default="both",
                        help="which trials to run (default both: process isolation, then in a utility VM)")
    parser.add_argument("--boot-files", default=None, metavar="DIR",
                        help="the utility VM's boot files (default: the installed ones, see `make setup`)")
    parser.add_argument("--keep", action="store_true",
                        help=f"run in ./{KEEP_DIR}/ and keep its config and logs afterwards")
    parser.add_argument("--debug", action="store_true",
                        help="run containerd (and so the shim) at debug level")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run(args.runtime, args.keep, args.debug, args.isolation, args.boot_files)
    except KeyboardInterrupt:
        status(f"interrupted by {_interrupted_by[0].name}; everything was cleaned up")
        return 128 + _interrupted_by[0]
    except (HarnessError, ContainerdError, CtrError, OSError) as e:
        status(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
