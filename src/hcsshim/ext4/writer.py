"""The compact ext4 writer: files go in, a read-only ext4 image in upstream compactext4's exact layout comes out.

Layout (spec §5.1): block 0 superblock, then the group descriptor table reserved for the maximum disk size, then
file data in the order it arrives, then all directories, then the inode tables, then the bitmaps. Blocks are
only appended; the one exception is an xattr block rewritten in place when an opaque whiteout re-creates its
directory.

State machine of a Writer::

    New --first operation--> Open --close()--> Closed
     |                        |
     +------any error---------+--> Failed   (every later call raises WriterStateError)

`create`, `make_parents`, `link`, `stat`, `write` run in Open (the first one initialises the root and
lost+found); a regular file's data follows its `create` through `write` calls and is finished by the next
operation. The writer never closes the output descriptor: the caller owns it.
"""

from __future__ import annotations

import struct
from typing import Final

from hcsshim.ext4 import format as fmt
from hcsshim.ext4.errors import DiskFullError, Ext4Error, WriterStateError
from hcsshim.ext4.format import (
    BLOCK_SIZE,
    BLOCKS_PER_GROUP,
    EXTENT_HEADER,
    EXTENT_HEADER_MAGIC,
    EXTENT_LEAF,
    INODE_FLAG_EXTENTS,
    INODE_FLAG_HUGE_FILE,
    INODE_FLAG_INLINE_DATA,
    INODE_SIZE,
    S_IFDIR,
    S_IFLNK,
    S_IFREG,
    TYPE_MASK,
)
from hcsshim.ext4.output import FLUSH_AT as _FLUSH_AT
from hcsshim.ext4.output import Output
from hcsshim.ext4.xattrs import XattrState, get_xattrs, put_xattrs, sort_block_xattrs

_U32: Final = 0xFFFFFFFF
_PADS: Final = memoryview(bytes(BLOCK_SIZE))  # _PADS[:n]: n zero bytes, without a copy
_ONE_EXTENT: Final = struct.Struct("<HHHHIIHHI36x")  # header + one leaf entry, i_block's 60 bytes


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def normalize_max_disk_size(size: int) -> int:
    """MaximumDiskSize(n): n<0 or >16 TiB gives 16 TiB, 0 gives 16 GiB, else n rounded up to 4096."""
    if size < 0 or size > fmt.MAX_MAX_DISK_SIZE:
        return fmt.MAX_MAX_DISK_SIZE
    if size == 0:
        return fmt.DEFAULT_MAX_DISK_SIZE
    return (size + BLOCK_SIZE - 1) & ~(BLOCK_SIZE - 1)


class File:
    """What `Writer.create` needs to know about one file.

    Times are upstream's 64-bit encoded values (`format.time_to_fs`); 0 means "not set". `xattrs` maps full
    names (`user.x`) to raw values. `size` is the data length of a regular file; `linkname` a symlink target.
    """

    __slots__ = ("atime", "crtime", "ctime", "devmajor", "devminor", "gid", "linkname", "mode", "mtime", "size",
                 "uid", "xattrs")

    def __init__(self, mode: int, uid: int = 0, gid: int = 0, size: int = 0, *, atime: int = 0, ctime: int = 0,
                 mtime: int = 0, crtime: int = 0, linkname: bytes = b"", devmajor: int = 0, devminor: int = 0,
                 xattrs: dict[bytes, bytes] | None = None) -> None:
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.atime = atime
        self.ctime = ctime
        self.mtime = mtime
        self.crtime = crtime
        self.linkname = linkname
        self.devmajor = devmajor
        self.devminor = devminor
        self.xattrs = xattrs


class _Inode:
    """One inode in memory: its metadata, i_block contents (`data`), in-inode xattr area and children."""

    __slots__ = ("atime", "block_xattrs", "blocks", "children", "crtime", "ctime", "data", "devmajor", "devminor",
                 "flags", "gid", "links", "mode", "mtime", "number", "size", "uid", "xattr_block", "xattr_inline")

    def __init__(self, number: int, mode: int = 0, uid: int = 0, gid: int = 0, size: int = 0, atime: int = 0,
                 ctime: int = 0, mtime: int = 0, crtime: int = 0, devmajor: int = 0, devminor: int = 0,
                 links: int = 0, children: dict[bytes, _Inode] | None = None,
                 data: bytes | bytearray | None = None) -> None:
        self.number = number
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.atime = atime
        self.ctime = ctime
        self.mtime = mtime
        self.crtime = crtime
        self.devmajor = devmajor
        self.devminor = devminor
        self.links = links
        self.flags = INODE_FLAG_HUGE_FILE
        self.blocks = 0
        self.xattr_block = 0
        self.xattr_inline: bytearray | None = None
        self.block_xattrs: list[tuple[int, bytes, bytes]] | None = None
        self.children = children
        self.data = data


