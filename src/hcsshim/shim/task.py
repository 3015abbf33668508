"""Tasks (containers run by runc) and their processes (the init process and execs): the shim's lifecycle objects.

A `Process` is one process of a task, the init process (exec id "") or an exec:

    CREATED --start()--> RUNNING --(reaped)--> STOPPED --delete()--> DELETED
       |  \\--kill()/delete() before start---------^ (no /tasks/exit: it never started)
       \\-- the container may be PAUSED while its init is RUNNING (Task.pause/resume)

Exit handling is one place: the reaper reports the pid's wait status once (`Process._reaped`), the process
records it at once (so Kill answers "already finished"), then `_finish` waits until its start event is out and
its output is drained, moves to STOPPED, publishes `/tasks/exit` once and releases every Wait.

A `Task` owns the container: its bundle, the rootfs mounts, the runc container and the processes. Its states:

    CREATED --start()--> RUNNING <--pause()/resume()--> PAUSED
    RUNNING/PAUSED --(init exited)--> STOPPED --delete()--> DELETED
    CREATED --delete()--> DELETED

Every method checks the state it may run in and fails with a ttrpc error naming the task, the process and the
state. Events keep containerd's order: create, start, exit, delete; exec-added, exec-started, exit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from hcsshim import mount as mounts
from hcsshim.api.containerd.events import task_pb2 as ev
from hcsshim.api.containerd.task.v2 import shim_pb2 as api
from hcsshim.api.containerd.types.mount_pb2 import Mount
from hcsshim.runc import RuncError
from hcsshim.shim.oom import OOMWatcher
from hcsshim.shim.stdio import ProcessIO, StdioError, StdioPaths
from hcsshim.ttrpc import errors

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from hcsshim.runc import Reaper, Runc

log = logging.getLogger("hcsshim.shim.task")

# containerd.v1.types.Status
UNKNOWN, CREATED, RUNNING, STOPPED, PAUSED = 0, 1, 2, 3, 4
STATUS_NAMES = {CREATED: "created", RUNNING: "running", STOPPED: "stopped", PAUSED: "paused"}
GO_ZERO_TIME = Timestamp(seconds=-62135596800)


def timestamp(ns: int | None) -> Timestamp:
    if ns is None:
        return GO_ZERO_TIME
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


class Host:
    """What tasks need from the shim that runs them (the service provides it)."""

    __slots__ = ("namespace", "publish", "reaper", "runc", "spawn")

    def __init__(self, runc: Runc, reaper: Reaper, publish: Callable[[Message], None],
                 spawn: Callable[..., asyncio.Task], namespace: str) -> None:
        self.runc, self.reaper, self.publish, self.spawn, self.namespace = runc, reaper, publish, spawn, namespace


class Process:
    """One process of a task (see the module docstring for its state machine)."""

    def __init__(self, task: Task, exec_id: str, paths: StdioPaths, spec: dict | None = None) -> None:
        self.task = task
        self.exec_id = exec_id
        self.paths = paths
        self.spec = spec
        self.pid = 0
        self.status = CREATED
        self.exit_status = 0
        self.exited_at: int | None = None
        self.io: ProcessIO | None = None
        self._reaped_status: int | None = None
        self._started = False
        self._start_published = asyncio.Event()
        self._exited = asyncio.Event()
        self._silent = False  # exit without /tasks/exit (never started, or deleted while created)

    @property
    def name(self) -> str:
        return f"task {self.task.id}" + (f" exec {self.exec_id}" if self.exec_id else "")

    @property
    def is_init(self) -> bool:
        return not self.exec_id

    @property
    def has_exited(self) -> bool:
        return self._reaped_status is not None or self.status == STOPPED

    def _state_error(self, op: str) -> errors.TtrpcError:
        return errors.failed_precondition(f"{op} {self.name}: process is {STATUS_NAMES.get(self.status)}")

    # -- exit handling ----------------------------------------------------------------------------------
    def watch(self, since: float) -> None:
        """Routes the reaper's report for self.pid to _reaped.

        The reaper keeps exits nobody watched yet; `since` (loop time before runc ran) makes sure an older exit
        of a recycled pid is never taken for this process's."""
        fut = self.task.host.reaper.watch(self.pid, since=since)
        fut.add_done_callback(self._reaped)

    def _reaped(self, fut: asyncio.Future[int]) -> None:
        if fut.cancelled() or self._reaped_status is not None:
            return
        self._reaped_status = fut.result()
        self.exited_at = time.time_ns()
        self.exit_status = self._reaped_status
        self.task.host.spawn(self._finish(), name=f"exit {self.name}")

    async def _finish(self) -> None:
        if self._started:
            await self._start_published.wait()
        if self.io is not None:
            await self.io.drain()
        self.status = STOPPED
        if not self._silent and self._started:
            self.task.host.publish(ev.TaskExit(
                container_id=self.task.id, id=self.exec_id or self.task.id, pid=self.pid,
                exit_status=self.exit_status, exited_at=timestamp(self.exited_at)))
        if self.is_init:
            self.task.init_exited()
        self._exited.set()

    def exit_without_running(self, status: int) -> None:
        """A process that never ran (killed or deleted while created) ends here, without /tasks/exit."""
        if self._reaped_status is None:
            self._reaped_status = status
            self.exit_status = status
            self.exited_at = time.time_ns()
        self._silent = True
        self.status = STOPPED
        if self.io is not None:
            self.io.close()
        self._exited.set()

    async def wait(self) -> api.WaitResponse:
        await self._exited.wait()
        return api.WaitResponse(exit_status=self.exit_status, exited_at=timestamp(self.exited_at))

    # -- operations --------------------------------------------------------------------------------------
    async def start(self) -> int:
        if self.status != CREATED or self._started:
            raise self._state_error("start")
        self._started = True
        host = self.task.host
        try:
            if self.is_init:
                await self.task._runc("start", host.runc.start(self.task.id))
            else:
                await self._start_exec()
        except BaseException:
            self._started = False
            raise
        if self._reaped_status is None:
            self.status = RUNNING
        if self.is_init:
            self.task.status = RUNNING
            host.publish(ev.TaskStart(container_id=self.task.id, pid=self.pid))
        else:
            host.publish(ev.TaskExecStarted(container_id=self.task.id, exec_id=self.exec_id, pid=self.pid))
        self._start_published.set()
        return self.pid

    async def _start_exec(self) -> None:
        task = self.task
        if task.status not in (RUNNING, PAUSED) or task.init.has_exited:
            raise errors.failed_precondition(f"start {self.name}: task is not running")
        try:
            self.io = ProcessIO.open(self.paths)
        except StdioError as exc:
            raise errors.invalid_argument(f"start {self.name}: {exc}") from None
        pid_file = os.path.join(task.bundle, f"{self.exec_id}.pid")
        since = asyncio.get_running_loop().time()
        try:
            self.pid = await task._runc(f"exec {self.exec_id} in", task.run_with_console(self.io, task.host.runc.exec(
                task.id, self.spec or {}, pid_file=pid_file, console_socket=self.io.console_socket,
                stdin=self.io.child_fds[0], stdout=self.io.child_fds[1], stderr=self.io.child_fds[2],
                detach=True)))
        except BaseException:
            self.io.close()
            self.io = None
            raise
        finally:
            _remove(pid_file)
        self.io.started()
        self.watch(since)

    async def kill(self, signal: int, all_: bool) -> None:
        if all_ and not self.is_init:
            raise errors.failed_precondition(f"kill {self.name}: cannot signal all processes of an exec")
        if self.has_exited:
            raise errors.not_found(f"kill {self.name}: process already finished")
        if not self.is_init:
            if self.status == CREATED:
                self.exit_without_running(1)
                return
            try:
                os.kill(self.pid, signal)
            except ProcessLookupError:
                raise errors.not_found(f"kill {self.name}: process already finished") from None
            return
        if self.status == CREATED and not self._started:
            self._silent = True
        try:
            await self.task.host.runc.kill(self.task.id, signal, all=all_)
        except RuncError as exc:
            if self.has_exited or "not running" in str(exc) or "does not exist" in str(exc):
                raise errors.not_found(f"kill {self.name}: process already finished") from None
            raise errors.TtrpcError(errors.Code.UNKNOWN, f"kill {self.name}: {exc}") from None

    def state(self) -> api.StateResponse:
        status = self.status
        if status == RUNNING and self.task.status == PAUSED:
            status = PAUSED
        return api.StateResponse(
            id=self.task.id, bundle=self.task.bundle, pid=self.pid, status=status, stdin=self.paths.stdin,
            stdout=self.paths.stdout, stderr=self.paths.stderr, terminal=self.paths.terminal,
            exit_status=self.exit_status, exited_at=timestamp(self.exited_at), exec_id=self.exec_id)

    def resize(self, width: int, height: int) -> None:
        if self.io is None or self.io.master is None:
            raise errors.failed_precondition(f"resize {self.name}: the process has no terminal")
        self.io.resize(width, height)

    def close_stdin(self) -> None:
        if self.io is not None:
            self.io.close_stdin()


