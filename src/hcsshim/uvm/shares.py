"""The utility VM's Plan9 shares: a host directory or file made visible in the guest at a path, in one call.

`ShareManager` (``vm.shares``) is the one owner of the VM's shares, as upstream's AddPlan9/RemovePlan9. The
host half of a share is a Plan9Share added to the VM's compute system (a modify request to
``VirtualMachine/Devices/Plan9/Shares``; the Linux backend binds the host path into the directory its one
virtio-9p device exports), named by a per-VM counter (upstream's share Name), which the guest binds at the
guest path (MappedDirectory Add with that ShareName). A single host file works the same way: the bind mount is a
file, and so is the guest path. `add(host_path, guest_path, read_only=...)` returns a `ShareMount`, the
caller's handle; `release(handle)` gives it back. Reference counts, apart as for SCSI:

* a `HostShare`, the Plan9 share, shared by every user of the same (host path, read-only);
* a `GuestShare`, one guest mount of a host share, shared by every user of the same guest path.

Ordering: Add does the host half (the share, read-only when asked) then the guest half; a failed guest half
rolls the host half back. The last release unmounts in the guest (MappedDirectory Remove), then the last user
of the host share removes it (a modify Remove).

HostShare states: BINDING --modify Add--> BOUND --last release: modify Remove--> UNBOUND (fails: INVALID);
a failed Add leaves it UNBOUND and forgotten (its waiters get the error).

GuestShare states::

    MOUNTING --MappedDirectory Add--> MOUNTED --last release--> UNMOUNTING --MappedDirectory Remove--> UNMOUNTED
        |                                                           |
        +-- fails: UNMOUNTED (forgotten)                            +-- fails: INVALID (keeps its host share)

Once the VM has stopped a release does no guest or host step (the compute system's close removes what is left
of its shares); `close` forgets them.
"""

from __future__ import annotations

import asyncio
import enum
import os

from hcsshim.bridge.resources import MappedDirectory
from hcsshim.hcs.resourcepaths import PLAN9_SHARE_RESOURCE_PATH
from hcsshim.hcs.schema2 import ModifySettingRequest, Plan9Share, Plan9ShareFlags
from hcsshim.uvm.common import Machine, State, UVMError, check_state, guest_step, join, stopped

PLAN9_PORT = 564  # upstream's Plan9 port (the guest binds from the share root and ignores it)
_RELEASE = (State.RUNNING, State.STOPPED, State.CLOSED, State.INVALID)


class HostShareState(enum.Enum):
    BINDING = "binding"
    BOUND = "bound"
    UNBOUND = "unbound"
    INVALID = "invalid"


class GuestShareState(enum.Enum):
    MOUNTING = "mounting"
    MOUNTED = "mounted"
    UNMOUNTING = "unmounting"
    UNMOUNTED = "unmounted"
    INVALID = "invalid"


class HostShare:
    """A host path shared with the VM as a Plan9 share (see the module docstring)."""

    __slots__ = ("error", "host_path", "name", "read_only", "refs", "settled", "state")

    def __init__(self, host_path: str, read_only: bool, name: str) -> None:
        self.host_path = host_path
        self.read_only = read_only
        self.name = name  # the share's name: the ShareName the guest binds from
        self.refs = 1
        self.state = HostShareState.BINDING
        self.error = ""
        self.settled = asyncio.Event()

    def request(self, request_type: str) -> ModifySettingRequest:
        """The host half of adding (Add) or removing (Remove) the share: a modify request to the compute system."""
        flags = Plan9ShareFlags.READ_ONLY if self.read_only else Plan9ShareFlags.NONE
        settings = Plan9Share(name=self.name, access_name=self.name, path=self.host_path, port=PLAN9_PORT,
                              flags=flags) if request_type == "Add" else Plan9Share(name=self.name,
                                                                                      access_name=self.name)
        return ModifySettingRequest(resource_path=PLAN9_SHARE_RESOURCE_PATH, request_type=request_type,
                                    settings=settings.to_json())

    def __repr__(self) -> str:
        return f"HostShare({self.host_path!r} as {self.name}, {self.state.value}, refs {self.refs})"


class GuestShare:
    """A host share mounted at a guest path (see the module docstring)."""

    __slots__ = ("error", "guest_path", "refs", "settled", "share", "state")

    def __init__(self, share: HostShare, guest_path: str) -> None:
        self.share = share
        self.guest_path = guest_path
        self.refs = 1
        self.state = GuestShareState.MOUNTING
        self.error = ""
        self.settled = asyncio.Event()

    def __repr__(self) -> str:
        return f"GuestShare({self.guest_path!r} from {self.share.name}, {self.state.value}, refs {self.refs})"


class ShareMount:
    """A caller's handle on a share mounted in the guest; give it back with `ShareManager.release`, once."""

    __slots__ = ("_guest", "released")

    def __init__(self, guest: GuestShare) -> None:
        self._guest = guest
        self.released = False

    @property
    def host_path(self) -> str:
        return self._guest.share.host_path

    @property
    def guest_path(self) -> str:
        return self._guest.guest_path

    @property
    def read_only(self) -> bool:
        return self._guest.share.read_only

    @property
    def name(self) -> str:
        """The share's name under the VM's share root."""
        return self._guest.share.name

    def __repr__(self) -> str:
        return f"ShareMount({self.host_path!r} at {self.guest_path!r}{', released' if self.released else ''})"


