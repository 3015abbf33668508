"""Schema2 VM devices (area F): Devices and everything in it (COM ports, SCSI controllers and attachments,
virtual PMem, network adapters and SR-IOV settings, video, keyboard, mouse, battery, Hyper-V sockets, vSMB and
Plan 9 shares, vPCI, flexible I/O, shared memory).

Quirk kept: Devices.VirtualPci, VirtualPciDevice.Functions and both VirtualPciFunction fields have tags without
a name upstream, so their keys are the Go field names."""

from __future__ import annotations

from hcsshim.gojson import BOOL, I32, I64, STR, U16, U32, U64, Struct, field, list_of, map_of, opt, value
from hcsshim.hcs.schema2.firmware import GuestCrashReporting
from hcsshim.hcs.schema2.storage import HvSocketSystemConfig

__all__ = [
    "INTERRUPT_MODERATION_VALUE_TO_NAME",
    "Attachment",
    "Battery",
    "ComPort",
    "Devices",
    "EnhancedModeVideo",
    "FlexibleIoDevice",
    "HvSocket2",
    "InterruptModerationName",
    "InterruptModerationValue",
    "IovSettings",
    "Keyboard",
    "Mouse",
    "NetworkAdapter",
    "Plan9",
    "Plan9Share",
    "Plan9ShareFlags",
    "RdpConnectionOptions",
    "Scsi",
    "SharedMemoryConfiguration",
    "SharedMemoryRegion",
    "VideoMonitor",
    "VirtualPMemController",
    "VirtualPMemDevice",
    "VirtualPMemMapping",
    "VirtualPciDevice",
    "VirtualPciFunction",
    "VirtualSmb",
    "VirtualSmbShare",
    "VirtualSmbShareOptions",
]


class InterruptModerationName:
    """The interrupt moderation modes of IovSettings.InterruptModeration."""

    DEFAULT = "Default"
    ADAPTIVE = "Adaptive"
    OFF = "Off"
    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"


class InterruptModerationValue:
    """The numeric interrupt moderation levels (a uint32 upstream), named by INTERRUPT_MODERATION_VALUE_TO_NAME."""

    DEFAULT = 0
    ADAPTIVE = 1
    OFF = 2
    LOW = 100
    MEDIUM = 200
    HIGH = 300


INTERRUPT_MODERATION_VALUE_TO_NAME: dict[int, str] = {
    InterruptModerationValue.DEFAULT: InterruptModerationName.DEFAULT,
    InterruptModerationValue.ADAPTIVE: InterruptModerationName.ADAPTIVE,
    InterruptModerationValue.OFF: InterruptModerationName.OFF,
    InterruptModerationValue.LOW: InterruptModerationName.LOW,
    InterruptModerationValue.MEDIUM: InterruptModerationName.MEDIUM,
    InterruptModerationValue.HIGH: InterruptModerationName.HIGH,
}


class Plan9ShareFlags:
    """The flags of Plan9Share.Flags (an int32 bit set upstream)."""

    NONE = 0x00000000
    READ_ONLY = 0x00000001
    LINUX_METADATA = 0x00000004
    CASE_SENSITIVE = 0x00000008
    USE_SHARE_ROOT_IDENTITY = 0x00000010
    RESTRICT_FILE_ACCESS = 0x00000080
    UNLIMITED_CONNECTIONS = 0x00000100


class ComPort(Struct):
    """A serial port backed by a host named pipe."""

    named_pipe: str = field("NamedPipe", STR)
    optimize_for_debugger: bool = field("OptimizeForDebugger", BOOL)


class Keyboard(Struct):
    """A synthetic keyboard (no settings)."""


class Mouse(Struct):
    """A synthetic mouse (no settings)."""


class RdpConnectionOptions(Struct):
    """Who may connect to a VM's RDP console, and over which pipe."""

    access_sids: list[str] = field("AccessSids", list_of(STR))
    named_pipe: str = field("NamedPipe", STR)


class VideoMonitor(Struct):
    """A synthetic video monitor: resolution and RDP connection options."""

    horizontal_resolution: int = field("HorizontalResolution", I32)
    vertical_resolution: int = field("VerticalResolution", I32)
    connection_options: RdpConnectionOptions | None = field("ConnectionOptions", RdpConnectionOptions)


