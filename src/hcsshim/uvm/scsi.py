"""The utility VM's SCSI disks: attached by modify requests to its compute system and mounted in the guest through
the GCS, in one call.

`ScsiManager` (``vm.scsi``) is the one owner of the VM's SCSI disks, as upstream's internal/uvm/scsi Manager
(attach + mount) with the state machines of internal/controller/device/scsi. `add(host_path, ...)` returns a
`ScsiMount`, the caller's handle; `release(handle)` gives it back. Two things are reference-counted apart:

* an `Attachment`, the disk on a LUN of controller 0 (LUNs 1..63, LUN 0 is the vhd root's), shared by every
  user of the same (host path, read-only);
* a `GuestMount`, one mount of an attachment in the guest, shared by every user of the same (controller,
  LUN, mount config, guest path when one is asked for). The same disk with another config is another mount of
  the same attachment, as upstream. Without a guest path the mount goes to ``/run/mounts/scsi/m<k>``, k the
  lowest index free in this VM (upstream's mount index).

Ordering (upstream's uvm.modify): an Add does the host half first (a ModifySettingRequest Add of an Attachment
at ``VirtualMachine/Devices/Scsi/<controller>/Attachments/<lun>`` to the VM's compute system), then the guest
half (MappedVirtualDisk Add); when the guest half fails the host half is rolled back. The last release goes the
other way: guest unmount (MappedVirtualDisk Remove), then guest SCSIDevice Remove (the guest deletes the device
in sysfs), then the host's Remove of the attachment.

Attachment states::

    ATTACHING --modify Add--> ATTACHED --last release: SCSIDevice Remove--> EJECTED --modify Remove--> DETACHED
        |                         |                                                |
        +-- fails: DETACHED       +-- eject fails: INVALID                         +-- fails: INVALID
            (forgotten; its waiters get the error)

GuestMount states::

    MOUNTING --MappedVirtualDisk Add--> MOUNTED --last release--> UNMOUNTING --MappedVirtualDisk Remove--> UNMOUNTED
        |                                                             |
        +-- fails: UNMOUNTED (forgotten)                              +-- fails: INVALID (its attachment keeps
                                                                          the reference)

Only a MOUNTING or MOUNTED mount takes new users (they wait for MOUNTING to settle); an UNMOUNTING or INVALID
one still holds its guest path. Likewise a disk whose last user is releasing it (EJECTED, or ATTACHED on its
way there) is not shared again: a new user gets a new attachment.

INVALID is kept (the LUN and the guest path are never handed out again) and named in the error; `close`
forgets it. Once the VM has stopped (QEMU died, or it was terminated) a release does no guest or host step and
only drops the bookkeeping; a step cut short by the VM stopping counts as done (`common.guest_step`).

Operations check the VM's state: `add` needs it running, `release` running or stopped (not paused: the guest
would not answer). Errors are UVMError naming the VM, the operation and the disk.
"""

from __future__ import annotations

import asyncio
import enum
import os

from hcsshim.bridge.resources import MappedVirtualDisk, SCSIDevice
from hcsshim.hcs.resourcepaths import scsi_attachment
from hcsshim.hcs.schema2 import Attachment as HostAttachment
from hcsshim.hcs.schema2 import ModifySettingRequest
from hcsshim.uvm.common import Machine, State, UVMError, check_state, guest_step, join, stopped
from hcsshim.uvm.lcow import SCSI_CONTROLLER
from hcsshim.uvm.options import SCSI_LUNS

GUEST_MOUNT_FORMAT = "/run/mounts/scsi/m{}"  # upstream's LCOW guest path of a SCSI mount
CONTROLLER = 0  # the VM's one virtio-scsi controller

_ADD = (State.RUNNING,)
_RELEASE = (State.RUNNING, State.STOPPED, State.CLOSED, State.INVALID)


class AttachmentState(enum.Enum):
    ATTACHING = "attaching"
    ATTACHED = "attached"
    EJECTED = "ejected"
    DETACHED = "detached"
    INVALID = "invalid"


