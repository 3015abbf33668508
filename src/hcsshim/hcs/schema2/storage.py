"""Schema2 container storage, namespaces, devices, HvSocket and registry (area G): a container's Storage and
layers, mapped directories and pipes, CimFS mounts, assigned devices and the device-extension namespace (whose
JSON keys are snake_case upstream), Networking, Hyper-V socket security and RegistryChanges.

ObjectDirectory contains ObjectDirectory values: its field names the class with gojson's `ref`, resolved when the
kind is first used."""

from __future__ import annotations

from hcsshim.gojson import BOOL, I32, STR, U32, Struct, field, list_of, map_of, ref, value

__all__ = [
    "CimMount",
    "ContainerDefinitionDevice",
    "Device",
    "DeviceCategory",
    "DeviceExtension",
    "DeviceExtensionNamespace",
    "DeviceInstance",
    "DeviceNamespace",
    "DeviceType",
    "FileSystemFilterType",
    "HvSocket",
    "HvSocketAddress",
    "HvSocketServiceConfig",
    "HvSocketSystemConfig",
    "InterfaceClass",
    "Layer",
    "MappedDirectory",
    "MappedPipe",
    "Networking",
    "ObjectDirectory",
    "ObjectNamespace",
    "ObjectSymlink",
    "RegistryChanges",
    "RegistryHive",
    "RegistryKey",
    "RegistryValue",
    "RegistryValueType",
    "Storage",
    "StorageQoS",
]


class FileSystemFilterType:
    """The layer file-system filters."""

    UNION_FS = "UnionFS"
    WCIFS = "WCIFS"


class DeviceType:
    """How a container's assigned Device is named (Device.Type)."""

    CLASS_GUID = "ClassGuid"
    DEVICE_INSTANCE = "DeviceInstance"
    GPU_MIRROR = "GpuMirror"


class RegistryHive:
    """The hives a RegistryKey may be in."""

    SYSTEM = "System"
    SOFTWARE = "Software"
    SECURITY = "Security"
    SAM = "Sam"


class RegistryValueType:
    """The types of a RegistryValue (RegistryValue.Type)."""

    NONE = "None"
    STRING = "String"
    EXPANDED_STRING = "ExpandedString"
    MULTI_STRING = "MultiString"
    BINARY = "Binary"
    DWORD = "DWord"
    QWORD = "QWord"
    CUSTOM_TYPE = "CustomType"


class Layer(Struct):
    """A container image layer: id, path, path type and cache mode."""

    id: str = field("Id", STR)
    path: str = field("Path", STR)
    path_type: str = field("PathType", STR)
    cache: str = field("Cache", STR)


class StorageQoS(Struct):
    """Storage limits: IOPS and bandwidth maxima."""

    iops_maximum: int = field("IopsMaximum", I32)
    bandwidth_maximum: int = field("BandwidthMaximum", I32)


class Storage(Struct):
    """A container's storage: its layers, scratch path and QoS."""

    layers: list[Layer] = field("Layers", list_of(value(Layer)))
    path: str = field("Path", STR)
    qos: StorageQoS | None = field("QoS", StorageQoS)
    privileged_container_root_path: str = field("PrivilegedContainerRootPath", STR)


class MappedDirectory(Struct):
    """A host directory mapped into a container."""

    host_path: str = field("HostPath", STR)
    host_path_type: str = field("HostPathType", STR)
    container_path: str = field("ContainerPath", STR)
    read_only: bool = field("ReadOnly", BOOL)


class MappedPipe(Struct):
    """A host named pipe mapped into a container."""

    container_pipe_name: str = field("ContainerPipeName", STR)
    host_path: str = field("HostPath", STR)
    host_path_type: str = field("HostPathType", STR)


class CimMount(Struct):
    """A CimFS image mounted as a volume: image path, file system name, volume GUID and flags."""

    image_path: str = field("ImagePath", STR)
    file_system_name: str = field("FileSystemName", STR)
    volume_guid: str = field("VolumeGuid", STR)
    mount_flags: int = field("MountFlags", U32)


class Device(Struct):
    """A device assigned to a container, by interface class GUID or location path."""

    type: str = field("Type", STR)
    interface_class_guid: str = field("InterfaceClassGuid", STR)
    location_path: str = field("LocationPath", STR)


class InterfaceClass(Struct):
    """A device interface class in a device extension: type, identifier and recursion."""

    type: str = field("type", STR)
    identifier: str = field("identifier", STR)
    recurse: bool = field("recurse", BOOL)


class DeviceCategory(Struct):
    """A named category of devices and its interface classes."""

    name: str = field("name", STR)
    interface_class: list[InterfaceClass] = field("interface_class", list_of(value(InterfaceClass)))


class DeviceInstance(Struct):
    """A device instance of a device extension: id, location, port and interface classes."""

    id: str = field("id", STR)
    location_path: str = field("location_path", STR)
    port_name: str = field("port_name", STR)
    interface_class: list[InterfaceClass] = field("interface_class", list_of(value(InterfaceClass)))


