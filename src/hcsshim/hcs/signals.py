"""Signal validation and mapping (upstream internal/signals): a signal asked of a container process, as a number
or a name, checked against what the guest can do and turned into the options document Process.signal sends, or
into None, "terminate the process instead" (Process.kill).

LCOW (a Linux guest): the signal is one of the Linux signal table's (`SIGNAL_MAP_LCOW`: "TERM" 15, "KILL" 9,
"USR1" 10, ...; names without the SIG prefix, as upstream) and the document is ``{"Signal": 15}``
(`SignalProcessOptionsLCOW`).

WCOW (a Windows guest): the console control events (`CTRL_C` 0 "CtrlC", `CTRL_BREAK` 1 "CtrlBreak", `CTRL_CLOSE`
2 "CtrlClose", `CTRL_LOGOFF` 5 "CtrlLogOff", `CTRL_SHUTDOWN` 6 "CtrlShutdown"), plus the Linux SIGTERM, which
becomes CtrlShutdown, and SIGKILL, which means terminate (None). The document is ``{"Signal": "CtrlShutdown"}``
(`SignalProcessOptionsWCOW`).

`signals_supported` is whether the guest can signal processes at all (schema1's GuestDefinedCapabilities
SignalProcessSupported; RS5 and later). When it cannot, only a kill is possible: TERM and KILL (and 6,
CtrlShutdown) are accepted and give None, anything else is refused. An empty signal string is the default
signal: SIGTERM for LCOW, CtrlShutdown for WCOW (None when signals are not supported).

| call | input | result |
|---|---|---|
| `validate_lcow(n, supported)` | an int | SignalProcessOptionsLCOW, or None (kill) |
| `validate_wcow(n, supported)` | an int | SignalProcessOptionsWCOW, or None (kill / terminate) |
| `validate_sigstr_lcow(s, supported)` | "", a decimal number or a name (any case) | as validate_lcow |
| `validate_sigstr_wcow(s, supported)` | "", a decimal number or a name (any case) | as validate_wcow |

A signal the rules refuse raises ErrInvalidSignal ("invalid signal value", upstream's message), which is also a
ValueError. Numbers in strings are read as Go's strconv.Atoi reads them (ASCII digits, an optional sign, int64);
names are upper-cased rune by rune as Go's strings.ToUpper does (so "ﬆop" is not "STOP"). Upstream keeps the two
documents in guestresource; they are here because nothing else in the project speaks them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from hcsshim.gojson import I64, STR, Struct, field
from hcsshim.hcs.errors import SentinelError

__all__ = [
    "CTRL_BREAK",
    "CTRL_C",
    "CTRL_CLOSE",
    "CTRL_LOGOFF",
    "CTRL_SHUTDOWN",
    "SIGKILL",
    "SIGNAL_MAP_LCOW",
    "SIGNAL_VALUES_WCOW",
    "SIGNAL_VALUE_WCOW_CTRL_BREAK",
    "SIGNAL_VALUE_WCOW_CTRL_C",
    "SIGNAL_VALUE_WCOW_CTRL_CLOSE",
    "SIGNAL_VALUE_WCOW_CTRL_LOGOFF",
    "SIGNAL_VALUE_WCOW_CTRL_SHUTDOWN",
    "SIGTERM",
    "ErrInvalidSignal",
    "SignalProcessOptionsLCOW",
    "SignalProcessOptionsWCOW",
    "validate_lcow",
    "validate_sigstr_lcow",
    "validate_sigstr_wcow",
    "validate_wcow",
]

SIGKILL = 0x9
SIGTERM = 0xF

# The Linux signals an LCOW guest accepts, by name without "SIG" (upstream's signalMapLcow).
SIGNAL_MAP_LCOW: Mapping[str, int] = MappingProxyType({
    "ABRT": 0x6,
    "ALRM": 0xE,
    "BUS": 0x7,
    "CHLD": 0x11,
    "CLD": 0x11,
    "CONT": 0x12,
    "FPE": 0x8,
    "HUP": 0x1,
    "ILL": 0x4,
    "INT": 0x2,
    "IO": 0x1D,
    "IOT": 0x6,
    "KILL": 0x9,
    "PIPE": 0xD,
    "POLL": 0x1D,
    "PROF": 0x1B,
    "PWR": 0x1E,
    "QUIT": 0x3,
    "SEGV": 0xB,
    "STKFLT": 0x10,
    "STOP": 0x13,
    "SYS": 0x1F,
    "TERM": 0xF,
    "TRAP": 0x5,
    "TSTP": 0x14,
    "TTIN": 0x15,
    "TTOU": 0x16,
    "URG": 0x17,
    "USR1": 0xA,
    "USR2": 0xC,
    "VTALRM": 0x1A,
    "WINCH": 0x1C,
    "XCPU": 0x18,
    "XFSZ": 0x19,
})

# The Windows console control events, by number (CTRL_C_EVENT ... CTRL_SHUTDOWN_EVENT).
CTRL_C = 0x0
CTRL_BREAK = 0x1
CTRL_CLOSE = 0x2
CTRL_LOGOFF = 0x5
CTRL_SHUTDOWN = 0x6

# guestrequest's SignalValueWCOW strings.
SIGNAL_VALUE_WCOW_CTRL_C = "CtrlC"
SIGNAL_VALUE_WCOW_CTRL_BREAK = "CtrlBreak"
SIGNAL_VALUE_WCOW_CTRL_CLOSE = "CtrlClose"
SIGNAL_VALUE_WCOW_CTRL_LOGOFF = "CtrlLogOff"
SIGNAL_VALUE_WCOW_CTRL_SHUTDOWN = "CtrlShutdown"
SIGNAL_VALUES_WCOW = (
    SIGNAL_VALUE_WCOW_CTRL_C,
    SIGNAL_VALUE_WCOW_CTRL_BREAK,
    SIGNAL_VALUE_WCOW_CTRL_CLOSE,
    SIGNAL_VALUE_WCOW_CTRL_LOGOFF,
    SIGNAL_VALUE_WCOW_CTRL_SHUTDOWN,
)

# A supported WCOW signal, by number and by upper-cased name, to its SignalValueWCOW; None is terminate.
_WCOW_BY_NUMBER: Mapping[int, str | None] = MappingProxyType({
    CTRL_C: SIGNAL_VALUE_WCOW_CTRL_C,
    CTRL_BREAK: SIGNAL_VALUE_WCOW_CTRL_BREAK,
    CTRL_CLOSE: SIGNAL_VALUE_WCOW_CTRL_CLOSE,
    CTRL_LOGOFF: SIGNAL_VALUE_WCOW_CTRL_LOGOFF,
    CTRL_SHUTDOWN: SIGNAL_VALUE_WCOW_CTRL_SHUTDOWN,
    SIGTERM: SIGNAL_VALUE_WCOW_CTRL_SHUTDOWN,  # SIGTERM is most like CtrlShutdown
    SIGKILL: None,
})
_WCOW_BY_NAME: Mapping[str, str | None] = MappingProxyType({
    "CTRLC": SIGNAL_VALUE_WCOW_CTRL_C,
    "CTRLBREAK": SIGNAL_VALUE_WCOW_CTRL_BREAK,
    "CTRLCLOSE": SIGNAL_VALUE_WCOW_CTRL_CLOSE,
    "CTRLLOGOFF": SIGNAL_VALUE_WCOW_CTRL_LOGOFF,
    "CTRLSHUTDOWN": SIGNAL_VALUE_WCOW_CTRL_SHUTDOWN,
    "TERM": SIGNAL_VALUE_WCOW_CTRL_SHUTDOWN,
    "KILL": None,
})

# The numbers a guest without signal support takes as a kill, in both flavours.
_KILL_ONLY_NUMBERS = frozenset({CTRL_SHUTDOWN, SIGTERM, SIGKILL})

_ATOI = re.compile(r"[+-]?[0-9]+\Z")
_INT64 = (-(1 << 63), (1 << 63) - 1)

_Doc = TypeVar("_Doc", bound=Struct)


class ErrInvalidSignal(SentinelError, ValueError):
    """The signal is not one the container's flavour (LCOW or WCOW) and guest accept."""

    MESSAGE = "invalid signal value"


