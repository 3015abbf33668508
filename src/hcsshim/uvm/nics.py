"""The utility VM's network adapters: virtio-net NICs hot-plugged on host tap devices over QMP.

`NicManager` (``vm.nics``) owns them, the host half of upstream's addNIC (an HNS endpoint's synthetic NIC):
`add(tap, mac=None)` plugs a virtio-net-pci device on one of the pcie-root-ports made at boot
(hcsshim.uvm.qemu.ROOT_PORTS), with a netdev on the tap the caller made (e.g. hcsshim.hcn); the guest finds
the adapter by its MAC (default: a locally administered address derived from the VM id and the slot). The
guest half (a `NetworkAdapter` resource naming that MAC in a namespace) is the caller's, through the GCS,
once it knows the namespace. A tap is added once: a second add of it is an error.

Nic states::

    ADDING --netdev_add + device_add--> ADDED --release: device_del (waits for the guest), netdev_del--> REMOVED
       |                                  |
       +-- fails: REMOVED (forgotten)     +-- fails: INVALID (its slot is not reused)

Once the VM has stopped a release only drops the bookkeeping. Errors are UVMError naming the VM, the
operation and the tap.
"""

from __future__ import annotations

import enum
import hashlib
import os

from hcsshim.uvm.common import Machine, State, UVMError, check_state, device_del, guest_step, stopped
from hcsshim.uvm.qemu import ROOT_PORTS

UNPLUG_TIMEOUT = 60.0  # seconds for a PCIe hot-unplug (the guest must let go: seconds under TCG)
_RELEASE = (State.RUNNING, State.STOPPED, State.CLOSED, State.INVALID)


class NicState(enum.Enum):
    ADDING = "adding"
    ADDED = "added"
    REMOVED = "removed"
    INVALID = "invalid"


class Nic:
    """A virtio-net adapter on a host tap device (see the module docstring)."""

    __slots__ = ("mac", "slot", "state", "tap")

    def __init__(self, tap: str, mac: str, slot: int) -> None:
        self.tap = tap  # the host's tap device
        self.mac = mac
        self.slot = slot  # the pcie-root-port it is plugged into
        self.state = NicState.ADDING

    @property
    def device(self) -> str:
        return f"nic{self.slot}"

    @property
    def netdev(self) -> str:
        return f"net{self.slot}"

    def __repr__(self) -> str:
        return f"Nic({self.tap!r}, {self.mac}, slot {self.slot}, {self.state.value})"


class NicManager:
    """The VM's network adapters (see the module docstring)."""

    def __init__(self, vm: Machine) -> None:
        self.vm = vm
        self._nics: dict[str, Nic] = {}  # by tap: every adapter not REMOVED

    def __repr__(self) -> str:
        return f"NicManager(uvm {self.vm.id}, {len(self._nics)} adapter(s))"

    @property
    def adapters(self) -> list[Nic]:
        return sorted(self._nics.values(), key=lambda n: n.slot)

    async def add(self, tap: str, mac: str | None = None) -> Nic:
        op = f"add network adapter {tap}"
        check_state(self.vm, op, State.RUNNING)
        if tap in self._nics:
            raise UVMError(f"uvm {self.vm.id}: {op}: already added ({self._nics[tap].state.value})")
        if not os.path.exists(f"/sys/class/net/{tap}"):
            raise UVMError(f"uvm {self.vm.id}: {op}: no such network device")
        used = {n.slot for n in self._nics.values()}
        slot = next((i for i in range(ROOT_PORTS) if i not in used), None)
        if slot is None:
            raise UVMError(f"uvm {self.vm.id}: {op}: all {ROOT_PORTS} slots are in use")
        if mac is None:
            h = hashlib.sha256(f"{self.vm.id}/{slot}".encode()).digest()
            mac = "02:" + ":".join(f"{b:02x}" for b in h[:5])
        nic = Nic(tap, mac.lower(), slot)
        self._nics[tap] = nic
        try:
            qmp = self.vm.qmp_client(op)
            await qmp.execute("netdev_add", {"type": "tap", "id": nic.netdev, "ifname": tap, "script": "no",
                                             "downscript": "no"})
            try:
                await qmp.execute("device_add", {"driver": "virtio-net-pci", "netdev": nic.netdev, "mac": nic.mac,
                                                 "bus": f"rp{slot}", "id": nic.device})
            except BaseException:
                await guest_step(self.vm, qmp.execute("netdev_del", {"id": nic.netdev}))
                raise
        except BaseException as exc:
            nic.state = NicState.REMOVED
            del self._nics[tap]
            if isinstance(exc, Exception) and not isinstance(exc, UVMError):
                raise UVMError(f"uvm {self.vm.id}: {op}: {exc}") from None
            raise
        nic.state = NicState.ADDED
        return nic

    async def release(self, nic: Nic, *, timeout: float = UNPLUG_TIMEOUT) -> None:
        """Unplugs the adapter (PCIe hot-unplug waits for the guest to let go); after a stop, only forgets it."""
        op = f"remove network adapter {nic.tap}"
        check_state(self.vm, op, *_RELEASE)
        if nic.state is NicState.REMOVED and nic.tap not in self._nics:
            return  # forgotten by close()
        if self._nics.get(nic.tap) is not nic or nic.state is not NicState.ADDED:
            raise UVMError(f"uvm {self.vm.id}: {op}: not added ({nic.state.value})")
        try:
            if not stopped(self.vm):
                qmp = self.vm.qmp_client(op)
                if await guest_step(self.vm, device_del(qmp, nic.device, timeout)):
                    await guest_step(self.vm, qmp.execute("netdev_del", {"id": nic.netdev}))
        except Exception as exc:
            nic.state = NicState.INVALID
            raise UVMError(f"uvm {self.vm.id}: {op}: {exc}") from None
        nic.state = NicState.REMOVED
        del self._nics[nic.tap]

    def close(self) -> None:
        """The VM is gone: its adapters went with QEMU."""
        for nic in self._nics.values():
            nic.state = NicState.REMOVED
        self._nics.clear()
