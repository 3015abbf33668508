"""UTF-16 strings across the C interface: PCWSTR arguments in, CoTaskMemAlloc'd PWSTR out-parameters back.

The HCS headers use 16-bit wide strings. ctypes' c_wchar_p is the platform's wchar_t, 32 bits on Linux, so it is
never used: strings travel as explicit c_uint16 buffers and pointers, the same on every platform.

- In: `wstr(text)` encodes to a NUL-terminated c_uint16 array (None gives NULL). Lone surrogates are passed
  through unchanged; a NUL inside the text is refused (ValueError), as upstream's UTF16PtrFromString refuses it.
- Out: an `OutString` is a PWSTR slot for a `PWSTR*` parameter. `take()` decodes what the DLL stored there and
  frees it with CoTaskMemFree, exactly once (the slot is NULL afterwards; a second take returns ""). Undecodable
  units (lone surrogates) become U+FFFD, as in upstream's UTF16ToString. `take_all` takes several slots and frees
  every one even when one fails.
"""

from __future__ import annotations

import ctypes
import mmap
from typing import Any

from hcsshim.hcs.win32.loader import co_task_mem_free

__all__ = ["PCWSTR", "PWSTR", "OutString", "read_wstr", "take_all", "wstr"]

PWSTR = ctypes.POINTER(ctypes.c_uint16)
PCWSTR = PWSTR
_PAGE = mmap.PAGESIZE


def wstr(text: str | None) -> ctypes.Array[ctypes.c_uint16] | None:
    """`text` as a NUL-terminated UTF-16 buffer to pass for a PCWSTR parameter (None: NULL)."""
    if text is None:
        return None
    if "\x00" in text:
        raise ValueError(f"string passed to HCS contains a NUL character: {text[:60]!r}")
    data = text.encode("utf-16-le", "surrogatepass")
    units = len(data) // 2
    buffer = (ctypes.c_uint16 * (units + 1))()
    ctypes.memmove(buffer, data, len(data))
    return buffer


def read_wstr(address: int | None) -> str:
    """The NUL-terminated UTF-16 string at `address` ("" for NULL); the memory is not freed."""
    if not address:
        return ""
    chunks: list[bytes] = []
    cursor = address
    while True:
        # Read up to the end of the current page only: the string's own bytes make that page readable.
        size = _PAGE - cursor % _PAGE
        size += size % 2  # keep whole UTF-16 units; the straddling unit belongs to the string too
        data = ctypes.string_at(cursor, size)
        end = _find_terminator(data)
        if end >= 0:
            chunks.append(data[:end])
            break
        chunks.append(data)
        cursor += size
    return b"".join(chunks).decode("utf-16-le", "replace")


def _find_terminator(data: bytes) -> int:
    """The byte offset of the first even-aligned 16-bit NUL in `data`, or -1."""
    start = 0
    while True:
        index = data.find(b"\x00\x00", start)
        if index < 0 or index % 2 == 0:
            return index
        start = index + 1


class OutString:
    """A PWSTR out-parameter: pass `ref` for the `PWSTR*` argument, then `take()` the string (freed once)."""

    __slots__ = ("pointer",)

    def __init__(self) -> None:
        self.pointer = PWSTR()

    @property
    def ref(self) -> Any:
        """The `PWSTR*` to pass to the C function."""
        return ctypes.byref(self.pointer)

    @property
    def address(self) -> int:
        """The address the DLL stored (0 for NULL)."""
        return ctypes.cast(self.pointer, ctypes.c_void_p).value or 0

    def take(self) -> str:
        """Decode the stored string and release it with CoTaskMemFree; "" when NULL (or already taken)."""
        address = self.address
        if not address:
            return ""
        self.pointer = PWSTR()
        try:
            return read_wstr(address)
        finally:
            co_task_mem_free(address)


def take_all(*slots: OutString) -> list[str]:
    """take() every slot, in order, freeing them all even if one raises (the first error is re-raised)."""
    values: list[str] = []
    error: BaseException | None = None
    for slot in slots:
        try:
            values.append(slot.take())
        except BaseException as err:  # keep freeing the others, then re-raise
            error = error or err
            values.append("")
    if error is not None:
        raise error
    return values
