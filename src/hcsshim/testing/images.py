"""A busybox OCI image built locally and deterministically, for tests, the demo and the benchmark.

Owns one tree (busybox, its applet symlinks, /etc/passwd, /etc/group and the empty mount points) and two
ways to lay it out:

* `build_busybox_image` writes an OCI image-layout tar (`oci-layout`, `index.json`, `blobs/sha256/...`) that
  `ctr images import` in containerd 1.6 accepts: the index names the image with both
  `io.containerd.image.name` (the full reference, which ctr uses as is) and
  `org.opencontainers.image.ref.name` (the tag, for other OCI tools).
* `busybox_rootfs` writes the same tree as a directory, for `ctr run --rootfs`.

`build_layered_image` writes a three-layer image on top of the same tree (see LAYERED_LAYERS), whose upper
layers delete a lower file with a whiteout and replace a directory with an opaque one, for the layer cache.

Every byte is fixed (mtimes, owners, entry order, gzip header), so building twice gives the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_REF",
    "LAYERED_LAYERS",
    "LAYERED_REF",
    "build_busybox_image",
    "build_layered_image",
    "busybox_rootfs",
    "chain_ids",
    "image_diff_ids",
    "image_digest",
]

DEFAULT_REF = "docker.io/hcsshim/busybox:latest"
LAYERED_REF = "docker.io/hcsshim/layered:latest"
EPOCH = 946684800  # 2000-01-01T00:00:00Z: the fixed mtime of every entry
CREATED = "2000-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Applets the tests rely on; used when `busybox --list-full` is unavailable.
REQUIRED_APPLETS = (
    "bin/sh", "bin/echo", "bin/cat", "bin/true", "bin/false", "bin/sleep", "bin/ls", "usr/bin/env",
    "usr/bin/md5sum", "usr/bin/sha256sum", "usr/bin/head", "bin/dd", "bin/ps", "usr/bin/id",
    "bin/hostname", "bin/stty", "usr/bin/wc", "usr/bin/tr", "bin/kill", "bin/mount", "bin/umount",
)

PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"
DIRS = {  # path -> mode
    "bin": 0o755, "dev": 0o755, "etc": 0o755, "proc": 0o555, "root": 0o700, "run": 0o755,
    "sbin": 0o755, "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
    "var": 0o755,
}

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class _Entry:
    """One file-system entry of the image tree: kind is 'dir', 'file' or 'symlink'."""

    __slots__ = ("data", "kind", "mode", "path", "target")

    def __init__(self, path: str, kind: str, mode: int, *, data: bytes = b"", target: str = "") -> None:
        self.path = path
        self.kind = kind
        self.mode = mode
        self.data = data
        self.target = target


def _applets(busybox: str) -> list[str]:
    """Paths (relative to /) of busybox's applets, as its --list-full reports them."""
    try:
        out = subprocess.run([busybox, "--list-full"], capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return list(REQUIRED_APPLETS)
    names = {line.strip().lstrip("/") for line in out.decode().splitlines() if line.strip()}
    names.update(REQUIRED_APPLETS)
    return sorted(n for n in names if n and n != "bin/busybox")


def _tree(busybox: str) -> list[_Entry]:
    """The image tree, sorted by path, parents before children."""
    try:
        data = Path(busybox).read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"busybox image: read {busybox}: {e.strerror}") from e
    entries = {d: _Entry(d, "dir", m) for d, m in DIRS.items()}
    entries["bin/busybox"] = _Entry("bin/busybox", "file", 0o755, data=data)
    entries["etc/passwd"] = _Entry("etc/passwd", "file", 0o644, data=PASSWD)
    entries["etc/group"] = _Entry("etc/group", "file", 0o644, data=GROUP)
    entries["etc/hostname"] = _Entry("etc/hostname", "file", 0o644, data=b"busybox\n")
    for applet in _applets(busybox):
        parent = os.path.dirname(applet)
        while parent and parent not in entries:
            entries[parent] = _Entry(parent, "dir", 0o755)
            parent = os.path.dirname(parent)
        if applet not in entries:
            entries[applet] = _Entry(applet, "symlink", 0o777, target="/bin/busybox")
    return [entries[k] for k in sorted(entries)]


