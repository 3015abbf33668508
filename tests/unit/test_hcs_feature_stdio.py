"""Feature C8 of the HCS library (spec 11): a process's close_stdout and close_stderr close the local pipe ends and
send nothing to HCS (upstream's Process.CloseStdout/CloseStderr), on the Windows backend against the fake
computecore (tests/fakehcs)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import fakehcs
import pytest

from hcsshim.hcs import schema2
from hcsshim.hcs.system import create_compute_system
from hcsshim.hcs.windows import WindowsBackend

PROPS = {"Id": "c1", "SystemType": "Container", "RuntimeOsType": "Linux", "Owner": "Tester"}


@pytest.fixture
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fakehcs.FakeDll]:
    with fakehcs.installed(tmp_path_factory) as installed:
        yield installed.computecore
        assert installed.computecore.open_operations() == 0, "an HCS operation was left open"


def test_close_stdout_and_close_stderr_close_only_the_local_pipes_once(fake: fakehcs.FakeDll) -> None:
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()

    async def body() -> None:
        fake.set_result("HcsWaitForOperationResult", 0, json.dumps(PROPS))
        async with await create_compute_system("c1", "{}", backend=WindowsBackend()) as system:
            fake.set_process_info(9, stdin_w, stdout_r, stderr_r)
            process = await system.create_process(schema2.ProcessParameters(
                command_line="cat", create_std_in_pipe=True, create_std_out_pipe=True, create_std_err_pipe=True))
            stdin, stdout, stderr = process.stdio()
            assert stdin is not None and stdout is not None and stderr is not None
            calls = len(fake.calls())
            process.close_stdout()
            assert stdout.closed and not stderr.closed and process.stdio() == (stdin, None, stderr)
            process.close_stderr()
            assert stderr.closed and process.stdio() == (stdin, None, None)
            process.close_stdout()  # again: a no-op
            process.close_stderr()
            assert len(fake.calls()) == calls  # nothing reached HCS
            await process.close()
            assert stdin.closed
            process.close_stdout()  # after close: still a no-op
            assert fake.functions()[-1] == "HcsCloseProcess"

    try:
        asyncio.run(body())
    finally:
        for fd in (stdin_r, stdout_w, stderr_w):
            os.close(fd)
