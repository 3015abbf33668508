"""Schema2 document roots and lifecycle options (area A): ComputeSystem (what HcsCreateComputeSystem takes),
Container, VirtualMachine and HostedSystem, the container's GuestOs, the VM's GuestState, RestoreState and
DebugOptions, and the save and pause options. (Version, also area A, is in common.)

ComputeSystem.HostedSystem is untyped upstream (interface{}): it holds any JSON, usually a HostedSystem document
(a Struct there is written as its JSON; a parsed document gives a dict)."""

from __future__ import annotations

from typing import Any

from hcsshim.gojson import ANY, BOOL, STR, Struct, field, list_of, value
from hcsshim.hcs.schema2.common import Version
from hcsshim.hcs.schema2.credguard import ContainerCredentialGuardState
from hcsshim.hcs.schema2.devices import Devices
from hcsshim.hcs.schema2.firmware import Chipset, GuestConnection, SecuritySettings
from hcsshim.hcs.schema2.migration import MigrationInitializeOptions
from hcsshim.hcs.schema2.storage import (
    ContainerDefinitionDevice,
    Device,
    HvSocket,
    MappedDirectory,
    MappedPipe,
    Networking,
    RegistryChanges,
    Storage,
    StorageQoS,
)
from hcsshim.hcs.schema2.topology import Memory, Processor, Topology

__all__ = [
    "ComputeSystem",
    "Container",
    "DebugOptions",
    "GuestOs",
    "GuestState",
    "HostedSystem",
    "IsolationType",
    "PauseNotification",
    "PauseOptions",
    "RestoreState",
    "SaveOptions",
    "VirtualMachine",
]


class IsolationType:
    """Container.IsolationType: how a container is isolated when it is not a plain silo."""

    HOST_PROCESS = "HostProcess"


class GuestOs(Struct):
    """A container's guest OS settings: its host name."""

    host_name: str = field("HostName", STR)


class Container(Struct):
    """A container (silo) document: OS, storage, mappings, resources, networking and devices."""

    guest_os: GuestOs | None = field("GuestOs", GuestOs)
    storage: Storage | None = field("Storage", Storage)
    mapped_directories: list[MappedDirectory] = field("MappedDirectories", list_of(value(MappedDirectory)))
    mapped_pipes: list[MappedPipe] = field("MappedPipes", list_of(value(MappedPipe)))
    memory: Memory | None = field("Memory", Memory)
    processor: Processor | None = field("Processor", Processor)
    networking: Networking | None = field("Networking", Networking)
    hv_socket: HvSocket | None = field("HvSocket", HvSocket)
    container_credential_guard: ContainerCredentialGuardState | None = field(
        "ContainerCredentialGuard", ContainerCredentialGuardState)
    registry_changes: RegistryChanges | None = field("RegistryChanges", RegistryChanges)
    assigned_devices: list[Device] = field("AssignedDevices", list_of(value(Device)))
    additional_device_namespace: ContainerDefinitionDevice | None = field(
        "AdditionalDeviceNamespace", ContainerDefinitionDevice)
    isolation_type: str = field("IsolationType", STR)


class HostedSystem(Struct):
    """A container to create inside a utility VM, with its schema version."""

    schema_version: Version | None = field("SchemaVersion", Version)
    container: Container | None = field("Container", Container)


class GuestState(Struct):
    """Where a VM's guest state (VMGS) and runtime state live."""

    guest_state_file_path: str = field("GuestStateFilePath", STR)
    guest_state_file_type: str = field("GuestStateFileType", STR)
    runtime_state_file_path: str = field("RuntimeStateFilePath", STR)
    force_transient_state: bool = field("ForceTransientState", BOOL)


class RestoreState(Struct):
    """The saved state (or template) a VM is restored from."""

    save_state_file_path: str = field("SaveStateFilePath", STR)
    template_system_id: str = field("TemplateSystemId", STR)


class DebugOptions(Struct):
    """Where a VM's state is saved on a bugcheck or triple fault, and its firmware dump."""

    bugcheck_saved_state_file_name: str = field("BugcheckSavedStateFileName", STR)
    bugcheck_no_crashdump_saved_state_file_name: str = field("BugcheckNoCrashdumpSavedStateFileName", STR)
    triple_fault_saved_state_file_name: str = field("TripleFaultSavedStateFileName", STR)
    firmware_dump_file_name: str = field("FirmwareDumpFileName", STR)


class VirtualMachine(Struct):
    """A utility VM document: chipset, topology, devices, state, security and migration."""

    version: Version | None = field("Version", Version)
    stop_on_reset: bool = field("StopOnReset", BOOL)
    chipset: Chipset | None = field("Chipset", Chipset)
    compute_topology: Topology | None = field("ComputeTopology", Topology)
    devices: Devices | None = field("Devices", Devices)
    guest_state: GuestState | None = field("GuestState", GuestState)
    restore_state: RestoreState | None = field("RestoreState", RestoreState)
    registry_changes: RegistryChanges | None = field("RegistryChanges", RegistryChanges)
    storage_qos: StorageQoS | None = field("StorageQoS", StorageQoS)
    debug_options: DebugOptions | None = field("DebugOptions", DebugOptions)
    guest_connection: GuestConnection | None = field("GuestConnection", GuestConnection)
    security_settings: SecuritySettings | None = field("SecuritySettings", SecuritySettings)
    resource_partition_id: str = field("ResourcePartitionId", STR)
    migration_options: MigrationInitializeOptions | None = field("MigrationOptions", MigrationInitializeOptions)


class ComputeSystem(Struct):
    """HcsCreateComputeSystem's document: a container, a utility VM or a container hosted in one."""

    owner: str = field("Owner", STR)
    schema_version: Version | None = field("SchemaVersion", Version)
    hosting_system_id: str = field("HostingSystemId", STR)
    hosted_system: Any = field("HostedSystem", ANY)
    container: Container | None = field("Container", Container)
    virtual_machine: VirtualMachine | None = field("VirtualMachine", VirtualMachine)
    should_terminate_on_last_handle_closed: bool = field("ShouldTerminateOnLastHandleClosed", BOOL)


class SaveOptions(Struct):
    """HcsSaveComputeSystem's options: the save type and state file."""

    save_type: str = field("SaveType", STR)
    save_state_file_path: str = field("SaveStateFilePath", STR)


class PauseNotification(Struct):
    """Why a hosted system is paused."""

    reason: str = field("Reason", STR)


class PauseOptions(Struct):
    """HcsPauseComputeSystem's options: the suspension level and a notification."""

    suspension_level: str = field("SuspensionLevel", STR)
    hosted_notification: PauseNotification | None = field("HostedNotification", PauseNotification)
