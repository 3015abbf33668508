"""Schema2 process documents (area B): starting a process (ProcessParameters), its status and details, and
modifying it (ProcessModifyRequest: console size, closing a stdio handle).

ProcessModifyRequest.Operation and CloseHandle.Handle carry upstream's guestrequest strings ("ConsoleSize" /
"CloseHandle"; "StdIn", "StdOut", "StdErr", "All"), which belong to the guest protocol, not to schema2."""

from __future__ import annotations

from hcsshim.gojson import BOOL, I32, STR, TIME, U16, U32, Struct, field, list_of, map_of

__all__ = [
    "CloseHandle",
    "ConsoleSize",
    "ProcessDetails",
    "ProcessModifyRequest",
    "ProcessParameters",
    "ProcessStatus",
]


class ProcessParameters(Struct):
    """How to start a process in a compute system (HcsCreateProcess's document)."""

    application_name: str = field("ApplicationName", STR)
    command_line: str = field("CommandLine", STR)
    command_args: list[str] = field("CommandArgs", list_of(STR))
    user: str = field("User", STR)
    working_directory: str = field("WorkingDirectory", STR)
    environment: dict[str, str] = field("Environment", map_of(STR))
    restricted_token: bool = field("RestrictedToken", BOOL)
    emulate_console: bool = field("EmulateConsole", BOOL)
    create_std_in_pipe: bool = field("CreateStdInPipe", BOOL)
    create_std_out_pipe: bool = field("CreateStdOutPipe", BOOL)
    create_std_err_pipe: bool = field("CreateStdErrPipe", BOOL)
    console_size: list[int] = field("ConsoleSize", list_of(I32))
    use_existing_login: bool = field("UseExistingLogin", BOOL)
    use_legacy_console: bool = field("UseLegacyConsole", BOOL)


class ProcessStatus(Struct):
    """A process's state as HCS reports it; ExitCode is meaningful once Exited."""

    process_id: int = field("ProcessId", U32)
    exited: bool = field("Exited", BOOL)
    exit_code: int = field("ExitCode", U32)
    last_wait_result: int = field("LastWaitResult", I32)


class ProcessDetails(Struct):
    """One entry of a system's ProcessList property: identity, start time and resource use."""

    process_id: int = field("ProcessId", I32)
    image_name: str = field("ImageName", STR)
    create_timestamp: str = field("CreateTimestamp", TIME)
    user_time_100ns: int = field("UserTime100ns", I32)
    kernel_time_100ns: int = field("KernelTime100ns", I32)
    memory_commit_bytes: int = field("MemoryCommitBytes", I32)
    memory_working_set_private_bytes: int = field("MemoryWorkingSetPrivateBytes", I32)
    memory_working_set_shared_bytes: int = field("MemoryWorkingSetSharedBytes", I32)


class ConsoleSize(Struct):
    """A pseudo-console's size in character cells."""

    height: int = field("Height", U16)
    width: int = field("Width", U16)


class CloseHandle(Struct):
    """Which stdio pipe of a process to close: "StdIn", "StdOut", "StdErr" or "All"."""

    handle: str = field("Handle", STR)


class ProcessModifyRequest(Struct):
    """A change to a running process: Operation is "ConsoleSize" or "CloseHandle"."""

    operation: str = field("Operation", STR)
    console_size: ConsoleSize | None = field("ConsoleSize", ConsoleSize)
    close_handle: CloseHandle | None = field("CloseHandle", CloseHandle)