class ShareManager:
    """The VM's host shares and their guest mounts (see the module docstring)."""

    def __init__(self, vm: Machine) -> None:
        self.vm = vm
        self._hosts: dict[tuple[str, bool], HostShare] = {}  # every host share not UNBOUND
        self._guests: dict[str, GuestShare] = {}  # by guest path: every guest share not UNMOUNTED
        self._counter = 0

    def __repr__(self) -> str:
        return f"ShareManager(uvm {self.vm.id}, {len(self._hosts)} host share(s), {len(self._guests)} mount(s))"

    @property
    def host_shares(self) -> list[HostShare]:
        return list(self._hosts.values())

    @property
    def mounts(self) -> list[GuestShare]:
        return list(self._guests.values())

    async def add(self, host_path: str, guest_path: str, *, read_only: bool = False) -> ShareMount:
        """Shares host_path (a directory or a file) with the guest at guest_path (module docstring)."""
        op = f"add share {host_path} at {guest_path}"
        check_state(self.vm, op, State.RUNNING)
        if not guest_path.startswith("/"):
            raise UVMError(f"uvm {self.vm.id}: {op}: the guest path is not absolute")
        path = os.path.realpath(host_path)
        existing = self._guests.get(guest_path)
        if existing is not None:
            s = existing.share
            if (s.host_path, s.read_only) != (path, read_only) or existing.state not in (
                    GuestShareState.MOUNTING, GuestShareState.MOUNTED):
                raise UVMError(f"uvm {self.vm.id}: {op}: the guest path is in use by {s.host_path} "
                               f"({existing.state.value})")
            await join(self.vm, op, existing, GuestShareState.MOUNTED)
            return ShareMount(existing)
        share = await self._bind(path, read_only, op)
        g = GuestShare(share, guest_path)
        self._guests[guest_path] = g
        try:
            await self.vm.guest(op).modify(MappedDirectory(mount_path=guest_path, share_name=share.name,
                                                           port=PLAN9_PORT, read_only=read_only), "Add")
        except BaseException as exc:
            g.state = GuestShareState.UNMOUNTED
            g.error = f"mount {share.name} in the guest: {exc}"
            del self._guests[guest_path]
            g.settled.set()
            try:
                await self._unbind(share, op)
            except UVMError as rollback:
                raise UVMError(f"uvm {self.vm.id}: {op}: {g.error}; {rollback}") from None
            if isinstance(exc, Exception):
                raise UVMError(f"uvm {self.vm.id}: {op}: {g.error}") from None
            raise
        g.state = GuestShareState.MOUNTED
        g.settled.set()
        return ShareMount(g)

    async def _bind(self, path: str, read_only: bool, op: str) -> HostShare:
        share = self._hosts.get((path, read_only))
        if share is not None:
            await join(self.vm, op, share, HostShareState.BOUND)
            return share
        if not os.path.exists(path):
            raise UVMError(f"uvm {self.vm.id}: {op}: no such file or directory")
        self._counter += 1
        share = HostShare(path, read_only, str(self._counter))
        self._hosts[(path, read_only)] = share
        try:
            await self.vm.modify_host(op, share.request("Add"))
        except BaseException as exc:
            share.state = HostShareState.UNBOUND
            share.error = f"share {share.name}: {exc}"
            del self._hosts[(path, read_only)]
            share.settled.set()
            if isinstance(exc, Exception) and not isinstance(exc, UVMError):
                raise UVMError(f"uvm {self.vm.id}: {op}: {share.error}") from None
            raise
        share.state = HostShareState.BOUND
        share.settled.set()
        return share

    async def _unbind(self, share: HostShare, op: str) -> None:
        if share.state is not HostShareState.BOUND:
            return
        share.refs -= 1
        if share.refs > 0:
            return
        try:
            if not stopped(self.vm):
                await guest_step(self.vm, self.vm.modify_host(op, share.request("Remove")))
        except Exception as exc:
            share.state = HostShareState.INVALID
            raise UVMError(f"uvm {self.vm.id}: {op}: remove share {share.name}: {exc}") from None
        share.state = HostShareState.UNBOUND
        del self._hosts[(share.host_path, share.read_only)]

    async def release(self, handle: ShareMount) -> None:
        """Gives one reference back: the last user of the guest path unmounts it in the guest, the last user
        of the host share removes its bind mount (module docstring)."""
        op = f"release share {handle.host_path} at {handle.guest_path}"
        if handle.released:
            raise UVMError(f"uvm {self.vm.id}: {op}: already released")
        check_state(self.vm, op, *_RELEASE)
        handle.released = True
        g = handle._guest
        if g.state is not GuestShareState.MOUNTED:
            return  # forgotten by close()
        g.refs -= 1
        if g.refs > 0:
            return
        g.state = GuestShareState.UNMOUNTING
        try:
            if not stopped(self.vm):
                await guest_step(self.vm, self.vm.guest(op).modify(MappedDirectory(mount_path=g.guest_path),
                                                                   "Remove"))
        except Exception as exc:
            g.state = GuestShareState.INVALID
            g.error = f"unmount {g.guest_path} in the guest: {exc}"
            raise UVMError(f"uvm {self.vm.id}: {op}: {g.error}") from None
        g.state = GuestShareState.UNMOUNTED
        del self._guests[g.guest_path]
        await self._unbind(g.share, op)

    def close(self) -> None:
        """The VM is gone: its shares went with its compute system (whose close removes their bind mounts)."""
        for g in self._guests.values():
            g.state = GuestShareState.UNMOUNTED
        self._guests.clear()
        for share in self._hosts.values():
            share.state = HostShareState.UNBOUND
        self._hosts.clear()
