"""The schema1 documents (upstream internal/hcs/schema1): the RS1-RS4 era HCS document model, as typed documents.

Owns the 24 schema1 types in hcsshim.gojson's convention (one `field` per Go field, in Go's order, with upstream's
JSON keys and omitempty tags): the create document `ContainerConfig` and its parts, `ProcessConfig`, the
enumeration query `ComputeSystemQuery`, the property query and its answer `ContainerProperties` (statistics,
process list, mapped virtual disks, guest connection), and the v1 modify payload
`ResourceModificationRequestResponse`. Go string enums (`PropertyType`, `RequestType`, `ResourceType`) are classes
of str constants; their fields are STR. `TYPES` maps each upstream type name to its class.

The Go shapes beyond plain fields use gojson's kinds for them:

* `ProcessConfig.ConsoleSize` is a fixed array ``[2]uint`` (`array_of(U64, 2)`): always written, read as Go reads
  an array (missing elements zero, extra ones dropped);
* `ContainerProperties.RuntimeId` is a go-winio ``guid.GUID`` (`GUID`): always written, as the lowercase GUID
  text, `NIL_GUID` when unset; reading accepts either case and normalises it;
* `ContainerConfig.Layers` is a slice without omitempty (`list_of(..., nil=True)`): None (Go's nil slice, the
  default) is written as null, an empty list as [];
* the ``map[int]...`` fields (`MappedVirtualDiskControllers`, `MappedVirtualDisks`, `map_of(..., key=I64)`) have
  int keys in Python, written as decimal text sorted as text (as encoding/json sorts them), read with Go's
  ParseInt rules.

`GuestConnectionInfo.SupportedSchemaVersions` holds schema2 `Version` documents; the two-field struct is repeated
here (`SchemaVersion`) so this module needs nothing but hcsshim.gojson.
"""

from __future__ import annotations

from typing import Any

from hcsshim.gojson import (
    ANY,
    BOOL,
    GUID,
    I32,
    I64,
    NIL_GUID,
    STR,
    TIME,
    U32,
    U64,
    Struct,
    array_of,
    field,
    list_of,
    map_of,
    value,
)

__all__ = [
    "NIL_GUID",
    "TYPES",
    "AssignedDevice",
    "ComputeSystemQuery",
    "ContainerConfig",
    "ContainerProperties",
    "GuestConnectionInfo",
    "GuestDefinedCapabilities",
    "HvRuntime",
    "Layer",
    "MappedDir",
    "MappedPipe",
    "MappedVirtualDisk",
    "MappedVirtualDiskController",
    "MemoryStats",
    "NetworkStats",
    "ProcessConfig",
    "ProcessListItem",
    "ProcessorStats",
    "PropertyQuery",
    "PropertyType",
    "RequestType",
    "ResourceModificationRequestResponse",
    "ResourceType",
    "SchemaVersion",
    "Statistics",
    "StorageStats",
]

# -- enums ----------------------------------------------------------------------------------------------------


class PropertyType:
    """The property types a v1 PropertyQuery asks for."""

    STATISTICS = "Statistics"  # v1 and v2
    PROCESS_LIST = "ProcessList"  # v1 and v2
    MAPPED_VIRTUAL_DISK = "MappedVirtualDisk"  # not in a v2 query
    GUEST_CONNECTION = "GuestConnection"  # v1 and v2; HCS returns nothing before RS5


class RequestType:
    """What a ResourceModificationRequestResponse asks for (upstream's constants Add and Remove)."""

    ADD = "Add"
    REMOVE = "Remove"


class ResourceType:
    """The resource a ResourceModificationRequestResponse changes (upstream's constant Network)."""

    NETWORK = "Network"


# -- create documents -----------------------------------------------------------------------------------------


class ProcessConfig(Struct):
    """The process to create (HcsCreateProcess's v1 document); command_args, create_in_utility_vm and
    oci_specification are for Linux containers on Windows."""

    application_name: str = field("ApplicationName", STR)
    command_line: str = field("CommandLine", STR)
    command_args: list[str] = field("CommandArgs", list_of(STR))
    user: str = field("User", STR)
    working_directory: str = field("WorkingDirectory", STR)
    environment: dict[str, str] = field("Environment", map_of(STR))
    emulate_console: bool = field("EmulateConsole", BOOL)
    create_std_in_pipe: bool = field("CreateStdInPipe", BOOL)
    create_std_out_pipe: bool = field("CreateStdOutPipe", BOOL)
    create_std_err_pipe: bool = field("CreateStdErrPipe", BOOL)
    console_size: list[int] = field("ConsoleSize", array_of(U64, 2))  # [height, width]
    create_in_utility_vm: bool = field("CreateInUtilityVm", BOOL)
    oci_specification: Any = field("OCISpecification", ANY)  # raw JSON


