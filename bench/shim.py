"""Benchmark (`make bench`): `ctr run --rm` through our shim against Debian's runc shim, and the shim's RSS.

    .venv/bin/python bench/shim.py [--runs N] [--warmup W] [--cold C] [--only-runc] [--record] [--debug]

One private containerd with the busybox image imported; then W warm-up and N measured runs of
`ctr run --rm --runtime R <ref> b<i> true` for each runtime, alternating runtimes run by run so that drift
affects both alike. Each time is the wall time of the whole ctr process (time.perf_counter around it).
Our measured runs are served by daemons from the fork server (hcsshim.shim.forkserver), which the warm-up
starts; C more runs of ours, each after stopping the fork server, alternating with runc, give the cold start
that the first task of a containerd instance pays.
Reports the medians and the ratio ours/runc, then each shim daemon's resident memory: a detached
`ctr run -d ... sleep 5`, the daemon found by <bundle>/shim.pid (both shims write it), VmRSS
and VmHWM read from /proc/<pid>/status, then the task killed and removed.

Prints a markdown table; with --record appends it to bench/RESULTS.md with the date, the machine and what was
compared.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from hcsshim.testing.containerd import Containerd, ContainerdError, CtrError
from hcsshim.testing.images import DEFAULT_REF, build_busybox_image

OURS = "io.containerd.runhcs.v1"
RUNC = "io.containerd.runc.v2"
COLD = f"{OURS} cold (no fork server yet)"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SHORT = {OURS: "runhcs", RUNC: "runc"}


def status(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def time_run(cd: Containerd, runtime: str, cid: str) -> float:
    t = time.perf_counter()
    cd.ctr("run", "--rm", "--runtime", runtime, DEFAULT_REF, cid, "true", timeout=300)
    return time.perf_counter() - t


def shim_memory(cd: Containerd, runtime: str) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB of the shim daemon serving a detached `sleep 5` under `runtime`."""
    cid = f"rss-{SHORT.get(runtime, 'x')}"
    cd.ctr("run", "-d", "--runtime", runtime, DEFAULT_REF, cid, "sleep", "5", timeout=300)
    try:
        time.sleep(0.5)
        pid = find_shim_daemon(cd, cid)
        fields = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.split()[0] if value.split() else "0"
        return int(fields["VmRSS"]), int(fields["VmHWM"])
    finally:
        cd.ctr("task", "rm", "-f", cid, check=False)  # --force: SIGKILL, wait for the exit, delete
        cd.ctr("containers", "rm", cid, check=False)


def vm_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def find_shim_daemon(cd: Containerd, cid: str) -> int:
    """The pid of the long-running shim process for task `cid`.

    Ours writes <bundle>/shim.pid (its daemon is forked from `start`, so it keeps the start command line);
    Debian's runc shim is found by its daemon command line (-address A -id ID, without an action)."""
    path = cd.state / "io.containerd.runtime.v2.task" / "default" / cid / "shim.pid"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        pass
    candidates = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if argv and argv[-1] not in ("start", "delete") and cd.address in argv and cid in argv:
            candidates.append(int(name))
    if not candidates:
        raise ContainerdError(f"shim daemon for {cid}: no {path} and no process with -address {cd.address} -id {cid}")
    return min(candidates, key=_start_time)


def _start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} x {model}, Linux {platform.release()}, Python {platform.python_version()}"


def table(times: dict[str, list[float]], memory: dict[str, tuple[int, int]]) -> str:
    rows = ["| runtime | runs | median (s) | min (s) | max (s) | shim VmRSS (MiB) | shim VmHWM (MiB) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for runtime, ts in times.items():
        rss, hwm = memory.get(runtime, (0, 0))
        mem = f"| {rss / 1024:.1f} | {hwm / 1024:.1f} |" if runtime in memory else "| | |"
        rows.append(f"| {runtime} | {len(ts)} | {statistics.median(ts):.3f} | {min(ts):.3f} | {max(ts):.3f} {mem}")
    if OURS in times and RUNC in times:
        ratio = statistics.median(times[OURS]) / statistics.median(times[RUNC])
        rows.append("")
        rows.append(f"Ratio of medians ours/runc: **{ratio:.2f}**")
    if COLD in times and RUNC in times:
        ratio = statistics.median(times[COLD]) / statistics.median(times[RUNC])
        rows.append(f"Cold start (first task of a containerd, before the fork server exists) ours/runc: {ratio:.2f}")
    return "\n".join(rows)


def record(text: str, runtimes: list[str], runs: int, warmup: int) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    what = " vs ".join(runtimes)
    entry = (f"\n## {now}: `ctr run --rm <busybox> b<i> true`, {what}\n\n"
             f"Machine: {machine()}. {runs} runs per runtime after {warmup} warm-up runs, alternating.\n\n"
             f"{text}\n")
    new = not RESULTS.exists()
    with open(RESULTS, "a") as f:
        if new:
            f.write("# Benchmark results (appended by `bench/shim.py --record`)\n")
        f.write(entry)
    status(f"appended to {RESULTS}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/shim.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs per runtime (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up runs per runtime (default 2)")
    parser.add_argument("--cold", type=int, default=5,
                        help="extra runs of ours with its fork server stopped first, alternating with runc "
                             "(default 5): the first task of a containerd instance")
    parser.add_argument("--only-runc", action="store_true", help=f"measure {RUNC} alone")
    parser.add_argument("--record", action="store_true", help=f"append the table to {RESULTS.name}")
    parser.add_argument("--debug", action="store_true", help="run containerd at debug level")
    args = parser.parse_args()
    runtimes = [RUNC] if args.only_runc else [OURS, RUNC]
    venv_bin = str(Path(sys.executable).parent)
    with tempfile.TemporaryDirectory(prefix="hcsshim-bench-") as tmp:
        cd = Containerd(Path(tmp) / "containerd", path_prepend=[venv_bin], debug=args.debug)
        try:
            status(f"starting containerd in {cd.workdir}")
            cd.start()
            tar = Path(tmp) / "busybox.tar"
            build_busybox_image(tar, DEFAULT_REF)
            cd.import_image(tar, DEFAULT_REF)
            times: dict[str, list[float]] = {r: [] for r in runtimes}
            for i in range(args.warmup + args.runs):
                for runtime in runtimes:
                    elapsed = time_run(cd, runtime, f"b{i}-{SHORT[runtime]}")
                    if i >= args.warmup:
                        times[runtime].append(elapsed)
                if i == args.warmup - 1:
                    status("warm-up done")
            if OURS in runtimes and args.cold > 0:
                status("cold runs")
                times[COLD] = []
                for i in range(args.cold):
                    cd.stop_forkserver()
                    times[COLD].append(time_run(cd, OURS, f"c{i}-{SHORT[OURS]}"))
                    times[RUNC].append(time_run(cd, RUNC, f"c{i}-{SHORT[RUNC]}"))
            memory = {r: shim_memory(cd, r) for r in runtimes}
            forkserver_kib = sum(vm_rss(p) for p in cd.forkserver_pids())
            left = cd.leftovers()
            for line in left:
                status(f"left behind: {line}")
        except KeyboardInterrupt:
            status("interrupted")
            return 130
        except (ContainerdError, CtrError) as e:
            status(f"error: {e}")
            return 1
        finally:
            cd.stop()
    text = table(times, memory)
    if OURS in runtimes:
        text += (f"\n\nOur fork server (server and its spare) VmRSS: {forkserver_kib / 1024:.1f} MiB in all, "
                 "most of it shared copy-on-write with the daemons.")
    print(text)
    if args.record:
        record(text, runtimes, args.runs, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
