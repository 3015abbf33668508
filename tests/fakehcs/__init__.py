"""The fake HCS libraries (fakehcs.c) for the win32 binding tests: building them with the C compiler, and driving
their test-control exports from Python.

`build(directory)` compiles five shared objects with `cc -shared -fPIC` (the compiler is $CC, else the first of
cc, gcc, clang on PATH): libfakecom.so (CoTaskMemAlloc/CoTaskMemFree, counting), libfakecomputecore.so,
libfakecomputecore_old.so (an "older Windows" lacking the live-migration exports and
HcsGetProcessorCompatibilityFromSavedState) and libfakevmcompute.so; the DLL fakes link against libfakecom.so so
one allocator serves both. No compiler is an error (CompilerMissing), never a skip: `make setup` installs gcc.
libfakejobobject.so (fakejob.c) stands in for both kernel32.dll and ntdll.dll as far as job objects go
(hcsshim.hcs.win32.jobobject); `FakeJobs` drives it.

The control side deliberately does not use the bindings' own marshalling: strings handed to the fake are encoded
here, and what the fake received comes back as the JSON records it wrote.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hcsshim.hcs.win32 import jobobject
from hcsshim.hcs.win32.callbacks import REGISTRY
from hcsshim.hcs.win32.loader import set_library

SOURCE = Path(__file__).with_name("fakehcs.c")
JOB_SOURCE = Path(__file__).with_name("fakejob.c")
COMPILERS = ("cc", "gcc", "clang")


class CompilerMissing(RuntimeError):
    """No C compiler to build the fake libraries with."""


def find_compiler() -> str:
    """The C compiler: $CC when set, else the first of cc, gcc, clang on PATH."""
    wanted = os.environ.get("CC")
    for name in (wanted,) if wanted else COMPILERS:
        path = shutil.which(name)
        if path:
            return path
    raise CompilerMissing(
        f"no C compiler ({wanted or ', '.join(COMPILERS)}) on PATH to build {SOURCE.name}: "
        "run `make setup` (it installs gcc and libc6-dev) or set CC")


@dataclass(frozen=True)
class Built:
    """Where the fake libraries were built."""

    com: Path
    computecore: Path
    computecore_old: Path
    vmcompute: Path
    jobobject: Path


def build(directory: Path) -> Built:
    """Compile the fakes into `directory`."""
    cc = find_compiler()
    out = Built(directory / "libfakecom.so", directory / "libfakecomputecore.so",
                directory / "libfakecomputecore_old.so", directory / "libfakevmcompute.so",
                directory / "libfakejobobject.so")
    common = ["-shared", "-fPIC", "-O1", "-g", "-Wall", "-Wextra", "-fvisibility=hidden", "-pthread"]
    link_com = [f"-L{directory}", "-l:libfakecom.so", f"-Wl,-rpath,{directory}"]
    jobs = [
        (out.com, ["-DFAKE_COM", "-Wl,-soname,libfakecom.so"]),
        (out.computecore, ["-DFAKE_COMPUTECORE", *link_com]),
        (out.computecore_old, ["-DFAKE_COMPUTECORE", "-DFAKE_OLD_BUILD", *link_com]),
        (out.vmcompute, ["-DFAKE_VMCOMPUTE", *link_com]),
        (out.jobobject, []),
    ]
    for target, flags in jobs:
        command = [cc, *common, "-o", str(target), str(JOB_SOURCE if target == out.jobobject else SOURCE), *flags]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"building {target.name} failed ({' '.join(command)}):\n{done.stderr}")
    return out


def utf16(text: str | None) -> Any:
    """`text` as a NUL-terminated uint16 buffer, encoded independently of the bindings (None: NULL)."""
    if text is None:
        return None
    data = text.encode("utf-16-le", "surrogatepass") + b"\x00\x00"
    return (ctypes.c_uint16 * (len(data) // 2)).from_buffer_copy(data)


class FakeCom:
    """libfakecom.so's counters."""

    def __init__(self, path: Path) -> None:
        self.dll = ctypes.CDLL(str(path))
        for name in ("fake_live_allocations", "fake_total_allocations", "fake_bad_frees"):
            getattr(self.dll, name).restype = ctypes.c_long

    def live_allocations(self) -> int:
        return int(self.dll.fake_live_allocations())

    def total_allocations(self) -> int:
        return int(self.dll.fake_total_allocations())

    def bad_frees(self) -> int:
        return int(self.dll.fake_bad_frees())

    def reset_counters(self) -> None:
        self.dll.fake_com_reset_counters()


