"""cleanup_stale and the /proc readers behind it, on real processes and real bind mounts (no VM needed: the
integration test in tests/integration/test_uvm.py does it with a QEMU whose owner was SIGKILLed)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hcsshim import mount
from hcsshim.hcs.linux import procfs
from hcsshim.hcs.linux.registry import cleanup_stale


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sleep", "1000"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def run_dir_with_a_share(root: Path, vm_id: str, host_dir: Path) -> Path:
    """A run dir as a VM leaves it: a bind mount of a host directory under shares/."""
    run_dir = root / vm_id
    (run_dir / "shares" / "1").mkdir(parents=True)
    mount.mount("", str(host_dir), ["bind"], str(run_dir / "shares" / "1"))
    return run_dir


def test_nothing_to_clean_is_no_problem_and_fast(tmp_path: Path) -> None:
    t = time.monotonic()
    assert cleanup_stale(str(tmp_path), "never-made") == []
    assert time.monotonic() - t < 0.05


def test_a_live_recorded_qemu_is_killed_and_the_run_dir_unmounted_and_removed(tmp_path: Path,
                                                                             sleeper: subprocess.Popen[bytes]) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "data.txt").write_text("must survive\n")
    run_dir = run_dir_with_a_share(tmp_path / "root", "vm1", host)
    started = procfs.start_time(sleeper.pid)
    assert started is not None
    procfs.PidRecord(sleeper.pid, started).write(str(run_dir))
    assert cleanup_stale(str(tmp_path / "root"), "vm1") == []
    assert sleeper.wait(5) == -9  # SIGKILLed (a zombie until reaped here counts as gone)
    assert not run_dir.exists() and mount.mounted_under(str(run_dir)) == []
    assert (host / "data.txt").read_text() == "must survive\n"
    assert cleanup_stale(str(tmp_path / "root"), "vm1") == []  # idempotent


def test_a_recycled_pid_is_never_killed(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    run_dir = tmp_path / "vm2"
    run_dir.mkdir()
    started = procfs.start_time(sleeper.pid)
    assert started is not None
    procfs.PidRecord(sleeper.pid, started - 1).write(str(run_dir))  # same pid, another process's start time
    assert cleanup_stale(str(tmp_path), "vm2") == []
    assert sleeper.poll() is None and not run_dir.exists()


def test_an_invalid_id_is_a_problem_not_a_removal(tmp_path: Path) -> None:
    (tmp_path / "keep").mkdir()
    for bad in ("..", ".", "", "a/b"):
        assert cleanup_stale(str(tmp_path / "keep"), bad) == [
            f"clean up compute system {bad!r}: invalid compute system id"]
    assert (tmp_path / "keep").is_dir()


def test_a_pid_file_that_does_not_parse_means_no_qemu(tmp_path: Path) -> None:
    (tmp_path / "vm3").mkdir()
    (tmp_path / "vm3" / procfs.PID_FILE).write_text("{half")
    assert procfs.PidRecord.read(str(tmp_path / "vm3")) is None
    assert cleanup_stale(str(tmp_path), "vm3") == [] and not (tmp_path / "vm3").exists()


def test_stats_report_cpu_time_and_memory_of_a_process() -> None:
    busy = time.process_time() + 0.05
    while time.process_time() < busy:
        pass
    s = procfs.stats(os.getpid())
    assert s.total_runtime_ns >= 50_000_000 and s.total_runtime_100ns == s.total_runtime_ns // 100
    assert s.working_set_bytes > 1 << 20
    assert s.pss_bytes is None or 0 < s.pss_bytes <= s.working_set_bytes
    with pytest.raises(ProcessLookupError):
        procfs.stats(2**22 + 1)  # above pid_max's default: no such process