class Layer(Struct):
    """A storage layer: its GUID and folder."""

    id: str = field("ID", STR, omitempty=False)
    path: str = field("Path", STR, omitempty=False)


class MappedDir(Struct):
    """A host directory mapped into the container."""

    host_path: str = field("HostPath", STR, omitempty=False)
    container_path: str = field("ContainerPath", STR, omitempty=False)
    read_only: bool = field("ReadOnly", BOOL, omitempty=False)
    bandwidth_maximum: int = field("BandwidthMaximum", U64, omitempty=False)
    iops_maximum: int = field("IOPSMaximum", U64, omitempty=False)
    create_in_utility_vm: bool = field("CreateInUtilityVM", BOOL, omitempty=False)
    linux_metadata: bool = field("LinuxMetadata", BOOL)  # 1803 (RS4) and later


class MappedPipe(Struct):
    """A host named pipe mapped into the container."""

    host_path: str = field("HostPath", STR, omitempty=False)
    container_pipe_name: str = field("ContainerPipeName", STR, omitempty=False)


class HvRuntime(Struct):
    """The utility VM of a Hyper-V isolated container (the Linux fields boot an LCOW utility VM)."""

    image_path: str = field("ImagePath", STR)
    skip_template: bool = field("SkipTemplate", BOOL)
    linux_initrd_file: str = field("LinuxInitrdFile", STR)
    linux_kernel_file: str = field("LinuxKernelFile", STR)
    linux_boot_parameters: str = field("LinuxBootParameters", STR)
    boot_source: str = field("BootSource", STR)  # "Vhd" to boot a Linux utility VM from a VHD
    writable_boot_source: bool = field("WritableBootSource", BOOL)


class MappedVirtualDisk(Struct):
    """A VHD attached to the container (cache: "", "Disabled", "Enabled", "Private", "PrivateAllowSharing")."""

    host_path: str = field("HostPath", STR)
    container_path: str = field("ContainerPath", STR, omitempty=False)
    create_in_utility_vm: bool = field("CreateInUtilityVM", BOOL)
    read_only: bool = field("ReadOnly", BOOL)
    cache: str = field("Cache", STR)
    attach_only: bool = field("AttachOnly", BOOL)


class AssignedDevice(Struct):
    """A device assigned to the container by interface class (RS5 and later)."""

    interface_class_guid: str = field("InterfaceClassGuid", STR)


class ContainerConfig(Struct):
    """The v1 create document of a container (system_type is "Container")."""

    system_type: str = field("SystemType", STR, omitempty=False)
    name: str = field("Name", STR, omitempty=False)
    owner: str = field("Owner", STR)
    volume_path: str = field("VolumePath", STR)
    ignore_flushes_during_boot: bool = field("IgnoreFlushesDuringBoot", BOOL)
    layer_folder_path: str = field("LayerFolderPath", STR)
    layers: list[Layer] | None = field("Layers", list_of(value(Layer), nil=True), omitempty=False)
    credentials: str = field("Credentials", STR)
    processor_count: int = field("ProcessorCount", U32)
    processor_weight: int = field("ProcessorWeight", U64)
    processor_maximum: int = field("ProcessorMaximum", I64)
    storage_iops_maximum: int = field("StorageIOPSMaximum", U64)
    storage_bandwidth_maximum: int = field("StorageBandwidthMaximum", U64)
    storage_sandbox_size: int = field("StorageSandboxSize", U64)
    memory_maximum_in_mb: int = field("MemoryMaximumInMB", I64)
    host_name: str = field("HostName", STR)
    mapped_directories: list[MappedDir] = field("MappedDirectories", list_of(value(MappedDir)))
    mapped_pipes: list[MappedPipe] = field("MappedPipes", list_of(value(MappedPipe)))
    hv_partition: bool = field("HvPartition", BOOL, omitempty=False)
    network_shared_container_name: str = field("NetworkSharedContainerName", STR)
    endpoint_list: list[str] = field("EndpointList", list_of(STR))
    hv_runtime: HvRuntime | None = field("HvRuntime", HvRuntime)
    servicing: bool = field("Servicing", BOOL)
    allow_unqualified_dns_query: bool = field("AllowUnqualifiedDNSQuery", BOOL)
    dns_search_list: str = field("DNSSearchList", STR)  # comma separated
    container_type: str = field("ContainerType", STR)  # "Linux" for Linux containers on Windows
    terminate_on_last_handle_closed: bool = field("TerminateOnLastHandleClosed", BOOL)
    mapped_virtual_disks: list[MappedVirtualDisk] = field("MappedVirtualDisks", list_of(value(MappedVirtualDisk)))
    assigned_devices: list[AssignedDevice] = field("AssignedDevices", list_of(value(AssignedDevice)))