def _tarinfo(name: str, kind: str, mode: int, size: int = 0, target: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}[kind]
    ti.mode = mode
    ti.size = size
    ti.linkname = target
    ti.mtime = EPOCH
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def _layer_tar(tree: list[_Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in tree:
            name = e.path + "/" if e.kind == "dir" else e.path
            tf.addfile(_tarinfo(name, e.kind, e.mode, len(e.data), e.target),
                       io.BytesIO(e.data) if e.kind == "file" else None)
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=6, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": _sha(data), "size": len(data)}


def build_busybox_image(dest: Path, ref: str = DEFAULT_REF, *, busybox: str = "/bin/busybox") -> str:
    """Write an OCI image-layout tar of the busybox tree to `dest`; return `ref` (the image's name).

    The image: one gzip'ed layer, a config with Env PATH and Cmd ["sh"] for linux/amd64, a manifest, and an
    index naming the manifest `ref`.
    """
    tree = _tree(busybox)
    layer = _layer_tar(tree)
    layer_gz = _gzip(layer)
    config = _json({
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": {"Env": [PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]},
        "history": [{"created": CREATED, "created_by": "hcsshim.testing.images.build_busybox_image"}],
    })
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": _descriptor(MT_CONFIG, config),
        "layers": [_descriptor(MT_LAYER, layer_gz)],
    })
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else "latest"
    manifest_desc = _descriptor(MT_MANIFEST, manifest)
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    manifest_desc["annotations"] = {
        "io.containerd.image.name": ref,
        "org.opencontainers.image.ref.name": tag,
    }
    index = _json({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [manifest_desc]})
    blobs = sorted({_sha(b)[7:]: b for b in (layer_gz, config, manifest)}.items())

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(_tarinfo("blobs/", "dir", 0o755))
        tf.addfile(_tarinfo("blobs/sha256/", "dir", 0o755))
        for hexdigest, data in blobs:
            tf.addfile(_tarinfo(f"blobs/sha256/{hexdigest}", "file", 0o644, len(data)), io.BytesIO(data))
        tf.addfile(_tarinfo("index.json", "file", 0o644, len(index)), io.BytesIO(index))
        layout = _json({"imageLayoutVersion": "1.0.0"})
        tf.addfile(_tarinfo("oci-layout", "file", 0o644, len(layout)), io.BytesIO(layout))
    os.replace(tmp, dest)
    return ref


def image_digest(tar: Path) -> str:
    """The manifest digest named by the index of an image-layout tar written by `build_busybox_image`."""
    with tarfile.open(tar) as tf:
        member = tf.extractfile("index.json")
        if member is None:
            raise ValueError(f"image {tar}: index.json is not a file")
        index = json.loads(member.read())
    return str(index["manifests"][0]["digest"])


def busybox_layer_tar(*, busybox: str = "/bin/busybox") -> bytes:
    """The busybox image's one layer as an uncompressed tar (e.g. for tar2ext4)."""
    return _layer_tar(_tree(busybox))


