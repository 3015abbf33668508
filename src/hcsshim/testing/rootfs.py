"""OCI runtime specs for busybox containers run by the GCS in tests and benchmarks (rootfs from
`hcsshim.testing.images.busybox_rootfs`): the equivalent of `runc spec`, with the process filled in."""

from __future__ import annotations

from typing import Any

from hcsshim.testing.images import PATH_ENV, busybox_rootfs

__all__ = ["busybox_rootfs", "oci_spec"]

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER",
         "CAP_FSETID", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_MKNOD",
         "CAP_SETFCAP"]


def oci_spec(root: str, args: list[str], *, terminal: bool = False, cwd: str = "/", env: list[str] | None = None,
             readonly: bool = True, hostname: str = "busybox", network_namespace: str = "",
             share_net: bool = False) -> dict[str, Any]:
    """A runc spec running args in the rootfs at root: pid/ipc/uts/mount (+network unless share_net)
    namespaces, the usual /proc, /dev, /sys mounts, root read-only by default."""
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if not share_net:
        namespaces.append({"type": "network"})
    caps = list(_CAPS)
    if network_namespace:
        caps.append("CAP_NET_ADMIN")
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal, "user": {"uid": 0, "gid": 0}, "args": args, "env": env or [PATH_ENV, "TERM=xterm"],
            "cwd": cwd, "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}], "noNewPrivileges": True,
        },
        "root": {"path": root, "readonly": readonly},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
        ],
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                            "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }
    if network_namespace:
        spec["windows"] = {"network": {"networkNamespace": network_namespace}}
    return spec