class EnhancedModeVideo(Struct):
    """Enhanced-session (RDP) video."""

    connection_options: RdpConnectionOptions | None = field("ConnectionOptions", RdpConnectionOptions)


class Battery(Struct):
    """A synthetic battery (no settings)."""


class Attachment(Struct):
    """A disk attached to a SCSI controller: type ("VirtualDisk", "PassThru", ...), path and options."""

    type: str = field("Type", STR)
    path: str = field("Path", STR)
    ignore_flushes: bool = field("IgnoreFlushes", BOOL)
    caching_mode: str = field("CachingMode", STR)
    no_write_hardening: bool = field("NoWriteHardening", BOOL)
    disable_expansion_optimization: bool = field("DisableExpansionOptimization", BOOL)
    ignore_relative_locator: bool = field("IgnoreRelativeLocator", BOOL)
    capture_io_attribution_context: bool = field("CaptureIoAttributionContext", BOOL)
    read_only: bool = field("ReadOnly", BOOL)
    support_compressed_volumes: bool = field("SupportCompressedVolumes", BOOL)
    always_allow_sparse_files: bool = field("AlwaysAllowSparseFiles", BOOL)
    extensible_virtual_disk_type: str = field("ExtensibleVirtualDiskType", STR)


class Scsi(Struct):
    """A SCSI controller and its attachments by LUN."""

    attachments: dict[str, Attachment] = field("Attachments", map_of(value(Attachment)))


class VirtualPMemDevice(Struct):
    """A virtual persistent-memory device backed by a VHD."""

    host_path: str = field("HostPath", STR)
    read_only: bool = field("ReadOnly", BOOL)
    image_format: str = field("ImageFormat", STR)


class VirtualPMemController(Struct):
    """The virtual PMem controller: devices by index, their number and size limits."""

    devices: dict[str, VirtualPMemDevice] = field("Devices", map_of(value(VirtualPMemDevice)))
    maximum_count: int = field("MaximumCount", U32)
    maximum_size_bytes: int = field("MaximumSizeBytes", U64)
    backing: str = field("Backing", STR)


class VirtualPMemMapping(Struct):
    """A VHD mapped into part of a multi-mapped PMem device."""

    host_path: str = field("HostPath", STR)
    image_format: str = field("ImageFormat", STR)


class VirtualSmbShareOptions(Struct):
    """Options of a virtual SMB share."""

    read_only: bool = field("ReadOnly", BOOL)
    share_read: bool = field("ShareRead", BOOL)
    cache_io: bool = field("CacheIo", BOOL)
    no_oplocks: bool = field("NoOplocks", BOOL)
    take_backup_privilege: bool = field("TakeBackupPrivilege", BOOL)
    use_share_root_identity: bool = field("UseShareRootIdentity", BOOL)
    no_directmap: bool = field("NoDirectmap", BOOL)
    no_locks: bool = field("NoLocks", BOOL)
    no_dirnotify: bool = field("NoDirnotify", BOOL)
    vm_shared_memory: bool = field("VmSharedMemory", BOOL)
    restrict_file_access: bool = field("RestrictFileAccess", BOOL)
    force_level_ii_oplocks: bool = field("ForceLevelIIOplocks", BOOL)
    reparse_base_layer: bool = field("ReparseBaseLayer", BOOL)
    pseudo_oplocks: bool = field("PseudoOplocks", BOOL)
    non_cache_io: bool = field("NonCacheIo", BOOL)
    pseudo_dirnotify: bool = field("PseudoDirnotify", BOOL)
    single_file_mapping: bool = field("SingleFileMapping", BOOL)


class VirtualSmbShare(Struct):
    """A host directory shared with the guest over virtual SMB (vSMB)."""

    name: str = field("Name", STR)
    path: str = field("Path", STR)
    allowed_files: list[str] = field("AllowedFiles", list_of(STR))
    options: VirtualSmbShareOptions | None = field("Options", VirtualSmbShareOptions)


class VirtualSmb(Struct):
    """Virtual SMB: its shares and the direct file mapping size."""

    shares: list[VirtualSmbShare] = field("Shares", list_of(value(VirtualSmbShare)))
    direct_file_mapping_in_mb: int = field("DirectFileMappingInMB", I64)


