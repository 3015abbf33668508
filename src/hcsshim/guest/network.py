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

The settings arrive typed (hcsshim.bridge.resources.NetworkAdapter). What the agent provides (a process
runner for ip/nsenter, the wait for kernel modules) is handed in.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Awaitable, Callable

from hcsshim.bridge import E_FAIL, E_INVALIDARG, E_NOTIMPL, HResultError
from hcsshim.bridge.resources import ModificationRequest, NetworkAdapter
from hcsshim.runc import PidfdWaiter, Reaper

log = logging.getLogger(__name__)


async def _loaded(*names: str) -> None:
    """Outside a utility VM every kernel module is there already."""


class Adapter:
    def __init__(self, settings: NetworkAdapter, ifname: str) -> None:
        self.settings = settings
        self.id = settings.id.lower()
        self.ifname = ifname
        self.pid: int | None = None  # the process whose netns holds the adapter once moved


class Namespace:
    def __init__(self, id: str) -> None:
        self.id = id
        self.adapters: list[Adapter] = []
        self.pid: int | None = None


class Networks:
    """The Network half of ModifySettings (see the module docstring). runner runs ip and nsenter
    (`run(argv)` -> (status, stdout, stderr)); kernel_modules waits for the modules init loads in the
    background."""

    def __init__(self, runner: Reaper | PidfdWaiter, *, kernel_modules: Callable[..., Awaitable[None]] = _loaded,
                 sysfs: str = "/sys") -> None:
        self.runner = runner
        self.kernel_modules = kernel_modules
        self.sysfs = sysfs
        self.namespaces: dict[str, Namespace] = {}

    async def modify(self, request: ModificationRequest) -> None:
        settings = request.settings
        assert isinstance(settings, NetworkAdapter)
        ns_id = settings.namespace_id.lower()
        kind = request.request_type or "Add"
        if kind == "Add":
            await self.add(ns_id, settings)
        elif kind == "Remove":
            await self.remove(ns_id, settings)
        else:
            raise HResultError(E_NOTIMPL, f"modify Network: request type {kind!r} is not supported")

    def interface(self, settings: NetworkAdapter) -> str:
        nic = settings.id
        if nic:
            found = glob.glob(os.path.join(self.sysfs, "bus/vmbus/devices", nic, "net", "*"))
            if found:
                return os.path.basename(found[0])
        mac = settings.mac_address.lower().replace("-", ":")
        if mac:
            for path in glob.glob(os.path.join(self.sysfs, "class/net/*/address")):
                try:
                    with open(path) as f:
                        if f.read().strip().lower() == mac:
                            return os.path.basename(os.path.dirname(path))
                except OSError:
                    continue
        raise HResultError(E_FAIL, f"network adapter {nic or '?'} ({mac or 'no MAC'}): no such interface")

    async def add(self, ns_id: str, settings: NetworkAdapter) -> None:
        if not ns_id:
            raise HResultError(E_INVALIDARG, "add network adapter: no NamespaceID")
        await self.kernel_modules()  # virtio-net, veth, bridge load in the background at boot
        adapter = Adapter(settings, self.interface(settings))
        ns = self.namespaces.setdefault(ns_id, Namespace(ns_id))
        ns.adapters.append(adapter)
        if ns.pid is not None:
            try:
                await self._configure(adapter, ns.pid)
            except BaseException:
                ns.adapters.remove(adapter)
                raise

    async def remove(self, ns_id: str, settings: NetworkAdapter) -> None:
        ns = self.namespaces.get(ns_id)
        if ns is None:
            return
        nic = settings.id.lower()
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
        overhead = s.encap_overhead
        if overhead:
            try:
                with open(os.path.join(self.sysfs, "class/net", name, "mtu")) as f:
                    mtu = int(f.read())
            except (OSError, ValueError):
                mtu = 1500
            await self._ip(pid, "link", "set", "dev", name, "mtu", str(mtu - overhead))
        await self._ip(pid, "link", "set", "dev", name, "up")
        await self._ip(pid, "link", "set", "dev", "lo", "up")
        for ip in s.ip_configs:
            await self._ip(pid, "addr", "add", f"{ip.ip_address}/{ip.prefix_length}", "dev", name)
        for route in s.routes:
            dest = route.destination_prefix or "default"
            if dest in ("0.0.0.0/0", "::/0"):
                dest = "default"
            args = ["route", "add", dest]
            if route.next_hop:
                args += ["via", route.next_hop]
            args += ["dev", name]
            if route.metric:
                args += ["metric", str(route.metric)]
            await self._ip(pid, *args)

    async def _ip(self, pid: int | None, *args: str) -> None:
        argv = ["ip", *args] if pid is None else ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", *args]
        status, _, err = await self.runner.run(argv)
        if status != 0:
            raise HResultError(E_FAIL, f"network: {' '.join(argv)}: {err.decode(errors='replace').strip()}")

    def resolv_conf(self, ns_id: str) -> str:
        ns = self.namespaces.get(ns_id) if ns_id else None
        search: list[str] = []
        servers: list[str] = []
        for adapter in ns.adapters if ns else []:
            search += [x.strip() for x in adapter.settings.dns_suffix.split(",") if x.strip()]
            servers += [x.strip() for x in adapter.settings.dns_server_list.split(",") if x.strip()]
        lines = []
        if search:
            lines.append("search " + " ".join(dict.fromkeys(search)))
        lines += [f"nameserver {s}" for s in dict.fromkeys(servers)]
        return "".join(line + "\n" for line in lines)

    async def close(self) -> None:
        self.namespaces.clear()
