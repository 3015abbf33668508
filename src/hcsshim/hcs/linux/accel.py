"""Choosing QEMU's accelerator: KVM when a guest really runs on it, TCG otherwise.

/dev/kvm can exist and open fine while guests hang on it (nested virtualization without the CPU features the
guest kernel wants: the machines this project is developed on are like that). A tiny real-mode probe passes
there, so the probe boots the real guest kernel under KVM with `earlyprintk` on the serial port and waits a
bounded time for its first byte: a kernel that prints under KVM boots under KVM. The answer is cached for the
host's boot (keyed by /proc/sys/kernel/random/boot_id and the QEMU binary) in /run/hcsshim/accel.json, so
the probe costs at most PROBE_TIMEOUT once per host boot.

HCSSHIM_UVM_ACCEL=kvm|tcg overrides the probe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import time

from hcsshim.runc.reaper import DEVNULL, PIPE, PidfdWaiter, Reaper

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0  # seconds for the guest kernel's first serial byte under KVM (it takes ~0.1 s when KVM works)
CACHE = "/run/hcsshim/accel.json"
ENV = "HCSSHIM_UVM_ACCEL"


def qemu_binary() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        raise FileNotFoundError("qemu-system-x86_64 not found (install Debian's qemu-system-x86; `make setup` does)")
    return path


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _cache_key(qemu: str) -> str:
    st = os.stat(qemu)
    return f"{_boot_id()}:{qemu}:{st.st_size}:{st.st_mtime_ns}"


async def choose(kernel: str, *, waiter: Reaper | PidfdWaiter, qemu: str | None = None,
                 timeout: float = PROBE_TIMEOUT) -> str:
    """'kvm' or 'tcg' for booting `kernel` here; `waiter` spawns and reaps the probe."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    qemu = qemu or qemu_binary()
    key = _cache_key(qemu)
    try:
        with open(CACHE) as f:
            cached = json.load(f)
        if cached.get("key") == key and cached.get("accel") in ("kvm", "tcg"):
            return cached["accel"]
    except (OSError, ValueError, AttributeError):
        pass
    accel = "kvm" if await kvm_boots(kernel, waiter=waiter, qemu=qemu, timeout=timeout) else "tcg"
    try:
        os.makedirs(os.path.dirname(CACHE), mode=0o755, exist_ok=True)
        tmp = f"{CACHE}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"key": key, "accel": accel, "probed": time.time()}, f)
        os.replace(tmp, CACHE)
    except OSError as exc:
        log.debug("cannot cache the accelerator choice in %s: %s", CACHE, exc)
    log.info("uvm accelerator: %s (probed with %s)", accel, kernel)
    return accel


async def kvm_boots(kernel: str, *, waiter: Reaper | PidfdWaiter, qemu: str | None = None,
                    timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether `kernel` prints on its serial console within `timeout` seconds under KVM."""
    if not os.path.isfile(kernel):
        raise FileNotFoundError(f"uvm accelerator probe: kernel {kernel}: no such file")
    argv = [qemu or qemu_binary(), "-machine", "q35,accel=kvm", "-m", "128", "-smp", "1", "-nodefaults",
            "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio", "-kernel", kernel,
            "-append", "earlyprintk=ttyS0 console=ttyS0 panic=-1 rdinit=/hcsshim-no-init"]
    loop = asyncio.get_running_loop()
    child = await waiter.spawn(argv, stdin=DEVNULL, stdout=PIPE, stderr=DEVNULL)
    printed: asyncio.Future[bool] = loop.create_future()
    fd = child.stdout
    assert fd is not None

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not printed.done():
            printed.set_result(bool(data))  # output: the kernel runs; EOF: QEMU gave up on KVM

    loop.add_reader(fd, readable)
    try:
        return await asyncio.wait_for(printed, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await child.wait()
        child.close()
