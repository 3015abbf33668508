"""Typed guest resources: the Settings a ModifySettings request carries, one definition for host and guest.

Owns upstream hcsshim's internal/protocol/guestresource and guestrequest.ModificationRequest (the envelope) as
Python classes: the host builds them (`hcsshim.gcs.GuestConnection.modify`, `hcsshim.uvm`), the guest parses
them (`hcsshim.guest.server`, `storage`, `network`). Attribute names are snake_case; on the wire they carry
upstream's exact JSON names:

* `to_json()` writes what Go's encoding/json writes for the upstream struct: a field tagged ``omitempty``
  with its zero value ("", 0, false, a nil pointer, an empty list) is left out; a struct-typed field without a
  pointer (ContainerConstraints.Windows/Linux, CWCOWCombinedLayers.CombinedLayers, a GUID) is always written;
* `from_json(obj)` reads as Go's decoder does: the exact key first, else a case-insensitive match; unknown
  keys ignored; a missing or null key gives the zero value; a value of the wrong type or out of range raises
  HResultError(VMCOMPUTE_INVALID_JSON) naming the resource and the field's path ("MappedVirtualDisk: field
  Lun: expected uint8, got 300"; "CWCOWCombinedLayers.CombinedLayers.Layers[0]: field Path: ...").

`RESOURCES` maps each of upstream's 16 ResourceTypes to its Settings class (the one upstream's Linux GCS, or
for a Windows-only type the Windows sidecar GCS, decodes it as); a ModificationRequest parses its Settings with
it. Registering a type types its document; which types a guest handles is the guest's business
(hcsshim.guest.server refuses by name, with E_FAIL, every type it has no handler for).

| class | upstream type | ResourceType |
|---|---|---|
| `MappedVirtualDisk` | LCOWMappedVirtualDisk | MappedVirtualDisk |
| `WCOWMappedVirtualDisk` | WCOWMappedVirtualDisk | MappedVirtualDiskForContainerScratch* |
| `SCSIDevice` | SCSIDevice | SCSIDevice |
| `MappedDirectory` | LCOWMappedDirectory | MappedDirectory |
| `VPMemDevice` (`VPMemMappingInfo`) | LCOWMappedVPMemDevice (LCOWVPMemMappingInfo) | VPMemDevice |
| `CombinedLayers` (`Layer`) | LCOWCombinedLayers (hcsschema.Layer) | CombinedLayers |
| `CWCOWCombinedLayers` (`WCOWCombinedLayers`) | CWCOWCombinedLayers (WCOWCombinedLayers) | CWCOWCombinedLayers* |
| `CWCOWBlockCIMMounts` (`BlockCIMDevice`) | CWCOWBlockCIMMounts (BlockCIMDevice) | WCOWBlockCims* |
| `NetworkAdapter` (`IPConfig`, `Route`) | LCOWNetworkAdapter (LCOWIPConfig, LCOWRoute) | Network |
| `HostComputeNamespace` (`NamespaceResource`, `SchemaVersion`) | hcn.HostComputeNamespace (…) | NetworkNamespace* |
| `VPCIDevice` | LCOWMappedVPCIDevice | VPCIDevice |
| `ContainerConstraints` | LCOWContainerConstraints (OCI Windows/Linux resources) | ContainerConstraints |
| `HvSocketAddress` | hcsschema.HvSocketAddress | HvSocket* |
| `ConfidentialOptions` | ConfidentialOptions | SecurityPolicy |
| `SecurityPolicyFragment` | SecurityPolicyFragment | SecurityPolicyFragment |
| `PodCgroupMemoryLimit` | (no settings) | PodCgroupMemoryLimit |
| `DeviceVerityInfo` | DeviceVerityInfo (deprecated, still on the wire) | - |
| `ModificationRequest` | guestrequest.ModificationRequest | - |

(* Windows guests only.)

String enums as constants: `RequestType`, `FileSystemFilterType` (WCOWCombinedLayers.FilterType),
`NamespaceType` and `NamespaceResourceType` (HostComputeNamespace). A Windows guest reads MappedVirtualDisk and
Network with other types (WCOWMappedVirtualDisk, guestrequest.NetworkModifyRequest); the table is the Linux
guest's reading of them.

Written in the project's one JSON convention, hcsshim.gojson (as the HCS schemas are): standard library only
and cheap to import (the guest imports it on a utility VM's boot path).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from hcsshim.bridge.wire import VMCOMPUTE_INVALID_JSON, HResultError
from hcsshim.gojson import (
    ANY,
    BOOL,
    GUID,
    I32,
    I64,
    OBJECT,
    STR,
    U8,
    U16,
    U32,
    U64,
    DecodeError,
    Struct,
    field,
    list_of,
    value,
)

__all__ = [
    "RESOURCES",
    "BlockCIMDevice",
    "CWCOWBlockCIMMounts",
    "CWCOWCombinedLayers",
    "CombinedLayers",
    "ConfidentialOptions",
    "ContainerConstraints",
    "DeviceVerityInfo",
    "FileSystemFilterType",
    "HostComputeNamespace",
    "HvSocketAddress",
    "IPConfig",
    "Layer",
    "MappedDirectory",
    "MappedVirtualDisk",
    "ModificationRequest",
    "NamespaceResource",
    "NamespaceResourceType",
    "NamespaceType",
    "NetworkAdapter",
    "PodCgroupMemoryLimit",
    "RequestType",
    "Resource",
    "Route",
    "SCSIDevice",
    "SchemaVersion",
    "SecurityPolicyFragment",
    "VPCIDevice",
    "VPMemDevice",
    "VPMemMappingInfo",
    "WCOWCombinedLayers",
    "WCOWMappedVirtualDisk",
]


class RequestType:
    """What a ModificationRequest does with its resource (guestrequest.RequestType; PreAdd: Windows networking)."""

    ADD = "Add"
    REMOVE = "Remove"
    PRE_ADD = "PreAdd"
    UPDATE = "Update"


class FileSystemFilterType:
    """The file-system filter a Windows guest combines layers with (hcsschema.FileSystemFilterType)."""

    UNION_FS = "UnionFS"
    WCIFS = "WCIFS"


class NamespaceType:
    """Where an HCN namespace lives (hcn.NamespaceType)."""

    HOST = "Host"
    HOST_DEFAULT = "HostDefault"
    GUEST = "Guest"
    GUEST_DEFAULT = "GuestDefault"


class NamespaceResourceType:
    """What a NamespaceResource attaches (hcn.NamespaceResourceType)."""

    CONTAINER = "Container"
    ENDPOINT = "Endpoint"


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


# -- storage ----------------------------------------------------------------------------------------------------


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


class WCOWMappedVirtualDisk(Resource):
    """A confidential Windows container's scratch disk (SCSI controller 0, lun), formatted with ReFS and mounted
    at container_path (WCOWMappedVirtualDisk; ResourceType MappedVirtualDiskForContainerScratch, Windows only)."""

    NAME = RESOURCE_TYPE = "MappedVirtualDiskForContainerScratch"

    container_path: str = field("ContainerPath", STR)
    lun: int = field("Lun", I32)


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
    """One layer of CombinedLayers (hcsschema.Layer; the Linux guest uses only path)."""

    NAME = "Layer"

    id: str = field("Id", STR)
    path: str = field("Path", STR)
    path_type: str = field("PathType", STR)
    cache: str = field("Cache", STR)

    def __init__(self, path: str = "", *, id: str = "", path_type: str = "", cache: str = "") -> None:
        super().__init__(id=id, path=path, path_type=path_type, cache=cache)


def _layers(layers: list[Layer | str] | None) -> list[Layer]:
    return [x if isinstance(x, Layer) else Layer(x) for x in layers or ()]


class CombinedLayers(Resource):
    """The container rootfs: an overlay of layers (top-most first) and a scratch (LCOWCombinedLayers)."""

    NAME = RESOURCE_TYPE = "CombinedLayers"

    container_id: str = field("ContainerID", STR)
    container_root_path: str = field("ContainerRootPath", STR)
    layers: list[Layer] = field("Layers", list_of(value(Layer)))
    scratch_path: str = field("ScratchPath", STR)

    def __init__(self, *, container_id: str = "", container_root_path: str = "",
                 layers: list[Layer | str] | None = None, scratch_path: str = "") -> None:
        """layers: top-most first; a path stands for Layer(path)."""
        super().__init__(container_id=container_id, container_root_path=container_root_path,
                         layers=_layers(layers), scratch_path=scratch_path)


class WCOWCombinedLayers(Resource):
    """A Windows container's root: a filter (filter_type, a FileSystemFilterType) at container_root_path over
    layers, the scratch being the root itself (WCOWCombinedLayers)."""

    NAME = "WCOWCombinedLayers"

    container_root_path: str = field("ContainerRootPath", STR)
    layers: list[Layer] = field("Layers", list_of(value(Layer)))
    scratch_path: str = field("ScratchPath", STR)
    filter_type: str = field("FilterType", STR)

    def __init__(self, *, container_root_path: str = "", layers: list[Layer | str] | None = None,
                 scratch_path: str = "", filter_type: str = "") -> None:
        """layers: a path stands for Layer(path)."""
        super().__init__(container_root_path=container_root_path, layers=_layers(layers),
                         scratch_path=scratch_path, filter_type=filter_type)


class CWCOWCombinedLayers(Resource):
    """WCOWCombinedLayers for one confidential Windows container (CWCOWCombinedLayers, Windows only): the
    sidecar GCS checks it against the policy and forwards it as CombinedLayers. combined_layers is a Go struct,
    not a pointer: always written."""

    NAME = RESOURCE_TYPE = "CWCOWCombinedLayers"

    container_id: str = field("ContainerID", STR)
    combined_layers: WCOWCombinedLayers = field("CombinedLayers", value(WCOWCombinedLayers))


class BlockCIMDevice(Resource):
    """One block CIM on a SCSI disk (BlockCIMDevice: no omitempty, both fields always written)."""

    NAME = "BlockCIMDevice"

    cim_name: str = field("CimName", STR, omitempty=False)
    lun: int = field("Lun", I32, omitempty=False)


class CWCOWBlockCIMMounts(Resource):
    """Block CIMs (the merged CIM first, then layer n .. 1) mounted as the volume volume_guid (a go-winio GUID:
    always written) for a container (CWCOWBlockCIMMounts; ResourceType WCOWBlockCims, Windows only)."""

    NAME = RESOURCE_TYPE = "WCOWBlockCims"

    block_cims: list[BlockCIMDevice] = field("BlockCIMs", list_of(value(BlockCIMDevice)))
    volume_guid: str = field("VolumeGUID", GUID)
    mount_flags: int = field("MountFlags", U32)
    container_id: str = field("ContainerID", STR)


# -- network ----------------------------------------------------------------------------------------------------


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
    ip_configs: list[IPConfig] = field("IPConfigs", list_of(value(IPConfig)))
    routes: list[Route] = field("Routes", list_of(value(Route)))
    policy_based_routing: bool = field("PolicyBasedRouting", BOOL)
    enable_low_metric: bool = field("EnableLowMetric", BOOL)


class NamespaceResource(Resource):
    """A container or endpoint of an HCN namespace (hcn.NamespaceResource): type a NamespaceResourceType, data
    the raw JSON of its {"ID": ...} (json.RawMessage). Neither is omitempty: a nil data is written as null."""

    NAME = "NamespaceResource"

    type: str = field("Type", STR, omitempty=False)
    data: Any = field("Data", ANY, omitempty=False)

    @classmethod
    def endpoint(cls, endpoint_id: str) -> NamespaceResource:
        """An endpoint attached to the namespace (hcn.NamespaceResourceEndpoint as its data)."""
        return cls(type=NamespaceResourceType.ENDPOINT, data={"ID": endpoint_id})

    @classmethod
    def container(cls, container_id: str) -> NamespaceResource:
        """A container attached to the namespace (hcn.NamespaceResourceContainer as its data)."""
        return cls(type=NamespaceResourceType.CONTAINER, data={"ID": container_id})


class SchemaVersion(Resource):
    """An HCN object's schema version (hcn.Version: Go ints, never omitted; HCN's v2 is 2.0)."""

    NAME = "Version"

    major: int = field("Major", I64, omitempty=False)
    minor: int = field("Minor", I64, omitempty=False)


class HostComputeNamespace(Resource):
    """A network namespace (compartment) the host adds to a Windows guest (hcn.HostComputeNamespace;
    ResourceType NetworkNamespace, Windows only). schema_version is a Go struct, not a pointer: always written."""

    NAME = RESOURCE_TYPE = "NetworkNamespace"

    id: str = field("ID", STR)
    namespace_id: int = field("NamespaceId", U32)
    type: str = field("Type", STR)
    resources: list[NamespaceResource] = field("Resources", list_of(value(NamespaceResource)))
    schema_version: SchemaVersion = field("SchemaVersion", value(SchemaVersion))


class HvSocketAddress(Resource):
    """The Hyper-V socket addresses a Windows guest's GCS uses (hcsschema.HvSocketAddress: the UVM's runtime id
    and the host's GCS id; ResourceType HvSocket, sent with RequestType Update, Windows only)."""

    NAME = RESOURCE_TYPE = "HvSocket"

    local_address: str = field("LocalAddress", STR)
    parent_address: str = field("ParentAddress", STR)


