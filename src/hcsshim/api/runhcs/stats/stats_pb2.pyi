import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from hcsshim.api.containerd.cgroups.v1 import metrics_pb2 as _metrics_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Statistics(_message.Message):
    __slots__ = ("windows", "linux", "vm")
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    LINUX_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    windows: WindowsContainerStatistics
    linux: _metrics_pb2.Metrics
    vm: VirtualMachineStatistics
    def __init__(self, windows: _Optional[_Union[WindowsContainerStatistics, _Mapping]] = ..., linux: _Optional[_Union[_metrics_pb2.Metrics, _Mapping]] = ..., vm: _Optional[_Union[VirtualMachineStatistics, _Mapping]] = ...) -> None: ...

class WindowsContainerStatistics(_message.Message):
    __slots__ = ("timestamp", "container_start_time", "uptime_ns", "processor", "memory", "storage")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_START_TIME_FIELD_NUMBER: _ClassVar[int]
    UPTIME_NS_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    container_start_time: _timestamp_pb2.Timestamp
    uptime_ns: int
    processor: WindowsContainerProcessorStatistics
    memory: WindowsContainerMemoryStatistics
    storage: WindowsContainerStorageStatistics
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., container_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uptime_ns: _Optional[int] = ..., processor: _Optional[_Union[WindowsContainerProcessorStatistics, _Mapping]] = ..., memory: _Optional[_Union[WindowsContainerMemoryStatistics, _Mapping]] = ..., storage: _Optional[_Union[WindowsContainerStorageStatistics, _Mapping]] = ...) -> None: ...

class WindowsContainerProcessorStatistics(_message.Message):
    __slots__ = ("total_runtime_ns", "runtime_user_ns", "runtime_kernel_ns")
    TOTAL_RUNTIME_NS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_USER_NS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_KERNEL_NS_FIELD_NUMBER: _ClassVar[int]
    total_runtime_ns: int
    runtime_user_ns: int
    runtime_kernel_ns: int
    def __init__(self, total_runtime_ns: _Optional[int] = ..., runtime_user_ns: _Optional[int] = ..., runtime_kernel_ns: _Optional[int] = ...) -> None: ...

class WindowsContainerMemoryStatistics(_message.Message):
    __slots__ = ("memory_usage_commit_bytes", "memory_usage_commit_peak_bytes", "memory_usage_private_working_set_bytes")
    MEMORY_USAGE_COMMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_COMMIT_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_PRIVATE_WORKING_SET_BYTES_FIELD_NUMBER: _ClassVar[int]
    memory_usage_commit_bytes: int
    memory_usage_commit_peak_bytes: int
    memory_usage_private_working_set_bytes: int
    def __init__(self, memory_usage_commit_bytes: _Optional[int] = ..., memory_usage_commit_peak_bytes: _Optional[int] = ..., memory_usage_private_working_set_bytes: _Optional[int] = ...) -> None: ...

class WindowsContainerStorageStatistics(_message.Message):
    __slots__ = ("read_count_normalized", "read_size_bytes", "write_count_normalized", "write_size_bytes")
    READ_COUNT_NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    READ_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITE_COUNT_NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    WRITE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    read_count_normalized: int
    read_size_bytes: int
    write_count_normalized: int
    write_size_bytes: int
    def __init__(self, read_count_normalized: _Optional[int] = ..., read_size_bytes: _Optional[int] = ..., write_count_normalized: _Optional[int] = ..., write_size_bytes: _Optional[int] = ...) -> None: ...

class VirtualMachineStatistics(_message.Message):
    __slots__ = ("processor", "memory")
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    processor: VirtualMachineProcessorStatistics
    memory: VirtualMachineMemoryStatistics
    def __init__(self, processor: _Optional[_Union[VirtualMachineProcessorStatistics, _Mapping]] = ..., memory: _Optional[_Union[VirtualMachineMemoryStatistics, _Mapping]] = ...) -> None: ...

class VirtualMachineProcessorStatistics(_message.Message):
    __slots__ = ("total_runtime_ns",)
    TOTAL_RUNTIME_NS_FIELD_NUMBER: _ClassVar[int]
    total_runtime_ns: int
    def __init__(self, total_runtime_ns: _Optional[int] = ...) -> None: ...

class VirtualMachineMemoryStatistics(_message.Message):
    __slots__ = ("working_set_bytes", "virtual_node_count", "vm_memory")
    WORKING_SET_BYTES_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    VM_MEMORY_FIELD_NUMBER: _ClassVar[int]
    working_set_bytes: int
    virtual_node_count: int
    vm_memory: VirtualMachineMemory
    def __init__(self, working_set_bytes: _Optional[int] = ..., virtual_node_count: _Optional[int] = ..., vm_memory: _Optional[_Union[VirtualMachineMemory, _Mapping]] = ...) -> None: ...

class VirtualMachineMemory(_message.Message):
    __slots__ = ("available_memory", "available_memory_buffer", "reserved_memory", "assigned_memory", "slp_active", "balancing_enabled", "dm_operation_in_progress")
    AVAILABLE_MEMORY_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MEMORY_BUFFER_FIELD_NUMBER: _ClassVar[int]
    RESERVED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    SLP_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    BALANCING_ENABLED_FIELD_NUMBER: _ClassVar[int]
    DM_OPERATION_IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    available_memory: int
    available_memory_buffer: int
    reserved_memory: int
    assigned_memory: int
    slp_active: bool
    balancing_enabled: bool
    dm_operation_in_progress: bool
    def __init__(self, available_memory: _Optional[int] = ..., available_memory_buffer: _Optional[int] = ..., reserved_memory: _Optional[int] = ..., assigned_memory: _Optional[int] = ..., slp_active: _Optional[bool] = ..., balancing_enabled: _Optional[bool] = ..., dm_operation_in_progress: _Optional[bool] = ...) -> None: ...
