"""QEMU's command line for a machine (hcsshim.hcs.linux.document.MachineConfig): the one place in the project
where QEMU arguments are made, besides the QMP commands of hcsshim.hcs.linux.devices.

A pure function of the configuration and the system's directory, so that the mapping is testable without
starting anything. Beyond what the document asks for, every machine has what HCS gives every utility VM: a
virtio-rng (the entropy HCS sends on port 1), a virtio-9p device exporting the system's ``shares/`` (tag
SHARES_TAG: a Plan9 share is a directory in it), ROOT_PORTS pcie-root-ports for network adapters plugged later,
a vmgenid (a new generation id on each start, so a restored guest reseeds its RNG), and two QMP monitors: the
owner's (QEMU dials ``qmp.sock``, which the backend listens on) and ``control.sock`` (QEMU listens: how another
process that opens the system drives it).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hcsshim.hcs.linux.hvsock import HVSOCK_DIR

if TYPE_CHECKING:  # only a type here: the module stays cheap for hcsshim.uvm.options, which takes SHARES_TAG
    from hcsshim.hcs.linux.document import MachineConfig

__all__ = ["CONTROL_QMP", "OWNER_QMP", "ROOT_PORTS", "SHARES_TAG", "argv", "disk_node"]

SHARES_TAG = "hcsshim-shares"
ROOT_PORTS = 4
OWNER_QMP = "qmp.sock"
CONTROL_QMP = "control.sock"


def argv(qemu: str, cfg: MachineConfig, system_dir: str, accel: str) -> list[str]:
    """The command line of machine `cfg` with its sockets and files in `system_dir`, on accelerator `accel`."""

    def p(name: str) -> str:
        return os.path.join(system_dir, name)

    memory = cfg.memory_file is not None
    out = [qemu, "-name", f"hcsshim-{cfg.id}", "-machine", f"q35,accel={accel}" + (",memory-backend=ram" if memory
                                                                                   else ""),
           "-m", str(cfg.memory_mb), "-smp", str(cfg.cpus), "-nodefaults", "-no-user-config", "-display", "none"]
    if cfg.stop_on_reset:
        out.append("-no-reboot")
    if memory:
        out += ["-object", f"memory-backend-file,id=ram,size={cfg.memory_mb}M,mem-path={cfg.memory_file},"
                           f"share={'off' if cfg.memory_private else 'on'}"]
    if accel == "kvm":
        out += ["-cpu", "host"]
    out += ["-kernel", cfg.kernel]
    if cfg.initrd:
        out += ["-initrd", cfg.initrd]
    if cfg.cmdline:
        out += ["-append", cfg.cmdline]
    out += ["-chardev", f"socket,id=qmp,path={p(OWNER_QMP)}", "-mon", "chardev=qmp,mode=control",
            "-chardev", f"socket,id=control,path={p(CONTROL_QMP)},server=on,wait=off",
            "-mon", "chardev=control,mode=control"]
    if cfg.console:
        out += ["-chardev", f"file,id=con,path={cfg.console}", "-serial", "chardev:con"]
    out += ["-device", f"virtio-serial-pci,id=vser0,max_ports={max(8, len(cfg.ports) + 1)}"]
    for i, name in enumerate(sorted(cfg.ports.values())):
        out += ["-chardev", f"socket,id=hv{i},path={p(os.path.join(HVSOCK_DIR, name + '.sock'))},reconnect=1",
                "-device", f"virtserialport,bus=vser0.0,chardev=hv{i},name={name}"]
    out += ["-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0"]
    for c in range(cfg.scsi_controllers):
        out += ["-device", f"virtio-scsi-pci,id=scsi{c}"]
    out += ["-fsdev", f"local,id=shares,path={p('shares')},security_model=passthrough",
            "-device", f"virtio-9p-pci,fsdev=shares,mount_tag={SHARES_TAG}"]
    for d in cfg.disks:
        ro = ",read-only=on" if d.read_only else ""
        node = disk_node(d.controller, d.lun)
        out += ["-blockdev", f"driver=file,node-name={node}-file,filename={d.path}{ro}",
                "-blockdev", f"driver=raw,node-name={node},file={node}-file{ro}",
                "-device", f"scsi-hd,bus=scsi{d.controller}.0,channel=0,scsi-id=0,lun={d.lun},drive={node},"
                           f"id={node},serial={node}"]
    for i in range(ROOT_PORTS):
        out += ["-device", f"pcie-root-port,id=rp{i},bus=pcie.0,chassis={i + 1},slot={i + 1}"]
    for slot, nic in enumerate(cfg.nics):
        out += ["-netdev", f"tap,id=net{slot},ifname={nic.tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=net{slot},mac={nic.mac},bus=rp{slot},id=nic{slot}"]
    out += ["-device", "vmgenid,guid=auto"]
    if cfg.restore_from:
        out += ["-incoming", "defer"]
    return out


def disk_node(controller: int, lun: int) -> str:
    """QEMU's block node and device id of the disk at (controller, lun)."""
    return f"scsi{controller}-lun{lun}"
