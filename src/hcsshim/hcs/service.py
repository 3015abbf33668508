"""What is not one compute system's: choosing the backend, enumerating compute systems, and the HCS service's own
properties and settings (upstream internal/hcs/v2's GetComputeSystems, GetServiceProperties and
ModifyServiceSettings).

The backend: `default_backend()` is the Windows one (hcsshim.hcs.windows.WindowsBackend, HCS through
computecore.dll) on Windows and the Linux one (hcsshim.hcs.linux.LinuxBackend, QEMU utility VMs and runc
containers) elsewhere; the environment variable HCSSHIM_HCS_BACKEND=windows|linux picks one explicitly (e.g.
the Windows backend on Linux, against a stand-in computecore). Backends are imported by name when first chosen,
so importing this module loads neither, and each is constructed once per process.

Errors are HcsErrors naming the operation (``hcs::GetComputeSystems: ...``) with the ErrorEvents HCS returned.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

from hcsshim import gojson
from hcsshim.hcs import schema1, schema2
from hcsshim.hcs.backend import Backend, document_text, events_of, raising
from hcsshim.hcs.errors import ErrUnexpectedValue, make_hcs_error

__all__ = [
    "BACKENDS",
    "ENV_BACKEND",
    "backend_name",
    "default_backend",
    "get_compute_systems",
    "get_service_properties",
    "modify_service_settings",
]

ENV_BACKEND = "HCSSHIM_HCS_BACKEND"
# name -> (module, class): imported only when chosen.
BACKENDS: dict[str, tuple[str, str]] = {
    "windows": ("hcsshim.hcs.windows", "WindowsBackend"),
    "linux": ("hcsshim.hcs.linux.backend", "LinuxBackend"),
    "windows-v1": ("hcsshim.hcs.windows_v1", "VmcomputeBackend"),
}

_lock = threading.Lock()
_instances: dict[str, Backend] = {}


def backend_name(environ: Mapping[str, str] | None = None) -> str:
    """The backend's name: HCSSHIM_HCS_BACKEND when set, else "windows" on Windows and "linux" elsewhere; an
    unknown name is a ValueError listing the known ones."""
    raw = (os.environ if environ is None else environ).get(ENV_BACKEND, "")
    name = raw.strip().lower() or ("windows" if sys.platform == "win32" else "linux")
    if name not in BACKENDS:
        raise ValueError(f"{ENV_BACKEND}={raw!r} names no HCS backend (one of {', '.join(BACKENDS)})")
    return name


def default_backend() -> Backend:
    """The process's backend (see the module docstring), constructed on first use."""
    name = backend_name()
    with _lock:
        backend = _instances.get(name)
        if backend is None:
            module, cls = BACKENDS[name]
            backend = getattr(importlib.import_module(module), cls)()
            _instances[name] = backend
    return backend


async def get_compute_systems(query: schema1.ComputeSystemQuery | str | None = None, *,
                              backend: Backend | None = None) -> list[schema1.ContainerProperties]:
    """The compute systems matching `query` (Ids, Types, Names, Owners; None: all of them)."""
    op = "hcs::GetComputeSystems"
    backend = backend or default_backend()
    text = document_text(query if query is not None else schema1.ComputeSystemQuery())
    with raising(lambda err: make_hcs_error(op, err, events_of(err))):
        result = await backend.enumerate_systems(text)
        if not result:
            raise ErrUnexpectedValue()
        items: Any = json.loads(result)
        if items is None:
            return []
        if not isinstance(items, list):
            raise gojson.DecodeError(f"[]ContainerProperties: expected a JSON array, got {type(items).__name__}")
        return [schema1.ContainerProperties.from_json(item, where=f"ContainerProperties[{i}]")
                for i, item in enumerate(items)]


async def get_service_properties(query: schema2.PropertyQuery | str, *,
                                 backend: Backend | None = None) -> schema2.ServiceProperties:
    """The HCS service's properties for `query` (e.g. PropertyTypes ["Basic"]: the supported schema versions)."""
    op = "hcs::GetServiceProperties"
    backend = backend or default_backend()
    with raising(lambda err: make_hcs_error(op, err, events_of(err))):
        result = await backend.service_properties(document_text(query))
        if not result:
            raise ErrUnexpectedValue()
        return gojson.loads(result, schema2.ServiceProperties)


async def modify_service_settings(settings: schema2.ModificationRequest | str, *,
                                  backend: Backend | None = None) -> None:
    """Change a setting of the HCS service (e.g. create or delete a CPU group)."""
    op = "hcs::ModifyServiceSettings"
    backend = backend or default_backend()
    with raising(lambda err: make_hcs_error(op, err, events_of(err))):
        await backend.modify_service(document_text(settings))
