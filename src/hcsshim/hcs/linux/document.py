"""The Linux backend's reading of a schema2 ComputeSystem document: what a QEMU machine is made of (`Machine
Config`), and the refusal, by field path, of everything in the document that has no QEMU counterpart here.

`parse(id, text)` decodes the document with hcsshim.hcs.schema2 (a wrong type is an error naming the field's
path), then walks what the document sets (its fields as upstream's encoder writes them: zero values omitted)
against `MAPPED`, the paths this backend honours; the first path outside it is refused with ErrNotSupported
naming it ("VirtualMachine.Devices.VirtualPMem.Devices[\"0\"]: not supported by the Linux (QEMU) backend").
Nothing has been started or made when it fails.

What the mapped fields become (hcsshim.hcs.linux.qemu builds the command line):

| document | machine |
|---|---|
| VirtualMachine.Chipset.LinuxKernelDirect | the kernel (-kernel), initrd and command line |
| ComputeTopology.Memory.SizeInMB, Processor.Count | -m, -smp (AllowOvercommit, EnableDeferredCommit: QEMU's way) |
| StopOnReset | -no-reboot: a guest reset (panic=-1) ends the machine |
| Devices.Scsi[<controller>].Attachments[<lun>] | virtio-scsi-pci `scsi<n>` per controller; scsi-hd per disk |
| Devices.Plan9.Shares | bind mounts under the system's shares/, exported by one virtio-9p device |
| Devices.HvSocket.HvSocketConfig.ServiceTable | a virtio-serial port per service (see hcsshim.hcs.linux.hvsock) |
| Devices.ComPorts["0"].NamedPipe | the serial console, written to that path |
| Devices.NetworkAdapters[<id>] | virtio-net-pci on the host tap device named by EndpointId |
| Devices.VirtualPMem (MaximumCount, MaximumSizeBytes) | accepted with no devices (nothing to map) |
| GuestState.RuntimeStateFilePath | the RAM in that file: shared, or copy-on-write with ForceTransientState |
| RestoreState.SaveStateFilePath | the machine starts from that saved state (devices; and RAM, without a RAM file) |
| ShouldTerminateOnLastHandleClosed | QEMU dies with the process that created it (parent-death signal) |

Security descriptors in the HvSocket table are accepted and not enforced: the host sockets are the root user's
(mode 0600 in a 0700 directory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hcsshim import gojson
from hcsshim.bridge.wire import HResultError
from hcsshim.hcs import errors
from hcsshim.hcs.linux import hvsock
from hcsshim.hcs.schema2 import ComputeSystem

__all__ = ["MAPPED", "SCSI_CONTROLLER_GUIDS", "MachineConfig", "ScsiDisk", "Share", "controller_index", "parse"]

# upstream's guestrequest.ScsiControllerGuids: the controllers' keys in an LCOW document, in controller order
SCSI_CONTROLLER_GUIDS = (
    "df6d0690-79e5-55b6-a5ec-c1e2f77f580a",
    "0110f83b-de10-5172-a266-78bca56bf50a",
    "b5d2d8d4-3a75-51bf-945b-3444dc6b8579",
    "305891a9-b251-5dfe-91a2-c25d9212275b",
)
SCSI_LUNS = 64
ATTACHMENT_VIRTUAL_DISK = "VirtualDisk"

# The document paths honoured ("*" is any map key or list index). A path is honoured when it or a prefix of it is
# listed; "=" entries take any value under them.
MAPPED: tuple[tuple[str, ...], ...] = tuple(tuple(p.split(".")) for p in (
    "Owner", "SchemaVersion.=", "ShouldTerminateOnLastHandleClosed",
    "VirtualMachine.StopOnReset", "VirtualMachine.Version.=",
    "VirtualMachine.Chipset.LinuxKernelDirect.KernelFilePath",
    "VirtualMachine.Chipset.LinuxKernelDirect.InitRdPath",
    "VirtualMachine.Chipset.LinuxKernelDirect.KernelCmdLine",
    "VirtualMachine.Chipset.UseUtc",
    "VirtualMachine.ComputeTopology.Memory.SizeInMB",
    "VirtualMachine.ComputeTopology.Memory.AllowOvercommit",
    "VirtualMachine.ComputeTopology.Memory.EnableDeferredCommit",
    "VirtualMachine.ComputeTopology.Processor.Count",
    "VirtualMachine.Devices.Scsi.*.Attachments.*.Type",
    "VirtualMachine.Devices.Scsi.*.Attachments.*.Path",
    "VirtualMachine.Devices.Scsi.*.Attachments.*.ReadOnly",
    "VirtualMachine.Devices.VirtualPMem.MaximumCount",
    "VirtualMachine.Devices.VirtualPMem.MaximumSizeBytes",
    "VirtualMachine.Devices.HvSocket.HvSocketConfig.DefaultBindSecurityDescriptor",
    "VirtualMachine.Devices.HvSocket.HvSocketConfig.DefaultConnectSecurityDescriptor",
    "VirtualMachine.Devices.HvSocket.HvSocketConfig.ServiceTable.*.BindSecurityDescriptor",
    "VirtualMachine.Devices.HvSocket.HvSocketConfig.ServiceTable.*.ConnectSecurityDescriptor",
    "VirtualMachine.Devices.HvSocket.HvSocketConfig.ServiceTable.*.AllowWildcardBinds",
    "VirtualMachine.Devices.HvSocket.HvSocketConfig.ServiceTable.*.Disabled",
    "VirtualMachine.Devices.Plan9.Shares.*.Name",
    "VirtualMachine.Devices.Plan9.Shares.*.AccessName",
    "VirtualMachine.Devices.Plan9.Shares.*.Path",
    "VirtualMachine.Devices.Plan9.Shares.*.Port",
    "VirtualMachine.Devices.Plan9.Shares.*.Flags",
    "VirtualMachine.Devices.ComPorts.0.NamedPipe",
    "VirtualMachine.Devices.NetworkAdapters.*.EndpointId",
    "VirtualMachine.Devices.NetworkAdapters.*.MacAddress",
    "VirtualMachine.GuestState.RuntimeStateFilePath",
    "VirtualMachine.GuestState.ForceTransientState",
    "VirtualMachine.RestoreState.SaveStateFilePath",
    "VirtualMachine.RestoreState.TemplateSystemId",
))


@dataclass(frozen=True)
class ScsiDisk:
    controller: int
    lun: int
    path: str
    read_only: bool


@dataclass(frozen=True)
class Share:
    """A Plan9 share: `path` on the host, visible to the guest as `name` in the share device."""

    name: str
    path: str
    read_only: bool


@dataclass(frozen=True)
class Nic:
    id: str  # the NetworkAdapters key
    tap: str  # the host tap device (EndpointId)
    mac: str


@dataclass
class MachineConfig:
    """What one QEMU machine is made of, from its document (see the module docstring)."""

    id: str
    owner: str
    kernel: str
    initrd: str
    cmdline: str
    memory_mb: int
    cpus: int
    stop_on_reset: bool
    scsi_controllers: int  # virtio-scsi controllers scsi0..scsi<n-1>
    scsi_keys: dict[int, str]  # controller index -> its key in the document (resource paths name it)
    disks: list[ScsiDisk] = field(default_factory=list)
    shares: list[Share] = field(default_factory=list)
    ports: dict[str, str] = field(default_factory=dict)  # HvSocket service id -> virtio-serial port name
    console: str | None = None  # the serial console's file
    nics: list[Nic] = field(default_factory=list)
    memory_file: str | None = None  # RAM in this file
    memory_private: bool = False  # ... mapped copy-on-write (ForceTransientState)
    restore_from: str | None = None  # start from this saved state
    template_id: str = ""
    terminate_on_last_handle_closed: bool = False


def _unsupported(what: str, why: str = "not supported by the Linux (QEMU) backend") -> HResultError:
    return HResultError(errors.hresult_from_win32(errors.ErrNotSupported), f"{what}: {why}")


def _invalid(what: str, why: str) -> HResultError:
    return HResultError(errors.ErrVmcomputeInvalidJSON, f"{what}: {why}")


def _walk(value: Any, path: tuple[str, ...], shown: str, found: list[str]) -> None:
    """Appends to `found` the shown paths of the leaves (and non-empty containers) of `value` not in MAPPED."""
    if not _allowed_prefix(path):
        found.append(shown)
        return
    if _covered(path):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            # map keys are shown ["key"], struct fields .Field: map entries follow a "*" or a literal key
            sub = f'{shown}["{k}"]' if _is_map(path) else (f"{shown}.{k}" if shown else k)
            _walk(v, (*path, k), sub, found)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, (*path, str(i)), f"{shown}[{i}]", found)
    else:
        found.append(shown)


_MAPS = frozenset({("VirtualMachine", "Devices", "Scsi"), ("VirtualMachine", "Devices", "NetworkAdapters"),
                   ("VirtualMachine", "Devices", "ComPorts"),
                   ("VirtualMachine", "Devices", "HvSocket", "HvSocketConfig", "ServiceTable"),
                   ("VirtualMachine", "Devices", "VirtualPMem", "Devices"), ("VirtualMachine", "Devices", "Scsi", "*",
                                                                            "Attachments")})


def _is_map(path: tuple[str, ...]) -> bool:
    return any(len(m) == len(path) and all(a in ("*", b) for a, b in zip(m, path, strict=True)) for m in _MAPS)


def _match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    return all(a in ("*", b) for a, b in zip(pattern, path, strict=False))


def _allowed_prefix(path: tuple[str, ...]) -> bool:
    """Some MAPPED path starts with `path` (or `path` is under a "=" entry)."""
    for p in MAPPED:
        if p[-1] == "=" and len(path) >= len(p) - 1 and _match(p[:-1], path[:len(p) - 1]):
            return True
        if len(path) <= len(p) and _match(p[:len(path)], path):
            return True
    return False


def _covered(path: tuple[str, ...]) -> bool:
    """`path` is a MAPPED leaf, or under a "=" entry."""
    for p in MAPPED:
        if p[-1] == "=":
            if len(path) >= len(p) - 1 and _match(p[:-1], path[:len(p) - 1]):
                return True
        elif len(p) == len(path) and _match(p, path):
            return True
    return False


def controller_index(key: str) -> int:
    """The controller a Scsi key names: one of upstream's controller GUIDs, or its number; ValueError."""
    low = key.lower()
    if low in SCSI_CONTROLLER_GUIDS:
        return SCSI_CONTROLLER_GUIDS.index(low)
    if key.isdigit() and int(key) < len(SCSI_CONTROLLER_GUIDS):
        return int(key)
    raise ValueError(f"SCSI controller {key!r}: not 0..{len(SCSI_CONTROLLER_GUIDS) - 1} or one of upstream's "
                     "controller GUIDs")


