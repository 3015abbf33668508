"""The HCS library: compute systems (containers and utility VMs) and their processes, described by the HCS JSON
schemas, on Windows' Host Compute Service or, on Linux, on a backend whose utility VMs are QEMU machines.

The map of the package (see each module's docstring):

| module | owns |
|---|---|
| `hcsshim.hcs.schema1`, `hcsshim.hcs.schema2` | the schema1 and schema2 documents, typed (hcsshim.gojson) |
| `hcsshim.hcs.errors` | HCS error codes, HcsError/SystemError/ProcessError, the is_* predicates |
| `hcsshim.hcs.resourcepaths` | the ModifySettingRequest resource paths, built and parsed |
| `hcsshim.hcs.win32` | ctypes bindings of computecore.dll and vmcompute.dll (Windows; tested against a fake) |
| `hcsshim.hcs.backend` | the contract between the System and Process objects and a backend (HCS, or QEMU on Linux) |
| `hcsshim.hcs.system` | System: create/open a compute system, its lifecycle, properties, modify, processes, exit |
| `hcsshim.hcs.process` | Process: signal, kill, console, stdio, wait and exit code |
| `hcsshim.hcs.notify` | a system's or process's HCS events as async streams |
| `hcsshim.hcs.service` | the backend choice, enumeration, the HCS service's properties and settings |
| `hcsshim.hcs.blocking` | blocking wrappers of the above, on a private event loop thread |
| `hcsshim.hcs.windows` | the Windows backend: the contract over computecore.dll (hcsshim.hcs.win32) |
| `hcsshim.hcs.winshared` | what both Windows backends share: CallError, calls in threads, events to the loop, stdio |
| `hcsshim.hcs.windows_v1`, `.waithelper` | the v1 Windows backend over vmcompute.dll: callbacks, pending waits |
| `hcsshim.hcs.linux` | the Linux backend: compute systems that are QEMU machines (its own map) |
| `hcsshim.hcs.migration` | live migration: the step documents, the socket, the notifications as a stream |
| `hcsshim.hcs.silo` | a Windows container's silo job object: CPU-group affinity, in-process statistics |
| `hcsshim.hcs.signals` | signal validation and mapping for LCOW and WCOW processes (upstream's internal/signals) |
| `hcsshim.hcs.timeouts` | the HCSSHIM_TIMEOUT_* watchdog timeouts |
"""
