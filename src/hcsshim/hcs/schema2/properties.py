"""Schema2 query, modify and statistics documents (area C): PropertyQuery and the Properties it answers
(memory, statistics, process list, guest connection, property responses), the service's properties,
ModifySettingRequest and ModificationRequest, and the host's processor topology and CPU-group changes.

Quirk kept: Properties.Metrics is sent as "LCOWMetrics" and holds a containerd cgroup v1 Metrics document, which
stays untyped JSON here. ModifySettingRequest.RequestType carries upstream's guestrequest strings ("Add",
"Remove", "PreAdd", "Update"); Settings and GuestRequest are any JSON (a typed document is written as its JSON)."""

from __future__ import annotations

from typing import Any

from hcsshim.gojson import ANY, BOOL, I32, STR, TIME, U8, U32, U64, Struct, field, list_of, map_of, value
from hcsshim.hcs.schema2.common import Version
from hcsshim.hcs.schema2.processes import ProcessDetails
from hcsshim.hcs.schema2.topology import VirtualNodeInfo

__all__ = [
    "CacheQueryStatsResponse",
    "ContainerMemoryInformation",
    "GuestConnectionInfo",
    "HostProcessorModificationRequest",
    "LogicalProcessor",
    "MemoryInformationForVm",
    "MemoryStats",
    "ModificationRequest",
    "ModifySettingRequest",
    "ProcessorStats",
    "ProcessorTopology",
    "Properties",
    "PropertyQuery",
    "PropertyResponse",
    "PropertyType",
    "ServiceProperties",
    "SharedMemoryRegionInfo",
    "SiloProperties",
    "Statistics",
    "StorageStats",
    "VmMemory",
]


class PropertyType:
    """The properties a PropertyQuery may ask for (and a ModificationRequest may change)."""

    MEMORY = "Memory"
    GUEST_MEMORY = "GuestMemory"
    STATISTICS = "Statistics"
    PROCESS_LIST = "ProcessList"
    TERMINATE_ON_LAST_HANDLE_CLOSED = "TerminateOnLastHandleClosed"
    SHARED_MEMORY_REGION = "SharedMemoryRegion"
    CONTAINER_CREDENTIAL_GUARD = "ContainerCredentialGuard"
    GUEST_CONNECTION = "GuestConnection"
    IC_HEARTBEAT_STATUS = "ICHeartbeatStatus"
    PROCESSOR_TOPOLOGY = "ProcessorTopology"
    CPU_GROUP = "CpuGroup"
    SYSTEM_GUID = "SystemGUID"


class VmMemory(Struct):
    """A VM's memory as the host reports it: available, reserved, assigned, balancing."""

    available_memory: int = field("AvailableMemory", I32)
    available_memory_buffer: int = field("AvailableMemoryBuffer", I32)
    reserved_memory: int = field("ReservedMemory", U64)
    assigned_memory: int = field("AssignedMemory", U64)
    slp_active: bool = field("SlpActive", BOOL)
    balancing_enabled: bool = field("BalancingEnabled", BOOL)
    dm_operation_in_progress: bool = field("DmOperationInProgress", BOOL)


class MemoryInformationForVm(Struct):
    """The Memory property of a VM: its memory and virtual NUMA nodes."""

    virtual_node_count: int = field("VirtualNodeCount", U32)
    virtual_machine_memory: VmMemory | None = field("VirtualMachineMemory", VmMemory)
    virtual_nodes: list[VirtualNodeInfo] = field("VirtualNodes", list_of(value(VirtualNodeInfo)))


class ProcessorStats(Struct):
    """Processor time used, in 100 ns units."""

    total_runtime_100ns: int = field("TotalRuntime100ns", U64)
    runtime_user_100ns: int = field("RuntimeUser100ns", U64)
    runtime_kernel_100ns: int = field("RuntimeKernel100ns", U64)


class MemoryStats(Struct):
    """Memory used: commit, peak commit and private working set."""

    memory_usage_commit_bytes: int = field("MemoryUsageCommitBytes", U64)
    memory_usage_commit_peak_bytes: int = field("MemoryUsageCommitPeakBytes", U64)
    memory_usage_private_working_set_bytes: int = field("MemoryUsagePrivateWorkingSetBytes", U64)


class StorageStats(Struct):
    """Storage I/O: normalized counts and bytes read and written."""

    read_count_normalized: int = field("ReadCountNormalized", U64)
    read_size_bytes: int = field("ReadSizeBytes", U64)
    write_count_normalized: int = field("WriteCountNormalized", U64)
    write_size_bytes: int = field("WriteSizeBytes", U64)


class Statistics(Struct):
    """The Statistics property: timestamps, uptime and processor, memory and storage use."""

    timestamp: str = field("Timestamp", TIME)
    container_start_time: str = field("ContainerStartTime", TIME)
    uptime_100ns: int = field("Uptime100ns", U64)
    processor: ProcessorStats | None = field("Processor", ProcessorStats)
    memory: MemoryStats | None = field("Memory", MemoryStats)
    storage: StorageStats | None = field("Storage", StorageStats)


