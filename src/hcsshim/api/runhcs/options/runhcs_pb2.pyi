import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Options(_message.Message):
    __slots__ = ("debug", "debug_type", "registry_root", "sandbox_image", "sandbox_platform", "sandbox_isolation", "boot_files_root_path", "vm_processor_count", "vm_memory_size_in_mb", "GPUVHDPath", "scale_cpu_limits_to_sandbox", "default_container_scratch_size_in_gb", "default_vm_scratch_size_in_gb", "share_scratch", "NCProxyAddr", "log_level", "io_retry_timeout_in_sec", "default_container_annotations", "no_inherit_host_timezone", "scrub_logs")
    class DebugType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        NPIPE: _ClassVar[Options.DebugType]
        FILE: _ClassVar[Options.DebugType]
        ETW: _ClassVar[Options.DebugType]
    NPIPE: Options.DebugType
    FILE: Options.DebugType
    ETW: Options.DebugType
    class SandboxIsolation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PROCESS: _ClassVar[Options.SandboxIsolation]
        HYPERVISOR: _ClassVar[Options.SandboxIsolation]
    PROCESS: Options.SandboxIsolation
    HYPERVISOR: Options.SandboxIsolation
    class DefaultContainerAnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEBUG_FIELD_NUMBER: _ClassVar[int]
    DEBUG_TYPE_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_ROOT_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_IMAGE_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ISOLATION_FIELD_NUMBER: _ClassVar[int]
    BOOT_FILES_ROOT_PATH_FIELD_NUMBER: _ClassVar[int]
    VM_PROCESSOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    VM_MEMORY_SIZE_IN_MB_FIELD_NUMBER: _ClassVar[int]
    GPUVHDPATH_FIELD_NUMBER: _ClassVar[int]
    SCALE_CPU_LIMITS_TO_SANDBOX_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CONTAINER_SCRATCH_SIZE_IN_GB_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VM_SCRATCH_SIZE_IN_GB_FIELD_NUMBER: _ClassVar[int]
    SHARE_SCRATCH_FIELD_NUMBER: _ClassVar[int]
    NCPROXYADDR_FIELD_NUMBER: _ClassVar[int]
    LOG_LEVEL_FIELD_NUMBER: _ClassVar[int]
    IO_RETRY_TIMEOUT_IN_SEC_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CONTAINER_ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    NO_INHERIT_HOST_TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    SCRUB_LOGS_FIELD_NUMBER: _ClassVar[int]
    debug: bool
    debug_type: Options.DebugType
    registry_root: str
    sandbox_image: str
    sandbox_platform: str
    sandbox_isolation: Options.SandboxIsolation
    boot_files_root_path: str
    vm_processor_count: int
    vm_memory_size_in_mb: int
    GPUVHDPath: str
    scale_cpu_limits_to_sandbox: bool
    default_container_scratch_size_in_gb: int
    default_vm_scratch_size_in_gb: int
    share_scratch: bool
    NCProxyAddr: str
    log_level: str
    io_retry_timeout_in_sec: int
    default_container_annotations: _containers.ScalarMap[str, str]
    no_inherit_host_timezone: bool
    scrub_logs: bool
    def __init__(self, debug: _Optional[bool] = ..., debug_type: _Optional[_Union[Options.DebugType, str]] = ..., registry_root: _Optional[str] = ..., sandbox_image: _Optional[str] = ..., sandbox_platform: _Optional[str] = ..., sandbox_isolation: _Optional[_Union[Options.SandboxIsolation, str]] = ..., boot_files_root_path: _Optional[str] = ..., vm_processor_count: _Optional[int] = ..., vm_memory_size_in_mb: _Optional[int] = ..., GPUVHDPath: _Optional[str] = ..., scale_cpu_limits_to_sandbox: _Optional[bool] = ..., default_container_scratch_size_in_gb: _Optional[int] = ..., default_vm_scratch_size_in_gb: _Optional[int] = ..., share_scratch: _Optional[bool] = ..., NCProxyAddr: _Optional[str] = ..., log_level: _Optional[str] = ..., io_retry_timeout_in_sec: _Optional[int] = ..., default_container_annotations: _Optional[_Mapping[str, str]] = ..., no_inherit_host_timezone: _Optional[bool] = ..., scrub_logs: _Optional[bool] = ...) -> None: ...

class ProcessDetails(_message.Message):
    __slots__ = ("image_name", "created_at", "kernel_time_100_ns", "memory_commit_bytes", "memory_working_set_private_bytes", "memory_working_set_shared_bytes", "process_id", "user_time_100_ns", "exec_id")
    IMAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    KERNEL_TIME_100_NS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_COMMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_WORKING_SET_PRIVATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_WORKING_SET_SHARED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROCESS_ID_FIELD_NUMBER: _ClassVar[int]
    USER_TIME_100_NS_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    image_name: str
    created_at: _timestamp_pb2.Timestamp
    kernel_time_100_ns: int
    memory_commit_bytes: int
    memory_working_set_private_bytes: int
    memory_working_set_shared_bytes: int
    process_id: int
    user_time_100_ns: int
    exec_id: str
    def __init__(self, image_name: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kernel_time_100_ns: _Optional[int] = ..., memory_commit_bytes: _Optional[int] = ..., memory_working_set_private_bytes: _Optional[int] = ..., memory_working_set_shared_bytes: _Optional[int] = ..., process_id: _Optional[int] = ..., user_time_100_ns: _Optional[int] = ..., exec_id: _Optional[str] = ...) -> None: ...
