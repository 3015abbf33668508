"""The utility VM's QEMU: its options, the guest kernel command line, and the QEMU command line built from them.

Pure functions of the options and the run directory, so that the mapping from hcsshim's VM document to QEMU
is testable without starting anything (see ../shared/design.md's table):

| hcsshim (HCS schema2 VirtualMachine)       | QEMU here                                                       |
|--------------------------------------------|-----------------------------------------------------------------|
| LinuxKernelDirect kernel/initrd/cmdline    | -kernel (vmlinux, PVH entry: no decompression) -initrd -append  |
| rootfs.vhd on SCSI 0:0, root=/dev/sda      | the same vhd as scsi-hd LUN 0 at boot, read-only                |
| SCSI controller, 64 LUNs, hot-add          | virtio-scsi-pci `scsi0`; scsi-hd hot-added over QMP             |
| Plan9 shares over hvsock 564               | one virtio-9p device exporting `shares/` (tag hcsshim-shares)   |
| GCS bridge on hvsock 0x40000000            | virtserialport `uvm.bridge`, port-multiplexed (hcsshim.transport) |
| log port 109 (GCS stderr)                  | virtserialport `uvm.log`                                        |
| entropy on port 1                          | virtio-rng                                                      |
| synthetic NIC hot-add                      | virtio-net-pci on a pre-made pcie-root-port, netdev tap         |
| StopOnReset + panic=-1                     | -no-reboot + panic=-1: a dead guest ends QEMU                   |
| (saved/cloned VM state)                    | vmgenid (guid=auto), RAM in a memory-backend-file for templates |
| COM1 console pipe                          | ttyS0 into `console.log` in the run dir                         |

QEMU connects, as a client, to the host's unix sockets (qmp, bridge, log), which the VM object creates
before QEMU starts: the host listens, the guest dials, as with hvsock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

SHARES_TAG = "hcsshim-shares"
SHARES_GUEST_ROOT = "/run/shares"  # where the GCS mounts the share device; a share is a directory in it
MODULES_READY = "/run/hcsshim/modules.ready"  # init's mark: the kernel modules it loads in the background are in
BRIDGE_PORT = "uvm.bridge"
LOG_PORT = "uvm.log"
ROOT_PORTS = 4  # pcie-root-ports made at boot for hot-added network adapters
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
    accel: str | None = None  # "kvm", "tcg" or None: probe (hcsshim.uvm.accel)
    console: bool = True  # the serial console into <run dir>/console.log
    gcs_log_level: str = "info"
    # The command init starts (upstream: vsockexec -e 109 /bin/gcs ...); None: the GCS on the bridge port.
    init_command: list[str] | None = None
    forward_stdout: bool = False  # the child's stdout to the log port too (uvmboot --fwd-stdout)
    forward_stderr: bool = True
    run_root: str = "/run/hcsshim/uvm"
    extra_qemu_args: list[str] = field(default_factory=list)
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
                                  "-transport", f"mux:/dev/virtio-ports/{BRIDGE_PORT}",
                                  "-share-root", SHARES_GUEST_ROOT, "-share-tag", SHARES_TAG,
                                  "-modules-ready", MODULES_READY, "-sync-host-state"]
    init_opts: list[str] = []
    if opts.forward_stderr:
        init_opts += ["-e", LOG_PORT]
    if opts.forward_stdout:
        init_opts += ["-o", LOG_PORT]
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


@dataclass(frozen=True)
class Memory:
    """The VM's RAM in a file (a template's, hcsshim.uvm.template): shared (the template writes its RAM into the
    file) or private (a clone maps the template's file copy-on-write)."""

    path: str
    shared: bool


def qemu_argv(qemu: str, opts: UVMOptions, boot: BootFiles, run_dir: str, accel: str, *,
              memory: Memory | None = None, incoming: bool = False) -> list[str]:
    """QEMU's command line for `opts`, with its sockets and files in `run_dir`; `incoming`: wait for a migration
    stream (a clone restores the template's state before it runs)."""

    def p(name: str) -> str:
        return os.path.join(run_dir, name)

    machine = f"q35,accel={accel}" + (",memory-backend=ram" if memory else "")
    argv = [qemu, "-name", f"hcsshim-uvm-{opts.id}", "-machine", machine,
            "-m", str(opts.memory_mb), "-smp", str(opts.cpus), "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot"]
    if memory is not None:
        argv += ["-object", f"memory-backend-file,id=ram,size={opts.memory_mb}M,mem-path={memory.path},"
                            f"share={'on' if memory.shared else 'off'}"]
    if accel == "kvm":
        argv += ["-cpu", "host"]
    argv += ["-kernel", boot.kernel, "-append", kernel_cmdline(opts, boot)]
    if boot.initrd:
        argv += ["-initrd", boot.initrd]
    argv += ["-chardev", f"socket,id=qmp,path={p('qmp.sock')}", "-mon", "chardev=qmp,mode=control"]
    if opts.console:
        argv += ["-chardev", f"file,id=con,path={p('console.log')}", "-serial", "chardev:con"]
    argv += ["-device", "virtio-serial-pci,id=vser0,max_ports=8",
             "-chardev", f"socket,id=bridge,path={p('bridge.sock')}",
             "-device", f"virtserialport,bus=vser0.0,chardev=bridge,name={BRIDGE_PORT}",
             "-chardev", f"socket,id=log,path={p('log.sock')}",
             "-device", f"virtserialport,bus=vser0.0,chardev=log,name={LOG_PORT}",
             "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
             "-device", "virtio-scsi-pci,id=scsi0",
             "-fsdev", f"local,id=shares,path={p('shares')},security_model=passthrough",
             "-device", f"virtio-9p-pci,fsdev=shares,mount_tag={SHARES_TAG}"]
    if boot.rootfs_vhd is not None:
        argv += ["-blockdev", f"driver=file,node-name=rootfs-file,filename={boot.rootfs_vhd},read-only=on",
                 "-blockdev", "driver=raw,node-name=rootfs,file=rootfs-file,read-only=on",
                 "-device", "scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun=0,drive=rootfs,id=lun0,serial=rootfs"]
    for i in range(ROOT_PORTS):
        argv += ["-device", f"pcie-root-port,id=rp{i},bus=pcie.0,chassis={i + 1},slot={i + 1}"]
    # A new generation id on every QEMU start: the guest kernel reseeds its RNG when a restored VM sees it change.
    argv += ["-device", "vmgenid,guid=auto"]
    if incoming:
        argv += ["-incoming", "defer"]
    return [*argv, *opts.extra_qemu_args]