class SharedMemoryRegionInfo(Struct):
    """A shared memory region and where the guest sees it."""

    section_name: str = field("SectionName", STR)
    guest_physical_address: int = field("GuestPhysicalAddress", I32)


class GuestConnectionInfo(Struct):
    """The GuestConnection property: the guest's schema versions, protocol and capabilities."""

    supported_schema_versions: list[Version] = field("SupportedSchemaVersions", list_of(value(Version)))
    protocol_version: int = field("ProtocolVersion", I32)
    guest_defined_capabilities: Any = field("GuestDefinedCapabilities", ANY)


class PropertyResponse(Struct):
    """One answer of PropertyResponses: the property's document as raw JSON."""

    response: Any = field("Response", ANY)


class Properties(Struct):
    """A compute system's properties (HcsGetComputeSystemProperties' answer)."""

    id: str = field("Id", STR)
    system_type: str = field("SystemType", STR)
    runtime_os_type: str = field("RuntimeOsType", STR)
    name: str = field("Name", STR)
    owner: str = field("Owner", STR)
    runtime_id: str = field("RuntimeId", STR)
    system_guid: str = field("SystemGUID", STR)
    runtime_template_id: str = field("RuntimeTemplateId", STR)
    state: str = field("State", STR)
    stopped: bool = field("Stopped", BOOL)
    exit_type: str = field("ExitType", STR)
    memory: MemoryInformationForVm | None = field("Memory", MemoryInformationForVm)
    statistics: Statistics | None = field("Statistics", Statistics)
    process_list: list[ProcessDetails] = field("ProcessList", list_of(value(ProcessDetails)))
    terminate_on_last_handle_closed: bool = field("TerminateOnLastHandleClosed", BOOL)
    hosting_system_id: str = field("HostingSystemId", STR)
    shared_memory_region_info: list[SharedMemoryRegionInfo] = field(
        "SharedMemoryRegionInfo", list_of(value(SharedMemoryRegionInfo)))
    guest_connection_info: GuestConnectionInfo | None = field("GuestConnectionInfo", GuestConnectionInfo)
    property_responses: dict[str, PropertyResponse] = field("PropertyResponses", map_of(value(PropertyResponse)))
    metrics: Any = field("LCOWMetrics", ANY)


class PropertyQuery(Struct):
    """Which properties to query, with per-property queries."""

    property_types: list[str] = field("PropertyTypes", list_of(STR))
    queries: dict[str, Any] = field("Queries", map_of(ANY))


class ServiceProperties(Struct):
    """The properties of the HCS service, each raw JSON."""

    properties: list[Any] = field("Properties", list_of(ANY))


class ModifySettingRequest(Struct):
    """A change to a compute system: a resource path, the request type, settings and a guest request."""

    resource_path: str = field("ResourcePath", STR)
    request_type: str = field("RequestType", STR)
    settings: Any = field("Settings", ANY)
    guest_request: Any = field("GuestRequest", ANY)


class ModificationRequest(Struct):
    """A change to the HCS service: the property type and its settings."""

    property_type: str = field("PropertyType", STR)
    settings: Any = field("Settings", ANY)


class ContainerMemoryInformation(Struct):
    """A container's memory use as the host reports it."""

    total_physical_bytes: int = field("TotalPhysicalBytes", I32)
    total_usage: int = field("TotalUsage", I32)
    committed_bytes: int = field("CommittedBytes", I32)
    shared_committed_bytes: int = field("SharedCommittedBytes", I32)
    commit_limit_bytes: int = field("CommitLimitBytes", I32)
    peak_commitment_bytes: int = field("PeakCommitmentBytes", I32)


class CacheQueryStatsResponse(Struct):
    """L3 cache occupancy and bandwidth statistics."""

    l3_occupancy_bytes: int = field("L3OccupancyBytes", I32)
    l3_total_bw_bytes: int = field("L3TotalBwBytes", I32)
    l3_local_bw_bytes: int = field("L3LocalBwBytes", I32)


class SiloProperties(Struct):
    """A silo's properties: whether enabled and its job object's name."""

    enabled: bool = field("Enabled", BOOL)
    job_name: str = field("JobName", STR)


class LogicalProcessor(Struct):
    """A host logical processor: index, NUMA node, package, core and root VP."""

    lp_index: int = field("LpIndex", U32)
    node_number: int = field("NodeNumber", U8)
    package_id: int = field("PackageId", U32)
    core_id: int = field("CoreId", U32)
    root_vp_index: int = field("RootVpIndex", I32)


class ProcessorTopology(Struct):
    """The host's logical processors (the ProcessorTopology property)."""

    logical_processor_count: int = field("LogicalProcessorCount", U32)
    logical_processors: list[LogicalProcessor] = field("LogicalProcessors", list_of(value(LogicalProcessor)))


class HostProcessorModificationRequest(Struct):
    """A CPU-group change on the host: the operation and its details."""

    operation: str = field("Operation", STR)
    operation_details: Any = field("OperationDetails", ANY)
