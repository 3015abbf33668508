"""Guest network adapters (ModifySettings ``Network``): NICs recorded per network namespace, moved into the
namespace of the container that names it and configured there with iproute2.

Like the Go GCS, a namespace is an in-memory record keyed by the host's namespace GUID (lower case). An
adapter is found by its ID (``/sys/bus/vmbus/devices/<ID>/net/<if>``, Hyper-V) or else by MacAddress
(``/sys/class/net/*/address``, any VMM). When a container whose spec names the namespace
(``windows.network.networkNamespace``) is created, each adapter is moved into the container init's network
namespace (``ip link set <if> netns <pid>``) and configured inside it (``nsenter --net=... ip``): MTU minus
EncapOverhead, up, addresses, routes. An adapter added after that is configured at once. Remove takes the
adapter out of the record (and, when it was moved, back to the agent's namespace); a Remove for an unknown
namespace succeeds. resolv.conf for containers comes from the adapters' DNS settings.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import TYPE_CHECKING, Any

from hcsshim.bridge import E_FAIL, E_INVALIDARG, E_NOTIMPL, HResultError, field

if TYPE_CHECKING:
    from hcsshim.guest.containers import Guest

log = logging.getLogger(__name__)


class Adapter:
    def __init__(self, settings: dict[str, Any], ifname: str) -> None:
        self.settings = settings
        self.id = field(settings, "ID").lower()
        self.ifname = ifname
        self.pid: int | None = None  # the process whose netns holds the adapter once moved


class Namespace:
    def __init__(self, id: str) -> None:
        self.id = id
        self.adapters: list[Adapter] = []
        self.pid: int | None = None


class Networks:
    def __init__(self, guest: Guest, *, sysfs: str = "/sys") -> None:
        self.guest = guest
        self.sysfs = sysfs
        self.namespaces: dict[str, Namespace] = {}

    async def modify(self, request: str, settings: dict[str, Any]) -> None:
        ns_id = field(settings, "NamespaceID").lower()
        if request == "Add":
            await self.add(ns_id, settings)
        elif request == "Remove":
            await self.remove(ns_id, settings)
        else:
            raise HResultError(E_NOTIMPL, f"modify Network: request type {request!r} is not supported")

    def interface(self, settings: dict[str, Any]) -> str:
        nic = field(settings, "ID")
        if nic:
            found = glob.glob(os.path.join(self.sysfs, "bus/vmbus/devices", nic, "net", "*"))
            if found:
                return os.path.basename(found[0])
        mac = field(settings, "MacAddress").lower().replace("-", ":")
        if mac:
            for path in glob.glob(os.path.join(self.sysfs, "class/net/*/address")):
                try:
                    with open(path) as f:
                        if f.read().strip().lower() == mac:
                            return os.path.basename(os.path.dirname(path))
                except OSError:
                    continue
        raise HResultError(E_FAIL, f"network adapter {nic or '?'} ({mac or 'no MAC'}): no such interface")

    async def add(self, ns_id: str, settings: dict[str, Any]) -> None:
        if not ns_id:
            raise HResultError(E_INVALIDARG, "add network adapter: no NamespaceID")
        await self.guest.kernel_modules()  # virtio-net, veth, bridge load in the background at boot
        adapter = Adapter(settings, self.interface(settings))
        ns = self.namespaces.setdefault(ns_id, Namespace(ns_id))
        ns.adapters.append(adapter)
        if ns.pid is not None:
            try:
                await self._configure(adapter, ns.pid)
            except BaseException:
                ns.adapters.remove(adapter)
                raise

    async def remove(self, ns_id: str, settings: dict[str, Any]) -> None:
        ns = self.namespaces.get(ns_id)
        if ns is None:
            return
        nic = field(settings, "ID").lower()
        for adapter in list(ns.adapters):
            if adapter.id == nic:
                ns.adapters.remove(adapter)
                if adapter.pid is not None and os.path.exists(f"/proc/{adapter.pid}/ns/net"):
                    await self._ip(adapter.pid, "link", "set", "dev", adapter.ifname, "netns", str(os.getpid()))
        if not ns.adapters:
            del self.namespaces[ns_id]

    async def attach(self, ns_id: str, pid: int) -> None:
        """A container using namespace ns_id was created with init pid: move and configure its adapters."""
        ns = self.namespaces.setdefault(ns_id, Namespace(ns_id))
        ns.pid = pid
        for adapter in ns.adapters:
            await self._configure(adapter, pid)

    async def _configure(self, adapter: Adapter, pid: int) -> None:
        s, name = adapter.settings, adapter.ifname
        await self._ip(None, "link", "set", "dev", name, "netns", str(pid))
        adapter.pid = pid
        overhead = field(s, "EncapOverhead", "uint16")
        if overhead:
            try:
                with open(os.path.join(self.sysfs, "class/net", name, "mtu")) as f:
                    mtu = int(f.read())
            except (OSError, ValueError):
                mtu = 1500
            await self._ip(pid, "link", "set", "dev", name, "mtu", str(mtu - overhead))
        await self._ip(pid, "link", "set", "dev", name, "up")
        await self._ip(pid, "link", "set", "dev", "lo", "up")
        for ip in field(s, "IPConfigs", list) or []:
            address, prefix = field(ip, "IPAddress"), field(ip, "PrefixLength", "uint8")
            await self._ip(pid, "addr", "add", f"{address}/{prefix}", "dev", name)
        for route in field(s, "Routes", list) or []:
            dest = field(route, "DestinationPrefix") or "default"
            if dest in ("0.0.0.0/0", "::/0"):
                dest = "default"
            args = ["route", "add", dest]
            if field(route, "NextHop"):
                args += ["via", field(route, "NextHop")]
            args += ["dev", name]
            if field(route, "Metric", "uint16"):
                args += ["metric", str(field(route, "Metric", "uint16"))]
            await self._ip(pid, *args)

    async def _ip(self, pid: int | None, *args: str) -> None:
        argv = ["ip", *args] if pid is None else ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", *args]
        status, _, err = await self.guest.reaper.run(argv)
        if status != 0:
            raise HResultError(E_FAIL, f"network: {' '.join(argv)}: {err.decode(errors='replace').strip()}")

    def resolv_conf(self, ns_id: str) -> str:
        ns = self.namespaces.get(ns_id) if ns_id else None
        search: list[str] = []
        servers: list[str] = []
        for adapter in ns.adapters if ns else []:
            search += [x.strip() for x in field(adapter.settings, "DNSSuffix").split(",") if x.strip()]
            servers += [x.strip() for x in field(adapter.settings, "DNSServerList").split(",") if x.strip()]
        lines = []
        if search:
            lines.append("search " + " ".join(dict.fromkeys(search)))
        lines += [f"nameserver {s}" for s in dict.fromkeys(servers)]
        return "".join(line + "\n" for line in lines)

    async def close(self) -> None:
        self.namespaces.clear()
