"""Lazy loading of the HCS DLLs and their exports, and where each library comes from.

Nothing is loaded at import. An `Export` is a C prototype (name, return type, argument types) of one `Library`;
its first call loads the library (once, thread-safely) and resolves the export. Failures are ordinary errors, never
crashes (upstream's `?` on every binding): a library that cannot be loaded raises MissingLibraryError
(ERROR_MOD_NOT_FOUND, naming the DLL and the function called), a missing export MissingExportError
(ERROR_PROC_NOT_FOUND); neither is cached, so a later call tries again.

On Windows a library is `ctypes.WinDLL` (stdcall) loaded from System32 only, like upstream's NewLazySystemDLL,
with `use_last_error` so GetLastError survives the call. Elsewhere (the tests) it is `ctypes.CDLL` with
`use_errno`: the fake library reports a "last error" through errno.

Redirecting a library (tests, or a stand-in on Linux), in order of precedence:
- `set_library(name, path)`; `set_library(name, None)` drops the override;
- the environment variables HCSSHIM_FAKE_COMPUTECORE, HCSSHIM_FAKE_VMCOMPUTE and HCSSHIM_FAKE_COM (the library
  providing CoTaskMemFree), read when the library is first loaded;
- on Windows the system DLL: computecore.dll, vmcompute.dll, api-ms-win-core-com-l1-1-0.dll (else ole32.dll).
Off Windows there is no default: an unredirected library raises MissingLibraryError.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from hcsshim.hcs.win32.hresult import MissingExportError, MissingLibraryError

__all__ = [
    "COM",
    "COMPUTECORE",
    "FUNCTYPE",
    "IS_WINDOWS",
    "LIBRARIES",
    "VMCOMPUTE",
    "Export",
    "Library",
    "co_task_mem_free",
    "last_error",
    "set_library",
]

IS_WINDOWS = sys.platform == "win32"
# LoadLibraryEx's LOAD_LIBRARY_SEARCH_SYSTEM32: the system DLLs come from System32 and nowhere else.
_LOAD_LIBRARY_SEARCH_SYSTEM32 = 0x00000800

# The calling convention of the HCS headers (CALLBACK/WINAPI is stdcall; the same as cdecl on x64).
FUNCTYPE: Callable[..., Any] = ctypes.WINFUNCTYPE if IS_WINDOWS else ctypes.CFUNCTYPE  # type: ignore[attr-defined]


def last_error() -> int:
    """The "last error" of the last call into a library: GetLastError on Windows, the fake's errno elsewhere."""
    if IS_WINDOWS:
        return int(ctypes.get_last_error())  # type: ignore[attr-defined]
    return ctypes.get_errno()


class Library:
    """One DLL, loaded on first use: its Windows file names, its override variable and its exports."""

    def __init__(self, name: str, filenames: Sequence[str], env_var: str) -> None:
        self.name = name
        self.filenames = tuple(filenames)
        self.env_var = env_var
        self._override: str | None = None
        self._dll: ctypes.CDLL | None = None
        self._lock = threading.Lock()
        self.generation = 0  # bumped when the library is redirected, so exports resolve again

    @property
    def display_name(self) -> str:
        """The DLL's Windows name, used in error messages."""
        return self.filenames[0]

    def candidates(self) -> list[str]:
        """Where the library will be looked for, in order."""
        if self._override:
            return [self._override]
        env = os.environ.get(self.env_var)
        if env:
            return [env]
        return list(self.filenames) if IS_WINDOWS else []

    def redirect(self, path: str | os.PathLike[str] | None) -> None:
        """Load the library from `path` from now on (None: back to the environment/system default)."""
        with self._lock:
            self._override = os.fspath(path) if path is not None else None
            self._dll = None
            self.generation += 1

    def load(self, function: str) -> ctypes.CDLL:
        """The loaded library; `function` is the export being resolved, named by the error if loading fails."""
        with self._lock:
            if self._dll is not None:
                return self._dll
            candidates = self.candidates()
            if not candidates:
                raise MissingLibraryError(
                    self.display_name, function,
                    f"not available on {sys.platform} (set {self.env_var} or call "
                    f"hcsshim.hcs.win32.loader.set_library({self.name!r}, path) to use a stand-in)")
            problems = []
            for candidate in candidates:
                try:
                    self._dll = self._open(candidate)
                    return self._dll
                except OSError as err:
                    problems.append(f"{candidate}: {err}")
            raise MissingLibraryError(self.display_name, function, "; ".join(problems))

    def _open(self, path: str) -> ctypes.CDLL:
        if IS_WINDOWS:
            system = path in self.filenames
            return ctypes.WinDLL(path, use_last_error=True,  # type: ignore[attr-defined]
                                 winmode=_LOAD_LIBRARY_SEARCH_SYSTEM32 if system else None)
        return ctypes.CDLL(path, use_errno=True)

    def export(self, name: str, restype: Any, *argtypes: Any) -> Export:
        """The prototype of export `name`: resolved on first call."""
        return Export(self, name, restype, argtypes)


class Export:
    """A C function of a Library, resolved lazily: call it like the ctypes function it stands for."""

    __slots__ = ("_fn", "_generation", "argtypes", "library", "name", "restype")

    def __init__(self, library: Library, name: str, restype: Any, argtypes: tuple[Any, ...]) -> None:
        self.library = library
        self.name = name
        self.restype = restype
        self.argtypes = argtypes
        self._fn: Any = None
        self._generation = -1

    def resolve(self) -> Any:
        """The ctypes function pointer, loading the library and looking up the export if not done yet."""
        fn = self._fn
        if fn is not None and self._generation == self.library.generation:
            return fn
        generation = self.library.generation
        dll = self.library.load(self.name)
        try:
            fn = dll[self.name]
        except AttributeError:
            raise MissingExportError(self.library.display_name, self.name) from None
        fn.restype = self.restype
        fn.argtypes = self.argtypes
        self._fn, self._generation = fn, generation
        return fn

    def available(self) -> bool:
        """Whether the export can be resolved (its library loads and has it)."""
        try:
            self.resolve()
        except (MissingLibraryError, MissingExportError):
            return False
        return True

    def __call__(self, *args: Any) -> Any:
        return self.resolve()(*args)

    def __repr__(self) -> str:
        return f"<Export {self.library.display_name}!{self.name}>"


COMPUTECORE = Library("computecore", ("computecore.dll",), "HCSSHIM_FAKE_COMPUTECORE")
VMCOMPUTE = Library("vmcompute", ("vmcompute.dll",), "HCSSHIM_FAKE_VMCOMPUTE")
COM = Library("com", ("api-ms-win-core-com-l1-1-0.dll", "ole32.dll"), "HCSSHIM_FAKE_COM")
LIBRARIES = {lib.name: lib for lib in (COMPUTECORE, VMCOMPUTE, COM)}


def set_library(name: str, path: str | os.PathLike[str] | None) -> None:
    """Load library `name` ("computecore", "vmcompute" or "com") from `path`; None restores the default."""
    try:
        library = LIBRARIES[name]
    except KeyError:
        raise ValueError(f"unknown library {name!r} (one of {', '.join(LIBRARIES)})") from None
    library.redirect(path)


_CoTaskMemFree = COM.export("CoTaskMemFree", None, ctypes.c_void_p)


def co_task_mem_free(address: int) -> None:
    """CoTaskMemFree: release memory the DLLs allocated for an out-parameter (a NULL address is a no-op)."""
    if address:
        _CoTaskMemFree(address)
