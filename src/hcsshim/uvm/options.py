"""The utility VM's options (upstream's OptionsLCOW, the parts that mean something here), upstream's VM
annotations that set them, the boot files they name, and the guest kernel command line made from them.

The VM itself is a schema2 ComputeSystem document built from these (hcsshim.uvm.lcow) and handed to hcsshim.hcs,
whose Linux backend makes it a QEMU machine (hcsshim.hcs.linux): nothing here knows QEMU. The GCS's bridge and
log ports are HvSocket services of the document (vsock ports BRIDGE_PORT and LOG_PORT, upstream's
LinuxGcsVsockPort and the log port 109), which the guest sees as the virtio-serial ports BRIDGE_PORT_NAME and
LOG_PORT_NAME (hcsshim.hcs.linux.hvsock).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hcsshim.bridge import BRIDGE_PORT
from hcsshim.hcs.linux.hvsock import port_name, vsock_service_id
from hcsshim.hcs.linux.qemu import SHARES_TAG

__all__ = ["ANNOTATION_BOOT_FILES", "ANNOTATION_KERNEL_ARGS", "ANNOTATION_MEMORY", "ANNOTATION_PROCESSORS",
           "ANNOTATION_ROOT_FS_TYPE", "ANNOTATION_TEMPLATE", "BRIDGE_PORT_NAME", "BRIDGE_SERVICE", "LOG_PORT",
           "LOG_PORT_NAME", "LOG_SERVICE", "MODULES_READY", "SCSI_LUNS", "SHARES_GUEST_ROOT", "SHARES_TAG",
           "BootFiles", "UVMOptions",
           "apply_annotations", "find_boot_files", "init_command", "kernel_cmdline"]

SHARES_GUEST_ROOT = "/run/shares"  # where the GCS mounts the share device; a share is a directory in it
MODULES_READY = "/run/hcsshim/modules.ready"  # init's mark: the kernel modules it loads in the background are in
LOG_PORT = 109  # upstream's linuxLogVsockPort: the GCS's stderr
BRIDGE_SERVICE = vsock_service_id(BRIDGE_PORT)  # the GCS bridge, upstream's LinuxGcsVsockPort 0x40000000
LOG_SERVICE = vsock_service_id(LOG_PORT)
BRIDGE_PORT_NAME = port_name(BRIDGE_SERVICE)  # the guest's virtio-serial port names of the two
LOG_PORT_NAME = port_name(LOG_SERVICE)
SCSI_LUNS = 64


@dataclass
class UVMOptions:
    """What a utility VM is made of (upstream's OptionsLCOW, the parts that mean something on QEMU)."""

    id: str
    boot_files_path: str
    root_fs_type: str = "initrd"  # "initrd" or "vhd" (rootfs.vhd as a read-only SCSI disk, root=/dev/sda)
    memory_mb: int = 1024
    cpus: int = 2
    kernel_args: str = ""  # extra tokens before `--`
    accel: str | None = None  # "kvm", "tcg" or None: probe (hcsshim.hcs.linux.accel)
    console: bool = True  # the serial console into <run dir>/console.log
    gcs_log_level: str = "info"
    # The command init starts (upstream: vsockexec -e 109 /bin/gcs ...); None: the GCS on the bridge port.
    init_command: list[str] | None = None
    forward_stdout: bool = False  # the child's stdout to the log port too (uvmboot --fwd-stdout)
    forward_stderr: bool = True
    run_root: str = "/run/hcsshim/uvm"  # the hcsshim.hcs.linux registry root of the VM's compute system
    template: bool = True  # start as a clone of a template (hcsshim.uvm.template) when the GCS is the init child

    def validate(self) -> None:
        if not self.id or "/" in self.id or self.id in (".", ".."):
            raise ValueError(f"invalid utility VM id {self.id!r}")
        if self.root_fs_type not in ("initrd", "vhd"):
            raise ValueError(f"uvm {self.id}: root fs type {self.root_fs_type!r} is not initrd or vhd")
        if self.memory_mb < 64:
            raise ValueError(f"uvm {self.id}: {self.memory_mb} MB of memory is too little (at least 64)")
        if not 1 <= self.cpus <= 64:
            raise ValueError(f"uvm {self.id}: {self.cpus} processors is out of range 1..64")
        if self.accel not in (None, "kvm", "tcg"):
            raise ValueError(f"uvm {self.id}: accelerator {self.accel!r} is not kvm or tcg")


# Upstream's annotations (pkg/annotations) that mean something for a QEMU utility VM, and the option each sets.
ANNOTATION_MEMORY = "io.microsoft.virtualmachine.computetopology.memory.sizeinmb"
ANNOTATION_PROCESSORS = "io.microsoft.virtualmachine.computetopology.processor.count"
ANNOTATION_BOOT_FILES = "io.microsoft.virtualmachine.bootfilesrootpath"
ANNOTATION_ROOT_FS_TYPE = "io.microsoft.virtualmachine.lcow.preferredrootfstype"
ANNOTATION_KERNEL_ARGS = "io.microsoft.virtualmachine.lcow.kernelbootoptions"
# Ours: "false" boots the VM cold instead of restoring it from a template (hcsshim.uvm.template).
ANNOTATION_TEMPLATE = "io.hcsshim.uvm.template"


def apply_annotations(opts: UVMOptions, annotations: dict[str, str]) -> UVMOptions:
    """`opts` with upstream's VM annotations applied (oci.SpecToUVMCreateOpts for what QEMU has); an annotation
    that does not parse is a ValueError naming it. Memory is rounded up to an even MB, as upstream does."""

    def number(key: str) -> int | None:
        value = annotations.get(key)
        if value is None:
            return None
        try:
            n = int(value, 10)
        except ValueError:
            raise ValueError(f"annotation {key}={value!r}: not a number") from None
        if n <= 0:
            raise ValueError(f"annotation {key}={value!r}: must be positive")
        return n

    if (memory := number(ANNOTATION_MEMORY)) is not None:
        opts.memory_mb = memory + (memory & 1)
    if (cpus := number(ANNOTATION_PROCESSORS)) is not None:
        opts.cpus = cpus
    if ANNOTATION_BOOT_FILES in annotations:
        opts.boot_files_path = annotations[ANNOTATION_BOOT_FILES]
    if ANNOTATION_ROOT_FS_TYPE in annotations:
        kind = annotations[ANNOTATION_ROOT_FS_TYPE].lower()
        if kind not in ("initrd", "vhd"):
            raise ValueError(f"annotation {ANNOTATION_ROOT_FS_TYPE}={kind!r}: not initrd or vhd")
        opts.root_fs_type = kind
    if ANNOTATION_KERNEL_ARGS in annotations:
        opts.kernel_args = " ".join(filter(None, [opts.kernel_args, annotations[ANNOTATION_KERNEL_ARGS]]))
    if ANNOTATION_TEMPLATE in annotations:
        value = annotations[ANNOTATION_TEMPLATE].lower()
        if value not in ("true", "false"):
            raise ValueError(f"annotation {ANNOTATION_TEMPLATE}={value!r}: not true or false")
        opts.template = value == "true"
    opts.validate()
    return opts


@dataclass(frozen=True)
class BootFiles:
    kernel: str
    initrd: str | None
    rootfs_vhd: str | None


def find_boot_files(opts: UVMOptions) -> BootFiles:
    """The kernel (vmlinux preferred, as upstream's KernelDirect) and the root of `opts`; FileNotFoundError."""
    d = opts.boot_files_path
    if not os.path.isdir(d):
        raise FileNotFoundError(f"uvm {opts.id}: boot files path {d}: no such directory")
    kernel = next((os.path.join(d, k) for k in ("vmlinux", "kernel") if os.path.isfile(os.path.join(d, k))), None)
    if kernel is None:
        raise FileNotFoundError(f"uvm {opts.id}: boot files path {d}: no kernel (vmlinux or kernel)")
    if opts.root_fs_type == "vhd":
        # rootfs.vhd as the root, booted by initrd-vhd.cpio: Debian's kernel has its storage drivers as
        # modules, which that small initramfs loads before it mounts /dev/sda and switches to it.
        vhd, initrd = os.path.join(d, "rootfs.vhd"), os.path.join(d, "initrd-vhd.cpio")
        for f in (vhd, initrd):
            if not os.path.isfile(f):
                raise FileNotFoundError(f"uvm {opts.id}: boot files path {d}: no {os.path.basename(f)} for root "
                                        f"fs type vhd")
        return BootFiles(kernel, initrd, vhd)
    # The uncompressed initrd.cpio when the build made one: gunzipping 18 MB costs seconds under TCG.
    initrd = next((os.path.join(d, n) for n in ("initrd.cpio", "initrd.img") if os.path.isfile(os.path.join(d, n))),
                  None)
    if initrd is None:
        raise FileNotFoundError(f"uvm {opts.id}: boot files path {d}: no initrd.img")
    return BootFiles(kernel, initrd, None)


def init_command(opts: UVMOptions) -> list[str]:
    """argv for the guest's /init after the kernel's `--`: init's own options, then the child."""
    child = opts.init_command or ["/bin/gcs", "-v4", "-log-format", "json", "-loglevel", opts.gcs_log_level,
                                  "-transport", f"mux:/dev/virtio-ports/{BRIDGE_PORT_NAME}",
                                  "-share-root", SHARES_GUEST_ROOT, "-share-tag", SHARES_TAG,
                                  "-modules-ready", MODULES_READY, "-sync-host-state"]
    init_opts: list[str] = []
    if opts.forward_stderr:
        init_opts += ["-e", LOG_PORT_NAME]
    if opts.forward_stdout:
        init_opts += ["-o", LOG_PORT_NAME]
    return [*init_opts, *child]


def kernel_cmdline(opts: UVMOptions, boot: BootFiles) -> str:
    """The guest kernel command line (spec §1.4, adapted to QEMU: no pci=off, no hv_sock blacklist)."""
    tokens = ["panic=-1", f"nr_cpus={opts.cpus}", "brd.rd_nr=0", "pmtmr=0",
              # boot-time savers under TCG: no delay-loop calibration or timer checks to emulate
              "tsc=reliable", "no_timer_check", "mitigations=off", "quiet"]
    if opts.console:
        tokens += ["console=ttyS0", "8250_core.nr_uarts=1"]
    else:
        tokens += ["8250_core.nr_uarts=0"]
    if boot.rootfs_vhd is not None:
        tokens += ["root=/dev/sda", "ro", "rootwait"]
    if opts.kernel_args:
        tokens += opts.kernel_args.split()
    return " ".join([*tokens, "--", *init_command(opts)])
