"""The Windows backend's native layer: ctypes bindings of computecore.dll (HCS v2, all 60 exports) and
vmcompute.dll (HCS v1, its 26 compute-system and process exports), loaded lazily, standard library only.

| module | owns |
|---|---|
| `loader` | lazy DLL/export loading, the test redirection (set_library, HCSSHIM_FAKE_*), CoTaskMemFree |
| `hresult` | the HRESULT rule and Win32Error (code, export name, result document) |
| `strings` | UTF-16 marshalling in (PCWSTR) and out (CoTaskMemAlloc'd PWSTR, freed once) |
| `cdefs` | the C types: handles, HCS_PROCESS_INFORMATION, HCS_EVENT, the callback prototypes |
| `callbacks` | the shared trampolines and the integer-keyed handler registry (the contexts given to HCS) |
| `computecore` | the 60 v2 exports, event types and options |
| `operation` | the v2 run-an-operation pattern: create, call, wait (cancel on timeout), close |
| `vmcompute` | the 26 v1 exports and the notification codes |
| `jobobject` | the kernel32/ntdll job-object functions of a silo (open by NT name, query and set information) |

Importing loads nothing; on Linux the tests point the libraries at a fake with the same C interface
(tests/fakehcs).
"""
