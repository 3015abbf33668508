"""Benchmark (`make bench-ext4`): our tar2ext4 against `mkfs.ext4 -d` (the local anchor), on tmpfs.

    .venv/bin/python bench/ext4.py [--runs N] [--anchor-runs M] [--big-runs B] [--dir /dev/shm] [--record]
                                   [--go-ref PATH]

Inputs, made once in --dir (tmpfs by default) and kept there between runs:
* usr.tar: `tar -cf usr.tar -C / usr/share/doc usr/lib/python3 usr/lib/python3.11 usr/share/man` (~35k entries);
* usr/: that tar extracted (`tar -xpf --numeric-owner`), the tree mkfs.ext4 -d and our directory mode read;
* big.tar: two zero-filled files of 512 MiB and 512 MiB + 5 bytes.

Measured, alternating ours and the anchor run by run so that drift affects both alike:
1. `tar2ext4 -i usr.tar -o usr.img` (N runs) and `mkfs.ext4 -q -F -N 50000 -O ^has_journal -d usr/ x.img 1G`
   (M runs: it takes ~30 s);
2. `tar2ext4 -i usr/ -o dir.img` (our directory-tree input, same tree as mkfs) (N runs);
3. `tar2ext4 -i big.tar` (B runs); 4. `tar2ext4 -verity` on usr.tar and `veritysetup format` of the plain image.
With `--go-ref PATH` (a locally built upstream Go tar2ext4, never part of this repository) the Go tool runs as an
extra column, alternating with ours on usr.tar and big.tar, and its usr image is compared byte for byte with ours
made with `-upstream-bitmap-padding`.
Each figure is the command's wall time, user+sys CPU and peak RSS (GNU time around it). Throughput = input tar bytes /
median wall. The upstream Go figures quoted for reference come from specs/ext4.md (measured on this machine
type, not in this run). The usr image is checked with `e2fsck -fn` once.

Prints a markdown table; with --record appends it to bench/RESULTS.md with the date and machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
PY = sys.executable
TAR2EXT4 = [PY, "-m", "hcsshim.cmd.tar2ext4"]
GO_REF = {"usr": (1.16, 42), "big": (0.59, 8), "verity": (2.62, 43)}  # (best wall s, RSS MB), specs/ext4.md


def status(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str]) -> tuple[float, float, int]:
    """(wall s, user+sys s, peak RSS KiB) of one command, measured by GNU time (/usr/bin/time) around it.

    GNU time forks a fresh small process, so the peak RSS is the command's own (a child of this Python process
    would start with the parent's resident pages counted)."""
    if not os.path.exists("/usr/bin/time"):  # Debian package `time`; else wait4 (RSS then includes our fork)
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, st, ru = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(st) != 0:
            raise SystemExit(f"bench: {' '.join(cmd)} failed")
        return time.perf_counter() - t, ru.ru_utime + ru.ru_stime, ru.ru_maxrss
    with tempfile.NamedTemporaryFile("r") as tf:
        t = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf.name, *cmd], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, check=False)
        wall = time.perf_counter() - t
        if p.returncode != 0:
            raise SystemExit(f"bench: {' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
        fields = tf.read().split()[-4:]
    _, user, sys_, rss = fields
    return wall, float(user) + float(sys_), int(rss)


def prepare(d: Path) -> tuple[Path, Path, Path]:
    usr_tar, usr_dir, big = d / "usr.tar", d / "usr", d / "big.tar"
    if not usr_tar.exists():
        status(f"making {usr_tar}")
        subprocess.run(["tar", "-cf", str(usr_tar), "-C", "/", "usr/share/doc", "usr/lib/python3",
                        "usr/lib/python3.11", "usr/share/man"], check=True, stderr=subprocess.DEVNULL)
    if not usr_dir.exists():
        status(f"extracting into {usr_dir}")
        tmp = d / "usr.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        subprocess.run(["tar", "-xpf", str(usr_tar), "--numeric-owner", "-C", str(tmp)], check=True)
        tmp.rename(usr_dir)
    if not big.exists():
        status(f"making {big}")
        with tarfile.open(big, "w", format=tarfile.GNU_FORMAT) as t:
            for name, size in (("zero1", 512 << 20), ("zero2", (512 << 20) + 5)):
                ti = tarfile.TarInfo(name)
                ti.size = size
                with open("/dev/zero", "rb") as z:
                    t.addfile(ti, _Limited(z, size))
    return usr_tar, usr_dir, big


class _Limited:
    def __init__(self, f: object, n: int) -> None:
        self.f, self.n = f, n

    def read(self, k: int = -1) -> bytes:
        k = self.n if k < 0 else min(k, self.n)
        self.n -= k
        return bytes(k)


def summary(samples: list[tuple[float, float, int]]) -> dict[str, float]:
    walls = [s[0] for s in samples]
    return {"runs": len(samples), "median": statistics.median(walls), "best": min(walls),
            "cpu": statistics.median(s[1] for s in samples), "rss": max(s[2] for s in samples) / 1024}


def row(label: str, s: dict[str, float], size: int) -> str:
    mbps = size / 1e6 / s["median"] if size else 0
    return (f"| {label} | {s['runs']} | {s['median']:.2f} | {s['best']:.2f} | {s['cpu']:.2f} | {s['rss']:.0f} | "
            f"{mbps:.0f} |")


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/ext4.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--anchor-runs", type=int, default=3)
    ap.add_argument("--big-runs", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm/hcsshim-bench-ext4")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--go-ref", metavar="PATH", help="upstream Go tar2ext4 binary to run alongside ours")
    args = ap.parse_args()
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    usr_tar, usr_dir, big = prepare(d)
    usr_size, big_size = usr_tar.stat().st_size, big.stat().st_size
    with tarfile.open(usr_tar) as t:
        entries = sum(1 for _ in t)
    img, mk, dimg, bimg, vimg = (str(d / n) for n in ("usr.img", "mkfs.img", "dir.img", "big.img", "v.img"))

    go = args.go_ref
    gimg = str(d / "go.img")
    ours, anchor, tree, gos, gobigs = [], [], [], [], []
    for i in range(max(args.runs, args.anchor_runs)):
        if i < args.runs:
            ours.append(run([*TAR2EXT4, "-i", str(usr_tar), "-o", img]))
            status(f"ours usr.tar run {i + 1}: {ours[-1][0]:.2f} s")
            if go:
                gos.append(run([go, "-i", str(usr_tar), "-o", gimg]))
                status(f"go usr.tar run {i + 1}: {gos[-1][0]:.2f} s")
        if i < args.anchor_runs:
            anchor.append(run(["mkfs.ext4", "-q", "-F", "-N", "50000", "-O", "^has_journal", "-d", str(usr_dir),
                               mk, "1G"]))
            status(f"mkfs.ext4 -d run {i + 1}: {anchor[-1][0]:.2f} s")
            os.unlink(mk)
        if i < args.runs:
            tree.append(run([*TAR2EXT4, "-i", str(usr_dir), "-o", dimg]))
            status(f"ours usr/ run {i + 1}: {tree[-1][0]:.2f} s")
    rc = subprocess.run(["e2fsck", "-fn", img], capture_output=True, check=False).returncode
    img_size = os.path.getsize(img)
    identical = None
    if go:
        upimg = str(d / "up.img")
        run([*TAR2EXT4, "-i", str(usr_tar), "-o", upimg, "-upstream-bitmap-padding"])
        identical = subprocess.run(["cmp", "-s", upimg, gimg], check=False).returncode == 0
        os.unlink(upimg)
        os.unlink(gimg)
    bigs = []
    for i in range(args.big_runs):
        bigs.append(run([*TAR2EXT4, "-i", str(big), "-o", bimg]))
        status(f"ours big.tar run {i + 1}: {bigs[-1][0]:.2f} s")
        if go:
            gobigs.append(run([go, "-i", str(big), "-o", gimg]))
            status(f"go big.tar run {i + 1}: {gobigs[-1][0]:.2f} s")
            os.unlink(gimg)
    big_rc = subprocess.run(["e2fsck", "-fn", bimg], capture_output=True, check=False).returncode
    os.unlink(bimg)
    ver, vsetup = [], []
    for i in range(args.big_runs):
        ver.append(run([*TAR2EXT4, "-i", str(usr_tar), "-o", vimg, "-verity"]))
        if shutil.which("veritysetup"):
            vsetup.append(run(["veritysetup", "format", "--salt=" + "0" * 64, "--no-superblock",
                               f"--data-blocks={img_size // 4096}", img, str(d / "hash.img")]))
        status(f"verity run {i + 1}: {ver[-1][0]:.2f} s")
    for p in (vimg, dimg, str(d / "hash.img")):
        if os.path.exists(p):
            os.unlink(p)

    so, sa, st_, sb, sv = summary(ours), summary(anchor), summary(tree), summary(bigs), summary(ver)
    lines = [
        f"Machine: {os.cpu_count()} x {platform.processor() or platform.machine()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}; inputs on tmpfs ({d}). usr.tar: {usr_size:,} bytes, {entries:,} "
        f"entries; image {img_size:,} bytes, `e2fsck -fn` exit {rc}. big.tar: {big_size:,} bytes "
        f"(e2fsck exit {big_rc}).",
        "",
        "| command | runs | median wall (s) | best (s) | median user+sys (s) | peak RSS (MB) | MB/s (tar bytes) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row("ours `tar2ext4 -i usr.tar`", so, usr_size),
        *([row("upstream Go `tar2ext4 -i usr.tar` (--go-ref)", summary(gos), usr_size)] if gos else []),
        row("anchor `mkfs.ext4 -N 50000 -O ^has_journal -d usr/ 1G`", sa, usr_size),
        row("ours `tar2ext4 -i usr/` (directory input)", st_, usr_size),
        row("ours `tar2ext4 -i big.tar` (2 x 512 MiB)", sb, big_size),
        *([row("upstream Go `tar2ext4 -i big.tar` (--go-ref)", summary(gobigs), big_size)] if gobigs else []),
        row("ours `tar2ext4 -verity -i usr.tar`", sv, usr_size),
    ]
    if vsetup:
        lines.append(row("`veritysetup format` of the plain usr image", summary(vsetup), img_size))
    lines += [
        "",
        f"Ratios of medians: mkfs.ext4 -d / ours (tar) = **{sa['median'] / so['median']:.1f}x**; "
        f"mkfs.ext4 -d / ours (directory) = {sa['median'] / st_['median']:.1f}x.",
    ]
    if gos:
        sg, sgb = summary(gos), summary(gobigs)
        lines.append(
            f"Upstream Go ({go}) / ours, medians: usr.tar wall **{sg['median'] / so['median']:.2f}x**, user+sys "
            f"{sg['cpu'] / so['cpu']:.2f}x; big.tar wall {sgb['median'] / sb['median']:.2f}x. Go's usr image is "
            f"byte-identical to ours with -upstream-bitmap-padding: **{'yes' if identical else 'NO'}**.")
    else:
        lines.append(
            f"Upstream Go tar2ext4 on the spec's 292 MB usr.tar (specs/ext4.md, not run here): best "
            f"{GO_REF['usr'][0]} s, {GO_REF['usr'][1]} MB RSS, ~250 MB/s; big files 0.59 s; verity+vhd 2.62 s.")
    text = "\n".join(lines)
    print(text)
    if args.record:
        new = not RESULTS.exists()
        with open(RESULTS, "a") as f:
            if new:
                f.write("# Benchmark results\n")
            f.write(f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: tar2ext4 (ext4 images) vs mkfs.ext4 -d\n\n")
            f.write(text + "\n")
        status(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
