"""Benchmark (`make bench`): the GCS bridge over the `unix:` transport, each figure beside an anchor.

    .venv/bin/python bench/bridge.py [--runs N] [--round-trips N] [--relay-mib N] [--record]

One local agent (`gcs` subprocess, private root, `unix:` transport) with one running busybox container:

* round trips/s: sequential GetProperties on the UVM (a no-op request), N per run; anchor: a raw
  request/response ping-pong of the same sizes over a unix socket pair between two processes;
* process start latency: ExecuteProcess of `true` in the running container + its WaitForProcess; anchor:
  `runc exec <container> true` run directly against the agent's runc root;
* stdout relay throughput: `dd if=/dev/zero bs=1M count=N` in the container, its stdout relayed by the agent
  and read by the host client; anchor: the same dd with its stdout on a unix socket read directly (no relay).

Runs alternate ours/anchor; medians and ratios are printed as a markdown table; --record appends it to
bench/RESULTS.md with the date and machine. Targets from the issue: >= 5,000 round trips/s, >= 300 MB/s relay.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from hcsshim import bridge
from hcsshim.gcs import GuestConnection
from hcsshim.testing.gcsagent import GcsAgent
from hcsshim.testing.rootfs import busybox_rootfs, oci_spec

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def status(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def ours_round_trips(gc: GuestConnection, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await gc.properties([])
    return n / (time.perf_counter() - start)


def anchor_round_trips(n: int) -> float:
    """Request/response ping-pong over a unix socket pair with a child process echoing fixed-size answers."""
    req = bridge.encode(0x10100901, 1, bridge.dumps_host(bridge.Requests.properties(bridge.NULL_GUID, [])))
    resp = bridge.encode(0x20100901, 1, bridge.dumps_guest(bridge.response(Properties="{}")))
    a, b = socket.socketpair()
    child = subprocess.Popen([sys.executable, "-c", (
        "import socket,sys\n"
        f"s=socket.socket(fileno={b.fileno()})\nq={len(req)}\nr=bytes({len(resp)})\n"
        "while True:\n"
        "    d=b''\n"
        "    while len(d)<q:\n"
        "        c=s.recv(q-len(d))\n"
        "        if not c: sys.exit(0)\n"
        "        d+=c\n"
        "    s.sendall(r)\n")], pass_fds=(b.fileno(),))
    b.close()
    try:
        start = time.perf_counter()
        for _ in range(n):
            a.sendall(req)
            got = 0
            while got < len(resp):
                got += len(a.recv(65536))
        return n / (time.perf_counter() - start)
    finally:
        a.close()
        child.wait()


async def ours_exec(container, n: int) -> float:  # -> median seconds
    times = []
    for _ in range(n):
        t = time.perf_counter()
        p = await container.exec({"args": ["true"]}, stdout=False, stderr=False)
        await p.wait(30)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def anchor_exec(runc_root: Path, cid: str, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["runc", "--root", str(runc_root), "exec", cid, "true"], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


async def ours_relay(container, mib: int) -> float:  # -> MB/s
    t = time.perf_counter()
    p = await container.exec({"args": ["dd", "if=/dev/zero", "bs=1M", f"count={mib}"]}, stderr=False)
    total = 0
    assert p.stdout is not None
    while chunk := await p.stdout.recv(1 << 20):
        total += len(chunk)
    p.stdout.close()
    await p.wait(60)
    elapsed = time.perf_counter() - t
    assert total == mib << 20, total
    return total / elapsed / 1e6


async def anchor_relay(runc_root: Path, cid: str, mib: int) -> float:
    """The same dd via `runc exec`, its stdout a unix socket read directly by us."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    t = time.perf_counter()
    proc = subprocess.Popen(["runc", "--root", str(runc_root), "exec", cid, "dd", "if=/dev/zero", "bs=1M",
                             f"count={mib}"], stdout=b.fileno(), stderr=subprocess.DEVNULL)
    b.close()
    total = 0
    while chunk := await loop.sock_recv(a, 1 << 20):
        total += len(chunk)
    proc.wait()
    elapsed = time.perf_counter() - t
    a.close()
    assert total == mib << 20, total
    return total / elapsed / 1e6


