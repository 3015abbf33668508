"""Command-line flags of containerd-shim-runhcs-v1, parsed the way Go's `flag` package does.

containerd calls the shim as `<shim> -namespace NS -address A -publish-binary B -id ID [-bundle D] [-debug]
ACTION`. Go's parser accepts `-flag value`, `--flag value`, `-flag=value` and bare boolean flags, and stops at the
first word that is not a flag: that word is the action. This module is imported on the `start` path, which is
on the critical path of every `ctr run`, so it uses nothing beyond the interpreter's core.
"""

from __future__ import annotations

import os
import sys

USAGE = """\
Usage: containerd-shim-runhcs-v1 [flags] ACTION

containerd runtime v2 shim for io.containerd.runhcs.v1: runs containers with runc (process isolation).
containerd starts it; it is not meant to be run by hand except for `delete` cleanups.

Actions:
  start    bind the shim socket, start the shim daemon, print its address (containerd's `start`)
  delete   clean up the task -id of a dead or disconnected shim; prints a DeleteResponse (containerd's `delete`)
  serve    run the daemon in the foreground on -socket (for debugging)

Flags:
  -namespace string       namespace of the task (required)
  -address string         containerd's gRPC socket (required)
  -publish-binary string  containerd binary, for publishing events (accepted, unused: events go over ttrpc)
  -id string              task id (required)
  -bundle string          bundle directory (delete; default: the current directory)
  -socket string          serve: socket path to listen on
  -debug                  debug log level
  -v                      print the version and exit
  -h, --help              this help
"""

STRING_FLAGS = ("namespace", "address", "publish-binary", "id", "bundle", "socket")
BOOL_FLAGS = ("debug", "v", "h", "help")


class UsageError(Exception):
    """A bad command line: reported on stderr with exit status 2, as Go's flag package does."""


class Flags:
    """The parsed command line."""

    __slots__ = ("action", "address", "args", "bundle", "debug", "help", "id", "namespace",
                 "publish_binary", "socket", "version")

    def __init__(self) -> None:
        self.namespace = ""
        self.address = ""
        self.publish_binary = ""
        self.id = ""
        self.bundle = ""
        self.socket = ""
        self.debug = False
        self.version = False
        self.help = False
        self.action = ""
        self.args: list[str] = []

    def to_argv(self) -> list[str]:
        """The command line that parses back to these flags."""
        argv = []
        for name in STRING_FLAGS:
            value = getattr(self, name.replace("-", "_"))
            if value:
                argv += [f"-{name}", value]
        if self.debug:
            argv.append("-debug")
        if self.action:
            argv += ["--", self.action, *self.args] if self.action.startswith("-") else [self.action, *self.args]
        return argv

    def require(self, *names: str) -> None:
        missing = [n for n in names if not getattr(self, n.replace("-", "_"))]
        if missing:
            raise UsageError(f"{self.action or 'shim'}: missing required flag(s): "
                             + ", ".join("-" + m for m in missing))


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise UsageError(f"invalid boolean value {value!r} for flag -{name}")


def parse(argv: list[str]) -> Flags:
    """Parses argv (without the program name)."""
    flags = Flags()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name = arg.lstrip("-")
        value: str | None = None
        if "=" in name:
            name, value = name.split("=", 1)
        attr = name.replace("-", "_")
        if name in STRING_FLAGS:
            if value is None:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            setattr(flags, attr, value)
        elif name in BOOL_FLAGS:
            on = True if value is None else _parse_bool(name, value)
            if name in ("h", "help"):
                flags.help = on
            elif name == "v":
                flags.version = on
            else:
                flags.debug = on
        else:
            raise UsageError(f"flag provided but not defined: -{name}")
        i += 1
    rest = argv[i:]
    if rest:
        flags.action, flags.args = rest[0], rest[1:]
    return flags


def usage_exit(message: str) -> None:
    sys.stderr.write(f"containerd-shim-runhcs-v1: {message}\n")
    sys.stderr.flush()
    os._exit(2)