def clean_path(name: bytes) -> list[bytes]:
    """path.Clean("/" + name) split into components: `.` and empty parts dropped, `..` pops (never above /)."""
    parts = name.split(b"/")
    if b"." in parts or b"" in parts or b".." in parts:
        out: list[bytes] = []
        for p in parts:
            if p == b"..":
                if out:
                    out.pop()
            elif p and p != b".":
                out.append(p)
        return out
    return parts


class Writer:
    """Writes a compact ext4 file system to a seekable file descriptor (see the module docstring)."""

    def __init__(self, fd: int, *, inline_data: bool = False, max_disk_size: int = 0,
                 upstream_bitmap_padding: bool = False) -> None:
        self.max_disk_size = normalize_max_disk_size(max_disk_size)
        self.inline_data = inline_data
        self.upstream_bitmap_padding = upstream_bitmap_padding
        self._out = Output(fd, self.max_disk_size)
        self._inodes: list[_Inode | None] = []
        self._cur: _Inode | None = None
        self._cur_name = b""
        self._written = 0
        self._max = 0
        self._state = "new"
        self._gd_blocks = 0
        self._dir_cache: dict[bytes, _Inode] = {}
        self._last_name: bytes | None = None
        self._last_parts: list[bytes] = []
        self.disk_size = 0  # bytes of the finished file system (set by close)

    # ---- state ----

    def _enter(self) -> None:
        if self._state == "open":
            self._finish_inode()
            return
        if self._state == "new":
            self._state = "open"
            try:
                self._init()
            except BaseException:
                self._state = "failed"
                raise
            return
        raise WriterStateError(f"ext4 writer: operation on a {self._state} writer")

    def _fail(self) -> None:
        self._state = "failed"
        self._out.abort()

    def abort(self) -> None:
        """Give up: drop pending writes and stop the output thread (the caller removes the file)."""
        if self._state != "closed":
            self._fail()

    # ---- public operations ----

    def create(self, name: bytes, f: File) -> None:
        """Add a file, directory, symlink, device or fifo; a regular file's data follows through `write`."""
        try:
            self._enter()
            self._create(name, f)
        except Ext4Error:
            self._fail()
            raise

    def add(self, name: bytes, f: File) -> bool:
        """`make_parents(name)` then `create(name, f)` in one walk, for the common case of a new entry whose
        parents all exist. Returns False, having changed nothing, when that is not the case: the caller then
        makes the two calls (which give upstream's errors)."""
        if self._state != "open" or self._cur is not None:
            return False
        # Entries come grouped by directory: a clean parent path seen before maps straight to its inode (a
        # directory inode, once reachable by a path, stays there: directories are never replaced).
        i = name.rfind(b"/")
        d = self._dir_cache.get(name[:i]) if i > 0 else None
        child_name = name[i + 1 :]
        if d is None or child_name in (b"", b".", b"..") or len(child_name) > 255:
            parts = clean_path(name)
            if not parts:
                return False
            child_name = parts[-1]
            if len(child_name) > 255:
                return False
            d = self._inodes[1]
            for p in parts[:-1]:
                children = d.children  # type: ignore[union-attr]
                if children is None:
                    return False
                d = children.get(p)
                if d is None:
                    return False
            if i > 0 and d.children is not None and len(parts) > 1 and b"/".join(parts[:-1]) == name[:i]:  # type: ignore[union-attr]
                self._dir_cache[name[:i]] = d  # type: ignore[assignment]
        children = d.children  # type: ignore[union-attr]
        if children is None or child_name in children:
            return False
        typ = f.mode & TYPE_MASK
        is_dir = typ == S_IFDIR
        if is_dir and d.links >= fmt.MAX_LINKS:  # type: ignore[union-attr]
            return False
        if not f.xattrs and (is_dir or (typ == S_IFREG and not self.inline_data and 0 <= f.size <= fmt.MAX_FILE_SIZE)):
            # The common new directory or regular file: what _make_inode would do, without its branches.
            inodes = self._inodes
            child = _Inode(len(inodes) + 1, f.mode & 0xFFFF, f.uid & _U32, f.gid & _U32, 0 if is_dir else f.size,
                           f.atime, f.ctime, f.mtime, f.crtime, f.devmajor & _U32, f.devminor & _U32,
                           1 if is_dir else 0, {} if is_dir else None)
            inodes.append(child)
        else:
            try:
                child = self._make_inode(f, None)
            except Ext4Error as exc:
                self._fail()
                raise type(exc)(f"{_show(name)}: {exc}") from None
        children[child_name] = child
        child.links += 1
        if is_dir:
            d.links += 1  # type: ignore[union-attr]
        elif child.mode & TYPE_MASK == S_IFREG:
            self._cur = child
            self._cur_name = name
            self._written = 0
            self._max = f.size
            if not f.size:
                self._cur = None
        return True

    def make_parents(self, name: bytes) -> None:
        """Create every missing ancestor directory of `name` (like mkdir -p) with its parent's attributes."""
        try:
            self._enter()
            self._make_parents(name)
        except Ext4Error:
            self._fail()
            raise

    def link(self, oldname: bytes, newname: bytes) -> None:
        """Add a hard link `newname` to the existing non-directory `oldname`."""
        try:
            self._enter()
            self._link(oldname, newname)
        except Ext4Error:
            self._fail()
            raise

    def stat(self, name: bytes) -> File:
        """Return the attributes and all xattrs of an existing file (times go through the lossy round trip)."""
        try:
            self._enter()
            return self._stat(name)
        except Ext4Error:
            self._fail()
            raise

    def write(self, b: bytes | bytearray | memoryview) -> None:
        """Append data to the regular file being written; exactly its size must arrive in total.

        When the last byte arrives the file is finished at once (padding to a block, extents): the bytes are
        the same as upstream's finishing on the next operation.
        """
        n = len(b)
        if not n:
            return
        node = self._cur
        if node is None or self._state != "open":
            self._fail()
            raise WriterStateError("ext4 writer: write with no file in progress")
        written = self._written + n
        if written > self._max:
            self._fail()
            raise Ext4Error(f"{_show(self._cur_name)}: wrote too much: {written} > {self._max}")
        if node.flags & INODE_FLAG_INLINE_DATA:
            node.data[self._written : written] = b  # type: ignore[index]
        else:
            out = self._out
            if written == self._max and n < _FLUSH_AT:
                # Fast path for the last (often only) piece: data, padding and a one-extent tree at once.
                pos = out.pos + n
                end = (pos + BLOCK_SIZE - 1) & ~(BLOCK_SIZE - 1)
                blocks = (written + BLOCK_SIZE - 1) >> 12
                if end <= out.max_size and blocks <= fmt.MAX_BLOCKS_PER_EXTENT:
                    buf = out.buf
                    buf += b
                    if end != pos:
                        buf += _PADS[: end - pos]
                    out.pos = end
                    node.data = _ONE_EXTENT.pack(EXTENT_HEADER_MAGIC, 1, 4, 0, 0, 0, blocks, 0, (end >> 12) - blocks)
                    node.flags |= INODE_FLAG_EXTENTS
                    node.blocks += blocks
                    self._cur = None
                    self._written = self._max = 0
                    if len(buf) >= _FLUSH_AT:
                        out.flush()
                    return
            if out.pos + n > out.max_size or n >= _FLUSH_AT:
                try:
                    out.write(b)
                except Ext4Error:
                    self._fail()
                    raise
            else:
                out.buf += b
                out.pos += n
                if len(out.buf) >= _FLUSH_AT:
                    out.flush()
        self._written = written
        if written == self._max:
            try:
                self._finish_inode()
            except Ext4Error:
                self._fail()
                raise

    def write_from_fd(self, in_fd: int, n: int, offset: int | None = None) -> int:
        """Copy up to n bytes of the current file's data straight from a regular-file descriptor (kernel copy).

        Returns how many bytes were copied (0 when the kernel cannot do it: the caller then reads and writes).
        """
        node = self._cur
        if node is None or self._state != "open" or node.flags & INODE_FLAG_INLINE_DATA:
            return 0
        n = min(n, self._max - self._written)
        try:
            k = self._out.copy_from_fd(in_fd, n, offset)
        except Ext4Error:
            self._fail()
            raise
        except OSError:
            return 0
        self._written += k
        return k

    @property
    def remaining(self) -> int:
        """Bytes the current regular file still expects."""
        return self._max - self._written

    def close(self) -> None:
        """Write directories, inode tables, bitmaps, descriptors and superblock; the file ends at disk_size."""
        try:
            self._enter()
            self._close()
            self._state = "closed"
        except BaseException:
            self._fail()
            raise

    # ---- internals ----

    def _clean(self, name: bytes) -> list[bytes]:
        if name is self._last_name:
            return self._last_parts
        parts = clean_path(name)
        self._last_name = name
        self._last_parts = parts
        return parts

    def _init(self) -> None:
        self._inodes = [None]
        root = self._make_inode(File(S_IFDIR | 0o755), None)
        root.links += 1
        self._inodes.extend([None] * (fmt.INODE_FIRST - len(self._inodes) - 1))
        max_blocks = (self.max_disk_size - 1) // BLOCK_SIZE + 1
        max_groups = (max_blocks - 1) // BLOCKS_PER_GROUP + 1
        self._gd_blocks = (max_groups - 1) // fmt.GROUPS_PER_DESCRIPTOR_BLOCK + 1
        self._out.seek((1 + self._gd_blocks) * BLOCK_SIZE)
        self._create(b"lost+found", File(S_IFDIR | 0o700))

    def _root(self) -> _Inode:
        root = self._inodes[1]
        assert root is not None
        return root

    def _lookup(self, name: bytes, must_exist: bool) -> tuple[_Inode, _Inode | None, bytes]:
        parts = self._clean(name)
        root = self._root()
        if not parts:
            return root, root, b""
        child_name = parts[-1]
        if len(child_name) > 255:
            raise Ext4Error(f"{_show(name)}: invalid name")
        d: _Inode | None = root
        for p in parts[:-1]:
            children = d.children  # type: ignore[union-attr]
            d = children.get(p) if children is not None else None
            if d is None:
                break
        if d is None or d.children is None:
            raise Ext4Error(f"{_show(name)}: path not found")
        child = d.children.get(child_name)
        if child is None and must_exist:
            raise Ext4Error(f"{_show(name)}: file not found")
        return d, child, child_name

    def _make_parents(self, name: bytes) -> None:
        parts = self._clean(name)
        if len(parts) < 2:
            return
        cur = self._root()
        path = b""
        rt = fmt.roundtrip_time
        for d in parts[:-1]:
            path += b"/" + d
            children = cur.children
            child = children.get(d) if children is not None else None
            if child is None:
                f = File(cur.mode, cur.uid, cur.gid, atime=rt(cur.atime), mtime=rt(cur.mtime), ctime=rt(cur.ctime),
                         crtime=rt(cur.crtime), devmajor=cur.devmajor, devminor=cur.devminor, xattrs={})
                try:
                    self._create(path, f)
                except Ext4Error as exc:
                    raise Ext4Error(f"failed while creating parent directories: {exc}") from None
                child = cur.children[d]  # type: ignore[index]
            cur = child

    def _create(self, name: bytes, f: File) -> None:
        d, existing, child_name = self._lookup(name, False)
        reuse = None
        ftype = f.mode & TYPE_MASK
        if existing is not None:
            if existing.children is not None:
                if ftype != S_IFDIR:
                    raise Ext4Error(f"{_show(name)}: cannot replace a directory with a file")
                reuse = existing
            elif ftype == S_IFDIR:
                raise Ext4Error(f"{_show(name)}: cannot replace a file with a directory")
            elif existing.links < 2:
                reuse = existing
        elif ftype == S_IFDIR and d.links >= fmt.MAX_LINKS:
            raise Ext4Error(f"{_show(name)}: exceeded parent directory maximum link count")
        try:
            child = self._make_inode(f, reuse)
        except Ext4Error as exc:
            raise type(exc)(f"{_show(name)}: {exc}") from None
        if existing is not child:
            if existing is not None:
                existing.links -= 1
            d.children[child_name] = child  # type: ignore[index]
            child.links += 1
            if child.children is not None:
                d.links += 1
        if child.mode & TYPE_MASK == S_IFREG:
            self._cur = child
            self._cur_name = name
            self._written = 0
            self._max = f.size

    def _make_inode(self, f: File, node: _Inode | None) -> _Inode:
        mode = f.mode & 0xFFFF
        if mode & TYPE_MASK == 0:
            mode |= S_IFREG
        typ = mode & TYPE_MASK
        if node is None:
            node = _Inode(len(self._inodes) + 1)
            if typ == S_IFDIR:
                node.children = {}
                node.links = 1
            new = True
        else:
            if node.flags & INODE_FLAG_EXTENTS:
                raise Ext4Error("cannot overwrite file with non-inline data")
            new = False
        node.mode = mode
        node.uid = f.uid & _U32
        node.gid = f.gid & _U32
        node.flags = INODE_FLAG_HUGE_FILE
        node.atime = f.atime
        node.ctime = f.ctime
        node.mtime = f.mtime
        node.crtime = f.crtime
        node.devmajor = f.devmajor & _U32
        node.devminor = f.devminor & _U32
        node.data = None
        xattrs = f.xattrs
        old_inline = node.xattr_inline
        node.xattr_inline = None

        xstate: XattrState | None = None
        size = 0
        if typ == S_IFREG:
            size = f.size
            if size > fmt.MAX_FILE_SIZE:
                raise Ext4Error(f"file too big: {size} > {fmt.MAX_FILE_SIZE}")
            if size < 0:
                raise Ext4Error(f"invalid size {size}")
            if self.inline_data and size <= fmt.INLINE_DATA_SIZE:
                node.data = bytearray(size)
                extra = size - fmt.INODE_DATA_SIZE if size > fmt.INODE_DATA_SIZE else 0
                xstate = XattrState()
                xstate.add(b"system.data", bytes(extra))
                node.flags |= INODE_FLAG_INLINE_DATA
        elif typ == S_IFLNK:
            node.mode |= 0o777
            size = len(f.linkname)
            if size <= fmt.SMALL_SYMLINK_SIZE:
                node.data = bytes(f.linkname)
        elif typ not in (S_IFDIR, fmt.S_IFIFO, fmt.S_IFSOCK, fmt.S_IFCHR, fmt.S_IFBLK):
            raise Ext4Error(f"invalid mode {mode:o}")

        if old_inline is not None:
            existing: dict[bytes, bytes] = {}
            get_xattrs(old_inline, 4, fmt.INODE_EXTRA_SIZE, 0, existing)
            if xattrs is None:
                xattrs = {}
            for k, v in existing.items():
                if k not in xattrs:
                    xattrs[k] = v
        if xattrs:
            if xstate is None:
                xstate = XattrState()
            for k in sorted(xattrs):
                if not xstate.add(k, xattrs[k]):
                    raise Ext4Error(f"could not fit xattr {_show(k)}")
        if xstate is not None or node.xattr_block:
            self._write_xattrs(node, xstate or XattrState())

        node.size = size
        if new:
            self._inodes.append(node)
        if typ == S_IFLNK and size > fmt.SMALL_SYMLINK_SIZE:
            # Long symlink targets are written as data right away (upstream's startInode/Write/finishInode).
            self._out.write(f.linkname)
            self._cur = node
            self._written = size
            self._max = size
            self._finish_inode()
        return node

    def _write_xattrs(self, node: _Inode, state: XattrState) -> None:
        if state.inode:
            b = bytearray(fmt.INODE_EXTRA_SIZE)
            struct.pack_into("<I", b, 0, fmt.XATTR_HEADER_MAGIC)
            put_xattrs(state.inode, b, 4, fmt.INODE_EXTRA_SIZE - 4, 0)
            node.xattr_inline = b
        if state.block or node.xattr_block:
            sort_block_xattrs(state.block)
            b = bytearray(BLOCK_SIZE)
            struct.pack_into("<III", b, 0, fmt.XATTR_HEADER_MAGIC, 1, 1)
            put_xattrs(state.block, b, 32, BLOCK_SIZE - 32, 32)
            node.block_xattrs = list(state.block)
            out = self._out
            if node.xattr_block == 0:
                node.xattr_block = out.pos // BLOCK_SIZE
                node.blocks += 1
                out.write(b)
            else:
                orig = out.pos
                out.seek(node.xattr_block * BLOCK_SIZE)
                out.write(b)
                out.seek(orig)

    def _link(self, oldname: bytes, newname: bytes) -> None:
        newdir, existing, child_name = self._lookup(newname, False)
        if existing is not None and (existing.children is not None or existing.links < 2):
            raise Ext4Error(f"{_show(newname)}: cannot orphan existing file or directory")
        _, oldfile, _ = self._lookup(oldname, True)
        assert oldfile is not None
        if oldfile.children is not None:
            raise Ext4Error(f"{_show(newname)}: link target cannot be a directory: {_show(oldname)}")
        if existing is not oldfile and oldfile.links >= fmt.MAX_LINKS:
            raise Ext4Error(f"{_show(newname)}: link target would exceed maximum link count: {_show(oldname)}")
        if existing is not None:
            existing.links -= 1
        oldfile.links += 1
        newdir.children[child_name] = oldfile  # type: ignore[index]

    def _stat(self, name: bytes) -> File:
        _, node, _ = self._lookup(name, True)
        assert node is not None
        rt = fmt.roundtrip_time
        xattrs: dict[bytes, bytes] = {}
        if node.block_xattrs:
            for index, short, value in node.block_xattrs:
                xattrs[fmt.decompress_xattr_name(index, short)] = value
        if node.xattr_inline is not None:
            get_xattrs(node.xattr_inline, 4, fmt.INODE_EXTRA_SIZE, 0, xattrs)
            xattrs.pop(b"system.data", None)
        linkname = b""
        if node.mode & TYPE_MASK == S_IFLNK:
            if node.size > fmt.SMALL_SYMLINK_SIZE:
                raise Ext4Error(f"{_show(name)}: cannot retrieve link information")
            linkname = bytes(node.data or b"")
        return File(node.mode, node.uid, node.gid, node.size, atime=rt(node.atime), ctime=rt(node.ctime),
                    mtime=rt(node.mtime), crtime=rt(node.crtime), linkname=linkname, devmajor=node.devmajor,
                    devminor=node.devminor, xattrs=xattrs)

    def _finish_inode(self) -> None:
        node = self._cur
        if node is None:
            return
        if self._written != self._max:
            raise Ext4Error(f"did not write the right amount: {self._written} != {self._max}")
        if self._max != 0 and not node.flags & INODE_FLAG_INLINE_DATA:
            self._write_extents(node)
        self._cur = None
        self._written = 0
        self._max = 0

    def _write_extents(self, node: _Inode) -> None:
        out = self._out
        start = out.pos - self._written
        rem = out.pos & (BLOCK_SIZE - 1)
        if rem:
            pad = BLOCK_SIZE - rem
            if out.pos + pad > out.max_size:
                raise out.full_error()
            out.buf += _PADS[:pad]
            out.pos += pad
        start_block = start // BLOCK_SIZE
        blocks = out.pos // BLOCK_SIZE - start_block
        used = blocks
        per = fmt.MAX_BLOCKS_PER_EXTENT
        extents = (blocks + per - 1) // per
        if extents == 1:
            data = _ONE_EXTENT.pack(EXTENT_HEADER_MAGIC, 1, 4, 0, 0, 0, blocks, 0, start_block)
        elif extents <= 4:
            data = bytearray(60)
            EXTENT_HEADER.pack_into(data, 0, EXTENT_HEADER_MAGIC, extents, 4, 0, 0)
            for i in range(extents):
                blk = i * per
                EXTENT_LEAF.pack_into(data, 12 + 12 * i, blk, min(blocks - blk, per), 0, start_block + blk)
        elif extents < fmt.EXTENTS_PER_BLOCK:
            # One leaf block right after the data, indexed from the inode (depth 1).
            leaf = bytearray(BLOCK_SIZE)
            EXTENT_HEADER.pack_into(leaf, 0, EXTENT_HEADER_MAGIC, extents, fmt.EXTENTS_PER_BLOCK, 0, 0)
            for i in range(extents):
                blk = i * per
                EXTENT_LEAF.pack_into(leaf, 12 + 12 * i, blk, min(blocks - blk, per), 0, start_block + blk)
            leaf_block = out.pos // BLOCK_SIZE
            out.write(leaf)
            used += 1
            data = bytearray(60)
            EXTENT_HEADER.pack_into(data, 0, EXTENT_HEADER_MAGIC, 1, 4, 1, 0)
            fmt.EXTENT_INDEX.pack_into(data, 12, 0, leaf_block, 0, 0)
        else:
            # Upstream writes a corrupt extent tree from 340 extents (> 42.5 GiB) on: refuse instead.
            raise Ext4Error(f"{_show(self._cur_name)}: file too big for a one-level extent tree: {blocks} blocks")
        node.data = data
        node.flags |= INODE_FLAG_EXTENTS
        node.blocks += used

    def _write_directory(self, d: _Inode, parent: _Inode) -> list[_Inode]:
        self._finish_inode()
        items = sorted(d.children.items(), key=lambda kv: (kv[1].number, kv[0]))  # type: ignore[union-attr]
        buf = bytearray()
        left = BLOCK_SIZE
        pack = fmt.DIRENT.pack
        types = fmt.FILE_TYPES
        entries = [(b".", d), (b"..", parent), *items]
        for name, child in entries:
            n = len(name)
            rl = (8 + n + 3) & ~3
            if left < rl + 12:
                buf += pack(0, left, 0, 0)
                buf += bytes(left - 8)
                left = BLOCK_SIZE
            buf += pack(child.number, rl, n, types.get(child.mode & TYPE_MASK, 0))
            buf += name
            buf += bytes(rl - 8 - n)
            left -= rl
        buf += pack(0, left, 0, 0)
        buf += bytes(left - 8)
        self._out.write(buf)
        self._cur = d
        self._written = self._max = len(buf)
        d.size = len(buf)
        return [c for _, c in items if c.children is not None]

    def _write_directories(self) -> None:
        root = self._root()
        stack = [(root, iter(self._write_directory(root, root)))]
        while stack:
            parent, it = stack[-1]
            child = next(it, None)
            if child is None:
                stack.pop()
                continue
            stack.append((child, iter(self._write_directory(child, parent))))

    def _close(self) -> None:
        self._write_directories()
        self._finish_inode()
        out = self._out
        inodes = self._inodes
        n_inodes = len(inodes)
        itable_offset = out.pos // BLOCK_SIZE
        groups, ipg = best_group_count(itable_offset, n_inodes)
        itb = ipg * INODE_SIZE // BLOCK_SIZE

        dirs = [0] * groups
        for g in range(groups):
            table = bytearray(ipg * INODE_SIZE)
            first = g * ipg
            for i in range(first, min(n_inodes, first + ipg)):
                node = inodes[i]
                if node is None:
                    continue
                if node.children is not None:
                    dirs[g] += 1
                _pack_inode(table, (i - first) * INODE_SIZE, node)
            out.write(table)

        bitmap_offset = out.pos // BLOCK_SIZE
        valid = bitmap_offset + 2 * groups
        disk_size = max(valid, (groups - 1) * BLOCKS_PER_GROUP + 1)
        used_gd = (groups - 1) // fmt.GROUPS_PER_DESCRIPTOR_BLOCK + 1
        if used_gd > self._gd_blocks:
            raise DiskFullError(f"disk exceeded maximum size of {self.max_disk_size} bytes")

        gds = bytearray(self._gd_blocks * BLOCK_SIZE)
        total_blocks = total_inodes = 0
        for g in range(groups):
            bb = bytearray(BLOCK_SIZE)
            gstart = g * BLOCKS_PER_GROUP
            if gstart + BLOCKS_PER_GROUP <= valid:
                bb[:] = b"\xff" * BLOCK_SIZE
            elif gstart < valid:
                _set_bits(bb, 0, valid - gstart)
            if g == 0:
                for j in range(1 + used_gd, 1 + self._gd_blocks):
                    bb[j >> 3] &= ~(1 << (j & 7)) & 0xFF
            if g == groups - 1 and disk_size % BLOCKS_PER_GROUP:
                _set_bits(bb, disk_size % BLOCKS_PER_GROUP, BLOCKS_PER_GROUP)
            used_blocks = int.from_bytes(bb, "little").bit_count()

            ib = bytearray(BLOCK_SIZE)
            used_inodes = max(0, min(n_inodes, (g + 1) * ipg) - g * ipg)
            _set_bits(ib, 0, used_inodes)
            if not self.upstream_bitmap_padding:
                _set_bits(ib, ipg, BLOCK_SIZE * 8)
            out.write(bb)
            out.write(ib)
            fmt.GROUP_DESCRIPTOR_STRUCT.pack_into(
                gds, 32 * g, bitmap_offset + 2 * g, bitmap_offset + 2 * g + 1, itable_offset + g * itb,
                (BLOCKS_PER_GROUP - used_blocks) & 0xFFFF, (ipg - used_inodes) & 0xFFFF, dirs[g] & 0xFFFF)
            total_blocks += used_blocks
            total_inodes += used_inodes

        out.zero((disk_size - valid) * BLOCK_SIZE)
        end = out.pos
        out.seek(BLOCK_SIZE)
        out.max_size = max(out.max_size, end)  # descriptors are written without the size check upstream
        out.write(gds)
        sb = _superblock(groups, ipg, disk_size, total_blocks, total_inodes, self.inline_data)
        out.seek(0)
        out.write(sb)
        out.seek(end)
        out.close()
        self.disk_size = disk_size * BLOCK_SIZE


