"""The lcow backend's sandbox: one utility VM and the containers in it, for a standalone task or for a CRI pod.

A standalone hypervisor-isolated task gets its own VM, `<task id>@vm`, which takes that one container. A CRI pod
(`io.kubernetes.cri.container-type` = sandbox, `io.kubernetes.cri.sandbox-id` = its id) gets one VM,
`<sandbox id>@vm`: the sandbox (pause) container first, then the pod's workload containers join it through the
same shim (`start` answered the sandbox's address for them), each with its own layers, scratch and rootfs.

States of a `UvmSandbox`:

    BOOTING --VM started, GCS connected--> RUNNING --last container deleted | close()--> CLOSED
    RUNNING --QEMU or the GCS died--> VM_GONE (every process of every container reports its exit once;
                                       the VM's host resources are freed at once) --close()--> CLOSED

Rules (upstream's pod.go): a standalone VM takes one container; a pod takes workloads whose sandbox-id is the
pod's, only while the sandbox container runs (FailedPrecondition), never the sandbox id again (AlreadyExists).
When the sandbox container's init exits, the pod's workloads are killed (upstream closes the VM there). Pause and
Resume of the VM's owner (the standalone task) pause and resume the whole VM; a pod's containers answer
Unimplemented, as upstream's do.

Layer images come from the host's layer cache (hcsshim.layers), shared by every shim; each container holds its
references under a holder naming this process and the task, so a shim that dies leaves only stale references.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import TYPE_CHECKING

from hcsshim.layers import LayerCache, snapshot_keys
from hcsshim.shim import options
from hcsshim.shim.backend import ContainerBackend, ExitCallback, ProcessGone, Sandbox
from hcsshim.shim.lcow import LcowContainer, guest_call
from hcsshim.shim.paths import ANNOTATION_CONTAINER_TYPE, ANNOTATION_SANDBOX_ID, uvm_id
from hcsshim.ttrpc import errors
from hcsshim.uvm import UtilityVM, UVMError

if TYPE_CHECKING:
    from hcsshim.api.containerd.task.v2 import shim_pb2 as api
    from hcsshim.api.runhcs.options.runhcs_pb2 import Options
    from hcsshim.runc import Reaper
    from hcsshim.shim.stdio import StdioPaths
    from hcsshim.shim.task import Host

log = logging.getLogger("hcsshim.shim.pod")


class UvmSandbox(Sandbox):
    """A utility VM and its containers (see the module docstring)."""

    def __init__(self, host: Host, vm: UtilityVM, *, owner_id: str, pod_id: str | None, opts: Options,
                 cache: LayerCache) -> None:
        self.host = host
        self.vm = vm
        self.owner_id = owner_id  # the standalone task, or the pod's sandbox container
        self.pod_id = pod_id
        self.opts = opts
        self.cache = cache
        self.scratch_size_gb = options.scratch_size_gb(opts)
        self.containers: dict[str, LcowContainer] = {}
        self.state = "RUNNING"
        self._watch = host.spawn(self._watch_vm(), name=f"watch uvm {vm.id}")

    @classmethod
    async def boot(cls, host: Host, req: api.CreateTaskRequest, spec: dict, opts: Options, *, reaper: Reaper,
                   run_root: str, log_level: str) -> UvmSandbox:
        """Creates and starts the VM of the task `req` (a standalone task or a pod's sandbox)."""
        annotations = spec.get("annotations") or {}
        pod_id = annotations.get(ANNOTATION_SANDBOX_ID) if annotations.get(ANNOTATION_CONTAINER_TYPE) else None
        if annotations.get(ANNOTATION_CONTAINER_TYPE) == "container":
            raise errors.not_found(f"create task {req.id}: pod sandbox {pod_id}: not served by this shim")
        uvm_opts = options.uvm_options(req.id, uvm_id(req.id), spec, opts, run_root=run_root,
                                       log_level=log_level)
        try:
            vm = await UtilityVM.create(uvm_opts, waiter=reaper)
        except UVMError as exc:
            raise errors.failed_precondition(f"create task {req.id}: {exc}") from None
        t0 = time.perf_counter()
        try:
            await vm.start()
        except BaseException as exc:
            await vm.close()
            if isinstance(exc, UVMError):
                raise errors.TtrpcError(errors.Code.UNKNOWN, f"create task {req.id}: {exc}") from None
            raise
        log.info("uvm %s: running (%s); timing vm %.3f", vm.id, vm.accel, time.perf_counter() - t0)
        return cls(host, vm, owner_id=req.id, pod_id=pod_id, opts=opts, cache=LayerCache())

    @property
    def vm_alive(self) -> bool:
        return self.state == "RUNNING"

    @property
    def empty(self) -> bool:
        return not self.containers

    def closes_after(self, task_id: str) -> bool:
        return set(self.containers) <= {task_id}

    def layer_keys(self, layer_dirs: list[str]) -> list[str]:
        return snapshot_keys(layer_dirs)

    # -- admission ----------------------------------------------------------------------------------------
    def accepts(self, req: api.CreateTaskRequest, spec: dict) -> None:
        op = f"create task {req.id}"
        if self.state != "RUNNING":
            raise errors.failed_precondition(f"{op}: the utility VM {self.vm.id} is {self.state.lower()}")
        if req.id in self.containers:
            raise errors.already_exists(f"{op}: task already exists")
        if self.pod_id is None:
            if self.containers:
                raise errors.failed_precondition(f"{op}: the utility VM {self.vm.id} of standalone task "
                                                 f"{self.owner_id} takes no other container")
            return
        annotations = spec.get("annotations") or {}
        if not self.containers:
            return  # the sandbox container itself
        if annotations.get(ANNOTATION_CONTAINER_TYPE) != "container" or \
                annotations.get(ANNOTATION_SANDBOX_ID) != self.pod_id:
            raise errors.failed_precondition(f"{op}: pod {self.pod_id} takes only its own containers "
                                             f"({ANNOTATION_CONTAINER_TYPE}=container, "
                                             f"{ANNOTATION_SANDBOX_ID}={self.pod_id})")
        sandbox = self.containers.get(self.owner_id)
        if sandbox is None or sandbox.init.exited or sandbox.init.proc is None:
            raise errors.failed_precondition(f"{op}: pod {self.pod_id}: the sandbox container is not running")

    async def create_container(self, req: api.CreateTaskRequest, spec: dict, paths: StdioPaths,
                               on_init_exit: ExitCallback) -> ContainerBackend:
        if req.id == self.owner_id and self.pod_id is not None:
            on_init_exit = self._sandbox_exit(on_init_exit)
        container = LcowContainer(self, req, spec, paths, on_init_exit)
        self.containers[req.id] = container
        try:
            await container.create()
        except BaseException:
            self.containers.pop(req.id, None)
            if not self.containers:
                await self.close()
            raise
        return container

    def _sandbox_exit(self, on_exit: ExitCallback) -> ExitCallback:
        def exited(status: int) -> None:
            on_exit(status)
            self.host.spawn(self._kill_workloads(), name=f"pod {self.pod_id}: kill workloads")
        return exited

    async def _kill_workloads(self) -> None:
        for cid, c in list(self.containers.items()):
            if cid != self.owner_id and c.init.proc is not None and not c.init.exited:
                with contextlib.suppress(errors.TtrpcError, ProcessGone):
                    await c.init.kill(signal.SIGKILL, True)

    async def container_deleted(self, task_id: str) -> None:
        self.containers.pop(task_id, None)
        if not self.containers:
            await self.close()

    # -- the VM -----------------------------------------------------------------------------------------
    async def _watch_vm(self) -> None:
        await self.vm.exited.wait()
        if self.state != "RUNNING":
            return
        self.state = "VM_GONE"
        log.warning("uvm %s: stopped unexpectedly; %d container(s) lost", self.vm.id, len(self.containers))
        for c in self.containers.values():
            c.vm_died()
        with contextlib.suppress(UVMError):
            await self.vm.close()

    async def pause(self, task_id: str) -> None:
        if task_id != self.owner_id or self.pod_id is not None:
            raise errors.unimplemented(f"pause task {task_id}: containers of a pod cannot be paused")
        await guest_call("pause", task_id, self.vm.pause())

    async def resume(self, task_id: str) -> None:
        if task_id != self.owner_id or self.pod_id is not None:
            raise errors.unimplemented(f"resume task {task_id}: containers of a pod cannot be resumed")
        await guest_call("resume", task_id, self.vm.resume())

    async def close(self) -> None:
        if self.state == "CLOSED":
            return
        self.state = "CLOSED"
        t0 = time.perf_counter()
        try:
            await self.vm.close()
        except UVMError as exc:
            log.error("%s", exc)
        log.info("uvm %s: closed; timing vm-close %.3f", self.vm.id, time.perf_counter() - t0)
        if not self._watch.done():
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
