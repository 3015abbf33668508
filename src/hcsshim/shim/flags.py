"""Command-line flags of containerd-shim-runhcs-v1, parsed the way Go's `flag` package does (hcsshim.goflag).

containerd calls the shim as `<shim> -namespace NS -address A -publish-binary B -id ID [-bundle D] [-debug]
ACTION`. Go's parser accepts `-flag value`, `--flag value`, `-flag=value` and bare boolean flags, and stops at the
first word that is not a flag: that word is the action. This module is imported on the `start` path, which is
on the critical path of every `ctr run`, so it uses nothing beyond the interpreter's core.
"""

from __future__ import annotations

import os
import sys

from hcsshim.goflag import FlagError, FlagSet, HelpRequested

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


def _flag_set() -> FlagSet:
    fs = FlagSet("containerd-shim-runhcs-v1")
    for name in STRING_FLAGS:
        fs.string(name)
    fs.bool("debug")
    fs.bool("v")
    return fs


def parse(argv: list[str]) -> Flags:
    """Parses argv (without the program name)."""
    try:
        values, rest = _flag_set().parse(argv)
    except FlagError as exc:
        raise UsageError(str(exc)) from None
    except HelpRequested:
        flags = Flags()
        flags.help = True
        return flags
    flags = Flags()
    for name in STRING_FLAGS:
        attr = name.replace("-", "_")
        setattr(flags, attr, getattr(values, attr))
    flags.debug = values.debug
    flags.version = values.v
    if rest:
        flags.action, flags.args = rest[0], rest[1:]
    return flags


def usage_exit(message: str) -> None:
    sys.stderr.write(f"containerd-shim-runhcs-v1: {message}\n")
    sys.stderr.flush()
    os._exit(2)
