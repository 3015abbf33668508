"""Entry point of containerd-shim-runhcs-v1: flags, dispatch to start/delete/serve, exit codes.

Exit codes: 0 success, 1 the action failed (the message is on stderr, which containerd shows the user),
2 a bad command line.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    # The shim starts for every task: cache our bytecode even where PYTHONDONTWRITEBYTECODE is set.
    sys.dont_write_bytecode = False
    from hcsshim.shim import flags as flagmod

    try:
        flags = flagmod.parse(sys.argv[1:] if argv is None else argv)
    except flagmod.UsageError as exc:
        flagmod.usage_exit(f"{exc}\n\n{flagmod.USAGE}")
        return 2
    if flags.help:
        sys.stdout.write(flagmod.USAGE)
        return 0
    if flags.version:
        from hcsshim import __version__

        sys.stdout.write(f"containerd-shim-runhcs-v1:\n  Version: {__version__}\n  Runtime: runc (process isolation)\n")
        return 0
    from hcsshim.shim import manager

    try:
        return manager.main_dispatch(flags)
    except flagmod.UsageError as exc:
        flagmod.usage_exit(str(exc))
    except (manager.StartError, OSError) as exc:
        sys.stderr.write(f"containerd-shim-runhcs-v1 {flags.action} {flags.id}: {exc}\n")
        sys.stderr.flush()
        os._exit(1)
    return 1


if __name__ == "__main__":
    sys.exit(main())
