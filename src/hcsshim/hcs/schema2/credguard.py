"""Schema2 Container Credential Guard (area H): the gMSA instances of containers, their add/remove requests
and the host's list of instances."""

from __future__ import annotations

from typing import Any

from hcsshim.gojson import ANY, STR, Struct, field, list_of, value
from hcsshim.hcs.schema2.storage import HvSocketServiceConfig

__all__ = [
    "ContainerCredentialGuardAddInstanceRequest",
    "ContainerCredentialGuardHvSocketServiceConfig",
    "ContainerCredentialGuardInstance",
    "ContainerCredentialGuardModifyOperation",
    "ContainerCredentialGuardOperationRequest",
    "ContainerCredentialGuardRemoveInstanceRequest",
    "ContainerCredentialGuardState",
    "ContainerCredentialGuardSystemInfo",
]


class ContainerCredentialGuardModifyOperation:
    """The operations of a ContainerCredentialGuardOperationRequest."""

    ADD_INSTANCE = "AddInstance"
    REMOVE_INSTANCE = "RemoveInstance"


class ContainerCredentialGuardState(Struct):
    """A container's Credential Guard (gMSA) instance: cookie, RPC endpoint and spec."""

    cookie: str = field("Cookie", STR)
    rpc_endpoint: str = field("RpcEndpoint", STR)
    transport: str = field("Transport", STR)
    credential_spec: str = field("CredentialSpec", STR)


class ContainerCredentialGuardAddInstanceRequest(Struct):
    """Details of an AddInstance request: id, credential spec, transport."""

    id: str = field("Id", STR)
    credential_spec: str = field("CredentialSpec", STR)
    transport: str = field("Transport", STR)


class ContainerCredentialGuardRemoveInstanceRequest(Struct):
    """Details of a RemoveInstance request: the instance id."""

    id: str = field("Id", STR)


class ContainerCredentialGuardOperationRequest(Struct):
    """A Credential Guard modify request: the operation and its details."""

    operation: str = field("Operation", STR)
    operation_details: Any = field("OperationDetails", ANY)


class ContainerCredentialGuardHvSocketServiceConfig(Struct):
    """A Credential Guard instance's Hyper-V socket service."""

    service_id: str = field("ServiceId", STR)
    service_config: HvSocketServiceConfig | None = field("ServiceConfig", HvSocketServiceConfig)


class ContainerCredentialGuardInstance(Struct):
    """A Credential Guard instance as the host reports it."""

    id: str = field("Id", STR)
    credential_guard: ContainerCredentialGuardState | None = field("CredentialGuard", ContainerCredentialGuardState)
    hv_socket_config: ContainerCredentialGuardHvSocketServiceConfig | None = field(
        "HvSocketConfig", ContainerCredentialGuardHvSocketServiceConfig)


class ContainerCredentialGuardSystemInfo(Struct):
    """The Credential Guard instances of the host (a service property)."""

    instances: list[ContainerCredentialGuardInstance] = field(
        "Instances", list_of(value(ContainerCredentialGuardInstance)))