# -- devices, containers, policy --------------------------------------------------------------------------------


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


class ConfidentialOptions(Resource):
    """The confidential-computing options the host installs once (ConfidentialOptions; ResourceType
    SecurityPolicy): the enforcer (e.g. "rego"), the base64 policy and the base64 UVM reference info."""

    NAME = RESOURCE_TYPE = "SecurityPolicy"

    enforcer_type: str = field("EnforcerType", STR)
    encoded_security_policy: str = field("EncodedSecurityPolicy", STR)
    encoded_uvm_reference: str = field("EncodedUVMReference", STR)
    encoded_uvm_hash_envelope_reference: str = field("EncodedUVMHashEnvelopeReference", STR)


class SecurityPolicyFragment(Resource):
    """A policy fragment injected into the security policy (SecurityPolicyFragment): fragment the base64 blob,
    media_type its type ("" is read as DEFAULT_MEDIA_TYPE, for hosts that do not send one)."""

    NAME = RESOURCE_TYPE = "SecurityPolicyFragment"
    DEFAULT_MEDIA_TYPE: ClassVar[str] = "application/cose-x509+rego"

    fragment: str = field("Fragment", STR)
    media_type: str = field("MediaType", STR)


class PodCgroupMemoryLimit(Resource):
    """Recompute the pods cgroup's memory limit (RequestType Update; upstream sends no settings)."""

    NAME = RESOURCE_TYPE = "PodCgroupMemoryLimit"


