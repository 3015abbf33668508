"""How a container's host-side description becomes what the utility VM gets: pure functions, no I/O but stat.

* `rootfs_source`: containerd's rootfs mounts (or the spec's root path) as either read-only layer directories,
  top-most first (an overlay's lowerdir, or a read-only bind of one layer: each becomes an ext4 disk), or one
  host directory the container runs on directly (a writable bind, or `ctr run --rootfs DIR`: shared over 9p, as
  upstream mounts a Spec.Root.Path container's root over Plan9);
* `guest_spec`: the OCI spec the GCS receives, cleaned as upstream's hcsoci does for LCOW: root.path in the guest,
  hooks dropped, cgroupsPath cleared (the GCS places containers), the Devices/Pids/BlockIO/HugepageLimits/Network
  resources cleared, a CPU period of 0 made 100000 and a quota of 0 made -1, seccomp dropped for privileged
  containers, `windows` dropped but for its network namespace; and the bind mounts of host paths, each of which
  becomes a share into the VM at `<container root in the VM>/mounts/m<i>` (read-only when the mount is).
  A /dev/shm bind of a host directory (the CRI's sandbox shm) would put shared memory on 9p: it becomes a tmpfs
  in the VM instead. Sources the guest resolves itself (`sandbox://`, `sandbox-tmp://`, `uvm://`) pass through.
"""

from __future__ import annotations

import copy
import os
import stat
from dataclasses import dataclass, field

from hcsshim.ttrpc import errors

GUEST_CONTAINER_ROOT = "/run/gcs/c"  # the GCS's bundles: /run/gcs/c/<id> (the scratch disk is mounted there)
GUEST_SOURCE_PREFIXES = ("sandbox://", "sandbox-tmp://", "uvm://", "hugepages://")
SHM_TMPFS_OPTIONS = ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
_CLEARED_RESOURCES = ("devices", "pids", "blockIO", "hugepageLimits", "network")


def container_root(task_id: str) -> str:
    return f"{GUEST_CONTAINER_ROOT}/{task_id}"


@dataclass
class RootfsSource:
    layers: list[str] = field(default_factory=list)  # read-only layer directories, top-most first
    directory: str | None = None  # or: a host directory the container runs on (shared, writable unless ro)
    read_only: bool = False


@dataclass
class ShareRequest:
    host_path: str
    guest_path: str
    read_only: bool


def _options(raw: list[str]) -> dict[str, str]:
    out = {}
    for o in raw:
        key, _, value = o.partition("=")
        out[key] = value
    return out


def rootfs_source(task_id: str, mounts: list, spec: dict, bundle: str) -> RootfsSource:
    """What the container's root is made of (see the module docstring); InvalidArgument for what cannot be."""
    op = f"create task {task_id}"
    readonly_root = bool((spec.get("root") or {}).get("readonly"))
    if not mounts:
        root = spec["root"]["path"]
        path = root if os.path.isabs(root) else os.path.join(bundle, root)
        if not os.path.isdir(path):
            raise errors.invalid_argument(f"{op}: rootfs {path}: no such directory")
        return RootfsSource(directory=path, read_only=readonly_root)
    if len(mounts) != 1:
        raise errors.invalid_argument(f"{op}: {len(mounts)} rootfs mounts: a utility VM takes one (an overlay of "
                                      "layers or a bind mount)")
    m = mounts[0]
    opts = _options(list(m.options))
    if m.type == "overlay":
        lower = opts.get("lowerdir", "")
        layers = [d for d in lower.split(":") if d]
        if not layers:
            raise errors.invalid_argument(f"{op}: overlay rootfs without lowerdir")
        for d in layers:
            if not os.path.isdir(d):
                raise errors.invalid_argument(f"{op}: rootfs layer {d}: no such directory")
        return RootfsSource(layers=layers, read_only=readonly_root)
    if m.type == "bind" or "bind" in opts or "rbind" in opts:
        if not os.path.isdir(m.source):
            raise errors.invalid_argument(f"{op}: rootfs {m.source}: no such directory")
        if "ro" in opts:
            return RootfsSource(layers=[m.source], read_only=readonly_root)
        return RootfsSource(directory=m.source, read_only=readonly_root)
    raise errors.invalid_argument(f"{op}: rootfs mount of type {m.type!r}: a utility VM takes overlay or bind")


def _is_bind(m: dict) -> bool:
    return m.get("type") == "bind" or any(o in ("bind", "rbind") for o in m.get("options") or [])


def guest_spec(task_id: str, spec: dict) -> tuple[dict, list[ShareRequest]]:
    """The spec for the GCS and the shares it needs (see the module docstring)."""
    op = f"create task {task_id}"
    out = copy.deepcopy(spec)
    root = container_root(task_id)
    out["root"] = {"path": f"{root}/rootfs", **({"readonly": True} if spec["root"].get("readonly") else {})}
    out.pop("hooks", None)
    linux = out.setdefault("linux", {})
    linux.pop("cgroupsPath", None)
    resources = linux.get("resources")
    if isinstance(resources, dict):
        for key in _CLEARED_RESOURCES:
            resources.pop(key, None)
        cpu = resources.get("cpu")
        if isinstance(cpu, dict):
            if cpu.get("period") == 0:
                cpu["period"] = 100000
            if cpu.get("quota") == 0:
                cpu["quota"] = -1
    if (out.get("annotations") or {}).get("io.microsoft.virtualmachine.lcow.privileged") == "true":
        linux.pop("seccomp", None)
    windows = out.pop("windows", None)
    netns = ((windows or {}).get("network") or {}).get("networkNamespace") if isinstance(windows, dict) else None
    if netns:
        out["windows"] = {"network": {"networkNamespace": netns}}
    shares: list[ShareRequest] = []
    mounts = []
    for i, m in enumerate(out.get("mounts") or []):
        if not isinstance(m, dict) or not isinstance(m.get("destination"), str):
            raise errors.invalid_argument(f"{op}: mount {i}: needs a destination")
        source = m.get("source") or ""
        if not _is_bind(m) or source.startswith(GUEST_SOURCE_PREFIXES):
            mounts.append(m)
            continue
        if m["destination"] == "/dev/shm" and os.path.isdir(source):
            mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                           "options": list(SHM_TMPFS_OPTIONS)})
            continue
        try:
            st = os.stat(source)
        except OSError as exc:
            raise errors.invalid_argument(f"{op}: mount {m['destination']}: source {source}: "
                                          f"{exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode) and not stat.S_ISREG(st.st_mode):
            raise errors.invalid_argument(f"{op}: mount {m['destination']}: source {source}: only directories "
                                          "and regular files can be shared into a utility VM")
        guest = f"{root}/mounts/m{i}"
        shares.append(ShareRequest(os.path.realpath(source), guest, "ro" in (m.get("options") or [])))
        mounts.append({**m, "source": guest})
    out["mounts"] = mounts
    return out, shares
