"""hcsshim.runc against the real runc, with a private --root in a temp dir and a busybox rootfs.

Each test runs its body in its own event loop (asyncio.run) with a Reaper started in subreaper mode, so the
container inits, which are not our direct children, are reparented to us and reaped by the Reaper.  After
every body the lab force-deletes what is left, then checks that `runc list` is empty and that no new child
of ours (a container process or an orphan) is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from hcsshim.runc import PIPE, PidfdWaiter, Reaper, ReaperClosed, Runc, RuncError, RuncNotFound

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

RUNC = shutil.which("runc")
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "echo", "cat", "sleep", "true", "kill")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="runc containers need root"),
    pytest.mark.skipif(RUNC is None or not os.path.exists(BUSYBOX), reason="needs runc and busybox-static"),
]


def children_of_us() -> set[int]:
    """Pids of the live processes whose parent is this process."""
    me = os.getpid()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[1]) == me:
            found.add(int(name))
    return found


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


def read_available(fd: int) -> bytes:
    """Everything in a pipe whose writers have exited (non-blocking: never waits for an EOF)."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox rootfs shared (read-only) by every container of the module."""
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    (root / "bin").mkdir(parents=True)
    for d in ("proc", "dev", "sys", "tmp"):
        (root / d).mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    return root


@pytest.fixture(scope="module")
def spec_template(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """runc's default OCI spec (`runc spec`), as a template for the bundles."""
    d = tmp_path_factory.mktemp("spec")
    subprocess.run([RUNC, "spec", "--bundle", str(d)], check=True)
    return json.loads((d / "config.json").read_text())


class Lab:
    """A private runc root, bundles made on demand, and a per-test event loop with a subreaper Reaper."""

    def __init__(self, tmp_path: Path, rootfs: Path, template: dict) -> None:
        self.tmp = tmp_path
        self.root = str(tmp_path / "runc-root")
        self.rootfs = rootfs
        self.template = template

    def bundle(self, id: str, *args: str) -> str:
        bundle = self.tmp / "bundles" / id
        bundle.mkdir(parents=True)
        config = json.loads(json.dumps(self.template))
        config["root"] = {"path": str(self.rootfs), "readonly": True}
        config["process"]["terminal"] = False
        config["process"]["args"] = list(args)
        config["hostname"] = id
        (bundle / "config.json").write_text(json.dumps(config))
        return str(bundle)

    def pid_file(self, name: str) -> str:
        return str(self.tmp / f"{name}.pid")

    def run(self, body: Callable[[Runc, Reaper], Awaitable[None]]) -> None:
        before = children_of_us()
        leftover = asyncio.run(self._main(body, before))
        assert leftover == [], f"containers left in {self.root}: {leftover}"
        deadline = time.monotonic() + 5
        while (left := children_of_us() - before) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not left, f"processes left: {left}"

    async def _main(self, body: Callable[[Runc, Reaper], Awaitable[None]], before: set[int]) -> list[dict]:
        reaper = Reaper()
        reaper.start(subreaper=True)
        runc = Runc(self.root, reaper=reaper)
        try:
            await asyncio.wait_for(body(runc, reaper), 120)
        finally:
            try:
                for c in await runc.list():
                    await runc.delete(c["id"], force=True)
                leftover = await runc.list()
                # Let the reaper collect what the forced deletes killed before it stops.
                deadline = time.monotonic() + 5
                while children_of_us() - before and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
            finally:
                reaper.close()
        return leftover


@pytest.fixture
def lab(tmp_path: Path, rootfs: Path, spec_template: dict) -> Lab:
    return Lab(tmp_path, rootfs, spec_template)


def running_process(args: list[str]) -> dict:
    """An OCI process spec for runc exec."""
    return {"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}, "terminal": False}


async def start_sleeper(lab: Lab, runc: Runc, id: str) -> int:
    pid = await runc.create(id, lab.bundle(id, "sleep", "100"), pid_file=lab.pid_file(id))
    await runc.start(id)
    return pid


# --- containers ---------------------------------------------------------------------------------------


def test_container_output_reaches_the_given_pipe_and_the_adopted_init_exit_is_reaped(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        r, w = os.pipe()
        try:
            bundle = lab.bundle("echo", "echo", "hello")
            pid = await runc.create("echo", bundle, pid_file=lab.pid_file("echo"), stdout=w, stderr=w)
            os.close(w)
            w = -1
            # runc create has exited: the init is not our child but was reparented to us, the subreaper.
            assert parent_of(pid) == os.getpid()
            assert (await runc.state("echo"))["status"] == "created"
            exit = reaper.watch(pid)
            await runc.start("echo")
            assert await exit == 0
            assert read_available(r) == b"hello\n"
            assert (await runc.state("echo"))["status"] == "stopped"
            await runc.delete("echo")
            with pytest.raises(RuncNotFound):
                await runc.state("echo")
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)

    lab.run(body)


def test_init_exit_code_is_the_status(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        bundle = lab.bundle("seven", "sh", "-c", "exit 7")
        pid = await runc.create("seven", bundle, pid_file=lab.pid_file("seven"))
        exit = reaper.watch(pid)
        await runc.start("seven")
        assert await exit == 7
        await runc.delete("seven")

    lab.run(body)


def test_killed_init_reports_128_plus_signal(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        pid = await start_sleeper(lab, runc, "sleeper")
        exit = reaper.watch(pid)
        assert (await runc.state("sleeper"))["status"] == "running"
        await runc.kill("sleeper", signal.SIGKILL)
        assert await exit == 128 + signal.SIGKILL
        await runc.delete("sleeper")

    lab.run(body)


def test_init_that_exits_before_anyone_watches_still_yields_its_status(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        reaped: set[int] = set()
        unsubscribe = reaper.subscribe(lambda pid, status: reaped.add(pid))
        since = asyncio.get_running_loop().time()
        pid = await runc.create("quick", lab.bundle("quick", "true"), pid_file=lab.pid_file("quick"))
        await runc.start("quick")
        while pid not in reaped:  # wait until the exit has been reaped while nobody watched it
            await asyncio.sleep(0.005)
        unsubscribe()
        exit = reaper.watch(pid, since=since)
        assert exit.done()
        assert exit.result() == 0
        await runc.delete("quick")

    lab.run(body)


def test_exec_runs_a_second_process_with_its_own_output_and_status(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        init = await start_sleeper(lab, runc, "host")
        r, w = os.pipe()
        try:
            pid = await runc.exec("host", running_process(["sh", "-c", "echo from-exec; exit 3"]),
                                  pid_file=lab.pid_file("exec"), stdout=w)
        finally:
            os.close(w)
        try:
            assert pid != init
            assert await reaper.watch(pid) == 3
            assert read_available(r) == b"from-exec\n"
        finally:
            os.close(r)
        exit = reaper.watch(init)
        await runc.delete("host", force=True)
        assert await exit == 128 + signal.SIGKILL

    lab.run(body)


def test_exec_without_detach_returns_the_process_status(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        await start_sleeper(lab, runc, "fg")
        status = await runc.exec("fg", running_process(["sh", "-c", "exit 5"]), pid_file=lab.pid_file("fg"),
                                 detach=False)
        assert status == 5
        with pytest.raises(RuncError, match=r"^runc exec fg: .*nope"):
            await runc.exec("fg", running_process(["/bin/nope"]), pid_file=lab.pid_file("fg2"), detach=False)

    lab.run(body)


def test_ps_lists_the_init_and_exec_pids(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        init = await start_sleeper(lab, runc, "ps")
        extra = await runc.exec("ps", running_process(["sleep", "100"]), pid_file=lab.pid_file("extra"))
        assert sorted(await runc.ps("ps")) == sorted([init, extra])
        await runc.kill("ps", signal.SIGKILL, all=True)
        assert await reaper.watch(extra) == 128 + signal.SIGKILL

    lab.run(body)


def test_pause_and_resume_change_the_state(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        await start_sleeper(lab, runc, "freezer")
        await runc.pause("freezer")
        assert (await runc.state("freezer"))["status"] == "paused"
        await runc.resume("freezer")
        assert (await runc.state("freezer"))["status"] == "running"

    lab.run(body)


def test_update_sets_the_memory_limit_of_the_container_cgroup(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        pid = await start_sleeper(lab, runc, "limited")
        limit = 64 * 1024 * 1024
        await runc.update("limited", {"memory": {"limit": limit}})
        with open(f"/proc/{pid}/cgroup") as f:
            path = next(line.split(":", 2)[2].strip() for line in f if line.split(":")[1] == "memory")
        with open(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes") as f:
            assert int(f.read()) == limit

    lab.run(body)


def test_stats_return_cpu_and_memory_data(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        await start_sleeper(lab, runc, "measured")
        data = await runc.stats("measured")
        assert data["cpu"]["usage"]["total"] > 0
        assert data["memory"]["usage"]["usage"] > 0

    lab.run(body)


def test_list_shows_the_containers_of_the_root(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        assert await runc.list() == []
        pid = await start_sleeper(lab, runc, "listed")
        [entry] = await runc.list()
        assert (entry["id"], entry["pid"], entry["status"]) == ("listed", pid, "running")

    lab.run(body)


def test_deleting_a_missing_container_is_fine_only_with_force(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        await runc.delete("ghost", force=True)
        with pytest.raises(RuncNotFound, match=r"^runc delete ghost: container does not exist$"):
            await runc.delete("ghost")
        with pytest.raises(RuncNotFound) as info:
            await runc.kill("ghost", signal.SIGTERM)
        assert (info.value.command, info.value.id, info.value.status) == ("kill", "ghost", 1)

    lab.run(body)


def test_create_with_a_bad_bundle_names_the_command_the_id_and_runcs_reason(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        empty = lab.tmp / "empty-bundle"
        empty.mkdir()
        with pytest.raises(RuncError) as info:
            await runc.create("broken", str(empty), pid_file=lab.pid_file("broken"))
        e = info.value
        assert str(e).startswith("runc create broken: ")
        assert "config.json" in e.reason
        assert (e.command, e.id) == ("create", "broken")
        assert e.status == 1
        assert b'"level":"error"' in e.output

    lab.run(body)


def test_twenty_containers_run_concurrently(lab: Lab) -> None:
    async def one(runc: Runc, reaper: Reaper, n: int) -> int:
        id = f"c{n}"
        pid = await runc.create(id, lab.bundle(id, "sh", "-c", f"exit {n}"), pid_file=lab.pid_file(id))
        exit = reaper.watch(pid)
        await runc.start(id)
        status = await exit
        await runc.delete(id)
        return status

    async def body(runc: Runc, reaper: Reaper) -> None:
        statuses = await asyncio.gather(*(one(runc, reaper, n) for n in range(20)))
        assert statuses == list(range(20))

    lab.run(body)


def test_lifecycle_of_a_true_container_is_quick(lab: Lab) -> None:
    """create + start + wait + delete of a `true` container, timed (printed with pytest -s)."""
    times = []

    async def body(runc: Runc, reaper: Reaper) -> None:
        bundle = lab.bundle("t", "true")
        for i in range(10):
            t0 = time.perf_counter()
            pid = await runc.create("t", bundle, pid_file=lab.pid_file(f"t{i}"))
            exit = reaper.watch(pid)
            await runc.start("t")
            assert await exit == 0
            await runc.delete("t")
            times.append(time.perf_counter() - t0)

    lab.run(body)
    median = sorted(times)[len(times) // 2]
    print(f"runc create+start+wait+delete of `true`: median {median * 1000:.1f} ms over {len(times)}")
    assert median < 5


# --- the reaper and the pidfd waiter ---------------------------------------------------------------------


def test_reaper_reports_orphans_to_subscribers_and_signal_deaths_as_128_plus_signal(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        seen: list[tuple[int, int]] = []
        unsubscribe = reaper.subscribe(lambda pid, status: seen.append((pid, status)))
        result = await reaper.run(["sh", "-c", "sleep 0.1 & echo $!"])
        orphan = int(result.stdout)
        assert await reaper.watch(orphan) == 0  # adopted by us when its parent shell exited
        child = await reaper.spawn(["sh", "-c", "kill -TERM $$"])
        assert await child.wait() == 128 + signal.SIGTERM
        unsubscribe()
        assert {orphan, child.pid} <= {pid for pid, _ in seen}

    lab.run(body)


def test_a_kept_exit_older_than_since_is_not_taken_for_a_new_process(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        result = await reaper.run(["sh", "-c", "true & echo $!"])
        orphan = int(result.stdout)
        while children_of_us() & {orphan}:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)  # let the SIGCHLD handler run: the orphan's exit is now kept, unclaimed
        later = asyncio.get_running_loop().time()
        stale = reaper.watch(orphan, since=later)
        assert not stale.done()  # as if a new process had reused the pid: its exit is still to come
        stale.cancel()

    lab.run(body)


def test_reaper_run_captures_output_and_feeds_input(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        data = os.urandom(300_000)  # more than a pipe holds: input and output must flow concurrently
        status, out, err = await reaper.run(["cat"], input=data)
        assert (status, out, err) == (0, data, b"")
        status, out, err = await reaper.run(["sh", "-c", "echo out; echo err >&2; exit 2"])
        assert (status, out, err) == (2, b"out\n", b"err\n")

    lab.run(body)


def test_reaper_spawns_and_waits_for_true_in_a_few_milliseconds(lab: Lab) -> None:
    async def body(runc: Runc, reaper: Reaper) -> None:
        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            child = await reaper.spawn(["/bin/true"])
            assert await child.wait() == 0
            times.append(time.perf_counter() - t0)
        median = sorted(times)[len(times) // 2]
        print(f"Reaper spawn+wait of /bin/true: median {median * 1000:.2f} ms")
        assert median < 0.02

    lab.run(body)


def test_closing_the_reaper_fails_pending_watchers() -> None:
    async def body() -> None:
        reaper = Reaper()
        reaper.start(subreaper=False)
        child = await reaper.spawn(["sleep", "100"], stdout=PIPE)
        try:
            reaper.close()
            with pytest.raises(ReaperClosed, match=f"pid {child.pid} has not exited"):
                await child.wait()
        finally:
            child.close()
            os.kill(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)

    asyncio.run(body())


def test_pidfd_waiter_runs_commands_without_taking_other_children(tmp_path: Path) -> None:
    async def body() -> None:
        waiter = PidfdWaiter()
        other = subprocess.Popen(["sh", "-c", "exit 9"])  # someone else's child: must stay theirs to reap
        try:
            status, out, _ = await waiter.run(["sh", "-c", "echo pidfd; exit 4"])
            assert (status, out) == (4, b"pidfd\n")
            assert (await Runc(str(tmp_path / "root"), reaper=waiter).list()) == []
            with pytest.raises(ChildProcessError, match="not a child"):
                await waiter.watch(1)
        finally:
            assert other.wait(timeout=10) == 9
            waiter.close()

    asyncio.run(body())
