"""The guest agent (GCS) end to end: a real `gcs` subprocess with a private root and the `unix:` transport,
real runc and a busybox rootfs, driven by the host client `hcsshim.gcs`."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hcsshim import bridge
from hcsshim.bridge import HResultError, Requests, Rpc
from hcsshim.bridge.resources import ContainerConstraints
from hcsshim.gcs import GuestConnection
from hcsshim.testing.gcsagent import GcsAgent, running_agent
from hcsshim.testing.rootfs import oci_spec

pytestmark = pytest.mark.integration

Scenario = Callable[[GuestConnection, GcsAgent], Awaitable[Any]]


@pytest.fixture
def agent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GcsAgent]:
    """A started agent; at teardown it is stopped and must have left nothing behind."""
    with running_agent(tmp_path / "agent", mux=getattr(request, "param", False)) as a:
        yield a


def run(agent: GcsAgent, scenario: Scenario, *, timeout: float = 60) -> Any:
    """Connect to the agent, run the scenario, then power the agent off and check it exits 0."""

    async def main() -> Any:
        gc = await GuestConnection.connect(agent.host_transport(), timeout=10, guest_root=str(agent.root))
        try:
            result = await asyncio.wait_for(scenario(gc, agent), timeout)
            await gc.shutdown()
            await gc.wait_closed(10)
        finally:
            await gc.close()
            await gc.transport.close()
        return result

    result = agent.run_until_powered_off(main)
    return result


def test_echo_hello_as_init_prints_hello_exits_zero_and_notifies_once(agent: GcsAgent, rootfs: str) -> None:
    async def scenario(gc: GuestConnection, agent: GcsAgent) -> None:
        c = await gc.create_container("hello", oci_spec(rootfs, ["echo", "hello"]))
        p = await c.start_init()
        assert await p.communicate() == (b"hello\n", b"")
        assert await p.wait(10) == 0
        assert await c.wait(10) == "UnexpectedExit"
        await asyncio.sleep(0.2)  # a second notification would tear the bridge down (the Go host's rule)
        assert await gc.properties(["ProcessList"]) == {"ProcessList": []}
        assert gc.state == "ready"
        await c.delete_state()
        assert not (agent.root / "c" / "hello").exists()

    run(agent, scenario)


def test_exit_codes_are_reported_including_128_plus_signal(agent: GcsAgent, rootfs: str) -> None:
    async def scenario(gc: GuestConnection, agent: GcsAgent) -> None:
        c = await gc.create_container("codes", oci_spec(rootfs, ["sh", "-c", "exit 7"]))
        init = await c.start_init(stdout=False, stderr=False)
        assert await init.wait(10) == 7
        await c.wait(10)
        await c.delete_state()
        c = await gc.create_container("codes2", oci_spec(rootfs, ["sleep", "100"]))
        await c.start_init(stdout=False, stderr=False)
        p = await c.exec({"args": ["sh", "-c", "kill -TERM $$"]})
        await p.communicate()
        assert await p.wait(10) == 128 + signal.SIGTERM
        await c.terminate()
        assert await c.wait(10) == "ForcedExit"
        await c.delete_state()

    run(agent, scenario)


def test_a_second_process_runs_in_the_container_and_one_outside_containers(agent: GcsAgent, rootfs: str) -> None:
    async def scenario(gc: GuestConnection, agent: GcsAgent) -> None:
        init_script = "trap 'exit 7' TERM; sleep 100 & wait"
        c = await gc.create_container("execs", oci_spec(rootfs, ["sh", "-c", init_script], hostname="box"))
        init = await c.start_init(stdout=False, stderr=False)
        p = await c.exec({"args": ["sh", "-c", "hostname; echo oops >&2; exit 3"]})
        assert await p.communicate() == (b"box\n", b"oops\n")
        assert await p.wait(10) == 3
        who = await c.exec({"args": ["id", "-u"], "user": {"username": "nobody"}})
        assert await who.communicate() == (b"65534\n", b"")
        assert await who.wait(10) == 0
        props = await c.properties(["ProcessList"])
        assert {"ProcessId": init.pid} in props["ProcessList"]
        u = await gc.exec_in_uvm(["sh", "-c", "echo $GREETING from $(pwd)"], env={"GREETING": "hi",
                                 "PATH": "/usr/bin:/bin"}, cwd="/tmp")
        assert await u.communicate() == (b"hi from /tmp\n", b"")
        assert await u.wait(10) == 0
        assert not os.path.exists(f"/proc/{u.pid}")
        await c.shutdown()
        assert await c.wait(10) == "GracefulExit"
        assert await init.wait(10) == 7
        await c.delete_state()

    run(agent, scenario)


def test_ten_mib_of_stdin_round_trips_intact(agent: GcsAgent, rootfs: str) -> None:
    data = os.urandom(10 << 20)

    async def scenario(gc: GuestConnection, agent: GcsAgent) -> None:
        c = await gc.create_container("stdin", oci_spec(rootfs, ["sleep", "100"]))
        await c.start_init(stdout=False, stderr=False)
        p = await c.exec({"args": ["sha256sum"]}, stdin=True)
        out, _ = await p.communicate(data)
        assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()
        assert await p.wait(10) == 0
        cat = await c.exec({"args": ["cat"]}, stdin=True)
        echoed, _ = await cat.communicate(data)
        assert echoed == data
        await c.terminate()
        await c.wait(10)
        await c.delete_state()

    run(agent, scenario)


def test_a_hundred_mib_of_stdout_is_relayed_intact(agent: GcsAgent, rootfs: str) -> None:
    line = b"hcsshim-bridge-relay-0123456789abcdef\n"
    size = 100 << 20
    expected = hashlib.sha256((line * (size // len(line) + 1))[:size]).hexdigest()

    async def scenario(gc: GuestConnection, agent: GcsAgent) -> None:
        c = await gc.create_container("bulk", oci_spec(rootfs, ["sh", "-c", f"yes {line.decode().strip()} | "
                                                                          f"head -c {size}"]))
        p = await c.start_init()
        digest = hashlib.sha256()
        total = 0
        assert p.stdout is not None
        while chunk := await p.stdout.recv():
            digest.update(chunk)
            total += len(chunk)
        p.stdout.close()
        assert await p.read_all("stderr") == b""
        assert (total, digest.hexdigest()) == (size, expected)
        assert await p.wait(30) == 0
        await c.wait(10)
        await c.delete_state()

    run(agent, scenario, timeout=120)


def test_a_terminal_process_gets_a_pty_that_can_be_resized(agent: GcsAgent, rootfs: str) -> None:
    async def scenario(gc: GuestConnection, agent: GcsAgent) -> None:
        c = await gc.create_container("tty", oci_spec(rootfs, ["sh", "-c", "read line; stty size; tty"],
                                                      terminal=True))
        init = await c.start_init(stdin=True, terminal=True)
        assert init.stderr is None
        await init.resize(40, 120)
        assert init.stdin is not None
        await init.stdin.sendall(b"go\n")
        out = await init.read_all()
        assert b"40 120" in out
        assert b"/dev/pts/0" in out
        assert b"go" in out  # the terminal echoes input
        assert await init.wait(10) == 0
        await c.wait(10)
        await c.delete_state()
        u = await gc.exec_in_uvm(["sh", "-c", "test -t 0 && test -t 1 && echo tty"], terminal=True)
        assert await u.read_all() == b"tty\r\n"
        assert await u.wait(10) == 0

    run(agent, scenario)


def test_sigkill_ends_a_process_with_137_and_a_second_signal_is_not_delivered(agent: GcsAgent,
                                                                               rootfs: str) -> None:
    async def scenario(gc: GuestConnection, agent: GcsAgent) -> None:
        c = await gc.create_container("kill", oci_spec(rootfs, ["sleep", "100"]))
        await c.start_init(stdout=False, stderr=False)
        p = await c.exec({"args": ["sleep", "100"]}, stdout=False, stderr=False)
        with pytest.raises(HResultError) as timeout:  # a wait with a timeout that expires
            await gc.request(Rpc.WAIT_FOR_PROCESS, Requests.wait(c.id, p.pid, 50), "wait 50 ms")
        assert timeout.value.hresult == bridge.VMCOMPUTE_TIMEOUT
        with pytest.raises(HResultError, match="has no terminal"):
            await p.resize(10, 10)
        stats = (await c.properties(["Statistics"]))["LCOWMetrics"]
        assert stats["pids"]["current"] == 2 and stats["memory"]["usage"]["usage"] > 0
        await gc.modify(ContainerConstraints(linux={"memory": {"limit": 64 << 20}}), "Update", container_id=c.id)
        stats = (await c.properties(["Statistics"]))["LCOWMetrics"]
        assert stats["memory"]["usage"]["limit"] == 64 << 20
        assert await p.kill() is True
        assert await p.wait(10) == 137
        assert await p.signal(signal.SIGTERM) is False  # forgotten after its wait: ERROR_NOT_FOUND
        await c.terminate()
        await c.wait(10)
        await c.delete_state()

    run(agent, scenario)


def test_twenty_processes_run_at_once(agent: GcsAgent, rootfs: str) -> None:
    async def scenario(gc: GuestConnection, agent: GcsAgent) -> None:
        c = await gc.create_container("many", oci_spec(rootfs, ["sleep", "100"]))
        await c.start_init(stdout=False, stderr=False)

        async def one(i: int) -> tuple[bytes, int]:
            p = await c.exec({"args": ["sh", "-c", f"sleep 0.2; echo {i}; exit {i}"]})
            out, _ = await p.communicate()
            return out, await p.wait(30)

        results = await asyncio.gather(*(one(i) for i in range(20)))
        assert results == [(f"{i}\n".encode(), i) for i in range(20)]
        await c.terminate()
        await c.wait(10)
        await c.delete_state()

    run(agent, scenario)


def test_powering_off_with_running_containers_leaves_nothing_behind(agent: GcsAgent, rootfs: str) -> None:
    async def scenario(gc: GuestConnection, agent: GcsAgent) -> None:
        c = await gc.create_container("left", oci_spec(rootfs, ["sleep", "100"]))
        await c.start_init(stdout=False, stderr=False)
        await c.exec({"args": ["sleep", "100"]}, stdout=False, stderr=False)
        await gc.create_container("created-only", oci_spec(rootfs, ["sleep", "100"]))
        await gc.exec_in_uvm(["sleep", "100"], stdout=False, stderr=False)

    run(agent, scenario)  # the fixture checks: no runc container, mount, socket, cgroup or process


@pytest.mark.parametrize("agent", [True], indirect=True, ids=["mux"])
def test_the_same_exchange_works_over_the_multiplexing_transport_through_a_pipe_pair(agent: GcsAgent,
                                                                                     rootfs: str) -> None:
    data = os.urandom(1 << 20)

    async def scenario(gc: GuestConnection, agent: GcsAgent) -> None:
        c = await gc.create_container("mux", oci_spec(rootfs, ["sh", "-c", "echo hello; cat >/dev/null"]))
        init = await c.start_init(stdin=True)
        out, err = await init.communicate(b"ignored")
        assert (out, err) == (b"hello\n", b"")
        assert await init.wait(10) == 0
        assert await c.wait(10) == "UnexpectedExit"
        await c.delete_state()
        c = await gc.create_container("mux2", oci_spec(rootfs, ["sleep", "100"]))
        await c.start_init(stdout=False, stderr=False)
        p = await c.exec({"args": ["cat"]}, stdin=True)
        assert (await p.communicate(data))[0] == data
        assert await p.wait(10) == 0
        u = await gc.exec_in_uvm(["sh", "-c", "echo outside; exit 4"])
        assert await u.communicate() == (b"outside\n", b"")
        assert await u.wait(10) == 4
        await c.terminate()
        assert await c.wait(10) == "ForcedExit"
        await c.delete_state()

    run(agent, scenario)