class FakeDll:
    """The test-control exports of libfakecomputecore.so or libfakevmcompute.so."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dll = ctypes.CDLL(str(path))
        d = self.dll
        d.fake_set_result.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p]
        d.fake_queue_result.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p]
        d.fake_set_process_info.argtypes = [ctypes.c_uint32, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]
        d.fake_last_call.restype = ctypes.c_char_p
        d.fake_calls.restype = ctypes.c_char_p
        if hasattr(d, "fake_fire_event"):
            d.fake_fire_event.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.c_int]
            d.fake_complete_operation.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_int]
        if hasattr(d, "fake_fire_notification"):
            d.fake_fire_notification.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int32, ctypes.c_void_p,
                                                 ctypes.c_int]

    def reset(self) -> None:
        self.dll.fake_reset()

    def set_result(self, function: str, hresult: int = 0, result: str | None = None,
                   output: str | None = None) -> None:
        """Make `function` return `hresult` (as int32), with `result` / `output` as its out-documents."""
        hr = hresult - (1 << 32) if hresult & 0x80000000 else hresult
        res, out = utf16(result), utf16(output)
        self.dll.fake_set_result(function.encode(), hr, res, out)

    def queue_result(self, function: str, hresult: int = 0, result: str | None = None,
                     output: str | None = None) -> None:
        """Make only the next call of `function` answer so (queued answers go first, in order), then the standing
        one (set_result) again."""
        hr = hresult - (1 << 32) if hresult & 0x80000000 else hresult
        res, out = utf16(result), utf16(output)
        self.dll.fake_queue_result(function.encode(), hr, res, out)

    def set_process_info(self, pid: int, std_input: int, std_output: int, std_error: int) -> None:
        self.dll.fake_set_process_info(pid, std_input, std_output, std_error)

    def last_call(self) -> dict[str, Any]:
        return json.loads(self.dll.fake_last_call())

    def calls(self) -> list[dict[str, Any]]:
        return json.loads(self.dll.fake_calls())

    def functions(self) -> list[str]:
        return [c["function"] for c in self.calls()]

    def registrations(self) -> int:
        return int(self.dll.fake_registration_count())

    def open_operations(self) -> int:
        return int(self.dll.fake_open_operations())

    def fire_event(self, handle: int, event_type: int, data: str | None, operation: int = 0,
                   threaded: bool = False) -> int:
        """Invoke the v2 callback registered on `handle`: 0 delivered, -1 no callback."""
        buf = utf16(data)
        return int(self.dll.fake_fire_event(handle, event_type, buf, operation or None, int(threaded)))

    def complete_operation(self, operation: int, event_type: int = 0, data: str | None = None,
                           threaded: bool = False) -> int:
        """Invoke an operation's callback: 0 delivered, -1 none (or closed)."""
        buf = utf16(data)
        return int(self.dll.fake_complete_operation(operation, event_type, buf, int(threaded)))

    def fire_notification(self, handle: int, notification_type: int, status: int, data: str | None,
                          threaded: bool = False) -> int:
        """Invoke the v1 callback registered under `handle` (a callback, system or process handle)."""
        buf = utf16(data)
        st = status - (1 << 32) if status & 0x80000000 else status
        return int(self.dll.fake_fire_notification(handle, notification_type, st, buf, int(threaded)))