RESOURCES: dict[str, type[Resource]] = {c.RESOURCE_TYPE: c for c in (  # upstream's order of the ResourceTypes
    MappedDirectory, SCSIDevice, MappedVirtualDisk, WCOWMappedVirtualDisk, CWCOWBlockCIMMounts, NetworkAdapter,
    HostComputeNamespace, CombinedLayers, CWCOWCombinedLayers, VPMemDevice, VPCIDevice, ContainerConstraints,
    HvSocketAddress, ConfidentialOptions, SecurityPolicyFragment, PodCgroupMemoryLimit)}
_NO_SETTINGS = (PodCgroupMemoryLimit,)


# -- the envelope -----------------------------------------------------------------------------------------------


class ModificationRequest(Struct):
    """The Request of a ModifySettings message (guestrequest.ModificationRequest): what to do (request_type, a
    RequestType; "" is read as Add by the guest) with which resource. `settings` is the typed resource for a
    resource_type in RESOURCES, the raw JSON object (or None) for any other, so the guest can name what it does
    not support. A settings-less resource (PodCgroupMemoryLimit) is parsed as its class but never written."""

    request_type: str = field("RequestType", STR)
    resource_type: str = field("ResourceType", STR)
    settings: Resource | dict[str, Any] | None = field("Settings", ANY)

    def __init__(self, resource_type: str, request_type: str = RequestType.ADD,
                 settings: Resource | dict[str, Any] | None = None) -> None:
        super().__init__(request_type=request_type, resource_type=resource_type, settings=settings)

    @classmethod
    def of(cls, resource: Resource, request_type: str = RequestType.ADD) -> ModificationRequest:
        """The request for one typed resource (its ResourceType; no Settings for a settings-less one)."""
        if not resource.RESOURCE_TYPE:
            raise TypeError(f"{type(resource).__name__} is not a ModifySettings resource")
        return cls(resource.RESOURCE_TYPE, request_type, None if isinstance(resource, _NO_SETTINGS) else resource)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if isinstance(self.settings, _NO_SETTINGS):
            del out["Settings"]
        return out

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
