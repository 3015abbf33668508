"""Blocking wrappers of hcsshim.hcs for scripts and the legacy API: the same functions and objects, each call run to
completion on a private event loop thread.

    from hcsshim.hcs import blocking
    with blocking.create_compute_system("c1", document) as system:
        system.start()
        process = system.create_process(params)
        process.wait(timeout=30)

The loop thread starts on first use and is a daemon: it never keeps the interpreter alive. Every System and
Process made here lives on that loop; the wrappers only carry calls to it. `wait(timeout)` raises TimeoutError when
the time runs out (the object keeps running). Calling a wrapper from the loop thread itself (a coroutine of the
wrapped objects) would deadlock, so it is refused; asynchronous code uses hcsshim.hcs.system directly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from hcsshim.hcs import schema1, schema2, service
from hcsshim.hcs.backend import Backend, GroupAffinity
from hcsshim.hcs.migration import MigrationConfig
from hcsshim.hcs.process import Process, Stdio
from hcsshim.hcs.system import Document, System
from hcsshim.hcs.system import create_compute_system as _create
from hcsshim.hcs.system import open_compute_system as _open

__all__ = [
    "BlockingProcess",
    "BlockingSystem",
    "create_compute_system",
    "get_compute_systems",
    "get_service_properties",
    "modify_service_settings",
    "open_compute_system",
    "run",
]

T = TypeVar("T")


class _LoopThread:
    """The private event loop and the daemon thread running it, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="hcsshim-hcs-blocking", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self.loop()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("hcsshim.hcs.blocking called from its own event loop thread: await the coroutine")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


_LOOP = _LoopThread()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the private loop and return its result (or raise its error)."""
    return _LOOP.run(coro)


async def _within(coro: Coroutine[Any, Any, None], timeout: float | None) -> None:
    await asyncio.wait_for(coro, timeout)


class BlockingProcess:
    """A Process, blocking (see hcsshim.hcs.process for what each call does)."""

    def __init__(self, process: Process) -> None:
        self.process = process

    def __repr__(self) -> str:
        return f"<Blocking {self.process!r}>"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def system_id(self) -> str:
        return self.process.system_id

    @property
    def exited(self) -> bool:
        return self.process.exited

    def signal(self, options: Document) -> bool:
        return run(self.process.signal(options))

    def kill(self) -> bool:
        return run(self.process.kill())

    def resize_console(self, width: int, height: int) -> None:
        run(self.process.resize_console(width, height))

    def close_stdin(self) -> None:
        run(self.process.close_stdin())

    def close_stdout(self) -> None:
        self.process.close_stdout()

    def close_stderr(self) -> None:
        self.process.close_stderr()

    def stdio(self) -> Stdio:
        return self.process.stdio()

    def stdio_legacy(self) -> Stdio:
        return run(self.process.stdio_legacy())

    def wait(self, timeout: float | None = None) -> None:
        """Until the process exits (TimeoutError after `timeout` seconds)."""
        run(_within(self.process.wait(), timeout))

    def exit_code(self) -> int:
        return self.process.exit_code()

    def close(self) -> None:
        run(self.process.close())

    def __enter__(self) -> BlockingProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockingSystem:
    """A System, blocking (see hcsshim.hcs.system for what each call does)."""

    def __init__(self, system: System) -> None:
        self.system = system

    def __repr__(self) -> str:
        return f"<Blocking {self.system!r}>"

    @property
    def id(self) -> str:
        return self.system.id

    @property
    def stopped(self) -> bool:
        return self.system.stopped

    def os(self) -> str:
        return self.system.os()

    def system_type(self) -> str:
        return self.system.system_type()

    def owner(self) -> str:
        return self.system.owner()

    def is_oci(self) -> bool:
        return self.system.is_oci()

    def start(self) -> None:
        run(self.system.start())

    def shutdown(self) -> None:
        run(self.system.shutdown())

    def terminate(self) -> None:
        run(self.system.terminate())

    def pause(self) -> None:
        run(self.system.pause())

    def resume(self) -> None:
        run(self.system.resume())

    def save(self, options: schema2.SaveOptions | Document) -> None:
        run(self.system.save(options))

    def properties(self, *types: str) -> schema1.ContainerProperties:
        return run(self.system.properties(*types))

    def properties_v2(self, *types: str) -> schema2.Properties:
        return run(self.system.properties_v2(*types))

    def properties_v3(self, query: schema2.PropertyQuery | Document) -> schema2.Properties:
        return run(self.system.properties_v3(query))

    def modify(self, request: Document) -> None:
        run(self.system.modify(request))

    def set_cpu_group_affinities(self, affinities: Sequence[GroupAffinity]) -> None:
        run(self.system.set_cpu_group_affinities(affinities))

    # live migration (System's; its notifications are an async stream: use the System itself for them)
    def start_with_migration_options(self, config: MigrationConfig) -> None:
        run(self.system.start_with_migration_options(config))

    def initialize_live_migration_on_source(self, options: Document | None = None) -> None:
        run(self.system.initialize_live_migration_on_source(options))

    def start_live_migration_on_source(self, config: MigrationConfig) -> None:
        run(self.system.start_live_migration_on_source(config))

    def start_live_migration_transfer(self, options: Document | None = None) -> None:
        run(self.system.start_live_migration_transfer(options))

    def finalize_live_migration(self, options: Document | None = None) -> None:
        run(self.system.finalize_live_migration(options))

    def cancel_live_migration(self, options: Document | None = None) -> None:
        run(self.system.cancel_live_migration(options))

    def wait(self, timeout: float | None = None) -> None:
        """Until the system stops (TimeoutError after `timeout` seconds)."""
        run(_within(self.system.wait(), timeout))

    def exit_error(self) -> BaseException | None:
        return self.system.exit_error()

    def create_process(self, params: schema2.ProcessParameters | schema1.ProcessConfig | Document) -> BlockingProcess:
        return BlockingProcess(run(self.system.create_process(params)))

    def open_process(self, pid: int) -> BlockingProcess:
        return BlockingProcess(run(self.system.open_process(pid)))

    def close(self) -> None:
        run(self.system.close())

    def __enter__(self) -> BlockingSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_compute_system(id: str, document: Document, *, backend: Backend | None = None) -> BlockingSystem:
    return BlockingSystem(run(_create(id, document, backend=backend)))


def open_compute_system(id: str, *, backend: Backend | None = None) -> BlockingSystem:
    return BlockingSystem(run(_open(id, backend=backend)))


def get_compute_systems(query: schema1.ComputeSystemQuery | str | None = None, *,
                        backend: Backend | None = None) -> list[schema1.ContainerProperties]:
    return run(service.get_compute_systems(query, backend=backend))


def get_service_properties(query: schema2.PropertyQuery | str, *,
                           backend: Backend | None = None) -> schema2.ServiceProperties:
    return run(service.get_service_properties(query, backend=backend))


def modify_service_settings(settings: schema2.ModificationRequest | str, *, backend: Backend | None = None) -> None:
    run(service.modify_service_settings(settings, backend=backend))
