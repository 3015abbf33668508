"""The core shim tests again under containerd 1.7.x and 2.x (Debian 13's and unstable's packages, fetched by
`make setup` into build/containerd: hcsshim.testing.containerds), beside the full suite under the system's 1.6.20.

The tests are test_shim.py's and test_shim_lcow.py's own functions, collected here a second time: this module's
`containerd` fixture, parametrized by series, replaces the conftest's for them. A series that was not fetched (no
network at setup, or the archive dropped it) fails every test of it with hcsshim.testing.containerds' message
naming what is missing and how to get it; nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import private_containerd
from test_shim import (  # noqa: F401 - collected here, under this module's fixture
    test_detached_task_answers_ls_ps_pause_resume_metrics_kill_and_delete,
    test_exec_in_a_running_task_returns_its_output_and_exit_code,
    test_exit_code_of_the_container_is_ctr_exit_code,
    test_kill_9_of_a_shim_is_cleaned_up_by_delete,
    test_sigkill_of_a_long_task_gives_137,
    test_stdin_of_10_mib_comes_back_identical_through_cat,
    test_tasks_survive_a_containerd_restart_and_are_served_again,
    test_terminal_mode_gives_the_process_a_tty,
    test_the_trial_prints_hello_world,
)
from test_shim_lcow import (  # noqa: F401
    test_the_trial_in_a_utility_vm_prints_hello_world_on_the_boot_files_kernel,
    vm_config,
)

from hcsshim.testing import containerds
from hcsshim.testing.containerd import Containerd

SERIES = ("1.7", "2")


@pytest.fixture(params=SERIES, ids=[f"containerd-{s}" for s in SERIES])
def containerd(request: pytest.FixtureRequest, tmp_path: Path, busybox_image_tar: Path,
               busybox_ref: str) -> Iterator[Containerd]:
    try:
        build = containerds.find(request.param)
    except containerds.ContainerdUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    cd = None
    for cd in private_containerd(request, tmp_path / "containerd", busybox_image_tar, busybox_ref, build=build):
        assert cd.version == build.version
        yield cd


def test_each_series_is_the_version_recorded_and_answers_as_such(containerd: Containerd) -> None:
    out = containerd.ctr("version").stdout.decode()
    series = "2." if containerd.major >= 2 else "1.7."
    assert f"Version:  {series}" in out or f"Version: {series}" in out, out
    assert containerd.config.read_text().startswith(f"version = {3 if containerd.major >= 2 else 2}\n")
