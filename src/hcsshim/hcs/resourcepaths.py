"""The resource paths of a ModifySettingRequest (upstream internal/hcs/resourcepaths): built, and parsed back.

A modify request names what it changes with a path: a fixed one for container (silo) resources and a utility
VM's compute topology (`SILO_MEMORY_RESOURCE_PATH` = "Container/Memory/SizeInMB", `MEMORY_RESOURCE_PATH`), or a
template with ``%s``/``%d`` placeholders for VM devices (`SCSI_RESOURCE_FORMAT` =
"VirtualMachine/Devices/Scsi/%s/Attachments/%d"), built by a function (`scsi_attachment(controller, lun)`).
Constant names are upstream's in UPPER_SNAKE_CASE.

`parse(path)` maps a path back to its constant's name and arguments (``ParsedPath("SCSI_RESOURCE_FORMAT",
("<guid>", 0))``), the way a backend routes modify requests; anything else is a ValueError naming the path. The
mapping is exact both ways: a ``%d`` is a non-negative decimal without leading zeros, a ``%s`` is non-empty text
without "/" (but the last one, the pipe's host path of `MAPPED_PIPE_RESOURCE_FORMAT`, may hold "/"), and the
builders refuse arguments parse could not give back. `LIVE_MIGRATION_SOCKET_URI` is a resource URI for
HcsAddResourceToOperation, not a modify path: parse does not accept it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "CPU_FREQUENCY_POWER_CAP_RESOURCE_PATH",
    "CPU_GROUP_RESOURCE_PATH",
    "CPU_LIMITS_RESOURCE_PATH",
    "FLEXIBLE_IOV_RESOURCE_FORMAT",
    "GPU_RESOURCE_PATH",
    "HV_SOCKET_CONFIG_RESOURCE_FORMAT",
    "IDLED_RESOURCE_PATH",
    "LICENSING_RESOURCE_PATH",
    "LIVE_MIGRATION_SOCKET_URI",
    "MAPPED_PIPE_RESOURCE_FORMAT",
    "MEMORY_RESOURCE_PATH",
    "NETWORK_RESOURCE_FORMAT",
    "PLAN9_SHARE_RESOURCE_PATH",
    "SCSI_RESOURCE_FORMAT",
    "SERIAL_RESOURCE_FORMAT",
    "SHARED_MEMORY_REGION_RESOURCE_PATH",
    "SILO_DEVICE_RESOURCE_PATH",
    "SILO_MAPPED_DIRECTORY_RESOURCE_PATH",
    "SILO_MAPPED_PIPE_RESOURCE_PATH",
    "SILO_MEMORY_RESOURCE_PATH",
    "SILO_PROCESSOR_RESOURCE_PATH",
    "SILO_REGISTRY_FLUSH_STATE_PATH",
    "TEMPLATES",
    "VIRTUAL_PCI_RESOURCE_FORMAT",
    "VPMEM_CONTROLLER_RESOURCE_FORMAT",
    "VPMEM_DEVICE_RESOURCE_FORMAT",
    "VSMB_SHARE_RESOURCE_PATH",
    "ParsedPath",
    "build",
    "com_port",
    "flexible_iov",
    "hv_socket_service",
    "mapped_pipe",
    "network_adapter",
    "parse",
    "scsi_attachment",
    "virtual_pci",
    "vpmem_controller",
    "vpmem_mapping",
]

# Container (silo) resources.
SILO_DEVICE_RESOURCE_PATH = "Container/Devices/Generic"
SILO_MAPPED_DIRECTORY_RESOURCE_PATH = "Container/MappedDirectories"
SILO_MAPPED_PIPE_RESOURCE_PATH = "Container/MappedPipes"
SILO_MEMORY_RESOURCE_PATH = "Container/Memory/SizeInMB"
SILO_REGISTRY_FLUSH_STATE_PATH = "Container/RegistryFlushState"
SILO_PROCESSOR_RESOURCE_PATH = "Container/Processor"

# A utility VM's compute topology.
GPU_RESOURCE_PATH = "VirtualMachine/ComputeTopology/Gpu"
MEMORY_RESOURCE_PATH = "VirtualMachine/ComputeTopology/Memory/SizeInMB"
CPU_GROUP_RESOURCE_PATH = "VirtualMachine/ComputeTopology/Processor/CpuGroup"
IDLED_RESOURCE_PATH = "VirtualMachine/ComputeTopology/Processor/IdledProcessors"
CPU_FREQUENCY_POWER_CAP_RESOURCE_PATH = "VirtualMachine/ComputeTopology/Processor/CpuFrequencyPowerCap"
CPU_LIMITS_RESOURCE_PATH = "VirtualMachine/ComputeTopology/Processor/Limits"

# A utility VM's devices.
SERIAL_RESOURCE_FORMAT = "VirtualMachine/Devices/ComPorts/%d"
FLEXIBLE_IOV_RESOURCE_FORMAT = "VirtualMachine/Devices/FlexibleIov/%s"
LICENSING_RESOURCE_PATH = "VirtualMachine/Devices/Licensing"
MAPPED_PIPE_RESOURCE_FORMAT = "VirtualMachine/Devices/MappedPipes/%s"
NETWORK_RESOURCE_FORMAT = "VirtualMachine/Devices/NetworkAdapters/%s"
PLAN9_SHARE_RESOURCE_PATH = "VirtualMachine/Devices/Plan9/Shares"
SCSI_RESOURCE_FORMAT = "VirtualMachine/Devices/Scsi/%s/Attachments/%d"
SHARED_MEMORY_REGION_RESOURCE_PATH = "VirtualMachine/Devices/SharedMemory/Regions"
VIRTUAL_PCI_RESOURCE_FORMAT = "VirtualMachine/Devices/VirtualPci/%s"
VPMEM_CONTROLLER_RESOURCE_FORMAT = "VirtualMachine/Devices/VirtualPMem/Devices/%d"
VPMEM_DEVICE_RESOURCE_FORMAT = "VirtualMachine/Devices/VirtualPMem/Devices/%d/Mappings/%d"
VSMB_SHARE_RESOURCE_PATH = "VirtualMachine/Devices/VirtualSmb/Shares"
HV_SOCKET_CONFIG_RESOURCE_FORMAT = "VirtualMachine/Devices/HvSocket/HvSocketConfig/ServiceTable/%s"

# Not a modify path: the live-migration socket's resource URI (HcsAddResourceToOperation).
LIVE_MIGRATION_SOCKET_URI = "hcs:/VirtualMachine/LiveMigrationSocket"

_NAMES = (
    "SILO_DEVICE_RESOURCE_PATH", "SILO_MAPPED_DIRECTORY_RESOURCE_PATH", "SILO_MAPPED_PIPE_RESOURCE_PATH",
    "SILO_MEMORY_RESOURCE_PATH", "SILO_REGISTRY_FLUSH_STATE_PATH", "SILO_PROCESSOR_RESOURCE_PATH",
    "GPU_RESOURCE_PATH", "MEMORY_RESOURCE_PATH", "CPU_GROUP_RESOURCE_PATH", "IDLED_RESOURCE_PATH",
    "CPU_FREQUENCY_POWER_CAP_RESOURCE_PATH", "CPU_LIMITS_RESOURCE_PATH", "SERIAL_RESOURCE_FORMAT",
    "FLEXIBLE_IOV_RESOURCE_FORMAT", "LICENSING_RESOURCE_PATH", "MAPPED_PIPE_RESOURCE_FORMAT",
    "NETWORK_RESOURCE_FORMAT", "PLAN9_SHARE_RESOURCE_PATH", "SCSI_RESOURCE_FORMAT",
    "SHARED_MEMORY_REGION_RESOURCE_PATH", "VIRTUAL_PCI_RESOURCE_FORMAT", "VPMEM_CONTROLLER_RESOURCE_FORMAT",
    "VPMEM_DEVICE_RESOURCE_FORMAT", "VSMB_SHARE_RESOURCE_PATH", "HV_SOCKET_CONFIG_RESOURCE_FORMAT",
)
TEMPLATES: dict[str, str] = {name: globals()[name] for name in _NAMES}
"""Every modify path and template by constant name (what parse returns as the name)."""

_REST = frozenset({"MAPPED_PIPE_RESOURCE_FORMAT"})  # whose last %s takes the rest of the path, "/" included
_INT = r"(0|[1-9][0-9]*)"


class ParsedPath(NamedTuple):
    """What parse found: the constant's name and the placeholders' values (ints for %d, strs for %s)."""

    template: str
    args: tuple[str | int, ...]


def _pattern(name: str, template: str) -> re.Pattern[str]:
    parts = re.split(r"(%[sd])", template)
    last_s = max((i for i, p in enumerate(parts) if p == "%s"), default=-1)
    out = []
    for i, p in enumerate(parts):
        if p == "%d":
            out.append(_INT)
        elif p == "%s":
            out.append("(.+)" if name in _REST and i == last_s else "([^/]+)")
        else:
            out.append(re.escape(p))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


_PATTERNS = {name: (_pattern(name, t), re.findall(r"%[sd]", t)) for name, t in TEMPLATES.items()}
_FIXED = {t: name for name, t in TEMPLATES.items() if "%" not in t}


def parse(path: str) -> ParsedPath:
    """The constant a modify resource path comes from and its arguments; ValueError naming the path when it
    matches none."""
    if not isinstance(path, str):
        raise ValueError(f"resource path {path!r}: not a string")
    name = _FIXED.get(path)
    if name is not None:
        return ParsedPath(name, ())
    for name, (pattern, verbs) in _PATTERNS.items():
        m = pattern.match(path)
        if m and verbs:
            return ParsedPath(name, tuple(int(g) if v == "%d" else g for g, v in zip(m.groups(), verbs, strict=True)))
    raise ValueError(f"resource path {path!r}: not a known HCS modify resource path")


def build(template: str, *args: str | int) -> str:
    """The path of constant `template` (a TEMPLATES name) with `args` in its placeholders; ValueError for an
    unknown name, a wrong number or type of arguments, a negative number, or a text parse could not give back."""
    try:
        text = TEMPLATES[template]
    except KeyError:
        raise ValueError(f"unknown resource path template {template!r}") from None
    verbs = re.findall(r"%[sd]", text)
    if len(args) != len(verbs):
        raise ValueError(f"{template}: expected {len(verbs)} arguments, got {len(args)}")
    last_s = max((i for i, v in enumerate(verbs) if v == "%s"), default=-1)
    for i, (arg, verb) in enumerate(zip(args, verbs, strict=True)):
        if verb == "%d":
            if isinstance(arg, bool) or not isinstance(arg, int) or arg < 0:
                raise ValueError(f"{template}: argument {i + 1} must be a non-negative int, got {arg!r}")
        elif not isinstance(arg, str) or not arg or ("/" in arg and not (template in _REST and i == last_s)):
            raise ValueError(f"{template}: argument {i + 1} must be a non-empty string without '/', got {arg!r}")
    return text % args


def com_port(port: int) -> str:
    """VirtualMachine/Devices/ComPorts/<port>."""
    return build("SERIAL_RESOURCE_FORMAT", port)


def flexible_iov(id: str) -> str:
    """VirtualMachine/Devices/FlexibleIov/<id>."""
    return build("FLEXIBLE_IOV_RESOURCE_FORMAT", id)


def mapped_pipe(host_path: str) -> str:
    """VirtualMachine/Devices/MappedPipes/<host pipe path>."""
    return build("MAPPED_PIPE_RESOURCE_FORMAT", host_path)


def network_adapter(id: str) -> str:
    """VirtualMachine/Devices/NetworkAdapters/<nic id>."""
    return build("NETWORK_RESOURCE_FORMAT", id)


def scsi_attachment(controller: str, lun: int) -> str:
    """VirtualMachine/Devices/Scsi/<controller>/Attachments/<lun> (controller: the controller's GUID)."""
    return build("SCSI_RESOURCE_FORMAT", controller, lun)


def virtual_pci(vmbus_guid: str) -> str:
    """VirtualMachine/Devices/VirtualPci/<vmbus guid>."""
    return build("VIRTUAL_PCI_RESOURCE_FORMAT", vmbus_guid)


def vpmem_controller(device_number: int) -> str:
    """VirtualMachine/Devices/VirtualPMem/Devices/<device number>."""
    return build("VPMEM_CONTROLLER_RESOURCE_FORMAT", device_number)


def vpmem_mapping(device_number: int, offset: int) -> str:
    """VirtualMachine/Devices/VirtualPMem/Devices/<device number>/Mappings/<offset in bytes>."""
    return build("VPMEM_DEVICE_RESOURCE_FORMAT", device_number, offset)


def hv_socket_service(service_id: str) -> str:
    """VirtualMachine/Devices/HvSocket/HvSocketConfig/ServiceTable/<service GUID>."""
    return build("HV_SOCKET_CONFIG_RESOURCE_FORMAT", service_id)
