"""The `gcs` command line: help, bad flags and transports (no traceback), the bridge on stdin/stdout
(-use-inouterr), JSON logs, and DumpStacks/GetProperties through that bridge."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hcsshim.gcs import GuestConnection
from hcsshim.transport import FdConn, UnixTransport

pytestmark = pytest.mark.integration

GCS = [sys.executable, "-m", "hcsshim.guest.main"]


def test_help_names_the_flags_and_exits_zero() -> None:
    out = subprocess.run([*GCS, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for flag in ("-v4", "-loglevel", "-logfile", "-log-format", "-use-inouterr", "-transport", "-root"):
        assert flag in out.stdout


def test_bad_flags_exit_2_and_a_bad_transport_exits_1_without_a_traceback(tmp_path: Path) -> None:
    out = subprocess.run([*GCS, "-loglevel", "loud"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "invalid value 'loud' for flag -loglevel" in out.stderr
    out = subprocess.run([*GCS, "-transport", "tcp:1", "-root", str(tmp_path / "r")], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1
    assert "transport 'tcp:1'" in out.stderr and "Traceback" not in out.stderr


def test_the_bridge_runs_on_stdin_and_stdout_with_json_logs_on_stderr(tmp_path: Path) -> None:
    log_path = tmp_path / "stderr.log"

    async def main() -> None:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([*GCS, "-v4", "-use-inouterr", "-log-format", "json", "-loglevel", "info",
                                     "-transport", f"unix:{tmp_path}", "-root", str(tmp_path / "root")],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        assert proc.stdin is not None and proc.stdout is not None
        conn = FdConn(os.dup(proc.stdout.fileno()), os.dup(proc.stdin.fileno()))
        proc.stdin.close()
        proc.stdout.close()
        gc = GuestConnection(conn, UnixTransport(str(tmp_path)))
        gc.start()
        await gc.negotiate()
        assert gc.capabilities["RuntimeOsType"] == "Linux"
        stacks = await gc.dump_stacks()
        assert "task" in stacks and len(stacks) < 65536
        u = await gc.exec_in_uvm(["sh", "-c", "echo via stdio ports"])
        assert await u.communicate() == (b"via stdio ports\n", b"")
        assert await u.wait(10) == 0
        await gc.shutdown()
        await gc.wait_closed(10)
        await gc.close()
        conn.close()
        assert proc.wait(20) == 0
        logs = log_path.read_text().splitlines()
        entries = [json.loads(line) for line in logs if line.strip()]
        assert any(e["msg"] == "GCS started" and e["level"] == "info" and "time" in e for e in entries)

    asyncio.run(asyncio.wait_for(main(), 60))