class SignalProcessOptionsLCOW(Struct):
    """The options document of a signal to a process in a Linux guest (upstream guestresource)."""

    signal: int = field("Signal", I64)


class SignalProcessOptionsWCOW(Struct):
    """The options document of a signal to a process in a Windows guest: one of SIGNAL_VALUES_WCOW (upstream
    guestresource)."""

    signal: str = field("Signal", STR)


@dataclass(frozen=True)
class _Flavour(Generic[_Doc]):
    """One flavour's rules: the signals a signalling guest takes, by number and by upper-cased name, each to the
    value its document carries (None: terminate); the names a guest without signal support takes as a kill; the
    value of an empty signal string; and the document of a value."""

    by_number: Mapping[int, Any]
    by_name: Mapping[str, Any]
    kill_only_names: frozenset[str]
    default: Any
    document: Callable[[Any], _Doc]

    def validate(self, signal: int, signals_supported: bool) -> _Doc | None:
        if not signals_supported:
            if signal in _KILL_ONLY_NUMBERS:
                return None
            raise ErrInvalidSignal
        return self._document(self.by_number, signal)

    def validate_sigstr(self, sigstr: str, signals_supported: bool) -> _Doc | None:
        if sigstr == "":
            return self.document(self.default) if signals_supported else None
        number = _atoi(sigstr)
        if number is not None:
            return self.validate(number, signals_supported)
        name = _go_upper(sigstr)
        if not signals_supported:
            if name in self.kill_only_names:
                return None
            raise ErrInvalidSignal
        return self._document(self.by_name, name)

    def _document(self, table: Mapping[Any, Any], key: int | str) -> _Doc | None:
        if key not in table:
            raise ErrInvalidSignal
        value = table[key]
        return None if value is None else self.document(value)


