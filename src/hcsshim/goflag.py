"""Command lines parsed the way Go's `flag` package parses them, for the tools whose upstream is Go.

Go's parser accepts `-flag value`, `--flag value`, `-flag=value` and bare booleans (`-flag`, `-flag=false`),
and stops at `--` or at the first word that is not a flag; the rest are positional arguments. Unknown flags
and missing values are errors (exit status 2 in the tools), `-h`/`-help`/`--help` asks for the usage.

Standard library only and cheap to import: the shim's `start` and the guest agent parse their command lines
on critical paths (argparse alone costs ~0.3 s of a utility VM's boot under TCG).
"""

from __future__ import annotations

import sys


class FlagError(Exception):
    """A bad command line; the message is Go's wording (e.g. `flag provided but not defined: -x`)."""


class HelpRequested(Exception):
    """-h, -help or --help was given."""


class _Flag:
    __slots__ = ("choices", "default", "help", "kind", "name")  # not a dataclass: dataclasses imports inspect

    def __init__(self, name: str, kind: type, default: object, help: str,
                 choices: tuple[str, ...] | None = None) -> None:
        self.name, self.kind, self.default, self.help, self.choices = name, kind, default, help, choices


class FlagSet:
    """A set of flags (`string`, `bool`, `int`), parsed by `parse` into a namespace of attributes (dashes in
    flag names become underscores: `-log-format` -> `.log_format`)."""

    def __init__(self, prog: str, description: str = "", usage: str = "") -> None:
        self.prog = prog
        self.description = description
        self.usage_line = usage or f"{prog} [flags]"
        self._flags: dict[str, _Flag] = {}

    def string(self, name: str, default: str | None = "", help: str = "",
               choices: tuple[str, ...] | None = None) -> None:
        self._flags[name] = _Flag(name, str, default, help, choices)

    def bool(self, name: str, help: str = "") -> None:
        self._flags[name] = _Flag(name, bool, False, help)

    def int(self, name: str, default: int = 0, help: str = "") -> None:
        self._flags[name] = _Flag(name, int, default, help)

    def usage(self) -> str:
        lines = [f"Usage: {self.usage_line}"]
        if self.description:
            lines += ["", self.description]
        lines += ["", "Flags:"]
        for f in self._flags.values():
            arg = "" if f.kind is bool else (" int" if f.kind is int else " string")
            extra = []
            if f.choices:
                extra.append("one of " + ", ".join(f.choices))
            if f.kind is not bool and f.default not in ("", None, 0):
                extra.append(f"default {f.default}")
            tail = f" ({'; '.join(extra)})" if extra else ""
            lines.append(f"  -{f.name}{arg}\n        {f.help}{tail}")
        return "\n".join(lines) + "\n"

    def parse(self, argv: list[str]) -> tuple[_Namespace, list[str]]:
        """(the flags' values, the positional arguments); FlagError or HelpRequested."""
        values: dict[str, object] = {f.name.replace("-", "_"): f.default for f in self._flags.values()}
        i = 0
        while i < len(argv):
            arg = argv[i]
            if arg == "--":
                i += 1
                break
            if not arg.startswith("-") or arg == "-":
                break
            name = arg[2:] if arg.startswith("--") else arg[1:]
            value: str | None = None
            if "=" in name:
                name, value = name.split("=", 1)
            if name in ("h", "help") and name not in self._flags:
                raise HelpRequested
            flag = self._flags.get(name)
            if flag is None:
                raise FlagError(f"flag provided but not defined: -{name}")
            if flag.kind is bool:
                values[name.replace("-", "_")] = True if value is None else _parse_bool(name, value)
            else:
                if value is None:
                    i += 1
                    if i >= len(argv):
                        raise FlagError(f"flag needs an argument: -{name}")
                    value = argv[i]
                if flag.kind is int:
                    try:
                        values[name.replace("-", "_")] = int(value, 0)
                    except ValueError:
                        raise FlagError(f"invalid value {value!r} for flag -{name}: parse error") from None
                else:
                    if flag.choices and value not in flag.choices:
                        raise FlagError(f"invalid value {value!r} for flag -{name}: "
                                        f"one of {', '.join(flag.choices)}")
                    values[name.replace("-", "_")] = value
            i += 1
        return _Namespace(values), argv[i:]

    def parse_or_exit(self, argv: list[str] | None = None) -> tuple[_Namespace, list[str]]:
        """parse(), printing the usage and exiting 0 for help, or the error and the usage with exit 2."""
        try:
            return self.parse(sys.argv[1:] if argv is None else argv)
        except HelpRequested:
            sys.stdout.write(self.usage())
            raise SystemExit(0) from None
        except FlagError as exc:
            sys.stderr.write(f"{exc}\n{self.usage()}")
            raise SystemExit(2) from None


class _Namespace:
    def __init__(self, values: dict[str, object]) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Namespace({self.__dict__})"


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise FlagError(f"invalid boolean value {value!r} for flag -{name}")
