"""The GCS bridge protocol (host <-> Linux guest agent), sans-I/O: framing, type codes, JSON conventions,
HRESULT errors (`wire`), the message catalogue (`messages`) and the typed guest resources ModifySettings
carries (`resources`). Shared by both ends; standard library only.
"""

from hcsshim.bridge.messages import (
    BRIDGE_PORT,
    EXIT_FORCED,
    EXIT_GRACEFUL,
    EXIT_UNEXPECTED,
    INFINITE,
    PROTOCOL_VERSION,
    STDIO_PORT_BASE,
    Requests,
    container_notification,
    host_state,
    is_guid,
    negotiate_response,
    raise_for_result,
    request,
    response,
)
from hcsshim.bridge.wire import *  # noqa: F403
from hcsshim.bridge.wire import __all__ as _wire_all

__all__ = [
    "BRIDGE_PORT", "EXIT_FORCED", "EXIT_GRACEFUL", "EXIT_UNEXPECTED", "INFINITE", "PROTOCOL_VERSION",
    "STDIO_PORT_BASE", "Requests", "container_notification", "host_state", "is_guid", "negotiate_response",
    "raise_for_result",
    "request", "response", *_wire_all,
]
