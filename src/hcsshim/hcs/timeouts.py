"""The watchdog timeouts of hcsshim (upstream internal/timeout, spec 1.1): their defaults and the HCSSHIM_TIMEOUT_*
environment overrides.

Each timeout defaults to 4 minutes except TestDRetryLoop (5 s) and GCSConnection (2 min). An environment variable
overrides one with a whole number of seconds, read as Go's strconv.Atoi reads it (an optional sign, decimal digits,
nothing else); a value that is not such a number, or is not positive, is ignored and the default kept. As
upstream does once at start-up, `TIMEOUTS` is read from the environment at import; `load(environ)` reads any
mapping again. Values are seconds (floats, ready for asyncio.timeout).

Deviation: a count of seconds too large for Go's time.Duration (over 9223372036 s, ~292 years) would overflow
upstream; here it is ignored like any other bad value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

__all__ = ["DEFAULTS", "ENV", "TIMEOUTS", "Timeouts", "duration_from_environment", "load"]

_MINUTE = 60.0
_MAX_SECONDS = ((1 << 63) - 1) // 1_000_000_000  # the largest whole number of seconds a time.Duration holds
_ATOI = re.compile(r"[+-]?[0-9]+\Z")


@dataclass(frozen=True)
class Timeouts:
    """Every watchdog timeout, in seconds (upstream's variable in each field's comment)."""

    system_create: float = 4 * _MINUTE  # SystemCreate: creating a compute system
    system_start: float = 4 * _MINUTE  # SystemStart: starting one
    system_pause: float = 4 * _MINUTE  # SystemPause
    system_resume: float = 4 * _MINUTE  # SystemResume
    system_save: float = 4 * _MINUTE  # SystemSave
    syscall_watcher: float = 4 * _MINUTE  # SyscallWatcher: before warning of a platform call that seems stuck
    tar2vhd: float = 4 * _MINUTE  # Tar2VHD
    external_command_start: float = 4 * _MINUTE  # ExternalCommandToStart
    external_command_complete: float = 4 * _MINUTE  # ExternalCommandToComplete: its stdio copied
    testd_retry_loop: float = 5.0  # TestDRetryLoop: a SCSI disk coming online in LCOW
    gcs_connection: float = 2 * _MINUTE  # GCSConnectionTimeout: the GCS (and entropy, log) connection after boot


DEFAULTS = Timeouts()

ENV: dict[str, str] = {
    "system_create": "HCSSHIM_TIMEOUT_SYSTEMCREATE",
    "system_start": "HCSSHIM_TIMEOUT_SYSTEMSTART",
    "system_pause": "HCSSHIM_TIMEOUT_SYSTEMPAUSE",
    "system_resume": "HCSSHIM_TIMEOUT_SYSTEMRESUME",
    "system_save": "HCSSHIM_TIMEOUT_SYSTEMSAVE",
    "syscall_watcher": "HCSSHIM_TIMEOUT_SYSCALLWATCHER",
    "tar2vhd": "HCSSHIM_TIMEOUT_TAR2VHD",
    "external_command_start": "HCSSHIM_TIMEOUT_EXTERNALCOMMANDSTART",
    "external_command_complete": "HCSSHIM_TIMEOUT_EXTERNALCOMMANDCOMPLETE",
    "testd_retry_loop": "HCSSHIM_TIMEOUT_TESTDRETRYLOOP",
    "gcs_connection": "HCSSHIM_TIMEOUT_GCSCONNECTION",
}


def duration_from_environment(name: str, default: float, environ: Mapping[str, str] | None = None) -> float:
    """The timeout environment variable `name` sets, in seconds, or `default` when it is unset, empty, not a
    whole number or not positive."""
    text = (os.environ if environ is None else environ).get(name, "")
    if _ATOI.match(text):
        seconds = int(text)
        if 0 < seconds <= _MAX_SECONDS:
            return float(seconds)
    return default


def load(environ: Mapping[str, str] | None = None) -> Timeouts:
    """The timeouts with the overrides of `environ` (os.environ when None) applied."""
    return Timeouts(**{f.name: duration_from_environment(ENV[f.name], getattr(DEFAULTS, f.name), environ)
                       for f in fields(Timeouts)})


TIMEOUTS = load()
