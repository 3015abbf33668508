"""The lcow backend's container and processes: a Linux container inside a utility VM, run by the GCS with runc.

`LcowContainer` is one container in its sandbox's VM (hcsshim.shim.pod owns the VM). Creating it follows
upstream's hcsoci.CreateContainer for LCOW, in order, each step undone in reverse if a later one fails:

    layers   each read-only layer directory -> an ext4 image from the host's layer cache (built once, shared
             by every shim) -> SCSI disk, mounted read-only at /run/mounts/scsi/m<k>
    scratch  a sparse ext4 file in the task's work dir -> SCSI disk, read-write, mounted at /run/gcs/c/<id>
    combine  CombinedLayers: overlayfs at /run/gcs/c/<id>/rootfs, upper and work dirs on the scratch
             (a container whose root is a host directory gets it over 9p at the same path instead)
    mounts   each bind mount of a host path -> a share at /run/gcs/c/<id>/mounts/m<i>
    create   the guest spec (hcsshim.shim.guestspec) -> Create: `runc create` in the guest

Its states: CREATING -> CREATED (the guest has the container) -> DELETED (guest state deleted, every layer, share
and scratch released) | after the VM died: VM_GONE (deleting it only releases the host-side resources).

`LcowProcess` is the init or an exec. `start` opens the client's FIFOs (hcsshim.shim.vmio), has the GCS start the
init (ExecuteProcess without a process spec) or run the exec, relays stdio over the bridge's stdio connections,
and waits for the exit (WaitForProcess) in a task the shim owns; the code goes to the task's one exit path. When
the VM dies, `force_exit(1)` reports every process that has not exited (upstream's ForceExit(1) on host exit).

Failures of the guest, the bridge or the VM become ttrpc errors here (`guest_call`), naming the operation and task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal as signals
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

from google.protobuf import json_format

from hcsshim.api.containerd.cgroups.v1 import metrics_pb2
from hcsshim.bridge import VMCOMPUTE_INVALID_STATE, HResultError
from hcsshim.bridge.resources import CombinedLayers, ContainerConstraints
from hcsshim.bridge.resources import Layer as GuestLayer
from hcsshim.gcs import BridgeClosed
from hcsshim.layers import LayerError, holder_for, make_scratch
from hcsshim.shim import guestspec
from hcsshim.shim.backend import ContainerBackend, ExitCallback, ProcessBackend, ProcessGone
from hcsshim.shim.paths import LAYER_HOLDER_FILE, write_file_atomic
from hcsshim.shim.stdio import StdioError, StdioPaths
from hcsshim.shim.vmio import ConnIO
from hcsshim.ttrpc import errors
from hcsshim.uvm import UVMError

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from hcsshim import gcs
    from hcsshim.api.containerd.task.v2 import shim_pb2 as api
    from hcsshim.layers import LayerCache
    from hcsshim.shim.task import Host
    from hcsshim.uvm import UtilityVM

log = logging.getLogger("hcsshim.shim.lcow")

T = TypeVar("T")
VM_EXIT_STATUS = 1  # what every process of a VM that died reports (upstream: ForceExit(1) on host exit)
DELETE_TIMEOUT = 10.0  # seconds for the guest to let go of a container being deleted


async def guest_call(op: str, task_id: str, call: Awaitable[T]) -> T:
    """Awaits a call into the VM; its failure becomes a ttrpc error naming the operation and the task."""
    try:
        return await call
    except BridgeClosed as exc:
        raise errors.failed_precondition(f"{op} task {task_id}: the utility VM is gone ({exc})") from None
    except (HResultError, UVMError, LayerError, OSError, TimeoutError) as exc:
        raise errors.TtrpcError(errors.Code.UNKNOWN, f"{op} task {task_id}: {exc}") from None


class LcowProcess(ProcessBackend):
    """The init or an exec of a container in a utility VM."""

    def __init__(self, container: LcowContainer, exec_id: str, paths: StdioPaths, spec: dict | None,
                 on_exit: ExitCallback) -> None:
        self.container = container
        self.exec_id = exec_id
        self.paths = paths
        self.spec = spec
        self.on_exit = on_exit
        self.io: ConnIO | None = None
        self.proc: gcs.Process | None = None
        self.exited = False
        self.pid = 0

    @property
    def name(self) -> str:
        return f"task {self.container.id}" + (f" exec {self.exec_id}" if self.exec_id else "")

    def _report(self, status: int) -> None:
        if not self.exited:
            self.exited = True
            self.on_exit(status)

    def force_exit(self, status: int) -> None:
        """The VM died, or the container went without this process's exit: report `status` unless it exited."""
        self._report(status)

    async def start(self) -> int:
        c = self.container
        op = "start" if not self.exec_id else f"exec {self.exec_id} in"
        if c.guest is None:
            raise errors.failed_precondition(f"{op} task {c.id}: the utility VM is gone")
        try:
            io = self.io = ConnIO.open(self.paths)
        except StdioError as exc:
            raise errors.invalid_argument(f"{op} task {c.id}: {exc}") from None
        stdin, stdout, stderr = io.wants
        t0 = time.perf_counter()
        try:
            if not self.exec_id:
                proc = await guest_call(op, c.id, c.guest.start_init(
                    stdin=stdin, stdout=stdout, stderr=stderr, terminal=self.paths.terminal))
            else:
                proc = await guest_call(op, c.id, c.guest.exec(
                    dict(self.spec or {}), stdin=stdin, stdout=stdout, stderr=stderr))
        except BaseException:
            io.close()
            self.io = None
            raise
        self.proc = proc
        self.pid = proc.pid
        io.attach(proc.stdin, proc.stdout, proc.stderr)
        if not self.exec_id:
            log.info("task %s: started pid %d; timing start %.3f", c.id, proc.pid, time.perf_counter() - t0)
        c.sandbox.host.spawn(self._wait(proc), name=f"wait {self.name}")
        return self.pid

    async def _wait(self, proc: gcs.Process) -> None:
        try:
            status = await proc.wait()
        except (BridgeClosed, HResultError, OSError) as exc:
            log.info("%s: no exit status from the guest (%s)", self.name, exc)
            status = VM_EXIT_STATUS
        self._report(status)

    async def kill(self, signal: int, all_: bool) -> None:
        c = self.container
        if all_:
            for p in list(c.execs):
                if p.proc is not None and not p.exited:
                    with contextlib.suppress(errors.TtrpcError, ProcessGone):
                        await p.kill(signal, False)
        if self.exited or c.guest is None:
            raise ProcessGone
        if self.proc is None:  # an init that never started: the container goes, its init with it
            await guest_call("kill", c.id, c.guest.terminate())
            self._report(128 + signals.SIGKILL)
            return
        if not await guest_call("kill", c.id, self.proc.signal(signal)):
            raise ProcessGone

    async def resize(self, width: int, height: int) -> None:
        if self.proc is None or not self.paths.terminal:
            raise errors.failed_precondition(f"resize {self.name}: the process has no terminal")
        await guest_call("resize", self.container.id, self.proc.resize(height, width))

    def close_stdin(self) -> None:
        if self.io is not None:
            self.io.close_stdin()

    async def drain(self) -> None:
        if self.io is not None:
            await self.io.drain()

    def close(self) -> None:
        if self.io is not None:
            self.io.close()
        if self.proc is not None:
            self.proc.close()


