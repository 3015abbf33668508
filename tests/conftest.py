"""Shared fixtures: the busybox image (built once per session) and a fresh private containerd per test.

Integration tests need root, containerd, ctr, runc and busybox (`make setup` installs them); when any is
missing the fixtures fail with a message saying what is missing instead of skipping silently. Tests under
tests/integration are marked `integration` automatically.

Set HCSSHIM_CONTAINERD_DEBUG=1 to run the private containerd at debug level (it then passes -debug to shims);
its log is in the CtrError of any failing ctr command.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hcsshim.testing.containerd import Containerd, ContainerdBinaries
from hcsshim.testing.images import DEFAULT_REF, build_busybox_image

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

VENV_BIN = Path(sys.executable).parent  # holds containerd-shim-runhcs-v1

# Utility VM templates (hcsshim.uvm.template) of this test session: private, shared by its tests (and the shims of
# their containerd instances, which inherit the environment); a test that builds its own sets its own store.
os.environ.setdefault("HCSSHIM_TEMPLATE_CACHE", tempfile.mkdtemp(prefix="hcsshim-test-templates-"))
REQUIRED_PROGRAMS = ("containerd", "ctr", "runc", "containerd-shim-runc-v2")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration = Path(__file__).parent / "integration"
    for item in items:
        if integration in item.path.parents:
            item.add_marker(pytest.mark.integration)


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether a test's body failed, so teardown does not pile a leftovers error on top."""
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


def require_integration_host() -> None:
    """Fail (not skip) the test when this host cannot run containerd integration tests."""
    problems = []
    if os.geteuid() != 0:
        problems.append("integration tests need root (containerd, runc and mounts)")
    missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
    if missing:
        problems.append(f"missing programs: {', '.join(missing)} (install Debian's containerd and runc)")
    if not os.path.exists("/bin/busybox"):
        problems.append("missing /bin/busybox (install Debian's busybox-static)")
    if problems:
        pytest.fail("; ".join(problems) + " -- `make setup` installs what is needed", pytrace=False)


@pytest.fixture(scope="session")
def busybox_image_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox OCI image-layout tar (named DEFAULT_REF), built once per session."""
    if not os.path.exists("/bin/busybox"):
        pytest.fail("missing /bin/busybox (install busybox-static; `make setup` does)", pytrace=False)
    tar = tmp_path_factory.mktemp("image") / "busybox.tar"
    build_busybox_image(tar, DEFAULT_REF)
    return tar


@pytest.fixture(scope="session")
def busybox_ref(busybox_image_tar: Path) -> str:
    """The image reference of busybox_image_tar, as imported into the `containerd` fixture."""
    return DEFAULT_REF


def private_containerd(request: pytest.FixtureRequest, workdir: Path, image_tar: Path, ref: str,
                       build: ContainerdBinaries | None = None) -> Iterator[Containerd]:
    """A fresh private containerd (the system's, or `build`) with our shim first on its PATH and the image
    imported; afterwards the test must have left nothing behind (no shim, container, mount, bundle or socket):
    that is asserted before stop() forcibly cleans up whatever remains."""
    require_integration_host()
    debug = os.environ.get("HCSSHIM_CONTAINERD_DEBUG", "") not in ("", "0")
    cd = Containerd(workdir, path_prepend=[str(VENV_BIN)], debug=debug, build=build)
    try:
        cd.start()
        cd.import_image(image_tar, ref)
        yield cd
        leftovers = cd.leftovers()
    finally:
        cd.stop()
    if leftovers:
        message = "the test left these behind:\n  " + "\n  ".join(leftovers)
        if request.node.stash.get(_CALL_FAILED, False):
            request.node.add_report_section("teardown", "leftovers", message)
        else:
            pytest.fail(message, pytrace=False)


@pytest.fixture
def containerd(request: pytest.FixtureRequest, tmp_path: Path, busybox_image_tar: Path,
               busybox_ref: str) -> Iterator[Containerd]:
    """A fresh private containerd (the system's 1.6) with our shim first on its PATH and the busybox image
    imported (private_containerd); tests/integration/test_containerd_matrix.py overrides it with 1.7 and 2.x."""
    yield from private_containerd(request, tmp_path / "containerd", busybox_image_tar, busybox_ref)


@pytest.fixture
def new_id() -> Callable[[str], str]:
    """Make container ids unique on this host: runc's root and cgroup paths are shared between instances."""

    def make(prefix: str = "c") -> str:
        return f"{prefix}-{secrets.token_hex(4)}"

    return make


@pytest.fixture(scope="session")
def boot_files() -> Path:
    """The default boot files (`make all`'s output, default Debian base) for this checkout's guest code, where the
    shim finds them without BootFilesRootPath: `make setup` installs them, and this rebuilds them when the guest's
    sources changed (hcsshim.boot.installed); $HCSSHIM_TEST_BOOT_FILES names a prebuilt output to use instead."""
    from hcsshim.testing.bootfiles import default_bootfiles

    prebuilt = os.environ.get("HCSSHIM_TEST_BOOT_FILES")
    return Path(prebuilt) if prebuilt else default_bootfiles()


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A busybox root file system directory for containers the GCS runs with runc (one per test module)."""
    from hcsshim.testing.rootfs import busybox_rootfs

    if os.geteuid() != 0 or not os.path.exists("/bin/busybox"):
        pytest.fail("GCS integration tests need root and /bin/busybox (`make setup`)", pytrace=False)
    return str(busybox_rootfs(tmp_path_factory.mktemp("gcs") / "rootfs"))