def parse(id: str, text: str | bytes, *, check_files: bool = True) -> MachineConfig:
    """The machine the ComputeSystem document `text` describes; HResultError (ErrVmcomputeInvalidJSON for a
    malformed document or a file it names that does not exist, ErrNotSupported for a field with no QEMU
    counterpart), naming the field. `check_files=False` reads a document already accepted (open by id)."""
    try:
        doc = gojson.loads(text, ComputeSystem)
    except gojson.DecodeError as exc:
        raise HResultError(errors.ErrVmcomputeInvalidJSON, str(exc)) from None
    if doc.container is not None or doc.hosted_system is not None or doc.hosting_system_id:
        what = "Container" if doc.container is not None else \
            "HostedSystem" if doc.hosted_system is not None else "HostingSystemId"
        raise _unsupported(what, "process-isolated and hosted containers are not compute systems of the Linux "
                                 "backend (containers run with runc, in or out of a utility VM)")
    vm = doc.virtual_machine
    if vm is None:
        raise _invalid("VirtualMachine", "required: the Linux backend's compute systems are virtual machines")
    found: list[str] = []
    _walk(doc.to_json(), (), "", found)
    if found:
        raise _unsupported(found[0])
    kd = vm.chipset.linux_kernel_direct if vm.chipset is not None else None
    if kd is None or not kd.kernel_file_path:
        raise _invalid("VirtualMachine.Chipset.LinuxKernelDirect.KernelFilePath",
                       "required (the Linux backend boots kernels directly)")
    topo = vm.compute_topology
    memory_mb = topo.memory.size_in_mb if topo is not None and topo.memory is not None else 0
    cpus = topo.processor.count if topo is not None and topo.processor is not None else 0
    if memory_mb < 64:
        raise _invalid("VirtualMachine.ComputeTopology.Memory.SizeInMB", f"{memory_mb} MB is too little (at least 64)")
    if cpus == 0:
        cpus = 1
    if not 1 <= cpus <= 64:
        raise _invalid("VirtualMachine.ComputeTopology.Processor.Count", f"{cpus} is out of range 1..64")
    for name, path in (("KernelFilePath", kd.kernel_file_path), ("InitRdPath", kd.init_rd_path)):
        if check_files and path and not os.path.isfile(path):
            raise _invalid(f"VirtualMachine.Chipset.LinuxKernelDirect.{name}", f"{path}: no such file")
    cfg = MachineConfig(id=id, owner=doc.owner, kernel=kd.kernel_file_path, initrd=kd.init_rd_path,
                        cmdline=kd.kernel_cmd_line.strip(), memory_mb=memory_mb, cpus=cpus,
                        stop_on_reset=vm.stop_on_reset, scsi_controllers=0, scsi_keys={},
                        terminate_on_last_handle_closed=doc.should_terminate_on_last_handle_closed)
    devices = vm.devices
    if devices is not None:
        _devices(cfg, devices, check_files)
    if vm.guest_state is not None and vm.guest_state.runtime_state_file_path:
        cfg.memory_file = vm.guest_state.runtime_state_file_path
        cfg.memory_private = vm.guest_state.force_transient_state
    elif vm.guest_state is not None and vm.guest_state.force_transient_state:
        raise _invalid("VirtualMachine.GuestState.ForceTransientState", "needs RuntimeStateFilePath")
    if vm.restore_state is not None:
        if not vm.restore_state.save_state_file_path:
            raise _unsupported("VirtualMachine.RestoreState.TemplateSystemId",
                               "a restore needs SaveStateFilePath on the Linux backend")
        if check_files and not os.path.isfile(vm.restore_state.save_state_file_path):
            raise _invalid("VirtualMachine.RestoreState.SaveStateFilePath",
                           f"{vm.restore_state.save_state_file_path}: no such file")
        cfg.restore_from = vm.restore_state.save_state_file_path
        cfg.template_id = vm.restore_state.template_system_id
    return cfg


