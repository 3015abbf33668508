"""The Linux backend of hcsshim.hcs: compute systems that are QEMU machines (KVM when guests run on it, else TCG).

| module | owns |
|---|---|
| `backend` | `LinuxBackend` and `LinuxSystem`: the hcsshim.hcs.backend contract, the system's state machine |
| `document` | a schema2 ComputeSystem read into a `MachineConfig`; what has no QEMU counterpart refused by path |
| `qemu` | QEMU's command line (the only one in the project) |
| `machine` | the QEMU process as its owner or an opener drives it: QMP, exit, pause, save and restore |
| `devices` | modify requests: SCSI attachments, Plan9 shares, network adapters |
| `hvsock` | HvSocket services as virtio-serial ports with host unix listeners |
| `registry` | systems by id under a root directory: records, open and list from any process, stale cleanup |
| `accel` | choosing KVM or TCG |
| `procfs` | QEMU's statistics and start time from /proc |
| `cgroups` | processor limits: the cgroup QEMU runs in |

The package imports nothing itself (uvm's options take the HvSocket naming and the share tag from here, on the
shim's start-up path): `from hcsshim.hcs.linux.backend import LinuxBackend`.
"""
