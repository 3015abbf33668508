"""Typed guest resources: the Settings a ModifySettings request carries, one definition for host and guest.

Owns upstream hcsshim's internal/protocol/guestresource (LCOW types) and guestrequest.ModificationRequest as
Python classes: the host builds them (`hcsshim.gcs.GuestConnection.modify`, `hcsshim.uvm`), the guest parses
them (`hcsshim.guest.server`, `storage`, `network`). Attribute names are snake_case; on the wire they carry
upstream's exact JSON names:

* `to_json()` writes what Go's encoding/json writes for the upstream struct: a field tagged ``omitempty``
  with its zero value ("", 0, false, a nil pointer, an empty list) is left out; a struct-typed field without a
  pointer (ContainerConstraints.Windows/Linux) is always written, as ``{}`` when empty;
* `from_json(obj)` reads as Go's decoder does: the exact key first, else a case-insensitive match; unknown
  keys ignored; a missing or null key gives the zero value; a value of the wrong type or out of range raises
  HResultError(VMCOMPUTE_INVALID_JSON) naming the resource and the field ("MappedVirtualDisk: field Lun:
  expected uint8, got 300").

| class | upstream type | ResourceType |
|---|---|---|
| `MappedVirtualDisk` | LCOWMappedVirtualDisk | MappedVirtualDisk |
| `SCSIDevice` | SCSIDevice | SCSIDevice |
| `MappedDirectory` | LCOWMappedDirectory | MappedDirectory |
| `VPMemDevice` (`VPMemMappingInfo`) | LCOWMappedVPMemDevice (LCOWVPMemMappingInfo) | VPMemDevice |
| `CombinedLayers` (`Layer`) | LCOWCombinedLayers (hcsschema.Layer) | CombinedLayers |
| `NetworkAdapter` (`IPConfig`, `Route`) | LCOWNetworkAdapter (LCOWIPConfig, LCOWRoute) | Network |
| `VPCIDevice` | LCOWMappedVPCIDevice | VPCIDevice |
| `ContainerConstraints` | LCOWContainerConstraints (OCI Windows/Linux resources) | ContainerConstraints |
| `PodCgroupMemoryLimit` | (no settings) | PodCgroupMemoryLimit |
| `DeviceVerityInfo` | DeviceVerityInfo (deprecated, still on the wire) | - |
| `ModificationRequest` | guestrequest.ModificationRequest | - |

Standard library only and cheap to import (the guest imports it on a utility VM's boot path, where every
module costs ~25x its native time under TCG): plain classes with __slots__ and one field table each, no
dataclasses.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from hcsshim.bridge.wire import VMCOMPUTE_INVALID_JSON, HResultError

__all__ = [
    "RESOURCES",
    "CombinedLayers",
    "ContainerConstraints",
    "DeviceVerityInfo",
    "IPConfig",
    "Layer",
    "MappedDirectory",
    "MappedVirtualDisk",
    "ModificationRequest",
    "NetworkAdapter",
    "PodCgroupMemoryLimit",
    "Resource",
    "Route",
    "SCSIDevice",
    "VPCIDevice",
    "VPMemDevice",
    "VPMemMappingInfo",
]

# Field kinds: a scalar kind name, "strs" (a list of strings), "object" (a JSON object kept as a dict, e.g. OCI
# resources), a Resource class (a nested struct behind a pointer: None when absent) or (list, Resource class).
_INTS = {"uint8": (0, 0xFF), "uint16": (0, 0xFFFF), "uint32": (0, 0xFFFFFFFF), "int32": (-(1 << 31), (1 << 31) - 1),
         "uint64": (0, (1 << 64) - 1), "int64": (-(1 << 63), (1 << 63) - 1)}
_MISSING = object()


def _lookup(obj: dict[str, Any], key: str) -> Any:
    """Go's rule: the exact key, else the first case-insensitive match."""
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        folded = key.casefold()
        for k, v in obj.items():
            if k.casefold() == folded:
                return v
        return None
    return value


