"""The conversion loop of tar2ext4 (upstream ConvertTarToExt4, spec §2.1 and §4): tar entries into writer calls.

For each entry in stream order: make its parents, turn OCI whiteouts into overlay whiteouts (with -overlay),
add hard links, or create the file with its metadata and xattrs and copy its data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from hcsshim.ext4 import format as fmt
from hcsshim.ext4.errors import Ext4Error
from hcsshim.ext4.tarin import MODE_TYPES, TYPE_LINK, TarReader
from hcsshim.ext4.writer import File, Writer

WHITEOUT_PREFIX: Final = b".wh."
OPAQUE_WHITEOUT: Final = b".wh..wh..opq"
_XATTR_PREFIX: Final = b"SCHILY.xattr."


def _show(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def convert_tar(reader: TarReader, w: Writer, *, convert_whiteout: bool = False, convert_backslash: bool = False,
                progress: Callable[[int], None] | None = None) -> None:
    """Feed every entry of the tar into the writer, in stream order, then close the writer (spec §2.1)."""
    nxt = reader.next
    add = w.add
    count = 0
    while True:
        hdr = nxt()
        if hdr is None:
            break
        name = hdr.name
        link = hdr.linkname
        if convert_backslash:
            name = name.replace(b"\\", b"/")
            link = link.replace(b"\\", b"/")
        tf = hdr.typeflag
        special = tf == TYPE_LINK or (convert_whiteout and WHITEOUT_PREFIX in name)
        if special:
            _make_parents(w, name)
            if convert_whiteout and _whiteout(w, name):
                continue
            if tf == TYPE_LINK:
                w.link(link, name)
                continue
        xattrs = None
        pax = hdr.pax
        if pax:
            xattrs = {k[13:]: v for k, v in pax.items() if k.startswith(_XATTR_PREFIX)}
        mt = hdr.mtime
        if mt is None:
            mt = 0
        elif mt[1] == 0 and 0 <= mt[0] <= 0x7FFFFFFF:
            mt = mt[0]
        else:
            mt = fmt.time_to_fs(mt[0], mt[1])
        at = hdr.atime
        ct = hdr.ctime
        mode = (hdr.mode & 0xFFFF & ~fmt.TYPE_MASK) | MODE_TYPES.get(tf, 0)
        f = File(mode, hdr.uid & 0xFFFFFFFF, hdr.gid & 0xFFFFFFFF, hdr.size,
                 atime=0 if at is None else fmt.time_to_fs(at[0], at[1]),
                 ctime=0 if ct is None else fmt.time_to_fs(ct[0], ct[1]), mtime=mt, crtime=mt, linkname=link,
                 devmajor=hdr.devmajor & 0xFFFFFFFF, devminor=hdr.devminor & 0xFFFFFFFF, xattrs=xattrs)
        if special or not add(name, f):
            if not special:
                _make_parents(w, name)
            w.create(name, f)
        if mode & fmt.TYPE_MASK in (0, fmt.S_IFREG):
            if hdr.sparse is not None:
                reader.copy_sparse(w, hdr)
            elif reader.remaining:
                reader.copy_data(w, min(reader.remaining, w.remaining))
        if progress is not None:
            count += 1
            if count & 63 == 0:
                progress(reader.bytes_read)
    w.close()
    if progress is not None:
        progress(reader.bytes_read)


def _make_parents(w: Writer, name: bytes) -> None:
    try:
        w.make_parents(name)
    except Ext4Error as exc:
        raise Ext4Error(f"failed to ensure parent directories for {_show(name)}: {exc}") from None


def _go_path_clean(p: bytes) -> bytes:
    """Go's path.Clean (it only shows in error messages: the writer cleans names itself)."""
    rooted = p.startswith(b"/")
    out: list[bytes] = []
    for part in p.split(b"/"):
        if part == b"..":
            if out and out[-1] != b"..":
                out.pop()
            elif not rooted:
                out.append(part)
        elif part and part != b".":
            out.append(part)
    s = b"/".join(out)
    return (b"/" + s) if rooted else (s or b".")


def _go_path_join(d: bytes, base: bytes) -> bytes:
    """Go's path.Join(d, base), as upstream names a whiteout's target (`x/.wh.` gives `x`)."""
    if d:
        return _go_path_clean(d + b"/" + base) if base else _go_path_clean(d)
    return _go_path_clean(base) if base else b""


def _whiteout(w: Writer, name: bytes) -> bool:
    """Handle an OCI whiteout entry as overlayfs expects it (spec §4); False when name is no whiteout."""
    i = name.rfind(b"/")
    d, base = name[: i + 1], name[i + 1 :]
    if not base.startswith(WHITEOUT_PREFIX):
        return False
    if base == OPAQUE_WHITEOUT:
        try:
            f = w.stat(d)
        except Ext4Error as exc:
            raise Ext4Error(f"failed to stat parent directory of whiteout {_show(base)}: {exc}") from None
        assert f.xattrs is not None
        f.xattrs[b"trusted.overlay.opaque"] = b"y"
        try:
            w.create(d, f)
        except Ext4Error as exc:
            raise Ext4Error(f"failed to create opaque dir {_show(base)}: {exc}") from None
    else:
        try:
            w.create(_go_path_join(d, base[len(WHITEOUT_PREFIX) :]), File(fmt.S_IFCHR))
        except Ext4Error as exc:
            raise Ext4Error(f"failed to create whiteout file for {_show(base)}: {exc}") from None
    return True
