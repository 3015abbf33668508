"""Guest storage resources (ModifySettings): SCSI disks, VPMem layers, mapped directories and overlay rootfs.

Owns the mounts the agent makes for the host and undoes them on power-off (`close`), newest first. Each
request's Settings arrive typed (hcsshim.bridge.resources):

* ``MappedVirtualDisk`` Add/Remove: the disk at (Controller, Lun) is found in sysfs: the controller index maps
  to a SCSI host through ``/sys/bus/vmbus/devices/<controller GUID>/host<N>`` (Hyper-V), else to the
  Controller-th ``virtio_scsi`` host (QEMU); the device is ``/sys/bus/scsi/devices/<N>:0:0:<Lun>/block/<sdX>``
  (polled for 5 s). Mounted read-only with ``noload`` when ReadOnly; EnsureFilesystem formats a disk that has
  no such filesystem; BlockDev makes MountPath a symlink to the device instead;
* ``SCSIDevice`` Remove: ``echo 1 > .../delete`` (hot-unplug before the host detaches the disk);
* ``VPMemDevice`` Add/Remove: ``/dev/pmem<N>`` mounted ext4 read-only with ``noload``;
* ``MappedDirectory`` Add/Remove: with a share root (``-share-root``, where the VM's one virtio-9p device
  is mounted, see the design's Plan9 row) the share ``<root>/<ShareName>`` is bind-mounted at MountPath (a
  share that is a single file is bound onto a file there); otherwise the host's 9p server is dialled on Port
  and mounted with ``trans=fd`` like the Go GCS;
* ``CombinedLayers`` Add/Remove: overlayfs, lowerdir = the layers top-most first, upper/work under
  ScratchPath (read-only without one).

Mounts use mount(2)/umount2(2) through ctypes (standard library; no mount binary needed). What the agent
provides (a process runner for mkfs, the transport for 9p, the wait for kernel modules) is handed in, so this
module needs nothing of the agent's container code.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import logging
import os
from collections.abc import Awaitable, Callable

from hcsshim.bridge import E_FAIL, E_INVALIDARG, E_NOTIMPL, HResultError
from hcsshim.bridge.resources import (
    CombinedLayers,
    MappedDirectory,
    MappedVirtualDisk,
    ModificationRequest,
    SCSIDevice,
    VPMemDevice,
)
from hcsshim.mount import mount_raw, parse_options, umount_raw
from hcsshim.runc import PidfdWaiter, Reaper
from hcsshim.transport.base import Transport

ModuleWait = Callable[..., Awaitable[None]]  # kernel_modules(*names): until the named modules are loaded


async def _loaded(*names: str) -> None:
    """Outside a utility VM every kernel module is there already."""


log = logging.getLogger(__name__)

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MNT_DETACH = 2
SCSI_CONTROLLER_GUIDS = (
    "df6d0690-79e5-55b6-a5ec-c1e2f77f580a",
    "0110f83b-de10-5172-a266-78bca56bf50a",
    "b5d2d8d4-3a75-51bf-945b-3444dc6b8579",
    "305891a9-b251-5dfe-91a2-c25d9212275b",
)
DEVICE_TIMEOUT = 5.0

# mount(2)/umount2(2) as they are (hcsshim.mount: stdlib only, shipped in the guest).
mount = mount_raw
umount = umount_raw


def is_mountpoint(path: str) -> bool:
    path = os.path.abspath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


class Storage:
    """The storage half of ModifySettings (see the module docstring); sysfs/dev are overridable for tests.

    runner runs mkfs (`run(argv)` -> (status, stdout, stderr)); transport dials the host's 9p port when there is
    no share root; kernel_modules waits for the modules a request needs (init loads them in the background)."""

    def __init__(self, runner: Reaper | PidfdWaiter, transport: Transport | None, *,
                 kernel_modules: ModuleWait = _loaded, share_root: str | None = None, sysfs: str = "/sys",
                 dev: str = "/dev") -> None:
        self.runner = runner
        self.transport = transport
        self.kernel_modules = kernel_modules
        self.share_root = share_root
        self.share_tag: str | None = None  # the VM's 9p device, mounted at share_root on first use
        self.sysfs = sysfs
        self.dev = dev
        self.mounts: list[str] = []  # targets we mounted, oldest first

    RESOURCE_TYPES = ("MappedVirtualDisk", "SCSIDevice", "VPMemDevice", "MappedDirectory", "CombinedLayers")

    async def modify(self, request: ModificationRequest) -> None:
        """One storage request (its settings already parsed into their resource class)."""
        s = request.settings
        kind = (request.resource_type, request.request_type or "Add")
        if isinstance(s, MappedVirtualDisk) and kind[1] == "Add":
            await self.add_disk(s)
        elif isinstance(s, MappedVirtualDisk) and kind[1] == "Remove":
            await self.remove_mount(s.mount_path)
        elif isinstance(s, SCSIDevice) and kind[1] == "Remove":
            await self.remove_scsi_device(s)
        elif isinstance(s, VPMemDevice) and kind[1] == "Add":
            await self.add_vpmem(s)
        elif isinstance(s, VPMemDevice) and kind[1] == "Remove":
            await self.remove_mount(s.mount_path)
        elif isinstance(s, MappedDirectory) and kind[1] == "Add":
            await self.add_directory(s)
        elif isinstance(s, MappedDirectory) and kind[1] == "Remove":
            await self.remove_mount(s.mount_path)
        elif isinstance(s, CombinedLayers) and kind[1] == "Add":
            await self.add_layers(s)
        elif isinstance(s, CombinedLayers) and kind[1] == "Remove":
            await self.remove_mount(s.container_root_path)
        else:
            raise HResultError(E_NOTIMPL, f"modify {kind[0]}: request type {kind[1]!r} is not supported")

    # --- SCSI ---------------------------------------------------------------------------------------------

    def scsi_host(self, controller: int) -> int:
        """The SCSI host number of the controller-th controller of the VM."""
        if controller < len(SCSI_CONTROLLER_GUIDS):
            found = glob.glob(os.path.join(self.sysfs, "bus/vmbus/devices", SCSI_CONTROLLER_GUIDS[controller],
                                           "host*"))
            if found:
                return int(os.path.basename(found[0])[4:])
        hosts = []
        for path in glob.glob(os.path.join(self.sysfs, "class/scsi_host/host*/proc_name")):
            with contextlib.suppress(OSError), open(path) as f:
                if f.read().strip() == "virtio_scsi":
                    hosts.append(int(os.path.basename(os.path.dirname(path))[4:]))
        hosts.sort()
        if controller >= len(hosts):
            raise HResultError(E_FAIL, f"SCSI controller {controller}: not found in {self.sysfs}")
        return hosts[controller]

    async def scsi_device(self, controller: int, lun: int, partition: int = 0) -> str:
        """/dev/sdX (or its partition) of the disk at (controller, lun), waiting for it to appear."""
        host = self.scsi_host(controller)
        block = os.path.join(self.sysfs, f"bus/scsi/devices/{host}:0:0:{lun}/block")
        deadline = asyncio.get_running_loop().time() + DEVICE_TIMEOUT
        while True:
            with contextlib.suppress(OSError):
                names = os.listdir(block)
                if len(names) == 1:
                    name = names[0]
                    if partition:
                        part = f"{name}{partition}"
                        if not os.path.exists(os.path.join(block, name, part)):
                            raise FileNotFoundError(part)
                        name = part
                    # The block device shows in sysfs before the disk is read in: wait for its size and node.
                    with open(os.path.join(block, names[0], "size")) as f:
                        ready = int(f.read().strip() or 0) > 0
                    dev = os.path.join(self.dev, name)
                    if ready and os.path.exists(dev):
                        return dev
            if asyncio.get_running_loop().time() > deadline:
                raise HResultError(E_FAIL, f"SCSI disk {controller}:{lun}: no block device in {block} after "
                                           f"{DEVICE_TIMEOUT:.0f} s")
            await asyncio.sleep(0.01)

    async def add_disk(self, d: MappedVirtualDisk) -> None:
        # virtio-scsi, sd and ext4 load in the background at boot, first of init's list
        fstype = d.filesystem or "ext4"
        await self.kernel_modules("virtio_scsi", "sd_mod", *(("ext4",) if fstype.startswith("ext") else ()))
        target = d.mount_path
        if not target:
            return
        controller, lun = d.controller, d.lun
        op = f"mount SCSI disk {controller}:{lun}"
        if d.encrypted:
            raise HResultError(E_NOTIMPL, f"{op}: encrypted disks are not supported")
        device = await self.scsi_device(controller, lun, d.partition)
        if d.block_dev:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(device, target)
            return
        if d.ensure_filesystem and not _has_ext_fs(device):
            status, _, err = await self.runner.run([f"mkfs.{fstype}", "-q", "-F", device]) \
                if fstype.startswith("ext") else await self.runner.run([f"mkfs.{fstype}", "-f", device])
            if status != 0:
                raise HResultError(E_FAIL, f"format {device} as {fstype}: {err.decode(errors='replace').strip()}")
        # fstab-style options: flags (noatime, nosuid, ...) become MS_* flags, the rest the fs's data string
        flags, _, data = parse_options([o for o in d.options if o not in ("ro", "rw")])
        if d.read_only:
            flags |= MS_RDONLY
            if fstype.startswith("ext"):
                data = ",".join(filter(None, [data, "noload"]))
        # The block device can be there before the disk can be opened (ENXIO) under TCG: retry that briefly.
        deadline = asyncio.get_running_loop().time() + DEVICE_TIMEOUT
        while True:
            try:
                self._mount(device, target, fstype, flags, data, op)
                return
            except HResultError as e:
                if not (isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.ENXIO) or \
                        asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(0.05)

    async def remove_scsi_device(self, s: SCSIDevice) -> None:
        controller, lun = s.controller, s.lun
        host = self.scsi_host(controller)
        path = os.path.join(self.sysfs, f"bus/scsi/devices/{host}:0:0:{lun}/delete")
        try:
            with open(path, "w") as f:
                f.write("1")
        except FileNotFoundError:
            # Not (or not yet) found by the guest's scan, e.g. a disk attached without a mount and released at
            # once: nothing to let go of; the host's unplug removes whatever the scan still finds.
            log.info("SCSI device to remove is not there", extra={"controller": controller, "lun": lun})
        except OSError as e:
            raise HResultError(E_FAIL, f"remove SCSI device {controller}:{lun}: {e}") from e

    # --- VPMem --------------------------------------------------------------------------------------------

    async def add_vpmem(self, s: VPMemDevice) -> None:
        await self.kernel_modules("virtio_pmem", "nd_pmem", "ext4")
        number = s.device_number
        target = s.mount_path
        if s.mapping_info is not None:
            raise HResultError(E_NOTIMPL, f"mount VPMem device {number}: multi-mapped layers are not supported")
        if not target:
            raise HResultError(E_INVALIDARG, f"mount VPMem device {number}: no MountPath")
        self._mount(os.path.join(self.dev, f"pmem{number}"), target, "ext4", MS_RDONLY, "noload",
                    f"mount VPMem device {number}")

    # --- mapped directories -------------------------------------------------------------------------------

    async def _share_root_mounted(self, op: str) -> None:
        """With a share tag, the VM's 9p device at the share root (the first MappedDirectory mounts it)."""
        assert self.share_root is not None
        if not self.share_tag or os.path.ismount(self.share_root):
            return
        await self.kernel_modules("9p", "9pnet_virtio")  # loaded in the background while the agent starts
        try:
            os.makedirs(self.share_root, exist_ok=True)
            mount(self.share_tag, self.share_root, "9p", 0, "trans=virtio,version=9p2000.L,msize=262144,cache=none")
        except OSError as e:
            raise HResultError(E_FAIL, f"{op}: mount the share device {self.share_tag}: {e}") from e

    async def add_directory(self, s: MappedDirectory) -> None:
        target, share, readonly = s.mount_path, s.share_name, s.read_only
        op = f"map directory {share!r} at {target}"
        if not target:
            raise HResultError(E_INVALIDARG, f"{op}: no MountPath")
        if self.share_root is not None:
            await self._share_root_mounted(op)
            source = os.path.join(self.share_root, share)
            if not share or os.path.relpath(source, self.share_root).startswith(".."):
                raise HResultError(E_INVALIDARG, f"{op}: invalid share name")
            self._mount(source, target, None, MS_BIND, "", op, file=os.path.isfile(source))
            if readonly:
                try:
                    mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
                except OSError as e:
                    self._unmount(target)
                    raise HResultError(E_FAIL, f"{op}: {e}") from e
            return
        port = s.port or 564
        if self.transport is None:
            raise HResultError(E_NOTIMPL, f"{op}: no transport to reach the host's 9p server (or -share-root)")
        try:
            conn = await self.transport.dial(port)
        except OSError as e:
            raise HResultError(E_FAIL, f"{op}: {e}") from e
        try:
            fd = conn.fileno()
            if fd is None:
                raise HResultError(E_NOTIMPL, f"{op}: 9p needs a socket transport (or -share-root)")
            data = f"trans=fd,rfdno={fd},wfdno={fd},msize=65536" + (f",aname={share}" if share else "")
            self._mount(share or "9p", target, "9p", MS_RDONLY if readonly else 0, data, op)
        finally:
            conn.close()  # the kernel keeps its own reference to the socket

    # --- overlay ------------------------------------------------------------------------------------------

    async def add_layers(self, s: CombinedLayers) -> None:
        await self.kernel_modules("overlay")
        target = s.container_root_path
        layers = [layer.path for layer in s.layers]
        scratch = s.scratch_path
        op = f"combine layers at {target}"
        if not target or not layers or not all(layers):
            raise HResultError(E_INVALIDARG, f"{op}: need ContainerRootPath and at least one layer path")
        for layer in layers:
            if ":" in layer or "," in layer or not os.path.isdir(layer):
                raise HResultError(E_INVALIDARG, f"{op}: layer {layer}: not a usable directory")
        data = "lowerdir=" + ":".join(layers)
        flags = 0
        if scratch:
            upper, work = os.path.join(scratch, "upper"), os.path.join(scratch, "work")
            os.makedirs(upper, mode=0o755, exist_ok=True)
            os.makedirs(work, mode=0o755, exist_ok=True)
            data += f",upperdir={upper},workdir={work}"
        else:
            flags = MS_RDONLY
            if len(layers) == 1:
                # overlayfs wants two lower layers without an upper one (the same one twice is a loop to it):
                # one read-only layer is a read-only bind mount of it
                self._mount(layers[0], target, None, MS_BIND, "", op)
                try:
                    mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
                except OSError as e:
                    raise HResultError(E_FAIL, f"{op}: read-only: {e}") from e
                return
        self._mount("overlay", target, "overlay", flags, data, op)

    # --- common -------------------------------------------------------------------------------------------

    def _mount(self, source: str, target: str, fstype: str | None, flags: int, data: str, op: str, *,
               file: bool = False) -> None:
        """Mount at target, made first (a directory, or an empty file to bind a file onto)."""
        try:
            if file:
                os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
                with open(target, "a"):
                    pass
            else:
                os.makedirs(target, mode=0o755, exist_ok=True)
            mount(source, target, fstype, flags | (MS_BIND if fstype is None else 0), data)
        except OSError as e:
            raise HResultError(E_FAIL, f"{op}: {e}") from e
        self.mounts.append(os.path.abspath(target))
        log.info("mounted", extra={"target": target, "source": source, "fstype": fstype or "bind"})

    async def remove_mount(self, target: str) -> None:
        """Undo a mount (or a BlockDev symlink) at target; nothing there is no error."""
        if not target:
            return
        if os.path.islink(target):
            os.unlink(target)
            return
        self._unmount(target)

    def _unmount(self, target: str) -> None:
        target = os.path.abspath(target)
        try:
            umount(target)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
                raise HResultError(E_FAIL, f"unmount {target}: {e}") from e
        with contextlib.suppress(ValueError):
            self.mounts.remove(target)
        with contextlib.suppress(OSError):
            if os.path.isdir(target):
                os.rmdir(target)
            elif os.path.isfile(target) and os.path.getsize(target) == 0:
                os.unlink(target)  # the empty file a file share was bound onto

    async def close(self) -> None:
        for target in reversed(self.mounts[:]):
            try:
                umount(target, MNT_DETACH)
            except OSError as e:
                log.warning("unmount at power-off failed", extra={"target": target, "error": str(e)})
        self.mounts.clear()


def _has_ext_fs(device: str) -> bool:
    try:
        with open(device, "rb") as f:
            f.seek(1080)
            return f.read(2) == b"\x53\xef"
    except OSError:
        return False