def _bad(where: str, key: str, expected: str, value: Any) -> HResultError:
    got = repr(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__
    return HResultError(VMCOMPUTE_INVALID_JSON, f"{where}: field {key}: expected {expected}, got {got:.80}")


def _zero(kind: Any) -> Any:
    if kind == "str":
        return ""
    if kind == "bool":
        return False
    if kind in _INTS:
        return 0
    if kind == "strs" or isinstance(kind, tuple):
        return []
    if kind == "object":
        return {}
    return None  # a nested struct behind a pointer


def _decode(value: Any, kind: Any, where: str, key: str) -> Any:
    if value is None:
        return _zero(kind)
    if kind == "str":
        if not isinstance(value, str):
            raise _bad(where, key, "string", value)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _bad(where, key, "bool", value)
        return value
    if kind in _INTS:
        lo, hi = _INTS[kind]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _bad(where, key, kind, value)
        return value
    if kind == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(where, key, "list of strings", value)
        return list(value)
    if kind == "object":
        if not isinstance(value, dict):
            raise _bad(where, key, "object", value)
        return value
    if isinstance(kind, tuple):
        cls = kind[1]
        if not isinstance(value, list):
            raise _bad(where, key, f"list of {cls.NAME}", value)
        return [cls.from_json(v, where=f"{where}.{key}[{i}]") for i, v in enumerate(value)]
    return kind.from_json(value, where=f"{where}.{key}")


def _encode(value: Any) -> Any:
    if isinstance(value, Resource):
        return value.to_json()
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


class Resource:
    """A guest resource document (see the module docstring); subclasses declare NAME and _FIELDS.

    _FIELDS: (attribute, JSON key, kind, omitempty) per field, in upstream's declaration order.
    """

    __slots__ = ()
    NAME: ClassVar[str] = ""  # how errors name it: the ResourceType, or upstream's type name for a nested one
    RESOURCE_TYPE: ClassVar[str] = ""  # the ModifySettings ResourceType ("" for a nested document)
    _FIELDS: ClassVar[tuple[tuple[str, str, Any, bool], ...]] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON object Go's encoder writes for the upstream struct (omitempty fields at zero left out)."""
        out: dict[str, Any] = {}
        for attr, key, _kind, omitempty in self._FIELDS:
            value = getattr(self, attr)
            if omitempty and not value:  # "", 0, false, None, [] (a nested struct, a pointer in Go, is truthy)
                continue
            out[key] = _encode(value)
        return out

    @classmethod
    def from_json(cls, obj: Any, *, where: str | None = None) -> Self:
        """Parse a decoded JSON object as Go's decoder would (lenient keys, strict types)."""
        where = where or cls.NAME
        if not isinstance(obj, dict):
            raise HResultError(VMCOMPUTE_INVALID_JSON, f"{where}: expected a JSON object, got {type(obj).__name__}")
        self = cls.__new__(cls)
        for attr, key, kind, _omitempty in cls._FIELDS:
            setattr(self, attr, _decode(_lookup(obj, key), kind, where, key))
        return self

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a, *_ in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the Go structs

    def __repr__(self) -> str:
        shown = ", ".join(f"{a}={getattr(self, a)!r}" for a, _k, kind, _o in self._FIELDS
                          if getattr(self, a) != _zero(kind))
        return f"{type(self).__name__}({shown})"


class DeviceVerityInfo(Resource):
    """dm-verity metadata of a block device (deprecated upstream: the guest reads it from the device)."""

    __slots__ = ("algorithm", "block_size", "ext4_size_in_bytes", "root_digest", "salt", "super_block", "version")
    NAME = "DeviceVerityInfo"
    _FIELDS = (("ext4_size_in_bytes", "Ext4SizeInBytes", "int64", True), ("version", "Version", "int64", True),
               ("algorithm", "Algorithm", "str", True), ("super_block", "SuperBlock", "bool", True),
               ("root_digest", "RootDigest", "str", True), ("salt", "Salt", "str", True),
               ("block_size", "BlockSize", "int64", True))

    def __init__(self, *, ext4_size_in_bytes: int = 0, version: int = 0, algorithm: str = "", super_block: bool = False,
                 root_digest: str = "", salt: str = "", block_size: int = 0) -> None:
        self.ext4_size_in_bytes = ext4_size_in_bytes
        self.version = version
        self.algorithm = algorithm
        self.super_block = super_block
        self.root_digest = root_digest
        self.salt = salt
        self.block_size = block_size


class MappedVirtualDisk(Resource):
    """A SCSI disk (controller, lun) mounted at mount_path in the guest (LCOWMappedVirtualDisk)."""

    __slots__ = ("block_dev", "controller", "encrypted", "ensure_filesystem", "filesystem", "lun", "mount_path",
                 "options", "partition", "read_only", "verity_info")
    NAME = RESOURCE_TYPE = "MappedVirtualDisk"
    _FIELDS = (("mount_path", "MountPath", "str", True), ("lun", "Lun", "uint8", True),
               ("controller", "Controller", "uint8", True), ("partition", "Partition", "uint64", True),
               ("read_only", "ReadOnly", "bool", True), ("encrypted", "Encrypted", "bool", True),
               ("options", "Options", "strs", True), ("block_dev", "BlockDev", "bool", True),
               ("verity_info", "VerityInfo", DeviceVerityInfo, True),
               ("ensure_filesystem", "EnsureFilesystem", "bool", True), ("filesystem", "Filesystem", "str", True))

    def __init__(self, *, mount_path: str = "", lun: int = 0, controller: int = 0, partition: int = 0,
                 read_only: bool = False, encrypted: bool = False, options: list[str] | None = None,
                 block_dev: bool = False, verity_info: DeviceVerityInfo | None = None,
                 ensure_filesystem: bool = False, filesystem: str = "") -> None:
        self.mount_path = mount_path
        self.lun = lun
        self.controller = controller
        self.partition = partition
        self.read_only = read_only
        self.encrypted = encrypted
        self.options = list(options or ())
        self.block_dev = block_dev
        self.verity_info = verity_info
        self.ensure_filesystem = ensure_filesystem
        self.filesystem = filesystem


class SCSIDevice(Resource):
    """The SCSI device itself (Remove: the guest deletes it before the host detaches the disk)."""

    __slots__ = ("controller", "lun")
    NAME = RESOURCE_TYPE = "SCSIDevice"
    _FIELDS = (("controller", "Controller", "uint8", True), ("lun", "Lun", "uint8", True))

    def __init__(self, *, controller: int = 0, lun: int = 0) -> None:
        self.controller = controller
        self.lun = lun


class MappedDirectory(Resource):
    """A host directory (or file) shared over Plan9, mounted at mount_path (LCOWMappedDirectory)."""

    __slots__ = ("mount_path", "port", "read_only", "share_name")
    NAME = RESOURCE_TYPE = "MappedDirectory"
    _FIELDS = (("mount_path", "MountPath", "str", True), ("port", "Port", "int32", True),
               ("share_name", "ShareName", "str", True), ("read_only", "ReadOnly", "bool", True))

    def __init__(self, *, mount_path: str = "", port: int = 0, share_name: str = "", read_only: bool = False) -> None:
        self.mount_path = mount_path
        self.port = port
        self.share_name = share_name
        self.read_only = read_only


class VPMemMappingInfo(Resource):
    """One of several read-only layers packed on one VPMem device (LCOWVPMemMappingInfo)."""

    __slots__ = ("device_offset_in_bytes", "device_size_in_bytes")
    NAME = "LCOWVPMemMappingInfo"
    _FIELDS = (("device_offset_in_bytes", "DeviceOffsetInBytes", "uint64", True),
               ("device_size_in_bytes", "DeviceSizeInBytes", "uint64", True))

    def __init__(self, *, device_offset_in_bytes: int = 0, device_size_in_bytes: int = 0) -> None:
        self.device_offset_in_bytes = device_offset_in_bytes
        self.device_size_in_bytes = device_size_in_bytes


class VPMemDevice(Resource):
    """A read-only layer on /dev/pmem<device_number> mounted at mount_path (LCOWMappedVPMemDevice)."""

    __slots__ = ("device_number", "mapping_info", "mount_path", "verity_info")
    NAME = RESOURCE_TYPE = "VPMemDevice"
    _FIELDS = (("device_number", "DeviceNumber", "uint32", True), ("mount_path", "MountPath", "str", True),
               ("mapping_info", "MappingInfo", VPMemMappingInfo, True),
               ("verity_info", "VerityInfo", DeviceVerityInfo, True))

    def __init__(self, *, device_number: int = 0, mount_path: str = "", mapping_info: VPMemMappingInfo | None = None,
                 verity_info: DeviceVerityInfo | None = None) -> None:
        self.device_number = device_number
        self.mount_path = mount_path
        self.mapping_info = mapping_info
        self.verity_info = verity_info


class Layer(Resource):
    """One layer of CombinedLayers (hcsschema.Layer; the guest uses only path)."""

    __slots__ = ("cache", "id", "path", "path_type")
    NAME = "Layer"
    _FIELDS = (("id", "Id", "str", True), ("path", "Path", "str", True), ("path_type", "PathType", "str", True),
               ("cache", "Cache", "str", True))

    def __init__(self, path: str = "", *, id: str = "", path_type: str = "", cache: str = "") -> None:
        self.id = id
        self.path = path
        self.path_type = path_type
        self.cache = cache


class CombinedLayers(Resource):
    """The container rootfs: an overlay of layers (top-most first) and a scratch (LCOWCombinedLayers)."""

    __slots__ = ("container_id", "container_root_path", "layers", "scratch_path")
    NAME = RESOURCE_TYPE = "CombinedLayers"
    _FIELDS = (("container_id", "ContainerID", "str", True), ("container_root_path", "ContainerRootPath", "str", True),
               ("layers", "Layers", (list, Layer), True), ("scratch_path", "ScratchPath", "str", True))

    def __init__(self, *, container_id: str = "", container_root_path: str = "",
                 layers: list[Layer | str] | None = None, scratch_path: str = "") -> None:
        """layers: top-most first; a path stands for Layer(path)."""
        self.container_id = container_id
        self.container_root_path = container_root_path
        self.layers = [x if isinstance(x, Layer) else Layer(x) for x in layers or ()]
        self.scratch_path = scratch_path


class IPConfig(Resource):
    """An address of a network adapter (LCOWIPConfig)."""

    __slots__ = ("ip_address", "prefix_length")
    NAME = "LCOWIPConfig"
    _FIELDS = (("ip_address", "IPAddress", "str", True), ("prefix_length", "PrefixLength", "uint8", True))

    def __init__(self, ip_address: str = "", prefix_length: int = 0) -> None:
        self.ip_address = ip_address
        self.prefix_length = prefix_length


class Route(Resource):
    """A route of a network adapter (LCOWRoute)."""

    __slots__ = ("destination_prefix", "metric", "next_hop")
    NAME = "LCOWRoute"
    _FIELDS = (("next_hop", "NextHop", "str", True), ("destination_prefix", "DestinationPrefix", "str", True),
               ("metric", "Metric", "uint16", True))

    def __init__(self, *, next_hop: str = "", destination_prefix: str = "", metric: int = 0) -> None:
        self.next_hop = next_hop
        self.destination_prefix = destination_prefix
        self.metric = metric


class NetworkAdapter(Resource):
    """A NIC and its configuration in a guest network namespace (LCOWNetworkAdapter; ResourceType Network)."""

    __slots__ = ("dns_server_list", "dns_suffix", "enable_low_metric", "encap_overhead", "id", "ip_configs",
                 "mac_address", "namespace_id", "policy_based_routing", "routes", "vpci_assigned")
    NAME = RESOURCE_TYPE = "Network"
    _FIELDS = (("namespace_id", "NamespaceID", "str", True), ("id", "ID", "str", True),
               ("mac_address", "MacAddress", "str", True), ("dns_suffix", "DNSSuffix", "str", True),
               ("dns_server_list", "DNSServerList", "str", True), ("encap_overhead", "EncapOverhead", "uint16", True),
               ("vpci_assigned", "VPCIAssigned", "bool", True), ("ip_configs", "IPConfigs", (list, IPConfig), True),
               ("routes", "Routes", (list, Route), True),
               ("policy_based_routing", "PolicyBasedRouting", "bool", True),
               ("enable_low_metric", "EnableLowMetric", "bool", True))

    def __init__(self, *, namespace_id: str = "", id: str = "", mac_address: str = "", dns_suffix: str = "",
                 dns_server_list: str = "", encap_overhead: int = 0, vpci_assigned: bool = False,
                 ip_configs: list[IPConfig] | None = None, routes: list[Route] | None = None,
                 policy_based_routing: bool = False, enable_low_metric: bool = False) -> None:
        self.namespace_id = namespace_id
        self.id = id
        self.mac_address = mac_address
        self.dns_suffix = dns_suffix
        self.dns_server_list = dns_server_list
        self.encap_overhead = encap_overhead
        self.vpci_assigned = vpci_assigned
        self.ip_configs = list(ip_configs or ())
        self.routes = list(routes or ())
        self.policy_based_routing = policy_based_routing
        self.enable_low_metric = enable_low_metric


class VPCIDevice(Resource):
    """An assigned PCI device the guest waits for (LCOWMappedVPCIDevice; not supported by this guest)."""

    __slots__ = ("vmbus_guid",)
    NAME = RESOURCE_TYPE = "VPCIDevice"
    _FIELDS = (("vmbus_guid", "VMBusGUID", "str", True),)

    def __init__(self, *, vmbus_guid: str = "") -> None:
        self.vmbus_guid = vmbus_guid


class ContainerConstraints(Resource):
    """A running container's new resources (LCOWContainerConstraints), sent with the container's id and
    RequestType Update: `linux` is an OCI LinuxResources object (``{"memory": {"limit": N}}``), `windows` an
    OCI WindowsResources one (ignored by a Linux guest). Both are Go structs, not pointers: always written."""

    __slots__ = ("linux", "windows")
    NAME = RESOURCE_TYPE = "ContainerConstraints"
    _FIELDS = (("windows", "Windows", "object", False), ("linux", "Linux", "object", False))

    def __init__(self, *, linux: dict[str, Any] | None = None, windows: dict[str, Any] | None = None) -> None:
        self.windows = dict(windows or {})
        self.linux = dict(linux or {})


class PodCgroupMemoryLimit(Resource):
    """Recompute the pods cgroup's memory limit (RequestType Update; upstream sends no settings)."""

    __slots__ = ()
    NAME = RESOURCE_TYPE = "PodCgroupMemoryLimit"


RESOURCES: dict[str, type[Resource]] = {c.RESOURCE_TYPE: c for c in (
    MappedVirtualDisk, SCSIDevice, MappedDirectory, VPMemDevice, CombinedLayers, NetworkAdapter, VPCIDevice,
    ContainerConstraints, PodCgroupMemoryLimit)}
_NO_SETTINGS = (PodCgroupMemoryLimit,)


class ModificationRequest:
    """The Request of a ModifySettings message (guestrequest.ModificationRequest): what to do (request_type:
    Add, Remove, Update) with which resource. `settings` is the typed resource for a known resource_type, the
    raw JSON object (or None) for any other, so the guest can name what it does not support."""

    __slots__ = ("request_type", "resource_type", "settings")

    def __init__(self, resource_type: str, request_type: str = "Add",
                 settings: Resource | dict[str, Any] | None = None) -> None:
        self.resource_type = resource_type
        self.request_type = request_type
        self.settings = settings

    @classmethod
    def of(cls, resource: Resource, request_type: str = "Add") -> ModificationRequest:
        """The request for one typed resource (its ResourceType; no Settings for a settings-less one)."""
        if not resource.RESOURCE_TYPE:
            raise TypeError(f"{type(resource).__name__} is not a ModifySettings resource")
        return cls(resource.RESOURCE_TYPE, request_type, None if isinstance(resource, _NO_SETTINGS) else resource)

    def to_json(self) -> dict[str, Any]:
        """RequestType, ResourceType, Settings, each omitempty (Settings only when there are some)."""
        out: dict[str, Any] = {}
        if self.request_type:
            out["RequestType"] = self.request_type
        if self.resource_type:
            out["ResourceType"] = self.resource_type
        if self.settings is not None:
            out["Settings"] = self.settings.to_json() if isinstance(self.settings, Resource) else self.settings
        return out

    @classmethod
    def from_json(cls, obj: Any) -> ModificationRequest:
        """Parse a Request; a known resource type's Settings become its class (HResultError when malformed)."""
        if not isinstance(obj, dict):
            raise HResultError(VMCOMPUTE_INVALID_JSON, "modify settings: Request is not a JSON object")
        request_type = _decode(_lookup(obj, "RequestType"), "str", "ModificationRequest", "RequestType")
        resource_type = _decode(_lookup(obj, "ResourceType"), "str", "ModificationRequest", "ResourceType")
        raw = _lookup(obj, "Settings")
        if raw is not None and not isinstance(raw, dict):
            raise _bad(resource_type or "ModificationRequest", "Settings", "object", raw)
        kind = RESOURCES.get(resource_type)
        settings: Resource | dict[str, Any] | None = raw
        if kind is not None:
            settings = kind.from_json(raw or {})
        return cls(resource_type, request_type, settings)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModificationRequest):
            return NotImplemented
        return (self.request_type, self.resource_type, self.settings) == (
            other.request_type, other.resource_type, other.settings)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ModificationRequest({self.resource_type!r}, {self.request_type!r}, {self.settings!r})"