def busybox_rootfs(dest: Path, *, busybox: str = "/bin/busybox") -> Path:
    """Lay out the busybox image tree as a directory at `dest` (created if missing); return `dest`.

    For `ctr run --rootfs DIR`: without an image config ctr sets no PATH, so name commands by absolute path
    (/bin/cat) or pass `--env PATH=...`.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for e in _tree(busybox):
        p = dest / e.path
        if e.kind == "dir":
            p.mkdir(exist_ok=True)
            os.chmod(p, e.mode)
        elif e.kind == "file":
            p.write_bytes(e.data)
            os.chmod(p, e.mode)
        else:
            if p.is_symlink() or p.exists():
                p.unlink()
            os.symlink(e.target, p)
    return dest


# The layers of build_layered_image above the busybox tree (layer 1 also holds all of busybox): path -> content,
# with None for a directory. `.wh.<name>` deletes <name> of the layers below; `.wh..wh..opq` makes its directory
# opaque (nothing below shows through). What the image shows: /data/keep = "top\n", no /data/remove-me,
# /opaque holding only `new`, /etc/layer2 and /etc/layer3.
LAYERED_LAYERS: tuple[dict[str, bytes | None], ...] = (
    {"data": None, "data/keep": b"keep\n", "data/remove-me": b"lower\n", "opaque": None, "opaque/old": b"old\n",
     "opaque/sub": None, "opaque/sub/deep": b"deep\n"},
    {"data": None, "data/.wh.remove-me": b"", "etc": None, "etc/layer2": b"2\n", "opaque": None,
     "opaque/.wh..wh..opq": b"", "opaque/new": b"new\n"},
    {"data": None, "data/keep": b"top\n", "etc": None, "etc/layer3": b"3\n"},
)


def _layer_tar_of(files: dict[str, bytes | None], base: list[_Entry] | None = None) -> bytes:
    entries = {e.path: e for e in base or []}
    for path, data in files.items():
        entries[path] = _Entry(path, "dir", 0o755) if data is None else _Entry(path, "file", 0o644, data=data)
    return _layer_tar([entries[k] for k in sorted(entries)])


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain IDs of the layers with these diff IDs, bottom first (containerd's snapshot names)."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else _sha(f"{out[-1]} {d}".encode()))
    return out


def build_layered_image(dest: Path, ref: str = LAYERED_REF, *, busybox: str = "/bin/busybox") -> str:
    """Write an OCI image-layout tar of three gzip'ed layers (busybox plus LAYERED_LAYERS) to `dest`; return
    `ref`. Deterministic, like build_busybox_image."""
    layers = [_layer_tar_of(LAYERED_LAYERS[0], _tree(busybox))]
    layers += [_layer_tar_of(files) for files in LAYERED_LAYERS[1:]]
    gzs = [_gzip(t) for t in layers]
    config = _json({
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": {"Env": [PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_sha(t) for t in layers]},
        "history": [{"created": CREATED, "created_by": f"hcsshim.testing.images.build_layered_image layer {i}"}
                    for i in range(1, len(layers) + 1)],
    })
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": _descriptor(MT_CONFIG, config),
        "layers": [_descriptor(MT_LAYER, gz) for gz in gzs],
    })
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else "latest"
    manifest_desc = _descriptor(MT_MANIFEST, manifest)
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    manifest_desc["annotations"] = {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag}
    index = _json({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [manifest_desc]})
    blobs = sorted({_sha(b)[7:]: b for b in (*gzs, config, manifest)}.items())

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(_tarinfo("blobs/", "dir", 0o755))
        tf.addfile(_tarinfo("blobs/sha256/", "dir", 0o755))
        for hexdigest, data in blobs:
            tf.addfile(_tarinfo(f"blobs/sha256/{hexdigest}", "file", 0o644, len(data)), io.BytesIO(data))
        tf.addfile(_tarinfo("index.json", "file", 0o644, len(index)), io.BytesIO(index))
        layout = _json({"imageLayoutVersion": "1.0.0"})
        tf.addfile(_tarinfo("oci-layout", "file", 0o644, len(layout)), io.BytesIO(layout))
    os.replace(tmp, dest)
    return ref


def image_diff_ids(tar: Path) -> list[str]:
    """The diff IDs (bottom layer first) of the image an image-layout tar's index names first."""
    with tarfile.open(tar) as tf:

        def blob(digest: str) -> Any:
            member = tf.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}")
            if member is None:
                raise ValueError(f"image {tar}: blob {digest} is not a file")
            return json.loads(member.read())

        manifest = blob(image_digest(tar))
        config = blob(manifest["config"]["digest"])
    return [str(d) for d in config["rootfs"]["diff_ids"]]
