"""What the host tells a utility VM's GCS about the present when it negotiates, applied to the guest (with
-sync-host-state only: a GCS run on a host for tests must never set that host's clock or name).

A VM restored from a template (hcsshim.uvm.template) wakes up with the template's wall clock (minutes behind), its
kernel's and the agent's random state, and its hostname; every such VM would be the same machine. The host's
NegotiateProtocol carries `HostState` (hcsshim.bridge.messages), and the agent, on every new bridge connection:

* sets CLOCK_REALTIME to the host's time (the request's one-way latency is the error: milliseconds);
* mixes the host's random bytes into the kernel's pool and credits them (RNDADDENTROPY), on top of the kernel's
  own reseed that QEMU's vmgenid device triggers on restore;
* reseeds Python's `random` and tempfile's name generator, which were seeded in the template;
* sets the hostname the host chose (the VM's id).

Each step that fails is logged and skipped: a clock the agent may not set is no reason to refuse the host.
Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import logging
import os
import socket
import struct
import sys
import time
from typing import Any

from hcsshim import libc

log = logging.getLogger(__name__)

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
CLOCK_REALTIME = 0
MAX_ENTROPY = 512


def apply(state: dict[str, Any]) -> None:
    """Applies a HostState object (see the module docstring); unknown or malformed parts are ignored."""
    now = state.get("UnixNano")
    if isinstance(now, int) and now > 0:
        _step("set the clock", _set_clock, now)
    entropy = state.get("Entropy")
    if isinstance(entropy, str) and entropy:
        _step("add the host's entropy", _add_entropy, entropy)
    _reseed_python()
    name = state.get("Hostname")
    if isinstance(name, str) and name:
        _step("set the hostname", socket.sethostname, name[:64])


def _reseed_python() -> None:
    """random and tempfile's name generator, when the template had imported them (else they seed themselves
    when first imported, which is after the restore)."""
    if (random := sys.modules.get("random")) is not None:
        random.seed()
    if (tempfile := sys.modules.get("tempfile")) is not None:
        tempfile._name_sequence = None  # re-made, and seeded, on the next temp name


def _step(what: str, fn: Any, arg: Any) -> None:
    try:
        fn(arg)
    except (OSError, ValueError, binascii.Error) as e:
        log.warning("host state: cannot %s: %s", what, e)


def _set_clock(unix_ns: int) -> None:
    import ctypes  # only here: the agent's start-up is on the VM's boot path, and this runs after it

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    before = time.time_ns()
    ts = Timespec(unix_ns // 1_000_000_000, unix_ns % 1_000_000_000)
    if libc.libc().clock_settime(CLOCK_REALTIME, ctypes.byref(ts)) != 0:
        raise OSError(libc.errno(), os.strerror(libc.errno()))
    if abs(unix_ns - before) > 1_000_000_000:
        log.info("host state: clock stepped", extra={"by_seconds": round((unix_ns - before) / 1e9, 3)})


def _add_entropy(b64: str) -> None:
    data = base64.b64decode(b64, validate=True)[:MAX_ENTROPY]
    data += b"\0" * (-len(data) % 4)
    info = struct.pack("ii", len(data) * 8, len(data)) + data  # struct rand_pool_info
    fd = os.open("/dev/random", os.O_WRONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, info)
    finally:
        os.close(fd)
