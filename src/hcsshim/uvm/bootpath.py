"""Where a utility VM's boot files are found when nobody names a directory (upstream: `<shim dir>\\LinuxBootFiles`,
else `%ProgramFiles%\\Linux Containers`).

Here: `<directory of the running program>/LinuxBootFiles` when it exists, else `<prefix>/share/hcsshim/LinuxBootFiles`
(prefix: the Python environment hcsshim is installed in, e.g. `.venv`), which `make setup` fills
(hcsshim.boot.installed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

INSTALL_COMMAND = "make setup (or: python -m hcsshim.cmd.bootfiles install)"


def installed_boot_files_path() -> Path:
    return Path(sys.prefix) / "share" / "hcsshim" / "LinuxBootFiles"


def default_boot_files(program: str | None = None) -> str:
    """`<program dir>/LinuxBootFiles` when it exists (upstream's rule), else the installed default."""
    beside = os.path.join(os.path.dirname(os.path.abspath(program or sys.argv[0])), "LinuxBootFiles")
    return beside if os.path.isdir(beside) else str(installed_boot_files_path())
