"""The Linux backend's modify requests: a ModifySettingRequest's resource path and request type become QMP
commands (or, for Plan9 shares, bind mounts in the system's ``shares/``), the host half of upstream's hot-plug.

* ``VirtualMachine/Devices/Scsi/<controller>/Attachments/<lun>``: Add (an Attachment of Type VirtualDisk) is
  blockdev-add + scsi-hd device_add; Remove is device_del (waiting for DEVICE_DELETED) + blockdev-del.
* ``VirtualMachine/Devices/Plan9/Shares``: Add binds Path at shares/<AccessName or Name> (remounted read-only
  for the ReadOnly flag); Remove unmounts it and removes the mount point.
* ``VirtualMachine/ComputeTopology/Processor/Limits``: Update (ProcessorLimits: Limit and Weight) puts QEMU in
  a cgroup with that CPU bandwidth and weight (hcsshim.hcs.linux.cgroups).
* ``VirtualMachine/Devices/NetworkAdapters/<id>``: Add is netdev_add (the tap EndpointId names) + virtio-net-pci
  device_add on a free root port (its id kept in nics/<slot>); Remove is device_del (waiting) + netdev_del.

Every other path is refused with ErrNotSupported naming it and the request type; a malformed request (an
unknown path, settings that do not decode) with ErrVmcomputeInvalidJSON naming the field. A request's
GuestRequest is not the backend's (upstream's uvm sends it to the GCS itself) and is refused when present.
Which devices exist is asked of QEMU (qom-list of /machine/peripheral), so a process that opened the system
modifies it as the owner does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

from qemu.qmp import EventListener

from hcsshim import gojson, mount
from hcsshim.bridge.wire import HResultError
from hcsshim.hcs import errors, resourcepaths
from hcsshim.hcs.linux import cgroups
from hcsshim.hcs.linux.document import SCSI_LUNS, MachineConfig, controller_index, nic_of, share_of
from hcsshim.hcs.linux.machine import Machine, MachineError
from hcsshim.hcs.linux.qemu import ROOT_PORTS, disk_node
from hcsshim.hcs.schema2 import Attachment, ModifySettingRequest, NetworkAdapter, Plan9Share, ProcessorLimits

__all__ = ["UNPLUG_TIMEOUT", "modify"]

UNPLUG_TIMEOUT = 60.0  # seconds for QEMU to let go of an unplugged device (a PCIe unplug waits for the guest)
ADD, REMOVE, UPDATE = "Add", "Remove", "Update"


def _invalid(what: str, why: str) -> HResultError:
    return HResultError(errors.ErrVmcomputeInvalidJSON, f"{what}: {why}")


def _unsupported(what: str) -> HResultError:
    return HResultError(errors.hresult_from_win32(errors.ErrNotSupported),
                        f"{what}: not supported by the Linux (QEMU) backend")


def _failed(what: str, exc: BaseException) -> HResultError:
    return HResultError(errors.hresult_from_win32(errors.ERROR_GEN_FAILURE), f"{what}: {exc}")


async def modify(machine: Machine, cfg: MachineConfig, system_dir: str, text: str) -> None:
    """Carries out the ModifySettingRequest `text` on `machine` (module docstring); HResultError."""
    try:
        req = gojson.loads(text, ModifySettingRequest)
    except gojson.DecodeError as exc:
        raise HResultError(errors.ErrVmcomputeInvalidJSON, str(exc)) from None
    try:
        template, args = resourcepaths.parse(req.resource_path)
    except ValueError as exc:
        raise _invalid("ModifySettingRequest.ResourcePath", str(exc)) from None
    what = f"modify {req.resource_path} ({req.request_type or 'no RequestType'})"
    if req.guest_request is not None:
        raise _invalid(f"{what}: GuestRequest", "a guest request goes to the guest's GCS, not to the backend")
    if req.request_type not in (ADD, REMOVE, UPDATE):
        raise _invalid(f"{what}: RequestType", f"{req.request_type!r} is not Add, Remove or Update")
    handler = _HANDLERS.get((template, req.request_type))
    if handler is None:
        raise _unsupported(what)
    try:
        await handler(machine, cfg, system_dir, what, args, req.settings)
    except MachineError as exc:
        raise _failed(what, exc) from None


def _settings(cls: type[gojson.Struct], settings: Any, what: str) -> Any:
    if not isinstance(settings, dict):
        raise _invalid(f"{what}: Settings", f"expected a {cls.__name__} object")
    try:
        return cls.from_json(settings)
    except gojson.DecodeError as exc:
        raise _invalid(f"{what}: Settings", str(exc)) from None


async def _peripherals(machine: Machine, what: str) -> set[str]:
    found = await machine.execute(what, "qom-list", {"path": "/machine/peripheral"})
    return {p["name"] for p in found if isinstance(p, dict) and str(p.get("type", "")).startswith("child<")} \
        if isinstance(found, list) else set()


async def _device_del(machine: Machine, device_id: str, what: str) -> None:
    """device_del, then wait until QEMU has let go of the device (DEVICE_DELETED)."""
    qmp = machine.client(what)
    listener = EventListener(("DEVICE_DELETED",))
    with qmp.listen(listener):
        await machine.execute(what, "device_del", {"id": device_id})

        async def deleted() -> None:
            async for event in listener:
                if event.get("data", {}).get("device") == device_id:
                    return

        try:
            await asyncio.wait_for(deleted(), UNPLUG_TIMEOUT)
        except TimeoutError:
            raise MachineError(f"{what}: QEMU did not let go of {device_id} within {UNPLUG_TIMEOUT:.0f} s") from None


# -- SCSI -------------------------------------------------------------------------------------------------------

def _scsi_target(cfg: MachineConfig, args: tuple[str | int, ...], what: str) -> tuple[int, int]:
    key, lun = str(args[0]), int(args[1])
    try:
        controller = controller_index(key)
    except ValueError as exc:
        raise _invalid(what, str(exc)) from None
    if controller >= cfg.scsi_controllers:
        raise _invalid(what, f"the system has no SCSI controller {key!r}")
    if not 0 <= lun < SCSI_LUNS:
        raise _invalid(what, f"LUN {lun} is not 0..{SCSI_LUNS - 1}")
    return controller, lun


async def _scsi_add(machine: Machine, cfg: MachineConfig, system_dir: str, what: str, args: tuple[str | int, ...],
                    settings: Any) -> None:
    controller, lun = _scsi_target(cfg, args, what)
    a = _settings(Attachment, settings, what)
    if a.type != "VirtualDisk":
        raise _unsupported(f"{what}: Attachment Type {a.type!r}")
    if not a.path or not os.path.exists(a.path):
        raise _invalid(f"{what}: Settings.Path", f"{a.path!r}: no such file")
    node = disk_node(controller, lun)
    if node in await _peripherals(machine, what):
        raise HResultError(errors.hresult_from_win32(0xB7), f"{what}: LUN {lun} is in use")  # ERROR_ALREADY_EXISTS
    ro = a.read_only
    await machine.execute(what, "blockdev-add", {"driver": "raw", "node-name": node, "read-only": ro,
                                                 "file": {"driver": "file", "filename": a.path, "read-only": ro}})
    try:
        await machine.execute(what, "device_add", {"driver": "scsi-hd", "bus": f"scsi{controller}.0", "channel": 0,
                                                   "scsi-id": 0, "lun": lun, "drive": node, "id": node,
                                                   "serial": node})
    except BaseException:
        with contextlib.suppress(MachineError):
            await machine.execute(what, "blockdev-del", {"node-name": node})
        raise


async def _scsi_remove(machine: Machine, cfg: MachineConfig, system_dir: str, what: str, args: tuple[str | int, ...],
                       settings: Any) -> None:
    controller, lun = _scsi_target(cfg, args, what)
    node = disk_node(controller, lun)
    if node not in await _peripherals(machine, what):
        raise HResultError(errors.hresult_from_win32(errors.ErrElementNotFound),
                           f"{what}: nothing is attached at LUN {lun}")
    await _device_del(machine, node, what)
    await machine.execute(what, "blockdev-del", {"node-name": node})


# -- Plan9 shares -------------------------------------------------------------------------------------------------

async def _plan9_add(machine: Machine, cfg: MachineConfig, system_dir: str, what: str, args: tuple[str | int, ...],
                     settings: Any) -> None:
    share = share_of(_settings(Plan9Share, settings, what), f"{what}: Settings")
    bind_share(system_dir, share.name, share.path, share.read_only, what)


async def _plan9_remove(machine: Machine, cfg: MachineConfig, system_dir: str, what: str,
                        args: tuple[str | int, ...], settings: Any) -> None:
    s = _settings(Plan9Share, settings, what)
    name = s.access_name or s.name
    if not name or "/" in name or name in (".", ".."):
        raise _invalid(f"{what}: Settings.Name", f"{name!r} is not a share name")
    unbind_share(system_dir, name, what)


def bind_share(system_dir: str, name: str, path: str, read_only: bool, what: str) -> None:
    """The host half of a Plan9 share: `path` bind-mounted at shares/<name> (read-only when asked)."""
    target = os.path.join(system_dir, "shares", name)
    if os.path.lexists(target):
        raise HResultError(errors.hresult_from_win32(0xB7), f"{what}: share {name!r} exists")
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
        raise _failed(f"{what}: bind mount {path} at {target}", exc) from None


def unbind_share(system_dir: str, name: str, what: str) -> None:
    target = os.path.join(system_dir, "shares", name)
    if not os.path.lexists(target):
        raise HResultError(errors.hresult_from_win32(errors.ErrElementNotFound),
                           f"{what}: no share {name!r}")
    try:
        mount.unmount(target, detach=True)
        os.rmdir(target) if os.path.isdir(target) else os.unlink(target)
    except OSError as exc:
        raise _failed(f"{what}: remove the bind mount {target}", exc) from None


def unbind_all(system_dir: str) -> list[str]:
    """Removes every share's bind mount (the machine has stopped); the problems left."""
    problems = []
    shares = os.path.join(system_dir, "shares")
    for name in sorted(os.listdir(shares)) if os.path.isdir(shares) else ():
        try:
            unbind_share(system_dir, name, f"remove share {name}")
        except HResultError as exc:
            problems.append(str(exc))
    return problems