class Task:
    """A container and its processes (see the module docstring for its state machine)."""

    def __init__(self, host: Host, id: str, bundle: str, spec: dict, paths: StdioPaths,
                 rootfs: list[Mount]) -> None:
        self.host = host
        self.id = id
        self.bundle = bundle
        self.spec = spec
        self.rootfs = rootfs
        self.status = CREATED
        self.init = Process(self, "", paths)
        self.execs: dict[str, Process] = {}
        self._mounted = 0
        self._oom: OOMWatcher | None = None

    def __repr__(self) -> str:
        return f"<Task {self.id} {STATUS_NAMES.get(self.status)} pid={self.init.pid}>"

    # -- creation ----------------------------------------------------------------------------------------
    @classmethod
    async def create(cls, host: Host, req: api.CreateTaskRequest) -> Task:
        """Mounts the rootfs, opens stdio and runs `runc create`; leaves nothing behind when it fails."""
        spec = load_spec(req.id, req.bundle)
        paths = StdioPaths(req.stdin, req.stdout, req.stderr, req.terminal)
        task = cls(host, req.id, req.bundle, spec, paths, list(req.rootfs))
        try:
            await task._create()
        except BaseException:
            await task._undo_create()
            raise
        return task

    async def _create(self) -> None:
        rootfs_dir = os.path.join(self.bundle, "rootfs")
        if self.rootfs:
            os.makedirs(rootfs_dir, exist_ok=True)
            for m in self.rootfs:
                try:
                    mounts.mount(m.type, m.source, list(m.options), rootfs_dir)
                except OSError as exc:
                    raise errors.TtrpcError(errors.Code.UNKNOWN, f"create task {self.id}: {exc}") from None
                self._mounted += 1
        else:
            root = self.spec["root"]["path"]
            path = root if os.path.isabs(root) else os.path.join(self.bundle, root)
            if not os.path.isdir(path):
                raise errors.invalid_argument(f"create task {self.id}: rootfs {path}: no such directory")
        try:
            self.init.io = ProcessIO.open(self.init.paths)
        except StdioError as exc:
            raise errors.invalid_argument(f"create task {self.id}: {exc}") from None
        io = self.init.io
        runc = self.host.runc
        since = asyncio.get_running_loop().time()
        self.init.pid = await self._runc("create", self.run_with_console(io, runc.create(
            self.id, self.bundle, pid_file=os.path.join(self.bundle, "init.pid"),
            console_socket=io.console_socket, stdin=io.child_fds[0], stdout=io.child_fds[1],
            stderr=io.child_fds[2])))
        io.started()
        self.init.watch(since)
        self._oom = OOMWatcher.for_pid(self.init.pid, lambda: self.host.publish(ev.TaskOOM(container_id=self.id)))

    async def run_with_console(self, io: ProcessIO, runc_call) -> int:
        """Runs a runc create/exec coroutine; for terminals, receives the pty master meanwhile."""
        if io.console is None:
            return await runc_call
        attach = asyncio.ensure_future(io.attach_console())
        try:
            pid = await runc_call
            await asyncio.wait_for(attach, 10)
        except BaseException:
            attach.cancel()
            raise
        return pid

    async def _undo_create(self) -> None:
        if self._oom is not None:
            self._oom.close()
        if self.init.io is not None:
            self.init.io.close()
        try:
            await self.host.runc.delete(self.id, force=True)
        except RuncError as exc:
            log.warning("create task %s: cleanup: %s", self.id, exc)
        self._unmount()
        _remove(os.path.join(self.bundle, "init.pid"))

    def _unmount(self) -> None:
        if self._mounted:
            try:
                mounts.unmount_all(os.path.join(self.bundle, "rootfs"))
            except OSError as exc:
                log.error("task %s: %s", self.id, exc)
            self._mounted = 0

    # -- processes ---------------------------------------------------------------------------------------
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
        proc = Process(self, req.exec_id, StdioPaths(req.stdin, req.stdout, req.stderr, req.terminal), spec)
        self.execs[req.exec_id] = proc
        self.host.publish(ev.TaskExecAdded(container_id=self.id, exec_id=req.exec_id))
        return proc

    def init_exited(self) -> None:
        self.status = STOPPED

    # -- container operations ------------------------------------------------------------------------------
    async def pause(self) -> None:
        if self.status != RUNNING:
            raise errors.failed_precondition(f"pause task {self.id}: task is {STATUS_NAMES.get(self.status)}")
        await self._runc("pause", self.host.runc.pause(self.id))
        self.status = PAUSED
        self.host.publish(ev.TaskPaused(container_id=self.id))

    async def resume(self) -> None:
        if self.status != PAUSED:
            raise errors.failed_precondition(f"resume task {self.id}: task is {STATUS_NAMES.get(self.status)}")
        await self._runc("resume", self.host.runc.resume(self.id))
        self.status = RUNNING if not self.init.has_exited else STOPPED
        self.host.publish(ev.TaskResumed(container_id=self.id))

    async def _runc(self, op: str, call):
        """Awaits a runc call; a RuncError becomes an UNKNOWN ttrpc error naming the operation and task."""
        try:
            return await call
        except RuncError as exc:
            raise errors.TtrpcError(errors.Code.UNKNOWN, f"{op} task {self.id}: {exc}") from None

    async def update(self, resources: dict) -> None:
        if self.init.has_exited:
            raise errors.not_found(f"update task {self.id}: task already finished")
        await self._runc("update", self.host.runc.update(self.id, resources))

    async def pids(self) -> list[int]:
        if self.status == CREATED and not self.init.pid:
            return []
        return await self._runc("pids", self.host.runc.ps(self.id))

    async def stats(self) -> dict:
        if self.init.has_exited:
            raise errors.not_found(f"stats task {self.id}: task already finished")
        return await self._runc("stats", self.host.runc.stats(self.id))

    async def delete_process(self, exec_id: str) -> api.DeleteResponse:
        """Deletes an exec, or the init process and with it the whole container."""
        proc = self.process(exec_id)
        if proc.status == RUNNING and not proc.has_exited:
            raise errors.failed_precondition(f"delete {proc.name}: process is running")
        if proc.has_exited and not proc._exited.is_set():
            await proc._exited.wait()  # reaped, output still draining: finish the exit first
        if not exec_id:
            await self._delete_container()
        else:
            if proc.status == CREATED:
                proc.exit_without_running(0)
            if proc.io is not None:
                proc.io.close()
            del self.execs[exec_id]
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
        await self._runc("delete", self.host.runc.delete(self.id, force=True))
        for proc in [init, *self.execs.values()]:
            if proc.io is not None:
                proc.io.close()
        if self._oom is not None:
            self._oom.close()
        self._unmount()
        _remove(os.path.join(self.bundle, "init.pid"))
        self.status = STOPPED


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
    return spec


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