_LCOW = _Flavour(
    by_number=MappingProxyType({n: n for n in SIGNAL_MAP_LCOW.values()}),
    by_name=SIGNAL_MAP_LCOW,
    kill_only_names=frozenset({"TERM", "KILL"}),
    default=SIGTERM,
    document=lambda n: SignalProcessOptionsLCOW(signal=n),
)
_WCOW = _Flavour(
    by_number=_WCOW_BY_NUMBER,
    by_name=_WCOW_BY_NAME,
    kill_only_names=frozenset({"CTRLSHUTDOWN", "TERM", "KILL"}),  # Docker sends a UNIX TERM to Windows too
    default=SIGNAL_VALUE_WCOW_CTRL_SHUTDOWN,
    document=lambda v: SignalProcessOptionsWCOW(signal=v),
)


def validate_lcow(signal: int, signals_supported: bool) -> SignalProcessOptionsLCOW | None:
    """Upstream's ValidateLCOW: the document for Linux signal number `signal`; None when the guest cannot signal
    and `signal` is one that means kill (SIGTERM, SIGKILL, 6). Raises ErrInvalidSignal otherwise."""
    return _LCOW.validate(signal, signals_supported)


def validate_wcow(signal: int, signals_supported: bool) -> SignalProcessOptionsWCOW | None:
    """Upstream's ValidateWCOW: the document for console control event (or SIGTERM) number `signal`; None for
    SIGKILL (terminate), and for every accepted signal when the guest cannot signal (kill). Raises
    ErrInvalidSignal otherwise."""
    return _WCOW.validate(signal, signals_supported)


def validate_sigstr_lcow(sigstr: str, signals_supported: bool) -> SignalProcessOptionsLCOW | None:
    """Upstream's ValidateSigstrLCOW: `sigstr` is "" (SIGTERM), a number (validate_lcow) or a name of
    SIGNAL_MAP_LCOW in any case ("term"; not "SIGTERM"). None when the guest cannot signal; raises
    ErrInvalidSignal for a signal refused."""
    return _LCOW.validate_sigstr(sigstr, signals_supported)


def validate_sigstr_wcow(sigstr: str, signals_supported: bool) -> SignalProcessOptionsWCOW | None:
    """Upstream's ValidateSigstrWCOW: `sigstr` is "" (CtrlShutdown), a number (validate_wcow) or a name in any
    case: CtrlC, CtrlBreak, CtrlClose, CtrlLogOff, CtrlShutdown, TERM (CtrlShutdown) or KILL (None: terminate).
    None for every accepted signal when the guest cannot signal; raises ErrInvalidSignal for a signal refused."""
    return _WCOW.validate_sigstr(sigstr, signals_supported)


def _atoi(s: str) -> int | None:
    """strconv.Atoi's value of `s`, or None where Atoi fails (not ASCII decimal with an optional sign, or out of
    int64's range): Python's int() would also take spaces, underscores and other scripts' digits."""
    if not _ATOI.match(s):
        return None
    n = int(s)
    return n if _INT64[0] <= n <= _INT64[1] else None


def _go_upper(s: str) -> str:
    """`s` upper-cased as strings.ToUpper does for comparing with ASCII names: character by character, one
    character staying one (dotless i is "I", but "ß" and "ﬆ" are kept, where str.upper gives "SS" and "ST")."""
    return "".join(u if len(u := c.upper()) == 1 else c for c in s)
