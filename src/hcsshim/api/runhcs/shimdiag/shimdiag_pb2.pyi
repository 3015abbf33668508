from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecProcessRequest(_message.Message):
    __slots__ = ("args", "workdir", "terminal", "stdin", "stdout", "stderr")
    ARGS_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    args: _containers.RepeatedScalarFieldContainer[str]
    workdir: str
    terminal: bool
    stdin: str
    stdout: str
    stderr: str
    def __init__(self, args: _Optional[_Iterable[str]] = ..., workdir: _Optional[str] = ..., terminal: _Optional[bool] = ..., stdin: _Optional[str] = ..., stdout: _Optional[str] = ..., stderr: _Optional[str] = ...) -> None: ...

class ExecProcessResponse(_message.Message):
    __slots__ = ("exit_code",)
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    def __init__(self, exit_code: _Optional[int] = ...) -> None: ...

class StacksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StacksResponse(_message.Message):
    __slots__ = ("stacks", "guest_stacks")
    STACKS_FIELD_NUMBER: _ClassVar[int]
    GUEST_STACKS_FIELD_NUMBER: _ClassVar[int]
    stacks: str
    guest_stacks: str
    def __init__(self, stacks: _Optional[str] = ..., guest_stacks: _Optional[str] = ...) -> None: ...

class ShareRequest(_message.Message):
    __slots__ = ("host_path", "uvm_path", "read_only")
    HOST_PATH_FIELD_NUMBER: _ClassVar[int]
    UVM_PATH_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    host_path: str
    uvm_path: str
    read_only: bool
    def __init__(self, host_path: _Optional[str] = ..., uvm_path: _Optional[str] = ..., read_only: _Optional[bool] = ...) -> None: ...

class ShareResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PidRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PidResponse(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class TasksRequest(_message.Message):
    __slots__ = ("execs",)
    EXECS_FIELD_NUMBER: _ClassVar[int]
    execs: bool
    def __init__(self, execs: _Optional[bool] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "execs")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXECS_FIELD_NUMBER: _ClassVar[int]
    id: str
    execs: _containers.RepeatedCompositeFieldContainer[Exec]
    def __init__(self, id: _Optional[str] = ..., execs: _Optional[_Iterable[_Union[Exec, _Mapping]]] = ...) -> None: ...

class Exec(_message.Message):
    __slots__ = ("id", "state")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class TasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...