# -- queries and properties -----------------------------------------------------------------------------------


class ComputeSystemQuery(Struct):
    """Which compute systems an enumeration returns (every list optional)."""

    ids: list[str] = field("Ids", list_of(STR))
    types: list[str] = field("Types", list_of(STR))
    names: list[str] = field("Names", list_of(STR))
    owners: list[str] = field("Owners", list_of(STR))


class PropertyQuery(Struct):
    """The v1 property query: PropertyType values."""

    property_types: list[str] = field("PropertyTypes", list_of(STR))


class MemoryStats(Struct):
    """A container's memory use."""

    usage_commit_bytes: int = field("MemoryUsageCommitBytes", U64)
    usage_commit_peak_bytes: int = field("MemoryUsageCommitPeakBytes", U64)
    usage_private_working_set_bytes: int = field("MemoryUsagePrivateWorkingSetBytes", U64)


class ProcessorStats(Struct):
    """A container's processor time, in 100 ns units."""

    total_runtime_100ns: int = field("TotalRuntime100ns", U64)
    runtime_user_100ns: int = field("RuntimeUser100ns", U64)
    runtime_kernel_100ns: int = field("RuntimeKernel100ns", U64)


class StorageStats(Struct):
    """A container's storage I/O."""

    read_count_normalized: int = field("ReadCountNormalized", U64)
    read_size_bytes: int = field("ReadSizeBytes", U64)
    write_count_normalized: int = field("WriteCountNormalized", U64)
    write_size_bytes: int = field("WriteSizeBytes", U64)


class NetworkStats(Struct):
    """One endpoint's traffic."""

    bytes_received: int = field("BytesReceived", U64)
    bytes_sent: int = field("BytesSent", U64)
    packets_received: int = field("PacketsReceived", U64)
    packets_sent: int = field("PacketsSent", U64)
    dropped_packets_incoming: int = field("DroppedPacketsIncoming", U64)
    dropped_packets_outgoing: int = field("DroppedPacketsOutgoing", U64)
    endpoint_id: str = field("EndpointId", STR)
    instance_id: str = field("InstanceId", STR)


class Statistics(Struct):
    """The answer to a Statistics property query."""

    timestamp: str = field("Timestamp", TIME)
    container_start_time: str = field("ContainerStartTime", TIME)
    uptime_100ns: int = field("Uptime100ns", U64)
    memory: MemoryStats = field("Memory", value(MemoryStats))
    processor: ProcessorStats = field("Processor", value(ProcessorStats))
    storage: StorageStats = field("Storage", value(StorageStats))
    network: list[NetworkStats] = field("Network", list_of(value(NetworkStats)))


class ProcessListItem(Struct):
    """One process of a ProcessList property query."""

    create_timestamp: str = field("CreateTimestamp", TIME)
    image_name: str = field("ImageName", STR)
    kernel_time_100ns: int = field("KernelTime100ns", U64)
    memory_commit_bytes: int = field("MemoryCommitBytes", U64)
    memory_working_set_private_bytes: int = field("MemoryWorkingSetPrivateBytes", U64)
    memory_working_set_shared_bytes: int = field("MemoryWorkingSetSharedBytes", U64)
    process_id: int = field("ProcessId", U32)
    user_time_100ns: int = field("UserTime100ns", U64)


class MappedVirtualDiskController(Struct):
    """One SCSI controller of a MappedVirtualDisk property query: its disks by LUN."""

    mapped_virtual_disks: dict[int, MappedVirtualDisk] = field(
        "MappedVirtualDisks", map_of(value(MappedVirtualDisk), key=I64))