class MountState(enum.Enum):
    MOUNTING = "mounting"
    MOUNTED = "mounted"
    UNMOUNTING = "unmounting"
    UNMOUNTED = "unmounted"
    INVALID = "invalid"


class Attachment:
    """A host file on a LUN of the VM (see the module docstring)."""

    __slots__ = ("controller", "error", "host_path", "lun", "read_only", "refs", "settled", "state")

    def __init__(self, host_path: str, read_only: bool, lun: int) -> None:
        self.host_path = host_path
        self.read_only = read_only
        self.controller = CONTROLLER
        self.lun = lun
        self.refs = 1
        self.state = AttachmentState.ATTACHING
        self.error = ""
        self.settled = asyncio.Event()  # the attach finished, either way

    def request(self, request_type: str) -> ModifySettingRequest:
        """The host half of attaching (Add) or detaching (Remove) it: a modify request to the compute system."""
        settings = HostAttachment(type="VirtualDisk", path=self.host_path, read_only=self.read_only) \
            if request_type == "Add" else None
        return ModifySettingRequest(resource_path=scsi_attachment(SCSI_CONTROLLER, self.lun),
                                    request_type=request_type, settings=settings and settings.to_json())

    def __repr__(self) -> str:
        return f"Attachment({self.host_path!r}, lun {self.lun}, {self.state.value}, refs {self.refs})"


class GuestMount:
    """One guest mount of an attachment (see the module docstring)."""

    __slots__ = ("attachment", "config", "error", "explicit", "guest_path", "refs", "settled", "state")

    def __init__(self, attachment: Attachment, guest_path: str, config: tuple[object, ...], explicit: bool) -> None:
        self.attachment = attachment
        self.guest_path = guest_path
        self.config = config
        self.explicit = explicit  # the caller named the guest path
        self.refs = 1
        self.state = MountState.MOUNTING
        self.error = ""
        self.settled = asyncio.Event()

    @property
    def key(self) -> tuple[object, ...]:
        a = self.attachment
        return (a.controller, a.lun, self.config, self.guest_path if self.explicit else None)

    def __repr__(self) -> str:
        return f"GuestMount({self.guest_path!r}, lun {self.attachment.lun}, {self.state.value}, refs {self.refs})"


class ScsiMount:
    """A caller's handle on an attached (and, unless added with mount=False, mounted) disk; give it back with
    `ScsiManager.release`, once."""

    __slots__ = ("_attachment", "_mount", "released")

    def __init__(self, attachment: Attachment, mount: GuestMount | None) -> None:
        self._attachment = attachment
        self._mount = mount
        self.released = False

    @property
    def host_path(self) -> str:
        return self._attachment.host_path

    @property
    def read_only(self) -> bool:
        return self._attachment.read_only

    @property
    def controller(self) -> int:
        return self._attachment.controller

    @property
    def lun(self) -> int:
        return self._attachment.lun

    @property
    def guest_path(self) -> str | None:
        """Where the disk is mounted in the guest; None when it was added with mount=False."""
        return self._mount.guest_path if self._mount is not None else None

    def __repr__(self) -> str:
        released = ", released" if self.released else ""
        return f"ScsiMount({self.host_path!r}, lun {self.lun}, {self.guest_path!r}{released})"