class Plan9Share(Struct):
    """A host directory shared with a Linux guest over Plan 9 on an HvSocket port."""

    name: str = field("Name", STR)
    access_name: str = field("AccessName", STR)
    path: str = field("Path", STR)
    port: int = field("Port", I32)
    flags: int = field("Flags", I32)
    allowed_files: list[str] = field("AllowedFiles", list_of(STR))


class Plan9(Struct):
    """The Plan 9 file server and its shares."""

    shares: list[Plan9Share] = field("Shares", list_of(value(Plan9Share)))


class VirtualPciFunction(Struct):
    """A function of an assigned PCI device: the host device instance and virtual function."""

    device_instance_path: str = field("DeviceInstancePath", STR)
    virtual_function: int = field("VirtualFunction", U16)


class VirtualPciDevice(Struct):
    """A PCI device assigned to a VM (vPCI), by its functions."""

    functions: list[VirtualPciFunction] = field("Functions", list_of(value(VirtualPciFunction)))
    propagate_numa_affinity: bool | None = field("PropagateNumaAffinity", opt(BOOL))


class FlexibleIoDevice(Struct):
    """A device emulated by an external emulator (flexible I/O)."""

    emulator_id: str = field("EmulatorId", STR)
    hosting_model: str = field("HostingModel", STR)
    configuration: list[str] = field("Configuration", list_of(STR))


class SharedMemoryRegion(Struct):
    """A named memory section shared with the guest."""

    section_name: str = field("SectionName", STR)
    start_offset: int = field("StartOffset", I32)
    length: int = field("Length", I32)
    allow_guest_write: bool = field("AllowGuestWrite", BOOL)
    hidden_from_guest: bool = field("HiddenFromGuest", BOOL)


class SharedMemoryConfiguration(Struct):
    """The shared memory regions of a VM."""

    regions: list[SharedMemoryRegion] = field("Regions", list_of(value(SharedMemoryRegion)))


class IovSettings(Struct):
    """SR-IOV settings of a network adapter: offload weight, queue pairs, interrupt moderation."""

    offload_weight: int | None = field("OffloadWeight", opt(U32))
    queue_pairs_requested: int | None = field("QueuePairsRequested", opt(U32))
    interrupt_moderation: str | None = field("InterruptModeration", opt(STR))


class NetworkAdapter(Struct):
    """A synthetic network adapter connected to an HNS endpoint."""

    endpoint_id: str = field("EndpointId", STR)
    mac_address: str = field("MacAddress", STR)
    iov_settings: IovSettings | None = field("IovSettings", IovSettings)


class HvSocket2(Struct):
    """A VM's Hyper-V socket device and its security configuration."""

    hv_socket_config: HvSocketSystemConfig | None = field("HvSocketConfig", HvSocketSystemConfig)


class Devices(Struct):
    """A utility VM's devices, each kind by its slot or id."""

    com_ports: dict[str, ComPort] = field("ComPorts", map_of(value(ComPort)))
    scsi: dict[str, Scsi] = field("Scsi", map_of(value(Scsi)))
    virtual_pmem: VirtualPMemController | None = field("VirtualPMem", VirtualPMemController)
    network_adapters: dict[str, NetworkAdapter] = field("NetworkAdapters", map_of(value(NetworkAdapter)))
    video_monitor: VideoMonitor | None = field("VideoMonitor", VideoMonitor)
    keyboard: Keyboard | None = field("Keyboard", Keyboard)
    mouse: Mouse | None = field("Mouse", Mouse)
    hv_socket: HvSocket2 | None = field("HvSocket", HvSocket2)
    enhanced_mode_video: EnhancedModeVideo | None = field("EnhancedModeVideo", EnhancedModeVideo)
    guest_crash_reporting: GuestCrashReporting | None = field("GuestCrashReporting", GuestCrashReporting)
    virtual_smb: VirtualSmb | None = field("VirtualSmb", VirtualSmb)
    plan9: Plan9 | None = field("Plan9", Plan9)
    battery: Battery | None = field("Battery", Battery)
    flexible_iov: dict[str, FlexibleIoDevice] = field("FlexibleIov", map_of(value(FlexibleIoDevice)))
    shared_memory: SharedMemoryConfiguration | None = field("SharedMemory", SharedMemoryConfiguration)
    virtual_pci: dict[str, VirtualPciDevice] = field("VirtualPci", map_of(value(VirtualPciDevice)))
