"""hcsshim for Python: the HCS/HNS library, the Linux guest agent, containerd-shim-runhcs-v1 and tools.

Kept empty of imports on purpose: the shim's `start` path imports this package and must stay fast. Upstream's
root-package API (CreateContainer, OpenContainer, GetContainers, Container, the Err* variables, IsNotExist, ...)
lives in hcsshim.legacy and is reached from here by name: the first such attribute imports it.
"""

__version__ = "0.1.0"

# hcsshim.legacy's __all__ (a test keeps the two equal): the names the package root lends it.
_LEGACY = frozenset((
    "ERROR_GEN_FAILURE", "ERROR_SHUTDOWN_IN_PROGRESS", "WSAEINVAL", "Add", "AssignedDevice", "ComputeSystemQuery",
    "Container", "ContainerConfig", "ContainerError", "ContainerProperties", "CreateContainer", "ErrAlreadyClosed",
    "ErrComputeSystemDoesNotExist", "ErrElementNotFound", "ErrHandleClose", "ErrInvalidData",
    "ErrInvalidNotificationType", "ErrInvalidProcessState", "ErrNotSupported", "ErrOperationDenied",
    "ErrPlatformNotSupported", "ErrProcNotFound", "ErrTimeout", "ErrUnexpectedContainerExit",
    "ErrUnexpectedProcessAbort", "ErrUnexpectedValue", "ErrVmcomputeAlreadyStopped", "ErrVmcomputeInvalidJSON",
    "ErrVmcomputeOperationAccessIsDenied", "ErrVmcomputeOperationInvalidState", "ErrVmcomputeOperationPending",
    "ErrVmcomputeUnknownMessage", "GetContainers", "HvRuntime", "IsAccessIsDenied", "IsAlreadyClosed",
    "IsAlreadyStopped", "IsNotExist", "IsNotSupported", "IsOperationInvalidState", "IsPending", "IsTimeout", "Layer",
    "MappedDir", "MappedPipe", "MappedVirtualDisk", "MappedVirtualDiskController", "MemoryStats", "Network",
    "NetworkStats", "OpenContainer", "Process", "ProcessConfig", "ProcessError", "ProcessListItem", "ProcessorStats",
    "Remove", "RequestType", "ResourceModificationRequestResponse", "ResourceType", "Statistics", "StorageStats",
    "TimeoutInfinite", "WaitErrExecFailed",
))


def __getattr__(name: str) -> object:
    if name in _LEGACY:
        import importlib  # stdlib, already loaded by the interpreter: costs nothing until a legacy name is used

        return getattr(importlib.import_module("hcsshim.legacy"), name)
    raise AttributeError(f"module 'hcsshim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LEGACY})
