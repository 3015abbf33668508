"""The utility VM: one compute system (a schema2 ComputeSystem document handed to hcsshim.hcs, whose Linux backend
makes it a QEMU machine) and everything it owns, from creation to its last file removed.

A `UtilityVM` is the Linux counterpart of hcsshim's uvm.UtilityVM over HCS, built the same way: the options give a
document (hcsshim.uvm.lcow, upstream's MakeLCOWDoc), `hcsshim.hcs.create_compute_system` creates the system, the
VM listens on the HvSocket services of the GCS bridge and its log (hcsshim.hcs.linux.hvsock) before it starts the
system, and the GCS dials the bridge. It owns the compute system, the bridge and GCS connection, and the
lifecycle; its devices have one owner each, a manager that sends the host half as a modify request to the
compute system and the guest half to the GCS, and releases it in upstream's order: `vm.scsi` (hcsshim.uvm.scsi:
layers, scratch and data disks), `vm.shares` (hcsshim.uvm.shares: Plan9 directories and files), `vm.nics`
(hcsshim.uvm.nics: network adapters). Its state machine:

    NOT_CREATED --create()--> CREATED        options checked, boot files found, the compute system created (its
                                             directory <run_root>/<id> is the VM's run dir: the backend's files,
                                             console.log, gcs.log) and the bridge and log services listened on
    CREATED --start()--> RUNNING             the system started; the log port is read into <run dir>/gcs.log and
                                             our logger; then (unless told not to) the guest boots and its GCS
                                             negotiates over the bridge port.
                                             With opts.template (the default) the VM is instead a clone of its
                                             template (hcsshim.uvm.template), built first if there is none (by
                                             a VM `template-<id>`, under the template's lock): the compute system
                                             is created again from the clone's document (the template's RAM file
                                             mapped copy-on-write, its saved state restored), started, and its
                                             GCS, which was waiting, negotiates afresh (and takes the host's
                                             clock, entropy and hostname). A template that does not load, or a
                                             clone that does not restore or negotiate within CLONE_GCS_TIMEOUT,
                                             gives a cold boot (the reason in `cold_boot_reason` and the log) and a
                                             rebuild of the template in the background (a task of this VM)
    RUNNING --pause()--> PAUSED              System.pause: the vCPUs halt (the guest answers nothing meanwhile)
    PAUSED --resume()--> RUNNING             System.resume
    RUNNING | PAUSED --the guest powers off, crashes or QEMU dies--> STOPPED   (`unexpected`; the system's
                                             SystemExited notification)
    RUNNING | PAUSED --terminate()--> STOPPED   System.terminate
    STOPPED | CREATED --close()--> CLOSED    devices forgotten, the compute system closed (its directory, with the
                                             shares' bind mounts, removed)
    any --close() fails to release something--> INVALID (the error says what is left)

Every method checks the state it may run in and fails with UVMError naming the VM and its state. `close()` is
idempotent and is what callers put in their `finally`; it also terminates a running VM. `stats()` asks the
compute system for its Statistics (QEMU's CPU time and memory, on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
from dataclasses import replace

from hcsshim.bridge.wire import VMCOMPUTE_SYSTEM_ALREADY_EXISTS, HResultError
from hcsshim.gcs import GuestConnection
from hcsshim.hcs import errors as hcs_errors
from hcsshim.hcs.linux import accel as accel_mod
from hcsshim.hcs.linux import hvsock, procfs, registry
from hcsshim.hcs.linux.backend import LinuxBackend
from hcsshim.hcs.linux.machine import file_sha256
from hcsshim.hcs.schema2 import ComputeSystem, ModifySettingRequest, SaveOptions
from hcsshim.hcs.system import System, create_compute_system
from hcsshim.runc.reaper import PidfdWaiter, Reaper
from hcsshim.transport.mux import MuxTransport
from hcsshim.uvm.common import State, UVMError, check_state
from hcsshim.uvm.lcow import clone_document, lcow_document, template_document
from hcsshim.uvm.nics import NicManager
from hcsshim.uvm.options import BRIDGE_SERVICE, LOG_SERVICE, MODULES_READY, BootFiles, UVMOptions, find_boot_files
from hcsshim.uvm.scsi import ScsiManager
from hcsshim.uvm.shares import ShareManager
from hcsshim.uvm.template import Template, TemplateError, TemplateKey, TemplateStore

__all__ = ["State", "UVMError", "UtilityVM"]

log = logging.getLogger(__name__)
guest_log = logging.getLogger("hcsshim.uvm.guest")

CONNECT_TIMEOUT = 30.0  # seconds for QEMU to start and connect the VM's service ports
GCS_TIMEOUT = 120.0  # seconds for the guest to boot and its GCS to negotiate (upstream: 2 minutes)
CLONE_GCS_TIMEOUT = 15.0  # seconds for a restored clone's GCS to negotiate before it is given up for a cold boot
MODULES_TIMEOUT = 60.0  # seconds for a template's background kernel modules to load before it is saved


class UtilityVM:
    """One utility VM (see the module docstring): `await UtilityVM.create(opts)`, then `await vm.start()`."""

    def __init__(self, opts: UVMOptions, *, waiter: Reaper | PidfdWaiter | None = None) -> None:
        self.opts = opts
        self.id = opts.id
        self.state = State.NOT_CREATED
        self.waiter = waiter if waiter is not None else PidfdWaiter()
        self.run_dir = os.path.join(opts.run_root, opts.id)
        self.boot: BootFiles | None = None
        self.accel = opts.accel
        self.backend = LinuxBackend(opts.run_root, accel=opts.accel, waiter=self.waiter)
        self.document: ComputeSystem | None = None  # the cold-boot document (a clone's adds the template's state)
        self.system: System | None = None
        self.bridge: socket.socket | None = None  # the guest's bridge port, a connected stream
        self.transport: MuxTransport | None = None  # ports multiplexed over `bridge`
        self.gcs: GuestConnection | None = None
        self.unexpected = False  # stopped without terminate(): guest crash, GCS death, QEMU killed
        self.exit_error: BaseException | None = None  # why the compute system stopped (System.exit_error)
        self.exited = asyncio.Event()
        self._terminating = False
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: dict[str, socket.socket] = {}
        self.templates = TemplateStore()  # where start() finds (or builds) its template
        self.template: Template | None = None  # the template this VM was restored from
        self.cold_boot_reason = ""  # why a VM that could have been a clone booted cold
        # LUN 0 is the vhd root's when it boots from rootfs.vhd
        self.scsi = ScsiManager(self, reserved_luns=frozenset({0} if opts.root_fs_type == "vhd" else ()))
        self.shares = ShareManager(self)
        self.nics = NicManager(self)

    def __repr__(self) -> str:
        return f"UtilityVM({self.id!r}, {self.state.value})"

    def _check(self, operation: str, *allowed: State) -> None:
        check_state(self, operation, *allowed)

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    @property
    def qemu_pid(self) -> int | None:
        """The pid of the VM's QEMU while it runs (the Linux backend's record), else None."""
        record = registry.qemu_running(self.run_dir)
        return record.pid if record is not None else None

    def guest(self, operation: str) -> GuestConnection:
        """The GCS connection; UVMError naming the operation when there is none."""
        if self.gcs is None:
            raise UVMError(f"uvm {self.id}: {operation}: no GCS connection (the VM is {self.state.value})")
        return self.gcs

    def _system(self, operation: str) -> System:
        if self.system is None:
            raise UVMError(f"uvm {self.id}: {operation}: no compute system (the VM is {self.state.value})")
        return self.system

    async def modify_host(self, operation: str, request: ModifySettingRequest) -> None:
        """The host half of a device change: a modify request to the VM's compute system (its error raised)."""
        await self._system(operation).modify(request)

    # -- lifecycle ------------------------------------------------------------------------------------------

    @classmethod
    async def create(cls, opts: UVMOptions, *, waiter: Reaper | PidfdWaiter | None = None) -> UtilityVM:
        """Checks the options and boot files and creates the compute system; nothing runs yet."""
        vm = cls(opts, waiter=waiter)
        try:
            opts.validate()
            vm.boot = find_boot_files(opts)
        except (ValueError, FileNotFoundError) as exc:
            raise UVMError(f"create {exc}") from None
        vm.document = lcow_document(opts, vm.boot, vm.run_dir)
        await vm._create_system(vm.document)
        vm.state = State.CREATED
        return vm

    async def _create_system(self, document: ComputeSystem) -> None:
        """Creates the compute system from `document` and listens on its GCS services."""
        try:
            self.system = await create_compute_system(self.id, document, backend=self.backend)
        except HResultError as exc:
            if hcs_errors.is_any(exc, VMCOMPUTE_SYSTEM_ALREADY_EXISTS):
                raise UVMError(f"create uvm {self.id}: {self.run_dir} exists: another VM has this id") from None
            raise UVMError(f"create uvm {self.id}: {exc}") from None
        try:
            for name, service in (("bridge", BRIDGE_SERVICE), ("log", LOG_SERVICE)):
                self._listeners[name] = hvsock.listen(self.run_dir, service)
        except OSError as exc:
            await self._drop_system()
            raise UVMError(f"create uvm {self.id}: listen on the GCS services: {exc}") from None

    async def _drop_system(self) -> None:
        """Closes the compute system (a created or stopped one goes with its directory) and the listeners."""
        for s in self._listeners.values():
            s.close()
        self._listeners.clear()
        if self.system is not None:
            system, self.system = self.system, None
            await system.close()

    async def start(self, *, connect_gcs: bool = True, gcs_timeout: float = GCS_TIMEOUT) -> None:
        """Starts the VM: restored from its template (built first when there is none) when the options allow it,
        else (or when that fails: the reason is logged and kept in `cold_boot_reason`) booted cold; then waits for
        the GCS to negotiate (connect_gcs)."""
        self._check("start", State.CREATED)
        if connect_gcs and self.opts.template and self.opts.init_command is None and \
                await self._start_from_template():
            return
        await self.start_system()
        if connect_gcs:
            await self.connect_gcs(timeout=gcs_timeout)

    # -- templates (hcsshim.uvm.template) ---------------------------------------------------------------------

    async def _start_from_template(self) -> bool:
        """Restores this VM from its template, building the template when there is none; False: boot cold."""
        assert self.boot is not None
        try:
            qemu = accel_mod.qemu_binary()
            if self.accel is None:
                self.accel = await accel_mod.choose(self.boot.kernel, waiter=self.waiter, qemu=qemu)
            self.backend.accel = self.accel
            key = await asyncio.to_thread(self.templates.key, self.opts, self.boot, qemu, self.accel)
        except (OSError, TemplateError) as exc:
            return self._cold(f"no template key: {exc}")
        try:
            tpl = await asyncio.to_thread(self.templates.load, key)
        except TemplateError as exc:  # damaged or mismatched: boot cold now, and make a good one meanwhile
            self._tasks.append(asyncio.get_running_loop().create_task(
                self.build_template(key), name=f"uvm {self.id} template rebuild"))
            return self._cold(f"{exc}; rebuilding it in the background")
        if tpl is None:
            tpl = await self.build_template(key)
            if tpl is None:
                return self._cold("the template could not be built (see above)")
        try:
            await self._restore(tpl)
        except (UVMError, TemplateError, OSError, TimeoutError) as exc:
            await self._abandon_start()
            self._tasks.append(asyncio.get_running_loop().create_task(
                self.build_template(key, replacing=tpl), name=f"uvm {self.id} template rebuild"))
            return self._cold(f"restore from template {key.digest[:12]} failed ({exc}); rebuilding it")
        self.template = tpl
        return True

    def _cold(self, reason: str) -> bool:
        self.cold_boot_reason = reason
        log.warning("uvm %s: booting cold: %s", self.id, reason)
        return False

    async def _restore(self, tpl: Template) -> None:
        await self.start_restored(tpl.state, memory=tpl.memory, template_id=tpl.key.digest)

    async def start_restored(self, state: str, *, memory: str | None = None, template_id: str = "",
                             gcs_timeout: float = CLONE_GCS_TIMEOUT) -> None:
        """Starts the VM from a saved state instead of booting it: the compute system again, from the clone's
        document (hcsshim.uvm.lcow.clone_document: `memory`, a template's RAM file, mapped copy-on-write, or the
        RAM in `state` too), started, and its waiting GCS negotiated afresh."""
        self._check("start", State.CREATED)
        assert self.document is not None
        await self._drop_system()
        await self._create_system(clone_document(self.document, state, memory=memory, template_id=template_id))
        await self.start_system()
        await self.connect_gcs(timeout=gcs_timeout)

    async def build_template(self, key: TemplateKey, *, replacing: Template | None = None) -> Template | None:
        """Builds the template of `key` (a cold boot of a VM like this one, saved), once across processes: under
        the key's lock, a good template someone else finished meanwhile is taken instead (unless it is the build
        `replacing`, which failed to restore). None (logged) on failure."""
        store = self.templates
        locking = asyncio.ensure_future(asyncio.to_thread(store.lock, key))
        try:
            fd = await asyncio.shield(locking)
        except asyncio.CancelledError:  # the thread still takes the lock: give it back when it does
            locking.add_done_callback(lambda f: f.cancelled() or f.exception() or store.unlock(f.result()))
            raise
        try:
            try:
                found = await asyncio.to_thread(store.load, key)
            except TemplateError:  # still damaged: it goes now, so a rebuild cut short leaves none (see remove)
                found = None
                await asyncio.to_thread(store.remove, key)
            if found is not None:
                if replacing is None or found.built != replacing.built:
                    return found  # someone else built (or rebuilt) it meanwhile
                await asyncio.to_thread(store.remove, key)
            staging = await asyncio.to_thread(store.staging, key)
            try:
                t0 = asyncio.get_running_loop().time()
                state_sha = await self._boot_and_save(staging)
                tpl = await asyncio.to_thread(store.commit, key, staging, state_sha)
                log.info("uvm %s: built template %s in %.2f s", self.id, key.digest[:12],
                         asyncio.get_running_loop().time() - t0)
                return tpl
            except BaseException as exc:
                await asyncio.to_thread(store.discard, staging)
                if not isinstance(exc, (UVMError, TemplateError, OSError, TimeoutError)):
                    raise
                log.error("uvm %s: building template %s failed: %s", self.id, key.digest[:12], exc)
                return None
        finally:
            store.unlock(fd)

    async def _boot_and_save(self, staging: str) -> str:
        """Cold-boots the template VM with its RAM in staging/memory, lets it settle, saves it; the state's sha."""
        opts = replace(self.opts, id=template_vm_id(self.id), template=False)
        vm = UtilityVM(opts, waiter=self.waiter)
        try:
            vm.boot = self.boot
            vm.accel = vm.backend.accel = self.accel
            assert vm.boot is not None
            vm.document = lcow_document(opts, vm.boot, vm.run_dir)
            await vm._create_system(template_document(vm.document, os.path.join(staging, "memory")))
            vm.state = State.CREATED
            await vm.start()
            await vm.wait_modules_ready()
            state = os.path.join(staging, "state")
            await vm._system("save template").save(SaveOptions(save_type="AsTemplate", save_state_file_path=state))
            return await asyncio.to_thread(file_sha256, state)
        except (TemplateError, OSError, TimeoutError, UVMError):
            raise
        except Exception as exc:  # the compute system's and the bridge's errors
            raise UVMError(f"uvm {opts.id}: {exc}") from None
        finally:
            await vm.close()

    async def wait_modules_ready(self, timeout: float = MODULES_TIMEOUT) -> None:
        """Waits until the guest's init has loaded the kernel modules it loads in the background (a template is
        saved only then, so no clone starts with a module half-loaded)."""
        proc = await self.guest("wait for modules").exec_in_uvm(
            ["sh", "-c", f"while [ ! -e {MODULES_READY} ]; do sleep 0.02; done"], stdout=False, stderr=False)
        await asyncio.wait_for(proc.wait(), timeout)

    async def _abandon_start(self) -> None:
        """After a failed restore: the clone's system and everything of this start go; the VM is CREATED again,
        with the cold-boot system, to boot cold."""
        assert self.document is not None
        await self._stop_runtime()
        await self._drop_system()
        self.unexpected, self._terminating = False, False
        self.exited = asyncio.Event()
        await self._create_system(self.document)
        self.state = State.CREATED

    async def connect_gcs(self, *, timeout: float = GCS_TIMEOUT) -> GuestConnection:
        """Waits for the guest's GCS to dial the bridge port and negotiates; fails early if the VM stops."""
        self._check("connect gcs", State.RUNNING)
        if self.gcs is not None:
            return self.gcs
        assert self.bridge is not None
        if self.transport is None:
            fd = os.dup(self.bridge.fileno())
            self.transport = MuxTransport(fd, fd, role="host")
            await self.transport.start()
        connect = asyncio.ensure_future(GuestConnection.connect(self.transport, timeout=timeout,
                                                                hostname=hostname_of(self.id)))
        died = asyncio.ensure_future(self.exited.wait())
        try:
            await asyncio.wait([connect, died], return_when=asyncio.FIRST_COMPLETED)
            if connect.done() and not connect.cancelled() and connect.exception() is None:
                self.gcs = connect.result()
            else:
                if not died.done():  # the connection failed first: the VM may be on its way down
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(died), 2.0)
                if self.exited.is_set():
                    raise UVMError(f"connect gcs of uvm {self.id}: the VM stopped ({self.exit_error}) before its GCS "
                                   f"connected; console: {self.console_tail(5)!r}")
                exc = connect.exception() if connect.done() and not connect.cancelled() else None
                raise UVMError(f"connect gcs of uvm {self.id}: {exc}; console: {self.console_tail(5)!r}")
        finally:
            connect.cancel()
            died.cancel()
        return self.gcs

    async def start_system(self) -> None:
        """Starts the compute system and waits until its bridge and log ports are connected (not until the guest
        boots)."""
        self._check("start", State.CREATED)
        system = self._system("start")
        loop = asyncio.get_running_loop()
        try:
            await system.start()
        except HResultError as exc:
            raise UVMError(f"start uvm {self.id}: {exc}") from None
        log.debug("uvm %s: started (qemu pid %s, %s)", self.id, self.qemu_pid, self.backend.accel)
        self.state = State.RUNNING
        self._tasks.append(loop.create_task(self._watch_exit(system), name=f"uvm {self.id} exit"))
        try:
            conns = await self._accept_all()
            self.bridge = conns["bridge"]
            self._tasks.append(loop.create_task(self._read_log(conns["log"]), name=f"uvm {self.id} log"))
        except BaseException as exc:
            await self.terminate()
            if isinstance(exc, (OSError, TimeoutError, UVMError)):
                raise UVMError(f"start uvm {self.id}: {exc}") from None
            raise
        finally:
            for s in self._listeners.values():
                s.close()
            self._listeners.clear()

    def console_tail(self, lines: int = 20) -> str:
        try:
            with open(self.path("console.log"), errors="replace") as f:
                return "\n".join(f.read().splitlines()[-lines:])
        except OSError:
            return ""

    async def _accept_all(self) -> dict[str, socket.socket]:
        loop = asyncio.get_running_loop()
        accepts = {name: loop.create_task(loop.sock_accept(s)) for name, s in self._listeners.items()}
        died = loop.create_task(self.exited.wait())
        try:
            while not all(t.done() for t in accepts.values()):
                done, _ = await asyncio.wait([*accepts.values(), died], timeout=CONNECT_TIMEOUT,
                                             return_when=asyncio.FIRST_COMPLETED)
                if died.done():
                    raise UVMError("the VM stopped while starting")
                if not done:
                    raise TimeoutError(f"QEMU did not connect the VM's ports within {CONNECT_TIMEOUT:.0f} s")
            conns = {}
            for name, t in accepts.items():
                conn, _ = t.result()
                conn.setblocking(False)
                conns[name] = conn
            return conns
        except BaseException:
            for t in accepts.values():
                if t.done() and not t.cancelled() and t.exception() is None:
                    t.result()[0].close()
                t.cancel()
            raise
        finally:
            died.cancel()

    async def _watch_exit(self, system: System) -> None:
        with contextlib.suppress(Exception):  # the wait error of a system closed before it stopped
            await system.wait()
        if system.closed:
            return  # closed (by close or a failed restore), not stopped: nothing to report
        err = self.exit_error = system.exit_error()
        if not self._terminating:
            self.unexpected = True
            log.warning("uvm %s: the VM stopped unexpectedly%s", self.id, f" ({err})" if err else "")
        self.state = State.STOPPED
        self.exited.set()

    async def _read_log(self, conn: socket.socket) -> None:
        """The guest's log port (the GCS's stderr, JSON lines) into gcs.log and our logger."""
        loop = asyncio.get_running_loop()
        buf = b""
        try:
            with conn, open(self.path("gcs.log"), "ab") as out:
                while True:
                    data = await loop.sock_recv(conn, 65536)
                    if not data:
                        return
                    out.write(data)
                    out.flush()
                    buf += data
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        _relay(self.id, line)
        except (OSError, asyncio.CancelledError):
            return

    async def wait(self) -> None:
        """Waits for the VM to stop."""
        self._check("wait", State.RUNNING, State.PAUSED, State.STOPPED)
        await self.exited.wait()

    async def terminate(self) -> None:
        """Stops the VM (System.terminate: QMP quit, then SIGKILL on Linux). A no-op once it has stopped."""
        if self.system is None or self.exited.is_set() or self.state not in (State.RUNNING, State.PAUSED):
            return
        self._terminating = True
        with contextlib.suppress(HResultError):
            await self.system.terminate()
        await self.exited.wait()

    async def pause(self) -> None:
        """Halts the VM's processors: RUNNING -> PAUSED. Nothing in the guest answers until resume()."""
        self._check("pause", State.RUNNING)
        try:
            await self._system("pause").pause()
        except HResultError as exc:
            raise UVMError(f"uvm {self.id}: pause: {exc}") from None
        if self.state is State.RUNNING:  # (it may have stopped meanwhile)
            self.state = State.PAUSED

    async def resume(self) -> None:
        """Lets a paused VM run again: PAUSED -> RUNNING."""
        self._check("resume", State.PAUSED)
        try:
            await self._system("resume").resume()
        except HResultError as exc:
            raise UVMError(f"uvm {self.id}: resume: {exc}") from None
        if self.state is State.PAUSED:
            self.state = State.RUNNING

    async def stats(self) -> procfs.VMStats:
        """The VM's CPU time and memory now (its compute system's Statistics: upstream's
        VirtualMachineStatistics); RUNNING or PAUSED."""
        self._check("stats", State.RUNNING, State.PAUSED)
        try:
            props = await self._system("stats").properties_v2("Statistics")
        except HResultError as exc:
            raise UVMError(f"uvm {self.id}: stats: {exc}") from None
        st = props.statistics
        if st is None or st.processor is None or st.memory is None:
            raise UVMError(f"uvm {self.id}: stats: the compute system reported no statistics")
        return procfs.VMStats(st.processor.total_runtime_100ns * 100, st.memory.memory_usage_commit_bytes,
                              st.memory.memory_usage_private_working_set_bytes or None,
                              user_ns=st.processor.runtime_user_100ns * 100,
                              system_ns=st.processor.runtime_kernel_100ns * 100,
                              peak_bytes=st.memory.memory_usage_commit_peak_bytes)

    async def _stop_runtime(self) -> None:
        """Terminates the VM and drops what runs with it: the GCS connection, the transport, the tasks."""
        await self.terminate()
        if self.gcs is not None:
            with contextlib.suppress(Exception):
                await self.gcs.close()
            self.gcs = None
        if self.transport is not None:
            with contextlib.suppress(Exception):
                await self.transport.close()
            self.transport = None
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None

    async def close(self) -> None:
        """Terminates the VM if it runs and releases everything it owns. Idempotent."""
        if self.state in (State.CLOSED, State.NOT_CREATED):
            return
        await self._stop_runtime()
        self.scsi.close()
        self.nics.close()
        self.shares.close()
        try:
            await self._drop_system()
        except HResultError as exc:
            self.state = State.INVALID
            raise UVMError(f"close uvm {self.id}: {exc}") from None
        self.state = State.CLOSED

    async def __aenter__(self) -> UtilityVM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def template_vm_id(vm_id: str) -> str:
    """The id of the VM that builds the template for VM `vm_id` (its run dir is cleaned like the VM's own)."""
    return f"template-{vm_id}"


def hostname_of(vm_id: str) -> str:
    """The guest's hostname: the VM's id, as a hostname may spell it (a clone must not keep its template's)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", vm_id)[:63].strip("-.") or "uvm"


def _relay(vm_id: str, line: bytes) -> None:
    """One guest log line into our logger: JSON (logrus/slog style) when it parses, else as text."""
    text = line.decode(errors="replace").strip()
    if not text:
        return
    level, msg, fields = logging.INFO, text, {}
    if text.startswith("{"):
        try:
            entry = json.loads(text)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            lvl = str(entry.pop("level", "info")).lower()
            level = {"debug": logging.DEBUG, "trace": logging.DEBUG, "warning": logging.WARNING,
                     "warn": logging.WARNING, "error": logging.ERROR, "fatal": logging.CRITICAL,
                     "panic": logging.CRITICAL}.get(lvl, logging.INFO)
            msg = str(entry.pop("msg", entry.pop("message", "")))
            entry.pop("time", None)
            fields = entry
    guest_log.log(level, "%s", msg, extra={"uvm": vm_id, "fields": fields})