async def bench(args: argparse.Namespace, base: Path) -> list[tuple[str, str, float, float, str]]:
    rootfs = str(busybox_rootfs(base / "rootfs"))
    agent = GcsAgent(base / "agent", loglevel="warning")
    agent.start()
    rows = []
    try:
        gc = await GuestConnection.connect(agent.host_transport(), timeout=20, guest_root=str(agent.root))
        c = await gc.create_container("bench", oci_spec(rootfs, ["sleep", "3600"]))
        await c.start_init(stdout=False, stderr=False)
        runc_root = agent.root / "runc"
        status("warming up")
        await ours_round_trips(gc, 200)
        anchor_round_trips(200)
        await ours_exec(c, 2)
        anchor_exec(runc_root, "bench", 2)
        rt_ours, rt_anchor, ex_ours, ex_anchor, rl_ours, rl_anchor = ([] for _ in range(6))
        for i in range(args.runs):
            status(f"run {i + 1}/{args.runs}")
            rt_ours.append(await ours_round_trips(gc, args.round_trips))
            rt_anchor.append(anchor_round_trips(args.round_trips))
            ex_ours.append(await ours_exec(c, 5))
            ex_anchor.append(anchor_exec(runc_root, "bench", 5))
            rl_ours.append(await ours_relay(c, args.relay_mib))
            rl_anchor.append(await anchor_relay(runc_root, "bench", args.relay_mib))
        med = statistics.median
        rows = [
            ("bridge round trips/s (GetProperties on the UVM)", "raw unix-socket ping-pong", med(rt_ours),
             med(rt_anchor), "/s"),
            ("process start: exec `true` + wait (ms)", "`runc exec` of `true` (ms)", med(ex_ours) * 1000,
             med(ex_anchor) * 1000, "ms"),
            (f"stdout relay, {args.relay_mib} MiB (MB/s)", "dd to a unix socket, no relay (MB/s)", med(rl_ours),
             med(rl_anchor), "MB/s"),
        ]
        await c.terminate()
        await c.wait(10)
        await c.delete_state()
        await gc.shutdown()
        await gc.wait_closed(10)
        await gc.close()
    finally:
        agent.stop()
        agent.cleanup()
    return rows


def table(rows: list[tuple[str, str, float, float, str]], args: argparse.Namespace) -> str:
    lines = ["| measure | ours (median) | anchor | anchor (median) | ours/anchor |", "|---|---:|---|---:|---:|"]
    for name, anchor, ours, theirs, _unit in rows:
        lines.append(f"| {name} | {ours:,.1f} | {anchor} | {theirs:,.1f} | {ours / theirs:.2f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="alternating runs per measure (default 5)")
    p.add_argument("--round-trips", type=int, default=5000, help="requests per round-trip run (default 5000)")
    p.add_argument("--relay-mib", type=int, default=512, help="MiB relayed per throughput run (default 512)")
    p.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/bridge.py: needs root (runc, cgroups)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as d:
        rows = asyncio.run(bench(args, Path(d)))
    text = table(rows, args)
    print(text)
    if args.record:
        cpu = "unknown"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        header = (f"\n## {when}: GCS bridge over `unix:` (bench/bridge.py)\n\nMachine: {os.cpu_count()} x {cpu}, "
                  f"Linux {platform.release()}, Python {platform.python_version()}. {args.runs} alternating runs; "
                  f"{args.round_trips} round trips per run, exec latency median of 5 per run, "
                  f"{args.relay_mib} MiB per relay run.\n\n")
        with open(RESULTS, "a") as f:
            f.write(header + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
