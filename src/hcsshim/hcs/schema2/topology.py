"""Schema2 compute resources (area D): a utility VM's Topology (memory, processors, virtual NUMA), a container's
Memory and Processor, NUMA reporting types, processor limits and the host's CPU groups."""

from __future__ import annotations

from hcsshim.gojson import BOOL, I32, I64, STR, U8, U32, U64, Struct, field, list_of, opt, value

__all__ = [
    "CPUGroupOperation",
    "CPUGroupPropertyCode",
    "CpuGroup",
    "CpuGroupAffinity",
    "CpuGroupConfig",
    "CpuGroupConfigurations",
    "CpuGroupProperty",
    "CreateGroupOperation",
    "DeleteGroupOperation",
    "Memory",
    "MemoryBackingType",
    "Numa",
    "NumaNode",
    "NumaNodeMemory",
    "NumaNodeProcessor",
    "NumaProcessors",
    "NumaSetting",
    "Processor",
    "ProcessorLimits",
    "Range",
    "Topology",
    "VirtualMachineMemory",
    "VirtualMachineProcessor",
    "VirtualNodeInfo",
    "VirtualSlitType",
]


class MemoryBackingType:
    """How a VM's memory is backed (VirtualMachineMemory.Backing, NumaSetting.MemoryBackingType)."""

    PHYSICAL = "Physical"
    VIRTUAL = "Virtual"
    HYBRID = "Hybrid"


class VirtualSlitType:
    """Where a VM's ACPI SLIT (NUMA distances) comes from (VirtualMachineMemory.SlitType)."""

    NONE = "None"
    FIRMWARE = "Firmware"
    MEASURED = "Measured"
    FIRMWARE_FALLBACK_MEASURED = "FirmwareFallbackMeasured"


class CPUGroupOperation:
    """The operations of a HostProcessorModificationRequest."""

    CREATE_GROUP = "CreateGroup"
    DELETE_GROUP = "DeleteGroup"
    SET_PROPERTY = "SetProperty"


class CPUGroupPropertyCode:
    """The property codes of a CpuGroupProperty (a uint32 upstream; its constants are untyped)."""

    CPU_CAPACITY = 0x00010000
    CPU_SCHEDULING_PRIORITY = 0x00020000
    IDLE_LP_RESERVE = 0x00030000


class Memory(Struct):
    """A container's (silo's) memory limit."""

    size_in_mb: int = field("SizeInMB", U64)


class Processor(Struct):
    """A container's (silo's) processor count, maximum and weight."""

    count: int = field("Count", I32)
    maximum: int = field("Maximum", I32)
    weight: int = field("Weight", I32)


class CpuGroup(Struct):
    """A host CPU group a VM's processors are placed in, by id."""

    id: str = field("Id", STR)


class Range(Struct):
    """An upper bound (NumaProcessors' processors per node)."""

    max: int = field("max", U32)


class NumaProcessors(Struct):
    """How a VM's processors are spread over its virtual NUMA nodes and sockets."""

    count_per_node: Range = field("count_per_node", value(Range))
    node_per_socket: int = field("node_per_socket", U32)


class VirtualMachineProcessor(Struct):
    """A utility VM's virtual processors: count, limit, weight, reservation and placement."""

    count: int = field("Count", U32)
    limit: int = field("Limit", U64)
    weight: int = field("Weight", U64)
    reservation: int = field("Reservation", U64)
    cpu_group: CpuGroup | None = field("CpuGroup", CpuGroup)
    numa_processors_settings: NumaProcessors | None = field("NumaProcessorsSettings", NumaProcessors)


class VirtualMachineMemory(Struct):
    """A utility VM's memory: size, backing, hints and the MMIO gaps."""

    size_in_mb: int = field("SizeInMB", U64)
    backing: str | None = field("Backing", opt(STR))
    allow_overcommit: bool = field("AllowOvercommit", BOOL)
    enable_hot_hint: bool = field("EnableHotHint", BOOL)
    enable_cold_hint: bool = field("EnableColdHint", BOOL)
    enable_cold_discard_hint: bool = field("EnableColdDiscardHint", BOOL)
    enable_deferred_commit: bool = field("EnableDeferredCommit", BOOL)
    low_mmio_gap_in_mb: int = field("LowMmioGapInMB", U64)
    high_mmio_base_in_mb: int = field("HighMmioBaseInMB", U64)
    high_mmio_gap_in_mb: int = field("HighMmioGapInMB", U64)
    slit_type: str | None = field("SlitType", opt(STR))


