"""The utility VM: one QEMU process and everything it owns, from creation to its last file removed.

A `UtilityVM` is the Linux counterpart of hcsshim's uvm.UtilityVM over HCS. It owns QEMU, its QMP connection,
the bridge and GCS connection, and the lifecycle; its devices have one owner each, a manager that adds a
device on both halves (QMP and the guest) and releases it in upstream's order: `vm.scsi` (hcsshim.uvm.scsi:
layers, scratch and data disks), `vm.shares` (hcsshim.uvm.shares: Plan9 directories and files), `vm.nics`
(hcsshim.uvm.nics: network adapters). Its state machine:

    NOT_CREATED --create()--> CREATED        options checked, boot files found, run dir made (0700):
                                             <run_root>/<id>/{qmp,bridge,log}.sock, console.log, qemu.log, shares/
    CREATED --start()--> RUNNING             host sockets listening, then QEMU (with a parent-death signal)
                                             connects to them; <run dir>/qemu.pid records QEMU's pid and start
                                             time (for hcsshim.uvm.stale.cleanup_stale); QMP answers; the log port
                                             is read into <run dir>/gcs.log and our logger; then (unless told not
                                             to) the guest boots and its GCS negotiates over the bridge port.
                                             With opts.template (the default) the VM is instead a clone of its
                                             template (hcsshim.uvm.template), built first if there is none (by
                                             a VM `template-<id>`, under the template's lock): QEMU starts with
                                             the template's RAM file mapped private and `-incoming defer`, the
                                             saved device state is loaded, the guest runs on and its GCS, which
                                             was waiting, negotiates afresh (and takes the host's clock, entropy
                                             and hostname). A template that does not load, or a clone that does
                                             not restore or negotiate within CLONE_GCS_TIMEOUT, gives a cold boot
                                             (the reason in `cold_boot_reason` and the log) and a rebuild of the
                                             template in the background (a task of this VM)
    RUNNING --pause()--> PAUSED              QMP stop: the vCPUs halt (the guest answers nothing meanwhile)
    PAUSED --resume()--> RUNNING             QMP cont
    RUNNING | PAUSED --the guest powers off, crashes or QEMU dies--> STOPPED   (`exit_status`, `unexpected`)
    RUNNING | PAUSED --terminate()--> STOPPED   QMP quit, SIGKILL after a grace period
    STOPPED | CREATED --close()--> CLOSED    devices forgotten, share bind mounts removed, run dir removed
    any --close() fails to release something--> INVALID (the error says what is left)

Every method checks the state it may run in and fails with UVMError naming the VM and its state. `close()` is
idempotent and is what callers put in their `finally`; it also terminates a running VM. `stats()` reads
QEMU's CPU time and memory from /proc (hcsshim.uvm.procfs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
from dataclasses import replace

from qemu.qmp import QMPClient

from hcsshim import mount
from hcsshim.gcs import GuestConnection
from hcsshim.runc.reaper import DEVNULL, Child, PidfdWaiter, Reaper
from hcsshim.transport.mux import MuxTransport
from hcsshim.uvm import accel as accel_mod
from hcsshim.uvm import procfs
from hcsshim.uvm.common import State, UVMError, check_state
from hcsshim.uvm.nics import NicManager
from hcsshim.uvm.qemu import MODULES_READY, BootFiles, Memory, UVMOptions, find_boot_files, qemu_argv
from hcsshim.uvm.scsi import ScsiManager
from hcsshim.uvm.shares import ShareManager
from hcsshim.uvm.template import Template, TemplateError, TemplateKey, TemplateStore, restore_state, save_state

__all__ = ["State", "UVMError", "UtilityVM"]

log = logging.getLogger(__name__)
guest_log = logging.getLogger("hcsshim.uvm.guest")

CONNECT_TIMEOUT = 30.0  # seconds for QEMU to start and connect its sockets
GCS_TIMEOUT = 120.0  # seconds for the guest to boot and its GCS to negotiate (upstream: 2 minutes)
TERMINATE_GRACE = 5.0  # seconds between QMP quit and SIGKILL
QMP_TIMEOUT = 10.0  # seconds for QMP stop/cont
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
        self.qemu: Child | None = None
        self.qmp: QMPClient | None = None
        self.bridge: socket.socket | None = None  # the guest's bridge port, a connected stream
        self.transport: MuxTransport | None = None  # ports multiplexed over `bridge`
        self.gcs: GuestConnection | None = None
        self.exit_status: int | None = None
        self.unexpected = False  # stopped without terminate(): guest crash, GCS death, QEMU killed
        self.exited = asyncio.Event()
        self._terminating = False
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: dict[str, socket.socket] = {}
        self.templates = TemplateStore()  # where start() finds (or builds) its template
        self.memory: Memory | None = None  # RAM in a file: a template's (shared) or a clone's (private)
        self.incoming = False  # QEMU waits for a saved state (a clone)
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

    def qmp_client(self, operation: str) -> QMPClient:
        """The QMP connection; UVMError naming the operation when there is none (not started, or closed)."""
        if self.qmp is None:
            raise UVMError(f"uvm {self.id}: {operation}: no QMP connection (the VM is {self.state.value})")
        return self.qmp

    def guest(self, operation: str) -> GuestConnection:
        """The GCS connection; UVMError naming the operation when there is none."""
        if self.gcs is None:
            raise UVMError(f"uvm {self.id}: {operation}: no GCS connection (the VM is {self.state.value})")
        return self.gcs

    # -- lifecycle ------------------------------------------------------------------------------------------

    @classmethod
    async def create(cls, opts: UVMOptions, *, waiter: Reaper | PidfdWaiter | None = None) -> UtilityVM:
        """Checks the options and boot files and makes the run dir; nothing runs yet."""
        vm = cls(opts, waiter=waiter)
        try:
            opts.validate()
            vm.boot = find_boot_files(opts)
        except (ValueError, FileNotFoundError) as exc:
            raise UVMError(f"create {exc}") from None
        try:
            os.makedirs(opts.run_root, mode=0o711, exist_ok=True)
            os.mkdir(vm.run_dir, 0o700)
        except FileExistsError:
            raise UVMError(f"create uvm {opts.id}: {vm.run_dir} exists: another VM has this id") from None
        except OSError as exc:
            raise UVMError(f"create uvm {opts.id}: run dir {vm.run_dir}: {exc.strerror}") from None
        os.mkdir(vm.path("shares"), 0o700)
        vm.state = State.CREATED
        return vm

    async def start(self, *, connect_gcs: bool = True, gcs_timeout: float = GCS_TIMEOUT) -> None:
        """Starts the VM: restored from its template (built first when there is none) when the options allow it,
        else (or when that fails: the reason is logged and kept in `cold_boot_reason`) booted cold; then waits for
        the GCS to negotiate (connect_gcs)."""
        self._check("start", State.CREATED)
        if connect_gcs and self.opts.template and self.opts.init_command is None and \
                await self._start_from_template():
            return
        await self.start_qemu()
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
            key = await asyncio.to_thread(self.templates.key, self.opts, self.boot, qemu, self.accel)
        except (OSError, TemplateError) as exc:
            return self._cold(f"no template key: {exc}")
        try:
            tpl = await asyncio.to_thread(self.templates.load, key)
        except TemplateError as exc:  # damaged or mismatched: boot cold now, and make a good one meanwhile
            self._tasks.append(asyncio.get_running_loop().create_task(
                self._rebuild_template(key), name=f"uvm {self.id} template rebuild"))
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
                self._rebuild_template(key, replacing=tpl), name=f"uvm {self.id} template rebuild"))
            return self._cold(f"restore from template {key.digest[:12]} failed ({exc}); rebuilding it")
        self.template = tpl
        return True

    def _cold(self, reason: str) -> bool:
        self.cold_boot_reason = reason
        log.warning("uvm %s: booting cold: %s", self.id, reason)
        return False

    async def _restore(self, tpl: Template) -> None:
        self.memory = Memory(tpl.memory, shared=False)
        self.incoming = True
        await self.start_qemu()
        qmp = self.qmp_client("restore")
        try:
            await restore_state(qmp, tpl.state)
            await qmp.execute("cont")
        except (TemplateError, OSError):
            raise
        except Exception as exc:  # QMP's errors
            raise UVMError(f"uvm {self.id}: restore: {exc}") from None
        await self.connect_gcs(timeout=CLONE_GCS_TIMEOUT)

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
                state_sha = await self._boot_and_save(key, staging)
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

    async def _boot_and_save(self, key: TemplateKey, staging: str) -> str:
        """Cold-boots the template VM with its RAM in staging/memory, lets it settle, saves it; the state's sha."""
        opts = replace(self.opts, id=template_vm_id(self.id), template=False,
                       extra_qemu_args=list(self.opts.extra_qemu_args))
        vm = await UtilityVM.create(opts, waiter=self.waiter)
        try:
            vm.accel = self.accel
            vm.memory = Memory(os.path.join(staging, "memory"), shared=True)
            await vm.start()
            proc = await vm.guest("settle").exec_in_uvm(
                ["sh", "-c", f"while [ ! -e {MODULES_READY} ]; do sleep 0.02; done"], stdout=False, stderr=False)
            await asyncio.wait_for(proc.wait(), MODULES_TIMEOUT)
            return await save_state(vm.qmp_client("save template"), os.path.join(staging, "state"))
        except (TemplateError, OSError, TimeoutError, UVMError):
            raise
        except Exception as exc:  # QMP's and the bridge's errors
            raise UVMError(f"uvm {opts.id}: {exc}") from None
        finally:
            await vm.close()

    async def _rebuild_template(self, key: TemplateKey, *, replacing: Template | None = None) -> None:
        await self.build_template(key, replacing=replacing)

    async def _abandon_start(self) -> None:
        """After a failed restore: QEMU and everything of this start go; the VM is CREATED again, to boot cold."""
        await self._stop_runtime()
        for name in os.listdir(self.run_dir):
            if name != "shares":
                with contextlib.suppress(OSError):
                    os.unlink(self.path(name))
        self.memory, self.incoming = None, False
        self.exit_status, self.unexpected, self._terminating = None, False, False
        self.qemu = None
        self.exited = asyncio.Event()
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
                    raise UVMError(f"connect gcs of uvm {self.id}: the VM stopped (QEMU status {self.exit_status})"
                                   f" before its GCS connected; console: {self.console_tail(5)!r}")
                exc = connect.exception() if connect.done() and not connect.cancelled() else None
                raise UVMError(f"connect gcs of uvm {self.id}: {exc}; console: {self.console_tail(5)!r}")
        finally:
            connect.cancel()
            died.cancel()
        return self.gcs

    async def start_qemu(self) -> None:
        """Starts QEMU and waits until its sockets are connected and QMP answers (not until the guest boots)."""
        self._check("start", State.CREATED)
        assert self.boot is not None
        loop = asyncio.get_running_loop()
        try:
            qemu = accel_mod.qemu_binary()
            if self.accel is None:
                self.accel = await accel_mod.choose(self.boot.kernel, waiter=self.waiter, qemu=qemu)
            for name in ("qmp", "bridge", "log"):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.bind(self.path(f"{name}.sock"))
                s.listen(1)
                s.setblocking(False)
                self._listeners[name] = s
            argv = ["setpriv", "--pdeathsig", "KILL", "--",
                    *qemu_argv(qemu, self.opts, self.boot, self.run_dir, self.accel, memory=self.memory,
                               incoming=self.incoming)]
            with open(self.path("qemu.log"), "wb") as qlog:
                self.qemu = await self.waiter.spawn(argv, stdin=DEVNULL, stdout=qlog.fileno(), stderr=qlog.fileno())
            started = procfs.start_time(self.qemu.pid)  # setpriv execs QEMU: the same pid and start time
            if started is not None:
                procfs.PidRecord(self.qemu.pid, started).write(self.run_dir)
        except OSError as exc:
            for sock in self._listeners.values():
                sock.close()
            self._listeners.clear()
            raise UVMError(f"start uvm {self.id}: {exc}") from None
        log.debug("uvm %s: qemu pid %d (%s)", self.id, self.qemu.pid, self.accel)
        self.state = State.RUNNING
        self._tasks.append(loop.create_task(self._watch_exit(), name=f"uvm {self.id} exit"))
        try:
            conns = await self._accept_all()
            self.qmp = QMPClient(f"uvm-{self.id}")
            await asyncio.wait_for(self.qmp.connect(conns["qmp"]), CONNECT_TIMEOUT)
            status = await self.qmp.execute("query-status")
            log.debug("uvm %s: qmp status %s", self.id, status)
            self.bridge = conns["bridge"]
            self._tasks.append(loop.create_task(self._read_log(conns["log"]), name=f"uvm {self.id} log"))
        except BaseException as exc:
            await self.terminate()
            if isinstance(exc, (OSError, TimeoutError, UVMError)) or type(exc).__module__.startswith("qemu"):
                raise UVMError(f"start uvm {self.id}: {self._why(exc)}") from None
            raise
        finally:
            for s in self._listeners.values():
                s.close()
            self._listeners.clear()

    def _why(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        tail = self.qemu_log_tail()
        if self.exit_status is not None:
            text = f"QEMU exited with status {self.exit_status}" + (f": {tail}" if tail else "")
        return text

    def qemu_log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.path("qemu.log"), errors="replace") as f:
                return " | ".join(line.strip() for line in f.read().splitlines()[-lines:] if line.strip())
        except OSError:
            return ""

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
            done, _ = await asyncio.wait([*accepts.values(), died], timeout=CONNECT_TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
            while not all(t.done() for t in accepts.values()):
                if died.done():
                    raise UVMError("QEMU exited while starting")
                done, _ = await asyncio.wait([*accepts.values(), died], timeout=CONNECT_TIMEOUT,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    raise TimeoutError(f"QEMU did not connect its sockets within {CONNECT_TIMEOUT:.0f} s")
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

    async def _watch_exit(self) -> None:
        assert self.qemu is not None
        status = await self.qemu.wait()
        self.exit_status = status
        if not self._terminating:
            self.unexpected = True
            log.warning("uvm %s: QEMU exited unexpectedly with status %d%s", self.id, status,
                        f" ({self.qemu_log_tail(2)})" if self.qemu_log_tail(2) else "")
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

    async def wait(self) -> int:
        """Waits for the VM to stop; its QEMU exit status."""
        self._check("wait", State.RUNNING, State.PAUSED, State.STOPPED)
        await self.exited.wait()
        assert self.exit_status is not None
        return self.exit_status

    async def terminate(self, grace: float = TERMINATE_GRACE) -> None:
        """Stops the VM: QMP quit, then SIGKILL after `grace` seconds. A no-op once it has stopped."""
        if self.qemu is None or self.exited.is_set():
            return
        self._terminating = True
        if self.qmp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.qmp.execute("quit"), 2.0)
        try:
            await asyncio.wait_for(self.exited.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.qemu.pid, signal.SIGKILL)
            await self.exited.wait()

    async def pause(self) -> None:
        """Halts the VM's processors (QMP stop): RUNNING -> PAUSED. Nothing in the guest answers until resume()."""
        self._check("pause", State.RUNNING)
        try:
            await asyncio.wait_for(self.qmp_client("pause").execute("stop"), QMP_TIMEOUT)
        except UVMError:
            raise
        except Exception as exc:
            raise UVMError(f"uvm {self.id}: pause: {exc}") from None
        if self.state is State.RUNNING:  # (it may have stopped meanwhile)
            self.state = State.PAUSED

    async def resume(self) -> None:
        """Lets a paused VM run again (QMP cont): PAUSED -> RUNNING."""
        self._check("resume", State.PAUSED)
        try:
            await asyncio.wait_for(self.qmp_client("resume").execute("cont"), QMP_TIMEOUT)
        except UVMError:
            raise
        except Exception as exc:
            raise UVMError(f"uvm {self.id}: resume: {exc}") from None
        if self.state is State.PAUSED:
            self.state = State.RUNNING

    def stats(self) -> procfs.VMStats:
        """QEMU's CPU time and memory now (upstream's VirtualMachineStatistics); RUNNING or PAUSED."""
        self._check("stats", State.RUNNING, State.PAUSED)
        assert self.qemu is not None
        try:
            return procfs.stats(self.qemu.pid)
        except OSError as exc:
            raise UVMError(f"uvm {self.id}: stats: QEMU (pid {self.qemu.pid}): {exc}") from None

    async def _stop_runtime(self) -> None:
        """Terminates QEMU and drops what runs with it: the GCS connection, the transport, QMP, the tasks."""
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
        if self.qmp is not None:
            with contextlib.suppress(Exception):
                await self.qmp.disconnect()
            self.qmp = None
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None
        if self.qemu is not None:
            self.qemu.close()

    async def close(self) -> None:
        """Terminates the VM if it runs and releases everything it owns. Idempotent."""
        if self.state in (State.CLOSED, State.NOT_CREATED):
            return
        await self._stop_runtime()
        self.scsi.close()
        self.nics.close()
        problems = self.shares.close()
        try:
            for m in mount.mounted_under(self.run_dir):  # deepest first
                mount.unmount(m, detach=True)
            left = mount.mounted_under(self.run_dir)
            if left:  # never remove a tree through a bind mount: it would delete the host's files
                problems.append(f"{self.run_dir} kept: still mounted: {', '.join(left)}")
            else:
                shutil.rmtree(self.run_dir)
        except OSError as exc:
            problems.append(f"remove {self.run_dir}: {exc}")
        if problems:
            self.state = State.INVALID
            raise UVMError(f"close uvm {self.id}: " + "; ".join(problems))
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
