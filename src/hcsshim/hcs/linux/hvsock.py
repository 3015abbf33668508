"""Hyper-V sockets on the Linux backend: a compute system's HvSocket services as virtio-serial ports whose host
ends are unix sockets that the host listens on and QEMU dials, as a guest dials an hvsock service.

A service id is a GUID. Upstream's Linux guests use vsock ports, whose service ids are the vsock template
`<port as 8 hex digits>-facb-11e6-bd58-64006a7986d3` (winio.VsockServiceID); such a service is the guest's port
``vsock.<port>`` (/dev/virtio-ports/vsock.<port>); any other service id is ``hvsock.<guid>``. Each service listed
(and not Disabled) in the document's ServiceTable gets its port.

The host side is upstream's `winio.ListenHvsock(HvsockAddr{VMID, ServiceID})`: `listen(system_dir, service_id)`
binds ``<system dir>/hvsock/<port name>.sock``; do it after the system is created and before it starts, as
upstream's uvm does, and QEMU's port connects to it as the machine starts (and again, after a second, whenever
the host end goes away). A service nobody listens on when the machine starts gets a host end from the backend
that never accepts: a guest port whose peer never answers.
"""

from __future__ import annotations

import os
import re
import socket

__all__ = ["VSOCK_TEMPLATE", "listen", "port_name", "socket_path", "vsock_service_id"]

VSOCK_TEMPLATE = "-facb-11e6-bd58-64006a7986d3"  # a vsock port's service id: %08x + this
HVSOCK_DIR = "hvsock"
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def vsock_service_id(port: int) -> str:
    """The service id of vsock port `port` (upstream's winio.VsockServiceID)."""
    if not 0 <= port <= 0xFFFFFFFF:
        raise ValueError(f"vsock port {port} is out of range")
    return f"{port:08x}{VSOCK_TEMPLATE}"


def port_name(service_id: str) -> str:
    """The guest's virtio-serial port name of service `service_id`; ValueError when it is not a GUID."""
    guid = service_id.lower().strip("{}")
    if not _GUID.match(guid):
        raise ValueError(f"service id {service_id!r} is not a GUID")
    if guid.endswith(VSOCK_TEMPLATE):
        return f"vsock.{int(guid[:8], 16)}"
    return f"hvsock.{guid}"


def socket_path(system_dir: str, service_id: str) -> str:
    """The host end of service `service_id` of the system whose directory is `system_dir`."""
    return os.path.join(system_dir, HVSOCK_DIR, port_name(service_id) + ".sock")


def listen(system_dir: str, service_id: str, backlog: int = 1) -> socket.socket:
    """A non-blocking listening socket at the host end of the service (module docstring); OSError."""
    path = socket_path(system_dir, service_id)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.bind(path)
        s.listen(backlog)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s
