"""hcsshim.layers: the host's cache of read-only ext4 layer images, their cache keys, and scratch disks.

Every shim on the host shares one cache (default root /var/lib/hcsshim/layers; $HCSSHIM_LAYER_CACHE or the
LayerCache constructor override it). A layer is an overlay lower directory from containerd's overlay
snapshotter (overlay whiteouts as 0:0 char devices and trusted.overlay.opaque xattrs already in place); its
image is made by hcsshim.ext4 from the directory as is, keyed by the layer's chain ID (`snapshot_keys`).

Modules: `cache` (LayerCache: acquire, release, gc), `snapshots` (chain IDs from the snapshotter's database),
`bolt` (the read-only bbolt reader that needs), `scratch` (scratch disk templates and copies), `errors`.

On-disk layout of a cache root (`<name>` is a key with its first ':' made '-': sha256:ab.. -> sha256-ab..):

    images/<name>.ext4                    a finished image: fsynced, mode 0444, renamed into place complete
    images/.<name>.ext4.<pid>.<rnd>.tmp   an image being built (also ext4.convert's `..<name>.ext4.*.tmp`);
                                          left over only by a crash, removed by gc once the key is unlocked
    locks/<name>.lock                     the key's flock: shared to record a reference on a hit, exclusive
                                          to build (others wait, then hit) and for gc to remove
    refs/<name>/h-<quoted holder>         one empty file per holder referencing the key
    gc.lock, gc.stamp                     one gc at a time per root; the stamp's mtime is maybe_gc's last run
    scratch/<size>g-<digest>.ext4         scratch templates (sparse, mode 0444), never collected
    scratch/<size>g.lock                  the flock under which a template is made

An image's mtime is its last use (set by acquire and release) and orders gc's least-recently-used pass.

The state of one key, as all processes see it (transitions under its lock):

    absent --acquire (exclusive lock, build, rename)--> cached --acquire--> referenced
    referenced --release / holder's process exits--> cached (unreferenced: stays for later runs)
    cached --gc (unused for max_unused_age, or over max_bytes; exclusive lock, no live reference)--> absent

A crash in the build leaves a temp file and the key absent; a crash while referenced leaves a stale
reference, which does not count once its process is gone (holders from `holder_for` carry the pid and its
start time) and is removed by gc.
"""

from hcsshim.layers.cache import (
    DEFAULT_MAX_FRACTION,
    DEFAULT_MAX_UNUSED_AGE,
    DEFAULT_ROOT,
    ENV_ROOT,
    GC_INTERVAL,
    Layer,
    LayerCache,
    default_root,
    holder_alive,
    holder_for,
)
from hcsshim.layers.errors import LayerError
from hcsshim.layers.scratch import make_scratch, scratch_template
from hcsshim.layers.snapshots import FALLBACK_PREFIX, directory_key, lowerdirs, snapshot_keys

__all__ = [
    "DEFAULT_MAX_FRACTION",
    "DEFAULT_MAX_UNUSED_AGE",
    "DEFAULT_ROOT",
    "ENV_ROOT",
    "FALLBACK_PREFIX",
    "GC_INTERVAL",
    "Layer",
    "LayerCache",
    "LayerError",
    "default_root",
    "directory_key",
    "holder_alive",
    "holder_for",
    "lowerdirs",
    "make_scratch",
    "scratch_template",
    "snapshot_keys",
]
