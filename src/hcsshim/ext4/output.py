"""The image writer's output: buffered positional writes with upstream's maximum-size check on every write.

Full buffers (1 MiB) are written by one background thread, so the kernel's cost of writing (page allocation
on tmpfs, the copy) overlaps the parsing and bookkeeping in the main thread: the blocking pwrite calls are
what justifies the thread. All writes carry their file offset and go through one FIFO queue, so later writes
to the same place (the superblock, an xattr block rewritten in place) land after earlier ones. An I/O error in
the thread is raised by the next call in the main thread.

State: open (writes accepted) -> closed (`close`: everything written, thread joined) or aborted (`abort`:
pending writes dropped, thread joined). Both end states are final; `close`/`abort` may be called again.
"""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
from typing import Final

from hcsshim.ext4.errors import DiskFullError

FLUSH_AT: Final = 1 << 20
_QUEUE: Final = 16
_ZEROS: Final = bytes(FLUSH_AT)


class Output:
    def __init__(self, fd: int, max_size: int) -> None:
        self.fd = fd
        self.max_size = max_size
        self.pos = 0
        self.buf = bytearray()
        self.buf_start = 0
        try:
            self.regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            self.regular = False
        self.end = 0  # highest offset written so far (where ftruncate may extend a regular file)
        self._q: queue.Queue[tuple[bytes | bytearray | memoryview | tuple[int, int, int], int] | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._done = False

    def full_error(self) -> DiskFullError:
        return DiskFullError(f"disk exceeded maximum size of {self.max_size} bytes")

    # ---- the writer thread ----

    def _submit(self, data: bytes | bytearray | memoryview, off: int) -> None:
        """Queue an immutable buffer for writing at off."""
        if self._error is not None:
            raise self._error
        if self._done:
            raise ValueError("ext4 output: write after close")
        if self._q is None:
            self._q = queue.Queue(_QUEUE)
            self._thread = threading.Thread(target=self._run, name="ext4-output", daemon=True)
            self._thread.start()
        self._q.put((data, off))
        if off + len(data) > self.end:
            self.end = off + len(data)

    def _submit_copy(self, in_fd: int, src: int, n: int, dst: int) -> None:
        """Queue a kernel copy of n bytes from in_fd at src to dst (in order with the writes)."""
        self._submit(b"", dst)
        assert self._q is not None
        self._q.put(((in_fd, src, n), dst))
        if dst + n > self.end:
            self.end = dst + n

    def _run(self) -> None:
        q = self._q
        assert q is not None
        while True:
            item = q.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    data, off = item
                    if isinstance(data, tuple):
                        _copy_all(data[0], self.fd, data[1], data[2], off)
                    else:
                        _pwrite_all(self.fd, data, off)
            except BaseException as exc:  # handed to the main thread
                self._error = exc
            finally:
                q.task_done()

    def sync(self) -> None:
        """Write out the buffer and wait until every queued write is done (raising its error, if any)."""
        self.flush()
        if self._q is not None:
            self._q.join()
        if self._error is not None:
            raise self._error

    def _stop(self) -> None:
        if self._q is not None and self._thread is not None and self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        self._done = True

    def close(self) -> None:
        if self._done:
            return
        try:
            self.sync()
        finally:
            self._stop()

    def abort(self) -> None:
        if self._done:
            return
        self._error = self._error or OSError("ext4 output aborted")
        self._stop()

    # ---- writing ----

    def write(self, b: bytes | bytearray | memoryview) -> None:
        n = len(b)
        if self.pos + n > self.max_size:
            raise self.full_error()
        if n >= FLUSH_AT:
            self.flush()
            if not (isinstance(b, bytes) or (isinstance(b, memoryview) and b.readonly)):
                b = bytes(b)  # the caller may reuse a mutable buffer
            self._submit(b, self.pos)
            self.pos += n
            self.buf_start = self.pos
            return
        self.buf += b
        self.pos += n
        if len(self.buf) >= FLUSH_AT:
            self.flush()

    def zero(self, n: int) -> None:
        if self.pos + n > self.max_size:
            raise self.full_error()
        if n >= FLUSH_AT and self.regular:
            self.sync()
            if self.pos >= self.end:  # extend with a hole: the bytes read back are zeros all the same
                os.ftruncate(self.fd, self.pos + n)
                self.pos += n
                self.end = self.pos
                self.buf_start = self.pos
                return
        while n > 0:
            k = min(n, len(_ZEROS))
            self.write(memoryview(_ZEROS)[:k])
            n -= k

    def copy_from_fd(self, in_fd: int, n: int, offset: int | None = None) -> int:
        """Copy up to n bytes from in_fd (at offset, else its file offset) with copy_file_range; returns the count
        copied."""
        if self.pos + n > self.max_size:
            raise self.full_error()
        if offset is not None:  # both offsets known: the writer thread does it, in order
            self.flush()
            self._submit_copy(in_fd, offset, n, self.pos)
            self.pos += n
            self.buf_start = self.pos
            return n
        self.sync()
        done = 0
        while done < n:
            try:
                k = os.copy_file_range(in_fd, self.fd, n - done, None if offset is None else offset + done,
                                       self.pos)
            except OSError:
                if done:
                    break
                raise
            if k <= 0:
                break
            done += k
            self.pos += k
        self.buf_start = self.pos
        if self.pos > self.end:
            self.end = self.pos
        return done

    def flush(self) -> None:
        if self.buf:
            self._submit(self.buf, self.buf_start)
            self.buf = bytearray()
        self.buf_start = self.pos

    def seek(self, pos: int) -> None:
        self.flush()
        self.pos = pos
        self.buf_start = pos


def _pwrite_all(fd: int, b: bytes | bytearray | memoryview, off: int) -> None:
    mv = memoryview(b)
    while mv:
        k = os.pwrite(fd, mv, off)
        mv = mv[k:]
        off += k


def _copy_all(in_fd: int, out_fd: int, src: int, n: int, dst: int) -> None:
    """Copy n bytes between files at the given offsets: copy_file_range, else pread and pwrite."""
    kernel = True
    while n > 0:
        if kernel:
            try:
                k = os.copy_file_range(in_fd, out_fd, n, src, dst)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                    raise
                kernel = False
                continue
        else:
            chunk = os.pread(in_fd, min(n, FLUSH_AT), src)
            _pwrite_all(out_fd, chunk, dst)
            k = len(chunk)
        if k <= 0:
            raise OSError(errno.EIO, f"input ended {n} bytes early")
        src += k
        dst += k
        n -= k
