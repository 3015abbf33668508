"""Linux utility VMs on QEMU: hcsshim's uvm package, with QEMU (KVM when it works, else TCG) as the hypervisor.

`UtilityVM` (vm.py) owns one QEMU process and what it needs; `qemu.py` maps the options onto QEMU's command
line and the guest kernel's; `accel.py` decides between KVM and TCG.
"""

from hcsshim.uvm.qemu import UVMOptions, apply_annotations
from hcsshim.uvm.vm import NetworkAdapter, ScsiDisk, Share, State, UtilityVM, UVMError

__all__ = ["NetworkAdapter", "ScsiDisk", "Share", "State", "UVMError", "UVMOptions", "UtilityVM", "apply_annotations"]