def _set_bits(b: bytearray, start: int, end: int) -> None:
    """Set bits [start, end) of a little-endian bitmap."""
    if end <= start:
        return
    while start < end and start & 7:
        b[start >> 3] |= 1 << (start & 7)
        start += 1
    full_end = end & ~7
    if full_end > start:
        b[start >> 3 : full_end >> 3] = b"\xff" * ((full_end - start) >> 3)
        start = full_end
    while start < end:
        b[start >> 3] |= 1 << (start & 7)
        start += 1


def best_group_count(blocks: int, inodes: int) -> tuple[int, int]:
    """Upstream's choice of (groups, inodes per group): fewest groups, smallest ipg on a tie (§5.2)."""
    best_groups = 0xFFFFFFFF
    best_ipg = 0
    for ipg in range(fmt.INODES_PER_GROUP_INCREMENT, fmt.MAX_INODES_PER_GROUP + 1, fmt.INODES_PER_GROUP_INCREMENT):
        dbpg = BLOCKS_PER_GROUP - ipg // 16 - 2
        b = max(blocks, (inodes - 1) // ipg * dbpg + 1)
        g = (b + dbpg - 1) // dbpg
        if g < best_groups:
            best_groups = g
            best_ipg = ipg
    return best_groups, best_ipg


_DEV_TYPES = (fmt.S_IFBLK, fmt.S_IFCHR)
_DATA_TYPES = (S_IFDIR, S_IFREG, S_IFLNK)


def _pack_inode(table: bytearray, off: int, node: _Inode) -> None:
    typ = node.mode & TYPE_MASK
    xi = node.xattr_inline
    blk: bytes | bytearray = b""
    if typ in _DATA_TYPES:
        data = node.data
        if data:
            blk = data[:60]
            if len(data) > 60 and xi is not None:
                put_xattrs([(7, b"data", bytes(data[60:]))], xi, 4, fmt.INODE_EXTRA_SIZE - 4, 0)
    elif typ in _DEV_TYPES:
        blk = b"\0\0\0\0" + struct.pack("<I", fmt.encode_device(node.devmajor, node.devminor))
    at, ct, mt, crt, size, uid, gid = node.atime, node.ctime, node.mtime, node.crtime, node.size, node.uid, node.gid
    fmt.INODE_STRUCT.pack_into(
        table, off, node.mode, uid & 0xFFFF, size & _U32, at & _U32, ct & _U32, mt & _U32, 0, gid & 0xFFFF,
        node.links & 0xFFFF, node.blocks & _U32, node.flags, blk, 0, node.xattr_block, size >> 32, uid >> 16,
        gid >> 16, 24, 0, ct >> 32, mt >> 32, at >> 32, crt & _U32, crt >> 32)
    if xi is not None:
        table[off + fmt.INODE_USED_SIZE : off + INODE_SIZE] = xi


def _superblock(groups: int, ipg: int, disk_size: int, used_blocks: int, used_inodes: int, inline: bool) -> bytes:
    b = bytearray(BLOCK_SIZE)
    o = 1024
    struct.pack_into("<11I", b, o, ipg * groups, disk_size, 0, (BLOCKS_PER_GROUP * groups - used_blocks) & _U32,
                     (ipg * groups - used_inodes) & _U32, 0, 2, 2, BLOCKS_PER_GROUP, BLOCKS_PER_GROUP, ipg)
    struct.pack_into("<HHHH", b, o + 56, fmt.SUPERBLOCK_MAGIC, 1, 1, 0)
    struct.pack_into("<II", b, o + 72, 0, 1)
    struct.pack_into("<IH", b, o + 84, fmt.INODE_FIRST, INODE_SIZE)
    incompat = fmt.INCOMPAT_FILETYPE | fmt.INCOMPAT_EXTENTS | fmt.INCOMPAT_FLEX_BG
    if inline:
        incompat |= fmt.INCOMPAT_INLINE_DATA
    struct.pack_into("<III", b, o + 92, fmt.COMPAT_SPARSE_SUPER2 | fmt.COMPAT_EXT_ATTR, incompat,
                     fmt.RO_COMPAT_LARGE_FILE | fmt.RO_COMPAT_HUGE_FILE | fmt.RO_COMPAT_EXTRA_ISIZE
                     | fmt.RO_COMPAT_READONLY)
    struct.pack_into("<HH", b, o + 348, 24, 24)
    b[o + 372] = 31
    struct.pack_into("<I", b, o + 0x268, fmt.INODE_LOST_AND_FOUND)
    return bytes(b)