class GuestDefinedCapabilities(Struct):
    """What the guest of a utility VM says it supports (GuestConnection property query)."""

    namespace_add_request_supported: bool = field("NamespaceAddRequestSupported", BOOL)
    signal_process_supported: bool = field("SignalProcessSupported", BOOL)
    dump_stacks_supported: bool = field("DumpStacksSupported", BOOL)
    delete_container_state_supported: bool = field("DeleteContainerStateSupported", BOOL)
    update_container_supported: bool = field("UpdateContainerSupported", BOOL)
    log_forwarding_supported: bool = field("LogForwardingSupported", BOOL)
    host_process_container_supported: bool = field("HostProcessContainerSupported", BOOL)


class SchemaVersion(Struct):
    """schema2's Version (Major.Minor), as GuestConnectionInfo lists it; not one of the 24 schema1 types."""

    NAME = "Version"

    major: int = field("Major", I32)
    minor: int = field("Minor", I32)


class GuestConnectionInfo(Struct):
    """The answer to a GuestConnection property query on a utility VM."""

    supported_schema_versions: list[SchemaVersion] = field(
        "SupportedSchemaVersions", list_of(value(SchemaVersion)))
    protocol_version: int = field("ProtocolVersion", U32)
    guest_defined_capabilities: GuestDefinedCapabilities = field(
        "GuestDefinedCapabilities", value(GuestDefinedCapabilities))


class ContainerProperties(Struct):
    """A compute system's properties: what enumeration returns and what a v1 property query fills in."""

    id: str = field("Id", STR, omitempty=False)
    state: str = field("State", STR, omitempty=False)
    name: str = field("Name", STR, omitempty=False)
    system_type: str = field("SystemType", STR, omitempty=False)
    runtime_os_type: str = field("RuntimeOsType", STR)
    owner: str = field("Owner", STR, omitempty=False)
    silo_guid: str = field("SiloGuid", STR)
    runtime_id: str = field("RuntimeId", GUID)
    is_runtime_template: bool = field("IsRuntimeTemplate", BOOL)
    runtime_image_path: str = field("RuntimeImagePath", STR)
    stopped: bool = field("Stopped", BOOL)
    exit_type: str = field("ExitType", STR)
    are_updates_pending: bool = field("AreUpdatesPending", BOOL)
    ob_root: str = field("ObRoot", STR)
    statistics: Statistics = field("Statistics", value(Statistics))
    process_list: list[ProcessListItem] = field("ProcessList", list_of(value(ProcessListItem)))
    mapped_virtual_disk_controllers: dict[int, MappedVirtualDiskController] = field(
        "MappedVirtualDiskControllers", map_of(value(MappedVirtualDiskController), key=I64))
    guest_connection_info: GuestConnectionInfo = field("GuestConnectionInfo", value(GuestConnectionInfo))


# -- modify ---------------------------------------------------------------------------------------------------


class ResourceModificationRequestResponse(Struct):
    """The v1 modify document (HcsModifyComputeSystem): add or remove a Network endpoint (settings: the
    endpoint id)."""

    resource: str = field("ResourceType", STR, omitempty=False)
    data: Any = field("Settings", ANY, omitempty=False)
    request: str = field("RequestType", STR)


TYPES: dict[str, type] = {
    "ProcessConfig": ProcessConfig,
    "Layer": Layer,
    "MappedDir": MappedDir,
    "MappedPipe": MappedPipe,
    "HvRuntime": HvRuntime,
    "MappedVirtualDisk": MappedVirtualDisk,
    "AssignedDevice": AssignedDevice,
    "ContainerConfig": ContainerConfig,
    "ComputeSystemQuery": ComputeSystemQuery,
    "PropertyType": PropertyType,
    "PropertyQuery": PropertyQuery,
    "ContainerProperties": ContainerProperties,
    "MemoryStats": MemoryStats,
    "ProcessorStats": ProcessorStats,
    "StorageStats": StorageStats,
    "NetworkStats": NetworkStats,
    "Statistics": Statistics,
    "ProcessListItem": ProcessListItem,
    "MappedVirtualDiskController": MappedVirtualDiskController,
    "GuestDefinedCapabilities": GuestDefinedCapabilities,
    "GuestConnectionInfo": GuestConnectionInfo,
    "RequestType": RequestType,
    "ResourceType": ResourceType,
    "ResourceModificationRequestResponse": ResourceModificationRequestResponse,
}