# -- network adapters -------------------------------------------------------------------------------------------

def _nic_ids(slot: int) -> tuple[str, str]:
    """The device and netdev ids of the adapter on root port `slot` (the ids hcsshim.hcs.linux.qemu gives)."""
    return f"nic{slot}", f"net{slot}"


def _adapter_of(machine: Machine, slot: int) -> str:
    """The NetworkAdapters id of the adapter on root port `slot` (<system dir>/nics/<slot>)."""
    try:
        with open(os.path.join(machine.dir, "nics", str(slot))) as f:
            return f.read().strip()
    except OSError:
        return ""


async def _nic_add(machine: Machine, cfg: MachineConfig, system_dir: str, what: str, args: tuple[str | int, ...],
                   settings: Any) -> None:
    adapter_id = str(args[0])
    nic = nic_of(adapter_id, _settings(NetworkAdapter, settings, what), f"{what}: Settings")
    present = await _peripherals(machine, what)
    if any(_adapter_of(machine, s) == adapter_id for s in range(ROOT_PORTS) if f"nic{s}" in present):
        raise HResultError(errors.hresult_from_win32(0xB7), f"{what}: adapter {adapter_id} exists")
    slot = next((s for s in range(ROOT_PORTS) if f"nic{s}" not in present), None)
    if slot is None:
        raise HResultError(errors.hresult_from_win32(errors.ErrNotSupported),
                           f"{what}: all {ROOT_PORTS} network adapter slots are in use")
    device, netdev = _nic_ids(slot)
    args_add = {"driver": "virtio-net-pci", "netdev": netdev, "bus": f"rp{slot}", "id": device}
    if nic.mac:
        args_add["mac"] = nic.mac
    await machine.execute(what, "netdev_add", {"type": "tap", "id": netdev, "ifname": nic.tap, "script": "no",
                                               "downscript": "no"})
    try:
        await machine.execute(what, "device_add", args_add)
    except BaseException:
        with contextlib.suppress(MachineError):
            await machine.execute(what, "netdev_del", {"id": netdev})
        raise
    os.makedirs(os.path.join(system_dir, "nics"), mode=0o700, exist_ok=True)
    with open(os.path.join(system_dir, "nics", str(slot)), "w") as f:
        f.write(adapter_id)


