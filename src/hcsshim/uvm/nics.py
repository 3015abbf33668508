"""The utility VM's network adapters: virtio-net NICs on host tap devices, added to its compute system.

`NicManager` (``vm.nics``) owns them, the host half of upstream's addNIC (an HNS endpoint's synthetic NIC):
`add(tap, mac=None)` sends the compute system a modify request adding a NetworkAdapter at
``VirtualMachine/Devices/NetworkAdapters/<tap>`` whose EndpointId is the tap device the caller made (e.g.
hcsshim.hcn; on the Linux backend the endpoint is the tap), with its MAC (default: a locally administered address
derived from the VM id and the tap). The guest half (a `NetworkAdapter` resource naming that MAC in a namespace)
is the caller's, through the GCS, once it knows the namespace. A tap is added once: a second add of it is an
error.

Nic states::

    ADDING --modify Add--> ADDED --release: modify Remove (waits for the guest to let go)--> REMOVED
       |                     |
       +-- fails: REMOVED    +-- fails: INVALID
           (forgotten)

Once the VM has stopped a release only drops the bookkeeping. Errors are UVMError naming the VM, the
operation and the tap.
"""

from __future__ import annotations

import enum
import hashlib
import os

from hcsshim.hcs.resourcepaths import network_adapter
from hcsshim.hcs.schema2 import ModifySettingRequest, NetworkAdapter
from hcsshim.uvm.common import Machine, State, UVMError, check_state, guest_step, stopped

_RELEASE = (State.RUNNING, State.STOPPED, State.CLOSED, State.INVALID)


class NicState(enum.Enum):
    ADDING = "adding"
    ADDED = "added"
    REMOVED = "removed"
    INVALID = "invalid"


class Nic:
    """A virtio-net adapter on a host tap device (see the module docstring)."""

    __slots__ = ("mac", "state", "tap")

    def __init__(self, tap: str, mac: str) -> None:
        self.tap = tap  # the host's tap device, and the adapter's id in the compute system
        self.mac = mac
        self.state = NicState.ADDING

    def request(self, request_type: str) -> ModifySettingRequest:
        settings = NetworkAdapter(endpoint_id=self.tap, mac_address=self.mac) if request_type == "Add" else None
        return ModifySettingRequest(resource_path=network_adapter(self.tap), request_type=request_type,
                                    settings=settings and settings.to_json())

    def __repr__(self) -> str:
        return f"Nic({self.tap!r}, {self.mac}, {self.state.value})"


class NicManager:
    """The VM's network adapters (see the module docstring)."""

    def __init__(self, vm: Machine) -> None:
        self.vm = vm
        self._nics: dict[str, Nic] = {}  # by tap: every adapter not REMOVED

    def __repr__(self) -> str:
        return f"NicManager(uvm {self.vm.id}, {len(self._nics)} adapter(s))"

    @property
    def adapters(self) -> list[Nic]:
        return sorted(self._nics.values(), key=lambda n: n.tap)

    async def add(self, tap: str, mac: str | None = None) -> Nic:
        op = f"add network adapter {tap}"
        check_state(self.vm, op, State.RUNNING)
        if tap in self._nics:
            raise UVMError(f"uvm {self.vm.id}: {op}: already added ({self._nics[tap].state.value})")
        if not os.path.exists(f"/sys/class/net/{tap}"):
            raise UVMError(f"uvm {self.vm.id}: {op}: no such network device")
        if mac is None:
            h = hashlib.sha256(f"{self.vm.id}/{tap}".encode()).digest()
            mac = "02:" + ":".join(f"{b:02x}" for b in h[:5])
        nic = Nic(tap, mac.lower())
        self._nics[tap] = nic
        try:
            await self.vm.modify_host(op, nic.request("Add"))
        except BaseException as exc:
            nic.state = NicState.REMOVED
            del self._nics[tap]
            if isinstance(exc, Exception) and not isinstance(exc, UVMError):
                raise UVMError(f"uvm {self.vm.id}: {op}: {exc}") from None
            raise
        nic.state = NicState.ADDED
        return nic

    async def release(self, nic: Nic) -> None:
        """Removes the adapter (a PCIe hot-unplug waits for the guest to let go); after a stop, only forgets it."""
        op = f"remove network adapter {nic.tap}"
        check_state(self.vm, op, *_RELEASE)
        if nic.state is NicState.REMOVED and nic.tap not in self._nics:
            return  # forgotten by close()
        if self._nics.get(nic.tap) is not nic or nic.state is not NicState.ADDED:
            raise UVMError(f"uvm {self.vm.id}: {op}: not added ({nic.state.value})")
        try:
            if not stopped(self.vm):
                await guest_step(self.vm, self.vm.modify_host(op, nic.request("Remove")))
        except Exception as exc:
            nic.state = NicState.INVALID
            raise UVMError(f"uvm {self.vm.id}: {op}: {exc}") from None
        nic.state = NicState.REMOVED
        del self._nics[nic.tap]

    def close(self) -> None:
        """The VM is gone: its adapters went with it."""
        for nic in self._nics.values():
            nic.state = NicState.REMOVED
        self._nics.clear()