class FakeJobs:
    """The test-control exports of libfakejobobject.so: named jobs with canned counters and member processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dll = d = ctypes.CDLL(str(path))
        d.fake_job_define.argtypes = [ctypes.c_char_p]
        d.fake_job_set_counters.argtypes = [ctypes.c_int, *[ctypes.c_uint64] * 2, *[ctypes.c_int64] * 2,
                                            *[ctypes.c_uint64] * 4, ctypes.c_int]
        d.fake_job_add_process.argtypes = [ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int, ctypes.c_int]
        d.fake_job_fail.argtypes = [ctypes.c_char_p, ctypes.c_uint32]
        d.fake_job_affinities.restype = ctypes.c_char_p
        d.fake_job_calls.restype = ctypes.c_char_p

    def reset(self) -> None:
        self.dll.fake_job_reset()

    def define(self, name: str) -> int:
        """A job named `name` (e.g. "\\Container_c1"), I/O tracking on; its index for the other calls."""
        return int(self.dll.fake_job_define(name.encode()))

    def set_counters(self, job: int, *, job_memory: int = 0, peak_job_memory: int = 0, user_time: int = 0,
                     kernel_time: int = 0, read_count: int = 0, read_bytes: int = 0, write_count: int = 0,
                     write_bytes: int = 0, io_tracking: bool = True) -> None:
        self.dll.fake_job_set_counters(job, job_memory, peak_job_memory, user_time, kernel_time, read_count,
                                       read_bytes, write_count, write_bytes, int(io_tracking))

    def add_process(self, job: int, pid: int, private_working_set: int = 0, *, openable: bool = True,
                    in_job: bool = True) -> None:
        self.dll.fake_job_add_process(job, pid, private_working_set, int(openable), int(in_job))

    def fail(self, function: str, code: int) -> None:
        """Make `function` fail with `code` (a Win32 error; an NTSTATUS for Nt* functions); 0 clears it."""
        self.dll.fake_job_fail(function.encode(), code)

    def affinities(self, job: int) -> list[tuple[int, int]]:
        """The (group, mask) pairs set on the job."""
        return [(g, m) for g, m in json.loads(self.dll.fake_job_affinities(job))]

    def open_handles(self) -> int:
        return int(self.dll.fake_job_open_handles())

    def calls(self) -> list[dict[str, Any]]:
        return json.loads(self.dll.fake_job_calls())

    def functions(self) -> list[str]:
        return [c["function"] for c in self.calls()]


@dataclass
class Fakes:
    """The loaded fakes of one test, with the bindings pointed at them."""

    built: Built
    com: FakeCom
    computecore: FakeDll
    computecore_old: FakeDll
    vmcompute: FakeDll
    jobs: FakeJobs

    def reset(self) -> None:
        for fake in (self.computecore, self.computecore_old, self.vmcompute):
            fake.reset()
        self.com.reset_counters()
        self.jobs.reset()


_BUILT: dict[str, Built] = {}


def build_once(directory_factory: Any) -> Built:
    """build() once per test session (`directory_factory` is pytest's tmp_path_factory)."""
    if "built" not in _BUILT:
        _BUILT["built"] = build(directory_factory.mktemp("fakehcs"))
    return _BUILT["built"]


def install(built: Built) -> Fakes:
    """Point the bindings at the fakes (set_library) and reset the fakes' records."""
    fakes = Fakes(built, FakeCom(built.com), FakeDll(built.computecore), FakeDll(built.computecore_old),
                  FakeDll(built.vmcompute), FakeJobs(built.jobobject))
    fakes.reset()
    set_library("com", built.com)
    set_library("computecore", built.computecore)
    set_library("vmcompute", built.vmcompute)
    for library in (jobobject.KERNEL32, jobobject.NTDLL):
        library.redirect(built.jobobject)
    return fakes


def uninstall() -> None:
    """Restore the bindings' default libraries."""
    for name in ("com", "computecore", "vmcompute"):
        set_library(name, None)
    for library in (jobobject.KERNEL32, jobobject.NTDLL):
        library.redirect(None)


@contextlib.contextmanager
def installed(directory_factory: Any) -> Iterator[Fakes]:
    """The fakes installed for one test; afterwards, checks that every string the fakes returned was freed
    exactly once, that no callback handler outlived its handle and that no job-object handle was left open."""
    fakes = install(build_once(directory_factory))
    REGISTRY.clear()
    try:
        yield fakes
    finally:
        leftovers = len(REGISTRY)
        REGISTRY.clear()
        uninstall()
    assert fakes.com.bad_frees() == 0, "a string was freed twice or was never allocated by the fake"
    assert fakes.com.live_allocations() == 0, "a returned string was not freed"
    assert leftovers == 0, "a callback handler outlived its handle"
    assert fakes.jobs.open_handles() == 0, "a job object or process handle was left open"