class DeviceNamespace(Struct):
    """The device part of a device extension namespace: categories and instances."""

    requires_driverstore: bool = field("requires_driverstore", BOOL)
    device_category: list[DeviceCategory] = field("device_category", list_of(value(DeviceCategory)))
    device_instance: list[DeviceInstance] = field("device_instance", list_of(value(DeviceInstance)))


class ObjectSymlink(Struct):
    """A symbolic link in the object namespace of a device extension."""

    name: str = field("name", STR)
    path: str = field("path", STR)
    scope: str = field("scope", STR)
    pathtoclone: str = field("pathtoclone", STR)
    access_mask: int = field("access_mask", I32)


class ObjectDirectory(Struct):
    """A directory in the object namespace of a device extension (directories nest)."""

    name: str = field("name", STR)
    clonesd: str = field("clonesd", STR)
    shadow: str = field("shadow", STR)
    symlink: list[ObjectSymlink] = field("symlink", list_of(value(ObjectSymlink)))
    objdir: list[ObjectDirectory] = field("objdir", list_of(ref("ObjectDirectory", lambda: value(ObjectDirectory))))


class ObjectNamespace(Struct):
    """The object-manager namespace of a device extension: links and directories."""

    shadow: str = field("shadow", STR)
    symlink: list[ObjectSymlink] = field("symlink", list_of(value(ObjectSymlink)))
    objdir: list[ObjectDirectory] = field("objdir", list_of(value(ObjectDirectory)))


class DeviceExtensionNamespace(Struct):
    """A device extension's namespaces: object manager and devices."""

    ob: ObjectNamespace | None = field("ob", ObjectNamespace)
    device: DeviceNamespace | None = field("device", DeviceNamespace)


class DeviceExtension(Struct):
    """A device extension: its device category and the namespaces it adds."""

    device_category: DeviceCategory | None = field("device_category", DeviceCategory)
    namespace: DeviceExtensionNamespace | None = field("namespace", DeviceExtensionNamespace)


class ContainerDefinitionDevice(Struct):
    """Additional device namespace of a container: its device extensions."""

    device_extension: list[DeviceExtension] = field("device_extension", list_of(value(DeviceExtension)))


class Networking(Struct):
    """A container's networking: DNS settings, a shared namespace and its endpoints."""

    allow_unqualified_dns_query: bool = field("AllowUnqualifiedDnsQuery", BOOL)
    dns_search_list: str = field("DnsSearchList", STR)
    network_shared_container_name: str = field("NetworkSharedContainerName", STR)
    namespace: str = field("Namespace", STR)
    network_adapters: list[str] = field("NetworkAdapters", list_of(STR))


class HvSocketServiceConfig(Struct):
    """Security of one Hyper-V socket service: bind and connect descriptors, wildcards."""

    bind_security_descriptor: str = field("BindSecurityDescriptor", STR)
    connect_security_descriptor: str = field("ConnectSecurityDescriptor", STR)
    allow_wildcard_binds: bool = field("AllowWildcardBinds", BOOL)
    disabled: bool = field("Disabled", BOOL)


class HvSocketSystemConfig(Struct):
    """Hyper-V socket security of a system: defaults and a table of services by GUID."""

    default_bind_security_descriptor: str = field("DefaultBindSecurityDescriptor", STR)
    default_connect_security_descriptor: str = field("DefaultConnectSecurityDescriptor", STR)
    service_table: dict[str, HvSocketServiceConfig] = field("ServiceTable", map_of(value(HvSocketServiceConfig)))


class HvSocket(Struct):
    """A container's Hyper-V socket settings."""

    config: HvSocketSystemConfig | None = field("Config", HvSocketSystemConfig)
    enable_powershell_direct: bool = field("EnablePowerShellDirect", BOOL)


class HvSocketAddress(Struct):
    """A Hyper-V socket address: the local and parent GUIDs."""

    local_address: str = field("LocalAddress", STR)
    parent_address: str = field("ParentAddress", STR)


class RegistryKey(Struct):
    """A registry key: hive, name and volatility."""

    hive: str = field("Hive", STR)
    name: str = field("Name", STR)
    volatile: bool = field("Volatile", BOOL)


class RegistryValue(Struct):
    """A registry value to set: key, name, type and the data of that type."""

    key: RegistryKey | None = field("Key", RegistryKey)
    name: str = field("Name", STR)
    type: str = field("Type", STR)
    string_value: str = field("StringValue", STR)
    binary_value: str = field("BinaryValue", STR)
    dword_value: int = field("DWordValue", I32)
    qword_value: int = field("QWordValue", I32)
    custom_type: int = field("CustomType", I32)


class RegistryChanges(Struct):
    """Registry values to add and keys to delete in a compute system."""

    add_values: list[RegistryValue] = field("AddValues", list_of(value(RegistryValue)))
    delete_keys: list[RegistryKey] = field("DeleteKeys", list_of(value(RegistryKey)))
