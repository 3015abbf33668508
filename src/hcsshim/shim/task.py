"""Tasks (containers) and their processes (the init process and execs): the shim's backend-neutral lifecycle objects.

What really runs a task is a backend (hcsshim.shim.backend: runc on the host, or a container in a utility VM);
this module owns the states, the order of events and the one exit path, the same for every backend.

A `Process` is one process of a task, the init process (exec id "") or an exec. Its transitions:

    state     event                           next      published
    CREATED   start                           RUNNING   /tasks/start (init) | /tasks/exec-started (exec)
    CREATED   kill (exec) / delete / exited   STOPPED   nothing: it never ran ("silent")
    RUNNING   exited (then output drained)    STOPPED   /tasks/exit, exactly once
    STOPPED   delete                          DELETED   /tasks/delete (by the task)

Exit handling is one place: the backend calls `Process.exited(status)` once; the process records the status at
once (so Kill answers "already finished"), then `_finish` waits until its start event is out and its output is
drained, moves to STOPPED, publishes `/tasks/exit` once and releases every Wait.

A `Task` owns the container (its `ContainerBackend`) and the processes. Its transitions:

    CREATED --start--> RUNNING <--pause / resume--> PAUSED
    RUNNING | PAUSED --init exited--> STOPPED --delete--> DELETED
    CREATED --delete--> DELETED

Every method checks the state it may run in and fails with a ttrpc error naming the task, the process and the
state. Events keep containerd's order: create, start, exit, delete; exec-added, exec-started, exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from hcsshim.api.containerd.events import task_pb2 as ev
from hcsshim.api.containerd.task.v2 import shim_pb2 as api
from hcsshim.shim.backend import ContainerBackend, ProcessBackend, ProcessGone, Sandbox
from hcsshim.shim.stdio import StdioPaths
from hcsshim.ttrpc import errors

if TYPE_CHECKING:
    from google.protobuf.message import Message

# containerd.v1.types.Status
UNKNOWN, CREATED, RUNNING, STOPPED, PAUSED = 0, 1, 2, 3, 4
DELETED = -1  # ours: the process or task is gone from the shim (containerd never sees it)
STATUS_NAMES = {CREATED: "created", RUNNING: "running", STOPPED: "stopped", PAUSED: "paused", DELETED: "deleted"}
GO_ZERO_TIME = Timestamp(seconds=-62135596800)

# (state, event) -> next state, for processes and for tasks; anything else is a FailedPrecondition.
PROCESS_TRANSITIONS = {
    (CREATED, "start"): RUNNING,
    (CREATED, "exited"): STOPPED,
    (RUNNING, "exited"): STOPPED,
    (CREATED, "delete"): DELETED,
    (STOPPED, "delete"): DELETED,
}
TASK_TRANSITIONS = {
    (CREATED, "start"): RUNNING,
    (RUNNING, "pause"): PAUSED,
    (PAUSED, "resume"): RUNNING,
    (RUNNING, "init exited"): STOPPED,
    (PAUSED, "init exited"): STOPPED,
    (CREATED, "init exited"): STOPPED,
    (CREATED, "delete"): DELETED,
    (STOPPED, "delete"): DELETED,
}


def timestamp(ns: int | None) -> Timestamp:
    if ns is None:
        return GO_ZERO_TIME
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


class Host:
    """What tasks need from the shim that runs them (the service provides it)."""

    __slots__ = ("namespace", "publish", "spawn")

    def __init__(self, publish: Callable[[Message], None], spawn: Callable[..., asyncio.Task],
                 namespace: str) -> None:
        self.publish, self.spawn, self.namespace = publish, spawn, namespace


class Process:
    """One process of a task (see the module docstring for its state machine)."""

    def __init__(self, task: Task, exec_id: str, paths: StdioPaths, spec: dict | None = None) -> None:
        self.task = task
        self.exec_id = exec_id
        self.paths = paths
        self.spec = spec
        self.status = CREATED
        self.exit_status = 0
        self.exited_at: int | None = None
        self.backend: ProcessBackend | None = None
        self._exit_status: int | None = None  # recorded at once when the backend reports the exit
        self._started = False
        self._start_published = asyncio.Event()
        self._exited = asyncio.Event()
        self._silent = False  # exits without /tasks/exit (never started, or deleted while created)

    @property
    def pid(self) -> int:
        return self.backend.pid if self.backend is not None else 0

    @property
    def name(self) -> str:
        return f"task {self.task.id}" + (f" exec {self.exec_id}" if self.exec_id else "")

    @property
    def is_init(self) -> bool:
        return not self.exec_id

    @property
    def has_exited(self) -> bool:
        return self._exit_status is not None or self.status == STOPPED

    def _move(self, event: str, op: str | None = None) -> None:
        nxt = PROCESS_TRANSITIONS.get((self.status, event))
        if nxt is None:
            raise errors.failed_precondition(f"{op or event} {self.name}: process is "
                                             f"{STATUS_NAMES.get(self.status)}")
        self.status = nxt

    # -- the exit path -------------------------------------------------------------------------------------
    def exited(self, status: int) -> None:
        """The backend's report that the process exited (the first report counts)."""
        if self._exit_status is not None:
            return
        self._exit_status = status
        self.exited_at = time.time_ns()
        self.exit_status = status
        self.task.host.spawn(self._finish(), name=f"exit {self.name}")

    async def _finish(self) -> None:
        if self._started:
            await self._start_published.wait()
        if self.backend is not None:
            await self.backend.drain()
        if self.status in (CREATED, RUNNING):
            self._move("exited")
        if not self._silent and self._started:
            self.task.host.publish(ev.TaskExit(
                container_id=self.task.id, id=self.exec_id or self.task.id, pid=self.pid,
                exit_status=self.exit_status, exited_at=timestamp(self.exited_at)))
        if self.is_init:
            self.task.init_exited()
        self._exited.set()

    def exit_without_running(self, status: int) -> None:
        """A process that never ran (killed or deleted while created) ends here, without /tasks/exit."""
        if self._exit_status is None:
            self._exit_status = status
            self.exit_status = status
            self.exited_at = time.time_ns()
        self._silent = True
        if self.status == CREATED:
            self._move("exited")
        if self.backend is not None:
            self.backend.close()
        self._exited.set()

    async def wait(self) -> api.WaitResponse:
        await self._exited.wait()
        return api.WaitResponse(exit_status=self.exit_status, exited_at=timestamp(self.exited_at))

    # -- operations -----------------------------------------------------------------------------------------
    async def start(self) -> int:
        if self.status != CREATED or self._started:
            raise errors.failed_precondition(f"start {self.name}: process is {STATUS_NAMES.get(self.status)}")
        task = self.task
        if not self.is_init and (task.status not in (RUNNING, PAUSED) or task.init.has_exited):
            raise errors.failed_precondition(f"start {self.name}: task is not running")
        assert self.backend is not None
        self._started = True
        try:
            pid = await self.backend.start()
        except BaseException:
            self._started = False
            raise
        if self._exit_status is None:
            self._move("start")
        if self.is_init:
            task.started()
            task.host.publish(ev.TaskStart(container_id=task.id, pid=pid))
        else:
            task.host.publish(ev.TaskExecStarted(container_id=task.id, exec_id=self.exec_id, pid=pid))
        self._start_published.set()
        return pid

    async def kill(self, signal: int, all_: bool) -> None:
        if all_ and not self.is_init:
            raise errors.failed_precondition(f"kill {self.name}: cannot signal all processes of an exec")
        if self.has_exited:
            raise errors.not_found(f"kill {self.name}: process already finished")
        if not self.is_init and self.status == CREATED:
            self.exit_without_running(1)
            return
        if self.is_init and self.status == CREATED and not self._started:
            self._silent = True  # killed before it ran: its exit is not an event
        assert self.backend is not None
        try:
            await self.backend.kill(signal, all_)
        except ProcessGone:
            raise errors.not_found(f"kill {self.name}: process already finished") from None
        except errors.TtrpcError:
            if self.has_exited:  # it exited while the signal was on its way
                raise errors.not_found(f"kill {self.name}: process already finished") from None
            raise

    def state(self) -> api.StateResponse:
        status = self.status
        if status == RUNNING and self.task.status == PAUSED:
            status = PAUSED
        if status == DELETED:
            status = STOPPED
        return api.StateResponse(
            id=self.task.id, bundle=self.task.bundle, pid=self.pid, status=status, stdin=self.paths.stdin,
            stdout=self.paths.stdout, stderr=self.paths.stderr, terminal=self.paths.terminal,
            exit_status=self.exit_status, exited_at=timestamp(self.exited_at), exec_id=self.exec_id)

    async def resize(self, width: int, height: int) -> None:
        if self.backend is None or not self.paths.terminal:
            raise errors.failed_precondition(f"resize {self.name}: the process has no terminal")
        await self.backend.resize(width, height)

    def close_stdin(self) -> None:
        if self.backend is not None:
            self.backend.close_stdin()


