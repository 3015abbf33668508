"""Test harness shipped with the package: a private containerd, a locally built busybox image, the demo.

Used by `make demo` (`python -m hcsshim.testing.demo`), the integration tests (tests/conftest.py) and the
benchmark (bench/shim.py). Standard library only; never imported by the shim, the library or the guest.

* `Containerd` (containerd.py): a private containerd 1.6 under a work directory, `ctr` bound to it, and a
  `stop()` that leaves nothing behind; `leftovers()` lists what a test failed to clean up.
* `build_busybox_image` / `busybox_rootfs` (images.py): a deterministic busybox OCI image-layout tar for
  `ctr images import`, or the same tree as a directory for `ctr run --rootfs`.
"""

from hcsshim.testing.containerd import Containerd, ContainerdError, CtrError
from hcsshim.testing.images import DEFAULT_REF, build_busybox_image, busybox_rootfs, image_digest

__all__ = [
    "DEFAULT_REF",
    "Containerd",
    "ContainerdError",
    "CtrError",
    "build_busybox_image",
    "busybox_rootfs",
    "image_digest",
]
