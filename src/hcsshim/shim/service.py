"""The `containerd.task.v2.Task` ttrpc service of the shim: decode, find the task or process, call it, encode.

The service holds the tasks this shim serves (one, or a pod's several), the sandbox they run in (opened by the
first Create, hcsshim.shim.sandbox: the host with runc, or a utility VM; closed when its last task is deleted),
the background tasks it owns (exit handling) and the shutdown request. Task and process behaviour lives in
hcsshim.shim.task, the backends behind hcsshim.shim.backend; the service never asks which backend it serves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from google.protobuf.empty_pb2 import Empty

from hcsshim.api.containerd.events import task_pb2 as ev
from hcsshim.api.containerd.task.v2 import shim_pb2 as api
from hcsshim.api.containerd.types.task_pb2 import ProcessInfo
from hcsshim.api.runc.options.oci_pb2 import ProcessDetails
from hcsshim.shim import options
from hcsshim.shim.events import pack_any
from hcsshim.shim.paths import DELETE_RESPONSE_FILE, write_file_atomic
from hcsshim.shim.sandbox import open_sandbox
from hcsshim.shim.task import Host, Task, load_spec
from hcsshim.ttrpc import errors

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from hcsshim.runc import Reaper, Runc
    from hcsshim.shim.backend import Sandbox
    from hcsshim.ttrpc.server import RequestContext

log = logging.getLogger("hcsshim.shim.service")

SERVICE = "containerd.task.v2.Task"
RESOURCES_LINUX = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"


class TaskService:
    """State: SERVING -> SHUTTING_DOWN (a Shutdown found no task left; the daemon then exits)."""

    def __init__(self, *, shim_id: str, namespace: str, runc: Runc, reaper: Reaper,
                 publish: Callable[[Message], None], debug: bool = False) -> None:
        self.shim_id = shim_id
        self.namespace = namespace
        self.tasks: dict[str, Task] = {}
        self._creating: set[str] = set()
        self._background: set[asyncio.Task] = set()
        self.shutdown_requested = asyncio.Event()
        self.host = Host(publish, self._spawn, namespace)
        self.publish = publish
        self.runc, self.reaper, self.debug = runc, reaper, debug
        self.sandbox: Sandbox | None = None  # opened by the first Create (hcsshim.shim.sandbox)

    def _spawn(self, coro: Awaitable, *, name: str | None = None) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)
        return task

    async def close(self) -> None:
        """Cancels and awaits every background task the service owns."""
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.sandbox is not None:
            await self.sandbox.close()
            self.sandbox = None

    def methods(self) -> dict[str, tuple[type, Callable]]:
        return {
            "State": (api.StateRequest, self.state),
            "Create": (api.CreateTaskRequest, self.create),
            "Start": (api.StartRequest, self.start),
            "Delete": (api.DeleteRequest, self.delete),
            "Pids": (api.PidsRequest, self.pids),
            "Pause": (api.PauseRequest, self.pause),
            "Resume": (api.ResumeRequest, self.resume),
            "Checkpoint": (api.CheckpointTaskRequest, self.checkpoint),
            "Kill": (api.KillRequest, self.kill),
            "Exec": (api.ExecProcessRequest, self.exec),
            "ResizePty": (api.ResizePtyRequest, self.resize_pty),
            "CloseIO": (api.CloseIORequest, self.close_io),
            "Update": (api.UpdateTaskRequest, self.update),
            "Wait": (api.WaitRequest, self.wait),
            "Stats": (api.StatsRequest, self.stats),
            "Connect": (api.ConnectRequest, self.connect),
            "Shutdown": (api.ShutdownRequest, self.shutdown),
        }

    async def _close_sandbox_if_empty(self) -> None:
        if self.sandbox is not None and not self.tasks and not self._creating and self.sandbox.empty:
            sandbox, self.sandbox = self.sandbox, None
            await sandbox.close()

    def _task(self, id: str) -> Task:
        task = self.tasks.get(id)
        if task is None:
            raise errors.not_found(f"task {id}")
        return task

    # -- RPCs ----------------------------------------------------------------------------------------------
    async def create(self, ctx: RequestContext, req: api.CreateTaskRequest) -> api.CreateTaskResponse:
        if not req.id:
            raise errors.invalid_argument("create task: the task id is empty")
        if req.id in self.tasks or req.id in self._creating:
            raise errors.already_exists(f"create task {req.id}: task already exists")
        if req.checkpoint:
            raise errors.unimplemented(f"create task {req.id}: restoring from a checkpoint")
        spec = load_spec(req.id, req.bundle)
        opts = options.parse(req.id, req.options)
        options.apply_to_spec(spec, opts)
        self._creating.add(req.id)
        try:
            if self.sandbox is None:
                self.sandbox = await open_sandbox(self.host, req, spec, opts, runc=self.runc, reaper=self.reaper,
                                                  debug=self.debug)
            task = await Task.create(self.host, self.sandbox, req, spec)
        except BaseException:
            self._creating.discard(req.id)
            await self._close_sandbox_if_empty()
            raise
        self._creating.discard(req.id)
        self.tasks[req.id] = task
        self.publish(ev.TaskCreate(
            container_id=req.id, bundle=req.bundle, rootfs=req.rootfs,
            io=ev.TaskIO(stdin=req.stdin, stdout=req.stdout, stderr=req.stderr, terminal=req.terminal),
            checkpoint=req.checkpoint, pid=task.init.pid))
        log.info("created task %s pid %d", req.id, task.init.pid)
        return api.CreateTaskResponse(pid=task.init.pid)

    async def start(self, ctx: RequestContext, req: api.StartRequest) -> api.StartResponse:
        proc = self._task(req.id).process(req.exec_id)
        return api.StartResponse(pid=await proc.start())

    async def delete(self, ctx: RequestContext, req: api.DeleteRequest) -> api.DeleteResponse:
        task = self._task(req.id)
        resp = await task.delete_process(req.exec_id)
        if not req.exec_id:
            del self.tasks[req.id]
            assert self.sandbox is not None
            await self.sandbox.container_deleted(req.id)
            await self._close_sandbox_if_empty()
            try:
                write_file_atomic(os.path.join(task.bundle, DELETE_RESPONSE_FILE), resp.SerializeToString())
            except OSError as exc:
                log.warning("delete task %s: saving the delete response: %s", req.id, exc)
        return resp

    async def pids(self, ctx: RequestContext, req: api.PidsRequest) -> api.PidsResponse:
        task = self._task(req.id)
        by_pid = {p.pid: p.exec_id for p in task.execs.values() if p.pid}
        infos = []
        for pid in await task.pids():
            info = ProcessInfo(pid=pid)
            exec_id = by_pid.get(pid)
            if exec_id:
                info.info.CopyFrom(pack_any(ProcessDetails(exec_id=exec_id)))
            infos.append(info)
        return api.PidsResponse(processes=infos)

    async def pause(self, ctx: RequestContext, req: api.PauseRequest) -> Empty:
        await self._task(req.id).pause()
        return Empty()

    async def resume(self, ctx: RequestContext, req: api.ResumeRequest) -> Empty:
        await self._task(req.id).resume()
        return Empty()

    async def checkpoint(self, ctx: RequestContext, req: api.CheckpointTaskRequest) -> Empty:
        raise errors.unimplemented(f"checkpoint task {req.id}")

    async def kill(self, ctx: RequestContext, req: api.KillRequest) -> Empty:
        await self._task(req.id).process(req.exec_id).kill(req.signal, req.all)
        return Empty()

    async def exec(self, ctx: RequestContext, req: api.ExecProcessRequest) -> Empty:
        if not req.exec_id:
            raise errors.invalid_argument(f"exec in task {req.id}: the exec id is empty")
        self._task(req.id).add_exec(req)
        return Empty()

    async def resize_pty(self, ctx: RequestContext, req: api.ResizePtyRequest) -> Empty:
        await self._task(req.id).process(req.exec_id).resize(req.width, req.height)
        return Empty()

    async def close_io(self, ctx: RequestContext, req: api.CloseIORequest) -> Empty:
        proc = self._task(req.id).process(req.exec_id)
        if req.stdin:
            proc.close_stdin()
        return Empty()

    async def update(self, ctx: RequestContext, req: api.UpdateTaskRequest) -> Empty:
        task = self._task(req.id)
        if not req.resources.type_url and not req.resources.value:
            raise errors.invalid_argument(f"update task {req.id}: resources must be set")
        if req.resources.type_url != RESOURCES_LINUX:
            raise errors.invalid_argument(f"update task {req.id}: resources of type {req.resources.type_url!r}: "
                                          f"expected {RESOURCES_LINUX}")
        try:
            resources = json.loads(req.resources.value)
        except ValueError as exc:
            raise errors.invalid_argument(f"update task {req.id}: resources: invalid JSON: {exc}") from None
        if not isinstance(resources, dict):
            raise errors.invalid_argument(f"update task {req.id}: resources: not a JSON object")
        await task.update(resources)
        return Empty()

    async def wait(self, ctx: RequestContext, req: api.WaitRequest) -> api.WaitResponse:
        return await self._task(req.id).process(req.exec_id).wait()

    async def state(self, ctx: RequestContext, req: api.StateRequest) -> api.StateResponse:
        return self._task(req.id).process(req.exec_id).state()

    async def stats(self, ctx: RequestContext, req: api.StatsRequest) -> api.StatsResponse:
        return api.StatsResponse(stats=pack_any(await self._task(req.id).stats()))

    async def connect(self, ctx: RequestContext, req: api.ConnectRequest) -> api.ConnectResponse:
        task = self.tasks.get(req.id)
        return api.ConnectResponse(shim_pid=os.getpid(), task_pid=task.init.pid if task else 0)

    async def shutdown(self, ctx: RequestContext, req: api.ShutdownRequest) -> Empty:
        if self.tasks or self._creating:
            log.debug("shutdown %s: %d task(s) left, not exiting", req.id, len(self.tasks))
            return Empty()
        log.info("shutdown: no task left, exiting")
        self.shutdown_requested.set()
        return Empty()


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background %s failed", task.get_name(), exc_info=task.exception())