class NumaSetting(Struct):
    """One virtual NUMA node of a VM mapped to a physical node, with its processors and memory."""

    virtual_node_number: int = field("VirtualNodeNumber", U32)
    physical_node_number: int = field("PhysicalNodeNumber", U32)
    virtual_socket_number: int = field("VirtualSocketNumber", U32)
    count_of_processors: int = field("CountOfProcessors", U32)
    count_of_memory_blocks: int = field("CountOfMemoryBlocks", U64)
    memory_backing_type: str = field("MemoryBackingType", STR)


class Numa(Struct):
    """A VM's virtual NUMA topology."""

    virtual_node_count: int = field("VirtualNodeCount", U8)
    preferred_physical_nodes: list[int] = field("PreferredPhysicalNodes", list_of(I64))
    settings: list[NumaSetting] = field("Settings", list_of(value(NumaSetting)))
    max_size_per_node: int = field("MaxSizePerNode", U64)


class Topology(Struct):
    """A utility VM's compute topology: memory, processors and NUMA."""

    memory: VirtualMachineMemory | None = field("Memory", VirtualMachineMemory)
    processor: VirtualMachineProcessor | None = field("Processor", VirtualMachineProcessor)
    numa: Numa | None = field("Numa", Numa)


class NumaNode(Struct):
    """A virtual NUMA node's index and the physical node it maps to."""

    virtual_node_index: int = field("VirtualNodeIndex", U32)
    physical_node_index: int = field("PhysicalNodeIndex", U32)


class NumaNodeMemory(Struct):
    """Memory of a NUMA node, in pages."""

    total_consumable_memory_in_pages: int = field("TotalConsumableMemoryInPages", U64)
    available_memory_in_pages: int = field("AvailableMemoryInPages", U64)


class NumaNodeProcessor(Struct):
    """Processors of a NUMA node: assigned and available."""

    total_assigned_processors: int = field("TotalAssignedProcessors", U32)
    total_available_processors: int = field("TotalAvailableProcessors", U32)


class VirtualNodeInfo(Struct):
    """A VM's virtual NUMA node as the memory query reports it."""

    virtual_node_index: int = field("VirtualNodeIndex", I32)
    physical_node_number: int = field("PhysicalNodeNumber", I32)
    virtual_processor_count: int = field("VirtualProcessorCount", I32)
    memory_usage_in_pages: int = field("MemoryUsageInPages", I32)


class ProcessorLimits(Struct):
    """A VM's processor limits, modifiable at run time (the Processor/Limits resource)."""

    limit: int = field("Limit", U64)
    weight: int = field("Weight", U64)
    reservation: int = field("Reservation", U64)
    maximum_frequency_mhz: int = field("MaximumFrequencyMHz", U32)


class CpuGroupAffinity(Struct):
    """The logical processors of a CPU group."""

    logical_processor_count: int = field("LogicalProcessorCount", I32)
    logical_processors: list[int] = field("LogicalProcessors", list_of(I32))


class CpuGroupProperty(Struct):
    """One property of a CPU group: a CPUGroupPropertyCode and its value."""

    property_code: int = field("PropertyCode", U32)
    property_value: int = field("PropertyValue", U32)


class CpuGroupConfig(Struct):
    """A host CPU group: id, affinity and properties."""

    group_id: str = field("GroupId", STR)
    affinity: CpuGroupAffinity | None = field("Affinity", CpuGroupAffinity)
    group_properties: list[CpuGroupProperty] = field("GroupProperties", list_of(value(CpuGroupProperty)))
    hypervisor_group_id: int = field("HypervisorGroupId", U64)


class CpuGroupConfigurations(Struct):
    """The host's CPU groups (the CpuGroup property of the host)."""

    cpu_groups: list[CpuGroupConfig] = field("CpuGroups", list_of(value(CpuGroupConfig)))


class CreateGroupOperation(Struct):
    """Details of a CreateGroup operation: the new group's id and processors."""

    group_id: str = field("GroupId", STR)
    logical_processor_count: int = field("LogicalProcessorCount", U32)
    logical_processors: list[int] = field("LogicalProcessors", list_of(U32))


class DeleteGroupOperation(Struct):
    """Details of a DeleteGroup operation: the group's id."""

    group_id: str = field("GroupId", STR)