Release = Callable[[], Awaitable[None]]


class VmSandbox(Protocol):
    """What a container needs of the sandbox whose VM it runs in (hcsshim.shim.pod.UvmSandbox)."""

    host: Host
    vm: UtilityVM
    cache: LayerCache
    scratch_size_gb: int

    @property
    def vm_alive(self) -> bool: ...

    def closes_after(self, task_id: str) -> bool:
        """Whether deleting this container closes the VM (its last container): then nothing in it needs undoing."""

    def layer_keys(self, layer_dirs: list[str]) -> list[str]: ...

    async def pause(self, task_id: str) -> None: ...

    async def resume(self, task_id: str) -> None: ...


class LcowContainer(ContainerBackend):
    """One container in a utility VM (see the module docstring for its creation steps and states)."""

    def __init__(self, sandbox: VmSandbox, req: api.CreateTaskRequest, spec: dict, paths: StdioPaths,
                 on_init_exit: ExitCallback) -> None:
        self.sandbox = sandbox
        self.id = req.id
        self.bundle = req.bundle
        self.rootfs = list(req.rootfs)
        self.spec = spec
        self.state = "CREATING"
        self.init = LcowProcess(self, "", paths, None, on_init_exit)
        self.execs: list[LcowProcess] = []
        self.guest: gcs.Container | None = None
        self._releases: list[tuple[str, Release, bool]] = []  # (what, how, in the VM), undone newest first
        self.root = guestspec.container_root(self.id)
        # This container's references in the host's layer cache; recorded in the bundle so that `delete` after a
        # dead shim drops them at once (they would also stop counting once this process is gone).
        self.holder = holder_for(os.getpid(), f"{sandbox.host.namespace}/{self.id}")
        self.phases: dict[str, float] = {}  # seconds spent in each creation step
        self.built = 0  # layer images this container's creation built

    @property
    def vm(self) -> UtilityVM:
        return self.sandbox.vm

    async def create(self) -> None:
        """The creation steps (module docstring); a failure undoes what was done and raises."""
        try:
            await self._create()
        except BaseException:
            await self._release_all()
            raise
        self.state = "CREATED"

    async def _create(self) -> None:
        source = guestspec.rootfs_source(self.id, self.rootfs, self.spec, self.bundle)
        t0 = time.perf_counter()
        if source.layers:  # (attached one after the other: overlapping them gains nothing on the VM's one CPU)
            layers = await self._attach_layers(source.layers)
            await self._attach_scratch()
            await self._combine(layers)
        else:
            assert source.directory is not None
            await self._share(source.directory, f"{self.root}/rootfs", source.read_only)
        spec, shares = guestspec.guest_spec(self.id, self.spec)
        for req in shares:
            await self._share(req.host_path, req.guest_path, req.read_only)
        with self._phase("guest"):
            self.guest = await guest_call("create", self.id, self.vm.gcs.create_container(self.id, spec,
                                                                                          bundle=self.root))
        self._on_release("guest container", self._delete_guest_state)
        p = self.phases
        log.info("task %s: created in the VM; timing layers %.3f built %d create %.3f (disks %.3f, combine %.3f, "
                 "shares %.3f, runc create %.3f)", self.id, p.get("layers", 0), self.built,
                 time.perf_counter() - t0 - p.get("layers", 0), p.get("disks", 0), p.get("combine", 0),
                 p.get("shares", 0), p.get("guest", 0))

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Adds the time spent in the block to phases[name] (the `timing` log line; bench/lcow.py reads it)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t

    async def _attach_layers(self, layer_dirs: list[str]) -> list[str]:
        """Each layer's image from the cache (built if missing) on a read-only SCSI disk; their guest paths."""
        vm = self.vm
        write_file_atomic(os.path.join(self.bundle, LAYER_HOLDER_FILE), self.holder)
        keys = await asyncio.to_thread(self.sandbox.layer_keys, layer_dirs)
        guest_layers = []
        for layer_dir, key in zip(layer_dirs, keys, strict=True):
            with self._phase("layers"):
                layer = await guest_call("create", self.id, asyncio.to_thread(
                    self.sandbox.cache.acquire, layer_dir, key=key, holder=self.holder))
            self._on_release(f"layer {key}", self._cache_release(key), in_vm=False)
            if layer.built:
                self.built += 1
                log.info("built layer image %s from %s", key, layer_dir)
            with self._phase("disks"):
                mount = await guest_call("create", self.id, vm.scsi.add(layer.path, read_only=True))
            self._on_release(f"layer disk {mount.guest_path}", lambda m=mount: vm.scsi.release(m))
            guest_layers.append(mount.guest_path)
        return guest_layers

    async def _attach_scratch(self) -> None:
        """A sparse scratch file in the task's work dir, on a read-write SCSI disk mounted at the container root."""
        vm = self.vm
        scratch = self._scratch_path()
        with self._phase("disks"):
            await guest_call("create", self.id, asyncio.to_thread(
                make_scratch, scratch, self.sandbox.scratch_size_gb, cache_root=self.sandbox.cache.root))
            self._on_release("scratch file", self._remove_file(scratch), in_vm=False)
            mount = await guest_call("create", self.id, vm.scsi.add(
                scratch, read_only=False, guest_path=self.root, ensure_filesystem=True))
        self._on_release("scratch disk", lambda: vm.scsi.release(mount))

    async def _combine(self, guest_layers: list[str]) -> None:
        vm = self.vm
        combined = CombinedLayers(container_id=self.id, container_root_path=f"{self.root}/rootfs",
                                  layers=[GuestLayer(p) for p in guest_layers],
                                  scratch_path=f"{self.root}/scratch/{self.id}")
        with self._phase("combine"):
            await guest_call("create", self.id, vm.gcs.modify(combined, "Add"))
        self._on_release("combined layers", lambda: vm.gcs.modify(combined, "Remove"))

    async def _share(self, host_path: str, guest_path: str, read_only: bool) -> None:
        vm = self.vm
        with self._phase("shares"):
            share = await guest_call("create", self.id, vm.shares.add(host_path, guest_path, read_only=read_only))
        self._on_release(f"share {host_path}", lambda: vm.shares.release(share))

    def _scratch_path(self) -> str:
        work = os.path.join(self.bundle, "work")
        return os.path.join(work if os.path.isdir(work) else self.bundle, "scratch.img")

    def _on_release(self, what: str, release: Release, *, in_vm: bool = True) -> None:
        """Registers the undoing of a creation step; `in_vm` steps are moot once the VM is gone (closing it freed
        its disks, shares and guest state), the others (layer references, the scratch file) never are."""
        self._releases.append((what, release, in_vm))

    def _cache_release(self, key: str) -> Release:
        async def release() -> None:
            await asyncio.to_thread(self.sandbox.cache.release, key, self.holder)
        return release

    @staticmethod
    def _remove_file(path: str) -> Release:
        async def remove() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return remove

    async def _delete_guest_state(self) -> None:
        guest = self.guest
        if guest is None:
            return
        if self.init.proc is None:  # never started: runc's init still waits in the guest; it goes first
            with contextlib.suppress(HResultError):
                await guest.terminate()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DELETE_TIMEOUT
        while True:
            try:
                await guest.delete_state()
                return
            except HResultError as exc:  # the init's exit may not be reaped in the guest yet
                if exc.hresult != VMCOMPUTE_INVALID_STATE or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.05)

    async def _release_all(self, *, vm_going: bool = False) -> None:
        """Undoes the creation steps, newest first; a step that fails is logged and the rest still run. The steps in
        the VM are skipped when it is gone or about to go (`vm_going`: closing it frees its disks and shares, and
        unplugging them one by one first would only add to the task's teardown)."""
        skip_vm = vm_going or not self.sandbox.vm_alive
        while self._releases:
            what, release, in_vm = self._releases.pop()
            if in_vm and skip_vm:
                continue
            try:
                await release()
            except (HResultError, BridgeClosed, UVMError, LayerError, OSError, TimeoutError) as exc:
                log.warning("task %s: release %s: %s", self.id, what, exc)

    def vm_died(self) -> None:
        """Every process that has not exited reports VM_EXIT_STATUS; the guest is gone."""
        self.state = "VM_GONE"
        for p in [self.init, *self.execs]:
            p.force_exit(VM_EXIT_STATUS)

    # -- ContainerBackend -----------------------------------------------------------------------------------
    def new_exec(self, exec_id: str, spec: dict, paths: StdioPaths, on_exit: ExitCallback) -> ProcessBackend:
        p = LcowProcess(self, exec_id, paths, spec, on_exit)
        self.execs.append(p)
        return p

    async def pause(self) -> None:
        await self.sandbox.pause(self.id)

    async def resume(self) -> None:
        await self.sandbox.resume(self.id)

    async def update(self, resources: dict) -> None:
        self._need_guest("update")
        await guest_call("update", self.id, self.vm.gcs.modify(
            ContainerConstraints(linux=resources), "Update", container_id=self.id))

    async def pids(self) -> list[int]:
        guest = self._need_guest("pids")
        props = await guest_call("pids", self.id, guest.properties(["ProcessList"]))
        return [int(p.get("ProcessId", 0)) for p in props.get("ProcessList") or [] if isinstance(p, dict)]

    async def stats(self) -> Message:
        """The container's cgroup metrics from the guest, as containerd's cgroups v1 `Metrics` (what ctr and the
        CRI on Linux decode; upstream's runhcs Statistics wrapper is known to Windows builds of them only)."""
        guest = self._need_guest("stats")
        props = await guest_call("stats", self.id, guest.properties(["Statistics"]))
        metrics = props.get("LCOWMetrics") or props.get("Metrics")
        if not isinstance(metrics, dict):
            raise errors.TtrpcError(errors.Code.UNKNOWN, f"stats task {self.id}: the guest sent no metrics")
        try:
            return json_format.ParseDict(metrics, metrics_pb2.Metrics(), ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise errors.TtrpcError(errors.Code.UNKNOWN, f"stats task {self.id}: the guest's metrics: "
                                                         f"{exc}") from None

    def _need_guest(self, op: str) -> gcs.Container:
        if self.guest is None or self.state != "CREATED":
            raise errors.failed_precondition(f"{op} task {self.id}: the utility VM is gone")
        return self.guest

    async def delete(self) -> None:
        """Deletes the guest container and releases every layer, share and scratch it holds."""
        if self.state == "DELETED":
            return
        for p in [self.init, *self.execs]:
            p.close()
        await self._release_all(vm_going=self.sandbox.closes_after(self.id))
        self.state = "DELETED"
        try:  # images nobody used for long go (rate-limited host-wide: at most one gc a minute)
            await asyncio.to_thread(self.sandbox.cache.maybe_gc)
        except LayerError as exc:
            log.warning("task %s: layer cache gc: %s", self.id, exc)