class Task:
    """A container and its processes (see the module docstring for its state machine)."""

    def __init__(self, host: Host, id: str, bundle: str, spec: dict, paths: StdioPaths) -> None:
        self.host = host
        self.id = id
        self.bundle = bundle
        self.spec = spec
        self.status = CREATED
        self.init = Process(self, "", paths)
        self.execs: dict[str, Process] = {}
        self.container: ContainerBackend | None = None

    def __repr__(self) -> str:
        return f"<Task {self.id} {STATUS_NAMES.get(self.status)} pid={self.init.pid}>"

    def _move(self, event: str, op: str | None = None) -> None:
        nxt = TASK_TRANSITIONS.get((self.status, event))
        if nxt is None:
            raise errors.failed_precondition(f"{op or event} task {self.id}: task is "
                                             f"{STATUS_NAMES.get(self.status)}")
        self.status = nxt

    @property
    def backend(self) -> ContainerBackend:
        assert self.container is not None
        return self.container

    # -- creation -----------------------------------------------------------------------------------------
    @classmethod
    async def create(cls, host: Host, sandbox: Sandbox, req: api.CreateTaskRequest, spec: dict) -> Task:
        """Has the sandbox create the container of `req` (it cleans up on failure); `spec` is load_spec's."""
        paths = StdioPaths(req.stdin, req.stdout, req.stderr, req.terminal)
        if paths.terminal and paths.stderr:
            raise errors.invalid_argument(f"create task {req.id}: terminal processes have no separate stderr: "
                                          "stderr must be empty")
        sandbox.accepts(req, spec)
        task = cls(host, req.id, req.bundle, spec, paths)
        task.container = await sandbox.create_container(req, spec, paths, task.init.exited)
        task.init.backend = task.container.init
        return task

    # -- processes ----------------------------------------------------------------------------------------
    def process(self, exec_id: str) -> Process:
        if not exec_id:
            return self.init
        proc = self.execs.get(exec_id)
        if proc is None:
            raise errors.not_found(f"task {self.id}: exec {exec_id}")
        return proc

    def add_exec(self, req: api.ExecProcessRequest) -> Process:
        if req.exec_id in self.execs:
            raise errors.already_exists(f"exec {req.exec_id} in task {self.id}: id already in use")
        if self.status not in (RUNNING, PAUSED) or self.init.has_exited:
            raise errors.failed_precondition(f"exec {req.exec_id} in task {self.id}: task is not running")
        try:
            spec = json.loads(req.spec.value) if req.spec.value else None
        except ValueError as exc:
            raise errors.invalid_argument(f"exec {req.exec_id} in task {self.id}: invalid process spec: "
                                          f"{exc}") from None
        if not isinstance(spec, dict) or not spec.get("args"):
            raise errors.invalid_argument(f"exec {req.exec_id} in task {self.id}: the process spec needs args")
        if req.terminal and req.stderr:
            raise errors.failed_precondition(f"exec {req.exec_id} in task {self.id}: a terminal process has "
                                             "no separate stderr")
        spec["terminal"] = bool(req.terminal)
        paths = StdioPaths(req.stdin, req.stdout, req.stderr, req.terminal)
        proc = Process(self, req.exec_id, paths, spec)
        proc.backend = self.backend.new_exec(req.exec_id, spec, paths, proc.exited)
        self.execs[req.exec_id] = proc
        self.host.publish(ev.TaskExecAdded(container_id=self.id, exec_id=req.exec_id))
        return proc

    def started(self) -> None:
        if self.status == CREATED:
            self._move("start")

    def init_exited(self) -> None:
        if self.status in (CREATED, RUNNING, PAUSED):
            self._move("init exited")

    # -- container operations -----------------------------------------------------------------------------
    async def pause(self) -> None:
        if self.status != RUNNING:
            raise errors.failed_precondition(f"pause task {self.id}: task is {STATUS_NAMES.get(self.status)}")
        await self.backend.pause()
        self._move("pause")
        self.host.publish(ev.TaskPaused(container_id=self.id))

    async def resume(self) -> None:
        if self.status != PAUSED:
            raise errors.failed_precondition(f"resume task {self.id}: task is {STATUS_NAMES.get(self.status)}")
        await self.backend.resume()
        self._move("resume")
        if self.init.has_exited:
            self.init_exited()
        self.host.publish(ev.TaskResumed(container_id=self.id))

    async def update(self, resources: dict) -> None:
        if self.init.has_exited:
            raise errors.not_found(f"update task {self.id}: task already finished")
        await self.backend.update(resources)

    async def pids(self) -> list[int]:
        if self.status == CREATED and not self.init.pid:
            return []
        return await self.backend.pids()

    async def stats(self) -> Message:
        if self.init.has_exited:
            raise errors.not_found(f"stats task {self.id}: task already finished")
        return await self.backend.stats()

    async def delete_process(self, exec_id: str) -> api.DeleteResponse:
        """Deletes an exec, or the init process and with it the whole container."""
        proc = self.process(exec_id)
        if proc.status == RUNNING and not proc.has_exited:
            raise errors.failed_precondition(f"delete {proc.name}: process is running")
        if proc.has_exited and not proc._exited.is_set():
            await proc._exited.wait()  # exit reported, output still draining: finish the exit first
        if not exec_id:
            await self._delete_container()
        else:
            if proc.status == CREATED:
                proc.exit_without_running(0)
            if proc.backend is not None:
                proc.backend.close()
            del self.execs[exec_id]
        proc._move("delete")
        resp = api.DeleteResponse(pid=proc.pid, exit_status=proc.exit_status, exited_at=timestamp(proc.exited_at))
        self.host.publish(ev.TaskDelete(container_id=self.id, pid=proc.pid, exit_status=proc.exit_status,
                                        exited_at=timestamp(proc.exited_at), id=exec_id))
        return resp

    async def _delete_container(self) -> None:
        init = self.init
        for proc in self.execs.values():
            if proc.status == CREATED and not proc.has_exited:
                proc.exit_without_running(1)
        if init.status == CREATED:
            init.exit_without_running(0)
        await self.backend.delete()
        for proc in [init, *self.execs.values()]:
            if proc.backend is not None:
                proc.backend.close()
        self.init_exited()
        self._move("delete")


def load_spec(task_id: str, bundle: str) -> dict:
    """Reads and checks `<bundle>/config.json`; a clear InvalidArgument names what is wrong."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            spec = json.loads(f.read())
    except FileNotFoundError:
        raise errors.invalid_argument(f"create task {task_id}: {path}: no such file") from None
    except OSError as exc:
        raise errors.invalid_argument(f"create task {task_id}: {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise errors.invalid_argument(f"create task {task_id}: {path}: invalid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise errors.invalid_argument(f"create task {task_id}: {path}: not a JSON object")
    process = spec.get("process")
    if not isinstance(process, dict) or not isinstance(process.get("args"), list) or not process["args"]:
        raise errors.invalid_argument(f"create task {task_id}: {path}: process.args must be a non-empty list")
    root = spec.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
        raise errors.invalid_argument(f"create task {task_id}: {path}: root.path must be set")
    annotations = spec.get("annotations")
    if annotations is not None and (not isinstance(annotations, dict)
                                    or not all(isinstance(v, str) for v in annotations.values())):
        raise errors.invalid_argument(f"create task {task_id}: {path}: annotations must map strings to strings")
    return spec
