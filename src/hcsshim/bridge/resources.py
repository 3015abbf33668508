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

Written in the project's one JSON convention, hcsshim.gojson (as the HCS schemas are): standard library only
and cheap to import (the guest imports it on a utility VM's boot path).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from hcsshim.bridge.wire import VMCOMPUTE_INVALID_JSON, HResultError
from hcsshim.gojson import ANY, BOOL, I32, I64, OBJECT, STR, U8, U16, U32, U64, DecodeError, Struct, field, list_of

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


class Resource(Struct):
    """A guest resource document (hcsshim.gojson's convention); a malformed one is an HResultError."""

    RESOURCE_TYPE: ClassVar[str] = ""  # the ModifySettings ResourceType ("" for a nested document)

    @classmethod
    def from_json(cls, obj: Any, *, where: str | None = None) -> Self:
        """Reads the document as Go's decoder would (lenient keys, strict types); HResultError(VMCOMPUTE_INVALID_JSON)
        naming the resource and the field when it is malformed."""
        try:
            return cls._read(obj, where or cls.NAME)
        except DecodeError as e:
            raise HResultError(VMCOMPUTE_INVALID_JSON, str(e)) from None


class DeviceVerityInfo(Resource):
    """dm-verity metadata of a block device (deprecated upstream: the guest reads it from the device)."""

    NAME = "DeviceVerityInfo"

    ext4_size_in_bytes: int = field("Ext4SizeInBytes", I64)
    version: int = field("Version", I64)
    algorithm: str = field("Algorithm", STR)
    super_block: bool = field("SuperBlock", BOOL)
    root_digest: str = field("RootDigest", STR)
    salt: str = field("Salt", STR)
    block_size: int = field("BlockSize", I64)


class MappedVirtualDisk(Resource):
    """A SCSI disk (controller, lun) mounted at mount_path in the guest (LCOWMappedVirtualDisk)."""

    NAME = RESOURCE_TYPE = "MappedVirtualDisk"

    mount_path: str = field("MountPath", STR)
    lun: int = field("Lun", U8)
    controller: int = field("Controller", U8)
    partition: int = field("Partition", U64)
    read_only: bool = field("ReadOnly", BOOL)
    encrypted: bool = field("Encrypted", BOOL)
    options: list[str] = field("Options", list_of(STR))
    block_dev: bool = field("BlockDev", BOOL)
    verity_info: DeviceVerityInfo | None = field("VerityInfo", DeviceVerityInfo)
    ensure_filesystem: bool = field("EnsureFilesystem", BOOL)
    filesystem: str = field("Filesystem", STR)


class SCSIDevice(Resource):
    """The SCSI device itself (Remove: the guest deletes it before the host detaches the disk)."""

    NAME = RESOURCE_TYPE = "SCSIDevice"

    controller: int = field("Controller", U8)
    lun: int = field("Lun", U8)


class MappedDirectory(Resource):
    """A host directory (or file) shared over Plan9, mounted at mount_path (LCOWMappedDirectory)."""

    NAME = RESOURCE_TYPE = "MappedDirectory"

    mount_path: str = field("MountPath", STR)
    port: int = field("Port", I32)
    share_name: str = field("ShareName", STR)
    read_only: bool = field("ReadOnly", BOOL)


class VPMemMappingInfo(Resource):
    """One of several read-only layers packed on one VPMem device (LCOWVPMemMappingInfo)."""

    NAME = "LCOWVPMemMappingInfo"

    device_offset_in_bytes: int = field("DeviceOffsetInBytes", U64)
    device_size_in_bytes: int = field("DeviceSizeInBytes", U64)


class VPMemDevice(Resource):
    """A read-only layer on /dev/pmem<device_number> mounted at mount_path (LCOWMappedVPMemDevice)."""

    NAME = RESOURCE_TYPE = "VPMemDevice"

    device_number: int = field("DeviceNumber", U32)
    mount_path: str = field("MountPath", STR)
    mapping_info: VPMemMappingInfo | None = field("MappingInfo", VPMemMappingInfo)
    verity_info: DeviceVerityInfo | None = field("VerityInfo", DeviceVerityInfo)


class Layer(Resource):
    """One layer of CombinedLayers (hcsschema.Layer; the guest uses only path)."""

    NAME = "Layer"

    id: str = field("Id", STR)
    path: str = field("Path", STR)
    path_type: str = field("PathType", STR)
    cache: str = field("Cache", STR)

    def __init__(self, path: str = "", *, id: str = "", path_type: str = "", cache: str = "") -> None:
        super().__init__(id=id, path=path, path_type=path_type, cache=cache)


class CombinedLayers(Resource):
    """The container rootfs: an overlay of layers (top-most first) and a scratch (LCOWCombinedLayers)."""

    NAME = RESOURCE_TYPE = "CombinedLayers"

    container_id: str = field("ContainerID", STR)
    container_root_path: str = field("ContainerRootPath", STR)
    layers: list[Layer] = field("Layers", list_of(Layer))
    scratch_path: str = field("ScratchPath", STR)

    def __init__(self, *, container_id: str = "", container_root_path: str = "",
                 layers: list[Layer | str] | None = None, scratch_path: str = "") -> None:
        """layers: top-most first; a path stands for Layer(path)."""
        super().__init__(container_id=container_id, container_root_path=container_root_path,
                         layers=[x if isinstance(x, Layer) else Layer(x) for x in layers or ()],
                         scratch_path=scratch_path)


class IPConfig(Resource):
    """An address of a network adapter (LCOWIPConfig)."""

    NAME = "LCOWIPConfig"

    ip_address: str = field("IPAddress", STR)
    prefix_length: int = field("PrefixLength", U8)

    def __init__(self, ip_address: str = "", prefix_length: int = 0) -> None:
        super().__init__(ip_address=ip_address, prefix_length=prefix_length)


class Route(Resource):
    """A route of a network adapter (LCOWRoute)."""

    NAME = "LCOWRoute"

    next_hop: str = field("NextHop", STR)
    destination_prefix: str = field("DestinationPrefix", STR)
    metric: int = field("Metric", U16)


class NetworkAdapter(Resource):
    """A NIC and its configuration in a guest network namespace (LCOWNetworkAdapter; ResourceType Network)."""

    NAME = RESOURCE_TYPE = "Network"

    namespace_id: str = field("NamespaceID", STR)
    id: str = field("ID", STR)
    mac_address: str = field("MacAddress", STR)
    dns_suffix: str = field("DNSSuffix", STR)
    dns_server_list: str = field("DNSServerList", STR)
    encap_overhead: int = field("EncapOverhead", U16)
    vpci_assigned: bool = field("VPCIAssigned", BOOL)
    ip_configs: list[IPConfig] = field("IPConfigs", list_of(IPConfig))
    routes: list[Route] = field("Routes", list_of(Route))
    policy_based_routing: bool = field("PolicyBasedRouting", BOOL)
    enable_low_metric: bool = field("EnableLowMetric", BOOL)


class VPCIDevice(Resource):
    """An assigned PCI device the guest waits for (LCOWMappedVPCIDevice; not supported by this guest)."""

    NAME = RESOURCE_TYPE = "VPCIDevice"

    vmbus_guid: str = field("VMBusGUID", STR)


class ContainerConstraints(Resource):
    """A running container's new resources (LCOWContainerConstraints), sent with the container's id and
    RequestType Update: `linux` is an OCI LinuxResources object (``{"memory": {"limit": N}}``), `windows` an
    OCI WindowsResources one (ignored by a Linux guest). Both are Go structs, not pointers: always written."""

    NAME = RESOURCE_TYPE = "ContainerConstraints"

    windows: dict[str, Any] = field("Windows", OBJECT, omitempty=False)
    linux: dict[str, Any] = field("Linux", OBJECT, omitempty=False)


class PodCgroupMemoryLimit(Resource):
    """Recompute the pods cgroup's memory limit (RequestType Update; upstream sends no settings)."""

    NAME = RESOURCE_TYPE = "PodCgroupMemoryLimit"


RESOURCES: dict[str, type[Resource]] = {c.RESOURCE_TYPE: c for c in (
    MappedVirtualDisk, SCSIDevice, MappedDirectory, VPMemDevice, CombinedLayers, NetworkAdapter, VPCIDevice,
    ContainerConstraints, PodCgroupMemoryLimit)}
_NO_SETTINGS = (PodCgroupMemoryLimit,)


class ModificationRequest(Struct):
    """The Request of a ModifySettings message (guestrequest.ModificationRequest): what to do (request_type:
    Add, Remove, Update) with which resource. `settings` is the typed resource for a known resource_type, the
    raw JSON object (or None) for any other, so the guest can name what it does not support."""

    request_type: str = field("RequestType", STR)
    resource_type: str = field("ResourceType", STR)
    settings: Resource | dict[str, Any] | None = field("Settings", ANY)

    def __init__(self, resource_type: str, request_type: str = "Add",
                 settings: Resource | dict[str, Any] | None = None) -> None:
        super().__init__(request_type=request_type, resource_type=resource_type, settings=settings)

    @classmethod
    def of(cls, resource: Resource, request_type: str = "Add") -> ModificationRequest:
        """The request for one typed resource (its ResourceType; no Settings for a settings-less one)."""
        if not resource.RESOURCE_TYPE:
            raise TypeError(f"{type(resource).__name__} is not a ModifySettings resource")
        return cls(resource.RESOURCE_TYPE, request_type, None if isinstance(resource, _NO_SETTINGS) else resource)

    @classmethod
    def from_json(cls, obj: Any, *, where: str | None = None) -> Self:
        """Parse a Request; a known resource type's Settings become its class (HResultError when malformed)."""
        if not isinstance(obj, dict):
            raise HResultError(VMCOMPUTE_INVALID_JSON, "modify settings: Request is not a JSON object")
        try:
            self = cls._read(obj, where or cls.NAME)
        except DecodeError as e:
            raise HResultError(VMCOMPUTE_INVALID_JSON, str(e)) from None
        raw = self.settings
        if raw is not None and not isinstance(raw, dict):
            raise HResultError(VMCOMPUTE_INVALID_JSON, f"{self.resource_type or cls.NAME}: field Settings: "
                                                       f"expected object, got {type(raw).__name__}")
        kind = RESOURCES.get(self.resource_type)
        if kind is not None:
            self.settings = kind.from_json(raw or {})
        return self

    def __repr__(self) -> str:
        return f"ModificationRequest({self.resource_type!r}, {self.request_type!r}, {self.settings!r})"
