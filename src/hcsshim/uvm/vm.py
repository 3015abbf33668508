"""The utility VM: one QEMU process and everything it owns, from creation to its last file removed.

A `UtilityVM` is the Linux counterpart of hcsshim's uvm.UtilityVM over HCS. Its state machine:

    NOT_CREATED --create()--> CREATED        options checked, boot files found, run dir made (0700):
                                             <run_root>/<id>/{qmp,bridge,log}.sock, console.log, qemu.log, shares/
    CREATED --start()--> RUNNING             host sockets listening, then QEMU (with a parent-death signal)
                                             connects to them; QMP answers; the log port is read into
                                             <run dir>/gcs.log and our logger; then (unless told not to) the
                                             guest boots and its GCS negotiates over the bridge port
    RUNNING --the guest powers off, crashes or QEMU dies--> STOPPED   (`exit_status`, `unexpected` tell which)
    RUNNING --terminate()--> STOPPED         QMP quit, SIGKILL after a grace period
    STOPPED | CREATED --close()--> CLOSED    share bind mounts removed, run dir removed
    any --close() fails to release something--> INVALID (the error says what is left)

Every method checks the state it may run in and fails with UVMError naming the VM and its state. `close()` is
idempotent and is what callers put in their `finally`; it also terminates a running VM.

Host-side resources with reference counts, as upstream's SCSI and Plan9 managers: SCSI disks by (host path,
read-only) get LUNs 1..63 of controller 0 (LUN 0 is the vhd root's when it boots from rootfs.vhd); shares by
(host path, read-only) become bind mounts under the 9p-exported `shares/`, named by a counter. Network
adapters (virtio-net on a host tap device) take one of the pcie-root-ports made at boot. Adding is the host
half of hcsshim's two-step modify; the guest half (mount, configure) is the GCS's, through hcsshim.gcs.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import shutil
import signal
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hcsshim import mount
from hcsshim.uvm import accel as accel_mod
from hcsshim.uvm.qemu import ROOT_PORTS, SCSI_LUNS, BootFiles, UVMOptions, find_boot_files, qemu_argv

if TYPE_CHECKING:
    from qemu.qmp import QMPClient

    from hcsshim.gcs import GuestConnection
    from hcsshim.runc.reaper import Child, PidfdWaiter, Reaper
    from hcsshim.transport.mux import MuxTransport

log = logging.getLogger(__name__)
guest_log = logging.getLogger("hcsshim.uvm.guest")

CONNECT_TIMEOUT = 30.0  # seconds for QEMU to start and connect its sockets
GCS_TIMEOUT = 120.0  # seconds for the guest to boot and its GCS to negotiate (upstream: 2 minutes)
TERMINATE_GRACE = 5.0  # seconds between QMP quit and SIGKILL


class UVMError(Exception):
    """A utility VM operation failed; the message names the VM, the operation and, where it matters, the state."""


class State(enum.Enum):
    NOT_CREATED = "not created"
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    CLOSED = "closed"
    INVALID = "invalid"


@dataclass
class ScsiDisk:
    host_path: str
    read_only: bool
    lun: int
    refs: int = 1

    @property
    def node(self) -> str:
        return f"lun{self.lun}"


@dataclass
class NetworkAdapter:
    tap: str  # the host's tap device (made by the caller, e.g. hcsshim.hcn)
    mac: str
    slot: int  # the pcie-root-port it is plugged into

    @property
    def device(self) -> str:
        return f"nic{self.slot}"

    @property
    def netdev(self) -> str:
        return f"net{self.slot}"


@dataclass
class Share:
    host_path: str
    read_only: bool
    name: str  # the directory under the 9p share root
    refs: int = 1


class UtilityVM:
    def __init__(self, opts: UVMOptions, *, waiter: Reaper | PidfdWaiter | None = None) -> None:
        from hcsshim.runc.reaper import PidfdWaiter

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
        self._scsi: dict[tuple[str, bool], ScsiDisk] = {}
        self._shares: dict[tuple[str, bool], Share] = {}
        self._share_counter = 0
        self._nics: dict[str, NetworkAdapter] = {}  # by tap name
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"UtilityVM({self.id!r}, {self.state.value})"

    def _check(self, operation: str, *allowed: State) -> None:
        if self.state not in allowed:
            raise UVMError(f"uvm {self.id}: {operation}: the VM is {self.state.value}")

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

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
        """Starts QEMU, waits until its sockets are connected and QMP answers, then for the GCS (connect_gcs)."""
        await self.start_qemu()
        if connect_gcs:
            await self.connect_gcs(timeout=gcs_timeout)

    async def connect_gcs(self, *, timeout: float = GCS_TIMEOUT) -> GuestConnection:
        """Waits for the guest's GCS to dial the bridge port and negotiates; fails early if the VM stops."""
        self._check("connect gcs", State.RUNNING)
        from hcsshim.gcs import GuestConnection
        from hcsshim.transport.mux import MuxTransport

        if self.gcs is not None:
            return self.gcs
        assert self.bridge is not None
        if self.transport is None:
            fd = os.dup(self.bridge.fileno())
            self.transport = MuxTransport(fd, fd, role="host")
            await self.transport.start()
        connect = asyncio.ensure_future(GuestConnection.connect(self.transport, timeout=timeout))
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
                    *qemu_argv(qemu, self.opts, self.boot, self.run_dir, self.accel)]
            from hcsshim.runc.reaper import DEVNULL

            with open(self.path("qemu.log"), "wb") as qlog:
                self.qemu = await self.waiter.spawn(argv, stdin=DEVNULL, stdout=qlog.fileno(), stderr=qlog.fileno())
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
            from qemu.qmp import QMPClient

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
        self._check("wait", State.RUNNING, State.STOPPED)
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

    async def close(self) -> None:
        """Terminates the VM if it runs and releases everything it owns. Idempotent."""
        if self.state in (State.CLOSED, State.NOT_CREATED):
            return
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
        problems = []
        for share in list(self._shares.values()):
            try:
                self._unmount_share(share)
            except OSError as exc:
                problems.append(str(exc))
        self._shares.clear()
        self._scsi.clear()
        self._nics.clear()
        try:
            leftover = mount.mounted_under(self.run_dir)
            for m in sorted(leftover, reverse=True):
                mount.unmount(m, detach=True)
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

    # -- SCSI -------------------------------------------------------------------------------------------------

    async def add_scsi(self, host_path: str, *, read_only: bool = True) -> ScsiDisk:
        """Hot-adds host_path as a SCSI disk (raw; a VHD footer is just trailing bytes); shared by reference."""
        self._check("add scsi", State.RUNNING)
        path = os.path.realpath(host_path)
        async with self._lock:
            disk = self._scsi.get((path, read_only))
            if disk is not None:
                disk.refs += 1
                return disk
            if not os.path.isfile(path) and not os.path.exists(path):
                raise UVMError(f"uvm {self.id}: add scsi {host_path}: no such file")
            used = {d.lun for d in self._scsi.values()} | ({0} if self.opts.root_fs_type == "vhd" else set())
            lun = next((n for n in range(1, SCSI_LUNS) if n not in used), None)
            if lun is None:
                raise UVMError(f"uvm {self.id}: add scsi {host_path}: all {SCSI_LUNS - 1} LUNs are in use")
            disk = ScsiDisk(path, read_only, lun)
            qmp = self._qmp()
            try:
                await qmp.execute("blockdev-add", {"driver": "raw", "node-name": disk.node, "read-only": read_only,
                                                   "file": {"driver": "file", "filename": path,
                                                            "read-only": read_only}})
                try:
                    await qmp.execute("device_add", {"driver": "scsi-hd", "bus": "scsi0.0", "channel": 0,
                                                     "scsi-id": 0, "lun": lun, "drive": disk.node,
                                                     "id": disk.node, "serial": disk.node})
                except Exception:
                    await qmp.execute("blockdev-del", {"node-name": disk.node})
                    raise
            except Exception as exc:
                raise UVMError(f"uvm {self.id}: add scsi {host_path}: {exc}") from None
            self._scsi[(path, read_only)] = disk
            return disk

    async def remove_scsi(self, disk: ScsiDisk) -> None:
        """Drops a reference; the last one unplugs the disk (the guest must have unmounted it first)."""
        self._check("remove scsi", State.RUNNING, State.STOPPED)
        async with self._lock:
            if self._scsi.get((disk.host_path, disk.read_only)) is not disk:
                raise UVMError(f"uvm {self.id}: remove scsi {disk.host_path}: not attached")
            disk.refs -= 1
            if disk.refs > 0:
                return
            del self._scsi[(disk.host_path, disk.read_only)]
            if self.state is not State.RUNNING:
                return
            qmp = self._qmp()
            try:
                await self._device_del(qmp, disk.node)
                await qmp.execute("blockdev-del", {"node-name": disk.node})
            except Exception as exc:
                raise UVMError(f"uvm {self.id}: remove scsi {disk.host_path} (lun {disk.lun}): {exc}") from None

    async def _device_del(self, qmp: QMPClient, device_id: str, timeout: float = 30.0) -> None:
        """device_del and wait for DEVICE_DELETED (QEMU has let go of the device)."""
        from qemu.qmp import EventListener

        listener = EventListener(("DEVICE_DELETED",))
        with qmp.listen(listener):
            await qmp.execute("device_del", {"id": device_id})

            async def deleted() -> None:
                async for event in listener:
                    if event.get("data", {}).get("device") == device_id:
                        return

            await asyncio.wait_for(deleted(), timeout)

    def _qmp(self) -> QMPClient:
        if self.qmp is None:
            raise UVMError(f"uvm {self.id}: no QMP connection")
        return self.qmp

    @property
    def scsi_disks(self) -> list[ScsiDisk]:
        return sorted(self._scsi.values(), key=lambda d: d.lun)

    # -- shares -------------------------------------------------------------------------------------------------

    async def add_share(self, host_path: str, *, read_only: bool = False) -> Share:
        """Makes host_path visible in the 9p share root as shares/<name> (a bind mount); shared by reference."""
        self._check("add share", State.CREATED, State.RUNNING)
        path = os.path.realpath(host_path)
        async with self._lock:
            share = self._shares.get((path, read_only))
            if share is not None:
                share.refs += 1
                return share
            if not os.path.exists(path):
                raise UVMError(f"uvm {self.id}: add share {host_path}: no such file or directory")
            self._share_counter += 1
            share = Share(path, read_only, str(self._share_counter))
            target = self.path(os.path.join("shares", share.name))
            try:
                if os.path.isdir(path):
                    os.mkdir(target, 0o700)
                else:
                    with open(target, "x"):
                        pass
                mount.mount("", path, ["bind"], target)
                if read_only:
                    mount.mount("", path, ["bind", "remount", "ro"], target)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    mount.unmount(target, detach=True)
                with contextlib.suppress(OSError):
                    os.rmdir(target) if os.path.isdir(target) else os.unlink(target)
                raise UVMError(f"uvm {self.id}: add share {host_path}: {exc}") from None
            self._shares[(path, read_only)] = share
            return share

    async def remove_share(self, share: Share) -> None:
        self._check("remove share", State.CREATED, State.RUNNING, State.STOPPED)
        async with self._lock:
            if self._shares.get((share.host_path, share.read_only)) is not share:
                raise UVMError(f"uvm {self.id}: remove share {share.host_path}: not shared")
            share.refs -= 1
            if share.refs > 0:
                return
            del self._shares[(share.host_path, share.read_only)]
            try:
                self._unmount_share(share)
            except OSError as exc:
                raise UVMError(f"uvm {self.id}: remove share {share.host_path}: {exc}") from None

    def _unmount_share(self, share: Share) -> None:
        target = self.path(os.path.join("shares", share.name))
        mount.unmount(target, detach=True)
        if os.path.isdir(target):
            os.rmdir(target)
        else:
            os.unlink(target)

    @property
    def shares(self) -> list[Share]:
        return list(self._shares.values())

    # -- network adapters ---------------------------------------------------------------------------------------

    async def add_network_adapter(self, tap: str, *, mac: str | None = None) -> NetworkAdapter:
        """Hot-plugs a virtio-net adapter on the host tap device `tap` (upstream: an HNS endpoint's NIC); the
        guest finds it by `mac` (default: a locally administered address derived from the VM and the slot)."""
        self._check("add network adapter", State.RUNNING)
        async with self._lock:
            if tap in self._nics:
                raise UVMError(f"uvm {self.id}: add network adapter {tap}: already added")
            if not os.path.exists(f"/sys/class/net/{tap}"):
                raise UVMError(f"uvm {self.id}: add network adapter {tap}: no such network device")
            used = {n.slot for n in self._nics.values()}
            slot = next((i for i in range(ROOT_PORTS) if i not in used), None)
            if slot is None:
                raise UVMError(f"uvm {self.id}: add network adapter {tap}: all {ROOT_PORTS} slots are in use")
            if mac is None:
                import hashlib

                h = hashlib.sha256(f"{self.id}/{slot}".encode()).digest()
                mac = "02:" + ":".join(f"{b:02x}" for b in h[:5])
            nic = NetworkAdapter(tap, mac.lower(), slot)
            qmp = self._qmp()
            try:
                await qmp.execute("netdev_add", {"type": "tap", "id": nic.netdev, "ifname": tap, "script": "no",
                                                 "downscript": "no"})
                try:
                    await qmp.execute("device_add", {"driver": "virtio-net-pci", "netdev": nic.netdev,
                                                     "mac": nic.mac, "bus": f"rp{slot}", "id": nic.device})
                except Exception:
                    await qmp.execute("netdev_del", {"id": nic.netdev})
                    raise
            except Exception as exc:
                raise UVMError(f"uvm {self.id}: add network adapter {tap}: {exc}") from None
            self._nics[tap] = nic
            return nic

    async def remove_network_adapter(self, nic: NetworkAdapter, *, timeout: float = 60.0) -> None:
        """Unplugs the adapter (PCIe hot-unplug waits for the guest to let go: seconds under TCG)."""
        self._check("remove network adapter", State.RUNNING, State.STOPPED)
        async with self._lock:
            if self._nics.get(nic.tap) is not nic:
                raise UVMError(f"uvm {self.id}: remove network adapter {nic.tap}: not added")
            del self._nics[nic.tap]
            if self.state is not State.RUNNING:
                return
            qmp = self._qmp()
            try:
                await self._device_del(qmp, nic.device, timeout)
                await qmp.execute("netdev_del", {"id": nic.netdev})
            except Exception as exc:
                raise UVMError(f"uvm {self.id}: remove network adapter {nic.tap}: {exc}") from None

    @property
    def network_adapters(self) -> list[NetworkAdapter]:
        return sorted(self._nics.values(), key=lambda n: n.slot)


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
