"""The backend-neutral task and exec state machines (hcsshim.shim.task) over a scripted backend: the transitions,
the events in containerd's order, exactly one /tasks/exit per process that ran, and none for one that never did.

The backend here is a test double of our own interface (hcsshim.shim.backend), not of anything on Linux: the real
backends (runc, utility VMs) are driven end to end by tests/integration/test_shim*.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hcsshim.api.containerd.task.v2 import shim_pb2 as api
from hcsshim.shim.backend import ContainerBackend, ExitCallback, ProcessBackend, ProcessGone, Sandbox
from hcsshim.shim.stdio import StdioPaths
from hcsshim.shim.task import CREATED, DELETED, PAUSED, RUNNING, STOPPED, Host, Task, load_spec
from hcsshim.ttrpc import Code, TtrpcError


class ScriptedProcess(ProcessBackend):
    def __init__(self, on_exit: ExitCallback, pid: int) -> None:
        self.on_exit = on_exit
        self.next_pid = pid
        self.signals: list[int] = []
        self.closed = False

    async def start(self) -> int:
        self.pid = self.next_pid
        return self.pid

    async def kill(self, signal: int, all_: bool) -> None:
        if self.closed:
            raise ProcessGone
        self.signals.append(signal)
        self.on_exit(128 + signal)

    async def resize(self, width: int, height: int) -> None:
        return None

    def close_stdin(self) -> None:
        return None

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def close(self) -> None:
        self.closed = True


class ScriptedContainer(ContainerBackend):
    def __init__(self, on_init_exit: ExitCallback) -> None:
        self.init = ScriptedProcess(on_init_exit, 100)
        self.execs: list[ScriptedProcess] = []
        self.deleted = False

    def new_exec(self, exec_id: str, spec: dict, paths: StdioPaths, on_exit: ExitCallback) -> ProcessBackend:
        p = ScriptedProcess(on_exit, 200 + len(self.execs))
        self.execs.append(p)
        return p

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...

    async def update(self, resources: dict) -> None: ...

    async def pids(self) -> list[int]:
        return [self.init.pid]

    async def stats(self):
        raise NotImplementedError

    async def delete(self) -> None:
        self.deleted = True


class ScriptedSandbox(Sandbox):
    def __init__(self) -> None:
        self.containers: list[ScriptedContainer] = []

    async def create_container(self, req, spec, paths, on_init_exit):
        c = ScriptedContainer(on_init_exit)
        self.containers.append(c)
        return c


class Events:
    def __init__(self) -> None:
        self.topics: list[tuple[str, str]] = []
        self.tasks: set[asyncio.Task] = set()

    def publish(self, event) -> None:
        self.topics.append((event.DESCRIPTOR.name, getattr(event, "exec_id", "") or getattr(event, "id", "")))

    def spawn(self, coro, *, name: str | None = None) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        return t

    async def settle(self) -> None:
        while pending := [t for t in self.tasks if not t.done()]:
            await asyncio.gather(*pending)


def bundle(tmp_path: Path) -> str:
    (tmp_path / "config.json").write_text(json.dumps({"process": {"args": ["sh"]}, "root": {"path": "rootfs"}}))
    return str(tmp_path)


async def new_task(tmp_path: Path, events: Events) -> tuple[Task, ScriptedContainer]:
    sandbox = ScriptedSandbox()
    req = api.CreateTaskRequest(id="t1", bundle=bundle(tmp_path))
    task = await Task.create(Host(events.publish, events.spawn, "default"), sandbox, req,
                             load_spec("t1", req.bundle))
    return task, sandbox.containers[0]


def test_a_run_publishes_start_exit_and_delete_once_each_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        events = Events()
        task, container = await new_task(tmp_path, events)
        assert task.status == CREATED and task.init.status == CREATED
        assert await task.init.start() == 100
        assert task.status == RUNNING
        container.init.on_exit(0)
        container.init.on_exit(9)  # a second report of the same exit changes nothing
        await events.settle()
        assert task.status == STOPPED and task.init.status == STOPPED
        assert (await task.init.wait()).exit_status == 0
        resp = await task.delete_process("")
        assert resp.exit_status == 0 and container.deleted and task.status == DELETED
        assert [t for t, _ in events.topics] == ["TaskStart", "TaskExit", "TaskDelete"]

    asyncio.run(main())


def test_an_exec_killed_before_it_started_ends_without_an_exit_event(tmp_path: Path) -> None:
    async def main() -> None:
        events = Events()
        task, _container = await new_task(tmp_path, events)
        await task.init.start()
        req = api.ExecProcessRequest(id="t1", exec_id="e1")
        req.spec.value = json.dumps({"args": ["true"]}).encode()
        proc = task.add_exec(req)
        await proc.kill(9, False)
        assert proc.status == STOPPED and (await proc.wait()).exit_status == 1
        with pytest.raises(TtrpcError) as err:
            await proc.start()
        assert err.value.code == Code.FAILED_PRECONDITION
        await task.delete_process("e1")
        assert [t for t, _ in events.topics] == ["TaskStart", "TaskExecAdded", "TaskDelete"]

    asyncio.run(main())


def test_a_running_process_cannot_be_deleted_and_a_finished_one_cannot_be_killed(tmp_path: Path) -> None:
    async def main() -> None:
        events = Events()
        task, _container = await new_task(tmp_path, events)
        await task.init.start()
        with pytest.raises(TtrpcError) as err:
            await task.delete_process("")
        assert err.value.code == Code.FAILED_PRECONDITION and "process is running" in err.value.message
        await task.init.kill(9, False)
        await events.settle()
        assert task.init.exit_status == 137
        with pytest.raises(TtrpcError) as err:
            await task.init.kill(9, False)
        assert err.value.code == Code.NOT_FOUND
        assert [t for t, _ in events.topics].count("TaskExit") == 1

    asyncio.run(main())


def test_pause_and_resume_follow_the_transition_table(tmp_path: Path) -> None:
    async def main() -> None:
        events = Events()
        task, _ = await new_task(tmp_path, events)
        with pytest.raises(TtrpcError) as err:
            await task.pause()
        assert err.value.code == Code.FAILED_PRECONDITION and "task is created" in err.value.message
        await task.init.start()
        await task.pause()
        assert task.status == PAUSED and task.init.state().status == PAUSED
        await task.resume()
        assert task.status == RUNNING
        with pytest.raises(TtrpcError):
            await task.resume()

    asyncio.run(main())


def test_deleting_a_task_that_never_started_stops_it_silently(tmp_path: Path) -> None:
    async def main() -> None:
        events = Events()
        task, container = await new_task(tmp_path, events)
        resp = await task.delete_process("")
        assert container.deleted and task.init.status == DELETED and resp.exit_status == 0
        assert [t for t, _ in events.topics] == ["TaskDelete"]

    asyncio.run(main())