class ScsiManager:
    """The VM's SCSI attachments and their guest mounts (see the module docstring)."""

    def __init__(self, vm: Machine, *, reserved_luns: frozenset[int] = frozenset()) -> None:
        self.vm = vm
        self.reserved_luns = reserved_luns  # LUNs in use from boot (the vhd root on LUN 0)
        self._attachments: dict[int, Attachment] = {}  # by LUN: every attachment not DETACHED
        self._by_disk: dict[tuple[str, bool], Attachment] = {}  # (host path, read-only) -> the one to share
        self._mounts: list[GuestMount] = []  # every mount not UNMOUNTED

    def __repr__(self) -> str:
        return f"ScsiManager(uvm {self.vm.id}, {len(self._attachments)} attachment(s), {len(self._mounts)} mount(s))"

    @property
    def attachments(self) -> list[Attachment]:
        return sorted(self._attachments.values(), key=lambda a: a.lun)

    @property
    def mounts(self) -> list[GuestMount]:
        return list(self._mounts)

    # -- add ----------------------------------------------------------------------------------------------

    async def add(self, host_path: str, *, read_only: bool = True, guest_path: str | None = None, mount: bool = True,
                  ensure_filesystem: bool = False, filesystem: str = "ext4", options: list[str] | None = None,
                  partition: int = 0, block_dev: bool = False) -> ScsiMount:
        """Attaches host_path (a raw or VHD-footed image) and, with mount, mounts it in the guest at guest_path
        (default /run/mounts/scsi/m<k>); ensure_filesystem formats a disk without a `filesystem`, block_dev
        makes guest_path a symlink to the device instead. Shared by reference (module docstring)."""
        op = f"add scsi {host_path}"
        check_state(self.vm, op, *_ADD)
        path = os.path.realpath(host_path)
        if not os.path.exists(path):
            raise UVMError(f"uvm {self.vm.id}: {op}: no such file")
        attachment = await self._attach(path, read_only, op)
        if not mount:
            return ScsiMount(attachment, None)
        config = (read_only, partition, ensure_filesystem, filesystem, tuple(sorted(options or ())), block_dev)
        try:
            guest_mount = await self._mount(attachment, guest_path, config, op)
        except BaseException as exc:
            try:
                await self._detach(attachment, f"{op}: roll back")
            except UVMError as rollback:
                if isinstance(exc, UVMError):
                    raise UVMError(f"{exc}; {rollback}") from None
            raise
        return ScsiMount(attachment, guest_mount)

    async def _attach(self, path: str, read_only: bool, op: str) -> Attachment:
        shared = self._by_disk.get((path, read_only))
        if shared is not None:  # the first user's attach may still run, or have failed
            await join(self.vm, op, shared, AttachmentState.ATTACHED)
            return shared
        used = set(self._attachments) | self.reserved_luns
        lun = next((n for n in range(1, SCSI_LUNS) if n not in used), None)
        if lun is None:
            raise UVMError(f"uvm {self.vm.id}: {op}: all {SCSI_LUNS - 1} LUNs are in use")
        a = Attachment(path, read_only, lun)
        self._attachments[lun] = a
        self._by_disk[(path, read_only)] = a
        try:
            await self.vm.modify_host(op, a.request("Add"))
        except BaseException as exc:
            a.state = AttachmentState.DETACHED
            a.error = f"attach at lun {lun}: {exc}"
            self._forget(a)
            a.settled.set()
            if isinstance(exc, UVMError):
                raise
            if isinstance(exc, Exception):
                raise UVMError(f"uvm {self.vm.id}: {op}: {a.error}") from None
            raise
        a.state = AttachmentState.ATTACHED
        a.settled.set()
        return a

    async def _mount(self, a: Attachment, guest_path: str | None, config: tuple[object, ...], op: str) -> GuestMount:
        key = (a.controller, a.lun, config, guest_path)
        for m in self._mounts:
            if m.key == key and m.state in (MountState.MOUNTING, MountState.MOUNTED):
                await join(self.vm, op, m, MountState.MOUNTED)
                return m
            if guest_path is not None and m.guest_path == guest_path:
                raise UVMError(f"uvm {self.vm.id}: {op}: guest path {guest_path} is in use by "
                               f"{m.attachment.host_path} (lun {m.attachment.lun})")
        explicit = guest_path is not None
        if guest_path is None:
            taken = {m.guest_path for m in self._mounts}
            guest_path = next(p for k in range(len(taken) + 1)
                              if (p := GUEST_MOUNT_FORMAT.format(k)) not in taken)
        m = GuestMount(a, guest_path, config, explicit)
        self._mounts.append(m)
        read_only, partition, ensure_filesystem, filesystem, options, block_dev = config
        disk = MappedVirtualDisk(mount_path=guest_path, lun=a.lun, controller=a.controller, partition=partition,
                                 read_only=read_only, options=list(options), block_dev=block_dev,
                                 ensure_filesystem=ensure_filesystem, filesystem=filesystem)
        try:
            await self.vm.guest(op).modify(disk, "Add")
        except BaseException as exc:
            m.state = MountState.UNMOUNTED
            m.error = f"mount lun {a.lun} at {guest_path}: {exc}"
            self._mounts.remove(m)
            m.settled.set()
            if isinstance(exc, UVMError):
                raise
            if isinstance(exc, Exception):
                raise UVMError(f"uvm {self.vm.id}: {op}: {m.error}") from None
            raise
        m.state = MountState.MOUNTED
        m.settled.set()
        return m

    # -- release ------------------------------------------------------------------------------------------

    async def release(self, handle: ScsiMount) -> None:
        """Gives one reference back; the last user of a mount unmounts it, the last user of the disk detaches
        it (module docstring). Once the VM has stopped only the bookkeeping is dropped."""
        op = f"release scsi {handle.host_path}"
        if handle.released:
            raise UVMError(f"uvm {self.vm.id}: {op}: already released")
        check_state(self.vm, op, *_RELEASE)
        handle.released = True
        m, a = handle._mount, handle._attachment
        if m is not None and m.state is not MountState.UNMOUNTED:
            m.refs -= 1
            if m.refs == 0 and m.state is MountState.MOUNTED:
                m.state = MountState.UNMOUNTING
                disk = MappedVirtualDisk(mount_path=m.guest_path, lun=a.lun, controller=a.controller,
                                         partition=m.config[1], read_only=a.read_only,
                                         block_dev=bool(m.config[5]))
                try:
                    if not stopped(self.vm):
                        await guest_step(self.vm, self.vm.guest(op).modify(disk, "Remove"))
                except Exception as exc:
                    m.state = MountState.INVALID
                    m.error = f"unmount {m.guest_path}: {exc}"
                    raise UVMError(f"uvm {self.vm.id}: {op}: {m.error}") from None
                m.state = MountState.UNMOUNTED
                self._mounts.remove(m)
        await self._detach(a, op)

    async def _detach(self, a: Attachment, op: str) -> None:
        if a.state in (AttachmentState.DETACHED, AttachmentState.INVALID):
            return
        a.refs -= 1
        if a.refs > 0:
            return
        self._by_disk.pop((a.host_path, a.read_only), None)  # a new user gets a new attachment from now on
        try:
            if not stopped(self.vm):
                await guest_step(self.vm, self.vm.guest(op).modify(SCSIDevice(controller=a.controller, lun=a.lun),
                                                                   "Remove"))
        except Exception as exc:
            a.state = AttachmentState.INVALID
            a.error = f"eject lun {a.lun} in the guest: {exc}"
            raise UVMError(f"uvm {self.vm.id}: {op}: {a.error}") from None
        a.state = AttachmentState.EJECTED
        try:
            if not stopped(self.vm):
                await guest_step(self.vm, self.vm.modify_host(op, a.request("Remove")))
        except Exception as exc:
            a.state = AttachmentState.INVALID
            a.error = f"detach lun {a.lun}: {exc}"
            raise UVMError(f"uvm {self.vm.id}: {op}: {a.error}") from None
        a.state = AttachmentState.DETACHED
        self._forget(a)

    def _forget(self, a: Attachment) -> None:
        if self._attachments.get(a.lun) is a:
            del self._attachments[a.lun]
        if self._by_disk.get((a.host_path, a.read_only)) is a:
            del self._by_disk[(a.host_path, a.read_only)]

    def close(self) -> None:
        """The VM is gone: every attachment and mount is forgotten (its compute system took the disks with it)."""
        for m in self._mounts:
            m.state = MountState.UNMOUNTED
        for a in self._attachments.values():
            a.state = AttachmentState.DETACHED
        self._mounts.clear()
        self._attachments.clear()
        self._by_disk.clear()