def _devices(cfg: MachineConfig, devices: Any, check_files: bool) -> None:
    for key in devices.scsi:
        try:
            index = controller_index(key)
        except ValueError as exc:
            raise _invalid(f'VirtualMachine.Devices.Scsi["{key}"]', str(exc)) from None
        cfg.scsi_keys[index] = key
    cfg.scsi_controllers = max(cfg.scsi_keys, default=-1) + 1
    for key, scsi in devices.scsi.items():
        for lun_key, a in scsi.attachments.items():
            where = f'VirtualMachine.Devices.Scsi["{key}"].Attachments["{lun_key}"]'
            if not lun_key.isdigit() or not 0 <= int(lun_key) < SCSI_LUNS:
                raise _invalid(where, f"LUN {lun_key!r} is not 0..{SCSI_LUNS - 1}")
            if a.type != ATTACHMENT_VIRTUAL_DISK:
                raise _unsupported(f"{where}.Type", f"{a.type!r}: only VirtualDisk attachments are supported")
            if check_files and not os.path.exists(a.path):
                raise _invalid(f"{where}.Path", f"{a.path}: no such file")
            cfg.disks.append(ScsiDisk(controller_index(key), int(lun_key), a.path, a.read_only))
    if devices.plan9 is not None:
        for i, s in enumerate(devices.plan9.shares):
            cfg.shares.append(share_of(s, f"VirtualMachine.Devices.Plan9.Shares[{i}]", check_files))
    if devices.hv_socket is not None and devices.hv_socket.hv_socket_config is not None:
        for service, conf in devices.hv_socket.hv_socket_config.service_table.items():
            if conf.disabled:
                continue
            try:
                cfg.ports[service.lower()] = hvsock.port_name(service)
            except ValueError as exc:
                raise _invalid(f'VirtualMachine.Devices.HvSocket.HvSocketConfig.ServiceTable["{service}"]',
                               str(exc)) from None
    if "0" in devices.com_ports and devices.com_ports["0"].named_pipe:
        cfg.console = devices.com_ports["0"].named_pipe
    for key, nic in devices.network_adapters.items():
        cfg.nics.append(nic_of(key, nic, f'VirtualMachine.Devices.NetworkAdapters["{key}"]', check_files))


def share_of(s: Any, where: str, check_files: bool = True) -> Share:
    """A Plan9Share's host half; HResultError naming `where` when it is not usable."""
    name = s.access_name or s.name
    if not name or "/" in name or name in (".", ".."):
        raise _invalid(f"{where}.Name", f"{name!r} is not a share name")
    if not s.path or (check_files and not os.path.exists(s.path)):
        raise _invalid(f"{where}.Path", f"{s.path!r}: no such file or directory")
    return Share(name, s.path, bool(s.flags & 0x1))


def nic_of(key: str, nic: Any, where: str, check_files: bool = True) -> Nic:
    """A NetworkAdapter's host half: EndpointId names the host's tap device on the Linux backend."""
    tap = nic.endpoint_id
    if not tap or "/" in tap or (check_files and not os.path.exists(f"/sys/class/net/{tap}")):
        raise _invalid(f"{where}.EndpointId", f"{tap!r}: no such host network device (the Linux backend plugs "
                                              "the adapter into the tap device EndpointId names)")
    mac = nic.mac_address.replace("-", ":").lower()
    return Nic(key, tap, mac)
