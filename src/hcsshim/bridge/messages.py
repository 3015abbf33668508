"""The bridge's message catalogue: the bodies of every request, response and notification, both directions.

Host side: `Requests` builds request bodies exactly as the Go host encodes them (base fields first, the
JSON-in-a-string fields serialized, omitempty fields left out; ModifySettings' resources are the typed
documents of `resources`). Guest side: `response`, `negotiate_response`
and `container_notification` build what the Go GCS sends. Both sides parse with `wire.field`, which is
lenient the way Go's decoder is.

Standard library only: the guest agent imports this module.
"""

from __future__ import annotations

import base64
from typing import Any

from hcsshim.bridge.resources import ModificationRequest
from hcsshim.bridge.wire import NULL_GUID, HResultError, field, int32, json_string, uint32

__all__ = [
    "BRIDGE_PORT",
    "EXIT_FORCED",
    "EXIT_GRACEFUL",
    "EXIT_UNEXPECTED",
    "GUEST_CAPABILITIES",
    "INFINITE",
    "PROTOCOL_VERSION",
    "STDIO_PORT_BASE",
    "Requests",
    "container_notification",
    "host_state",
    "negotiate_response",
    "raise_for_result",
    "request",
    "response",
]

PROTOCOL_VERSION = 4
BRIDGE_PORT = 0x40000000
STDIO_PORT_BASE = 0x40000001
INFINITE = 0xFFFFFFFF  # TimeoutInMs of a wait without timeout

EXIT_UNEXPECTED = "UnexpectedExit"
EXIT_GRACEFUL = "GracefulExit"
EXIT_FORCED = "ForcedExit"

GUEST_CAPABILITIES: dict[str, Any] = {
    "SupportedSchemaVersions": [{"Major": 2, "Minor": 1}],
    "RuntimeOsType": "Linux",
    "GuestDefinedCapabilities": {
        "NamespaceAddRequestSupported": True,
        "SignalProcessSupported": True,
        "DumpStacksSupported": True,
        "DeleteContainerStateSupported": True,
    },
}


def request(container_id: str = NULL_GUID, activity_id: str = NULL_GUID, **fields: Any) -> dict[str, Any]:
    """A request body: the base fields, then the given ones (None values are omitted, like omitempty)."""
    body: dict[str, Any] = {"ContainerId": container_id, "ActivityId": activity_id}
    body.update((k, v) for k, v in fields.items() if v is not None)
    return body


class Requests:
    """Request bodies as the hcsshim host sends them, one static method per RPC."""

    @staticmethod
    def negotiate(minimum: int = PROTOCOL_VERSION, maximum: int = PROTOCOL_VERSION,
                  host_state: dict[str, Any] | None = None) -> dict[str, Any]:
        """host_state: our extension (`host_state()`); the Go GCS ignores the unknown field."""
        return request("", MinimumVersion=minimum, MaximumVersion=maximum, HostState=host_state)

    @staticmethod
    def create(container_id: str, bundle: str, spec: dict[str, Any], scratch: str = "") -> dict[str, Any]:
        config: dict[str, Any] = {"SchemaVersion": {"Major": 2, "Minor": 1}, "OciBundlePath": bundle,
                                  "OciSpecification": spec}
        if scratch:
            config["ScratchDirPath"] = scratch
        return request(container_id, ContainerConfig=json_string(config))

    @staticmethod
    def base(container_id: str) -> dict[str, Any]:
        """Start, ShutdownGraceful, ShutdownForced, DumpStacks, DeleteContainerState."""
        return request(container_id)

    @staticmethod
    def execute(container_id: str, params: dict[str, Any], ports: dict[str, int]) -> dict[str, Any]:
        """ports: {"StdIn": p, "StdOut": p, "StdErr": p}, only for the pipes requested in params."""
        settings: dict[str, Any] = {"ProcessParameters": json_string(params)}
        if ports:
            settings["VsockStdioRelaySettings"] = ports
        return request(container_id, Settings=settings)

    @staticmethod
    def wait(container_id: str, pid: int, timeout_ms: int = INFINITE) -> dict[str, Any]:
        return request(container_id, ProcessId=uint32(pid), TimeoutInMs=uint32(timeout_ms))

    @staticmethod
    def signal(container_id: str, pid: int, signal: int | None) -> dict[str, Any]:
        """signal None or 0 is a kill (no Options, the guest sends SIGKILL)."""
        return request(container_id, ProcessId=uint32(pid), Options={"Signal": signal} if signal else None)

    @staticmethod
    def resize(container_id: str, pid: int, height: int, width: int) -> dict[str, Any]:
        return request(container_id, ProcessId=uint32(pid), Height=height & 0xFFFF, Width=width & 0xFFFF)

    @staticmethod
    def properties(container_id: str, types: list[str]) -> dict[str, Any]:
        return request(container_id, Query=json_string({"PropertyTypes": types} if types else {}))

    @staticmethod
    def modify(modification: ModificationRequest | dict[str, Any], container_id: str = NULL_GUID) -> dict[str, Any]:
        """ModifySettings: `Request` is a nested object (bridge.resources); a dict is sent as it is (tests of
        malformed requests)."""
        inner = modification.to_json() if isinstance(modification, ModificationRequest) else modification
        return request(container_id, Request=inner)


def host_state(unix_nano: int, entropy: bytes, hostname: str) -> dict[str, Any]:
    """NegotiateProtocol's HostState (an extension of ours, see hcsshim.guest.hoststate): the host's wall clock,
    random bytes for the guest's kernel pool, and the guest's hostname."""
    return {"UnixNano": unix_nano, "Entropy": base64.b64encode(entropy).decode(), "Hostname": hostname}


def response(activity_id: str = NULL_GUID, **fields: Any) -> dict[str, Any]:
    """A successful guest response: Result 0, the request's ActivityId, then the given fields."""
    body: dict[str, Any] = {"Result": 0, "ActivityId": activity_id or NULL_GUID}
    body.update(fields)
    return body


def negotiate_response(activity_id: str = NULL_GUID, version: int = PROTOCOL_VERSION) -> dict[str, Any]:
    return response(activity_id, Version=version, Capabilities=GUEST_CAPABILITIES)


def container_notification(container_id: str, exit_type: str = EXIT_UNEXPECTED,
                           activity_id: str = NULL_GUID) -> dict[str, Any]:
    return {"ContainerId": container_id, "ActivityId": activity_id or NULL_GUID, "Type": exit_type,
            "Operation": "None", "Result": 0}


def is_guid(text: object) -> bool:
    """Whether text is a GUID in its 8-4-4-4-12 hex form (ContainerId, ActivityId)."""
    if not isinstance(text, str) or len(text) != 36:
        return False
    parts = text.split("-")
    if [len(p) for p in parts] != [8, 4, 4, 4, 12]:
        return False
    try:
        int("".join(parts), 16)
    except ValueError:
        return False
    return True


def raise_for_result(body: Any, operation: str) -> dict[str, Any]:
    """The response body when its Result is 0, else HResultError("<operation>: <ErrorMessage>") (the operation is
    not repeated when the guest's message already starts with it, as ours do)."""
    if not isinstance(body, dict):
        raise HResultError(0xC037010D, f"{operation}: response is not a JSON object")
    result = field(body, "Result", "int32")
    if result != 0:
        message = field(body, "ErrorMessage", str) or ""
        records = field(body, "ErrorRecords", list) or []
        text = message if message.startswith(f"{operation}: ") else f"{operation}: {message}" if message \
            else operation
        raise HResultError(int32(result), text, [r for r in records if isinstance(r, dict)])
    return body