async def _nic_remove(machine: Machine, cfg: MachineConfig, system_dir: str, what: str, args: tuple[str | int, ...],
                      settings: Any) -> None:
    adapter_id = str(args[0])
    present = await _peripherals(machine, what)
    slot = next((s for s in range(ROOT_PORTS) if f"nic{s}" in present and _adapter_of(machine, s) == adapter_id),
                None)
    if slot is None:
        raise HResultError(errors.hresult_from_win32(errors.ErrElementNotFound),
                           f"{what}: no adapter {adapter_id}")
    device, netdev = _nic_ids(slot)
    await _device_del(machine, device, what)
    await machine.execute(what, "netdev_del", {"id": netdev})
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(system_dir, "nics", str(slot)))


# -- processor limits ---------------------------------------------------------------------------------------------

async def _cpu_limits(machine: Machine, cfg: MachineConfig, system_dir: str, what: str, args: tuple[str | int, ...],
                      settings: Any) -> None:
    limits = _settings(ProcessorLimits, settings, what)
    for name, v in (("Reservation", limits.reservation), ("MaximumFrequencyMHz", limits.maximum_frequency_mhz)):
        if v:
            raise _unsupported(f"{what}: Settings.{name}")
    if machine.pid is None:
        raise _invalid(what, "the machine is not running")
    try:
        await asyncio.to_thread(cgroups.apply, system_dir, machine.pid, cfg.cpus, limit=limits.limit,
                                weight=limits.weight)
    except ValueError as exc:
        raise _invalid(f"{what}: Settings", str(exc)) from None
    except OSError as exc:
        raise _failed(f"{what}: cgroup", exc) from None


_Handler = Callable[[Machine, MachineConfig, str, str, tuple[str | int, ...], Any], Awaitable[None]]
_HANDLERS: dict[tuple[str, str], _Handler] = {
    ("SCSI_RESOURCE_FORMAT", ADD): _scsi_add,
    ("SCSI_RESOURCE_FORMAT", REMOVE): _scsi_remove,
    ("PLAN9_SHARE_RESOURCE_PATH", ADD): _plan9_add,
    ("PLAN9_SHARE_RESOURCE_PATH", REMOVE): _plan9_remove,
    ("NETWORK_RESOURCE_FORMAT", ADD): _nic_add,
    ("NETWORK_RESOURCE_FORMAT", REMOVE): _nic_remove,
    ("CPU_LIMITS_RESOURCE_PATH", UPDATE): _cpu_limits,
}
