"""The v2 call pattern (spec 1.3): run one computecore call under its own HCS operation, blocking.

`run_operation(call, timeout)` creates an operation, runs `call(operation)` (which starts the HCS API, e.g.
`lambda op: computecore.start_compute_system(system, op)`), waits for the operation's result with the timeout
(None: INFINITE) and always closes the operation. A call is never abandoned: when the wait times out
(HCS_E_OPERATION_TIMEOUT) the operation is cancelled with HcsCancelOperation and the timeout error is raised; the
wait itself is the only thing bounded. When the call itself fails, the error carries the result document HCS
already produced for the operation, if any.

`run_process_operation` is the same for the calls whose result includes an HCS_PROCESS_INFORMATION
(HcsCreateProcess, HcsGetProcessInfo); `submit_operation` only hands the request to HCS (upstream's Shutdown and
Terminate), closing the operation at once, which HCS allows while the request runs.

These functions block the calling thread; the async object layer runs them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hcsshim.hcs.win32.cdefs import INFINITE, HcsOperation, ProcessInformation
from hcsshim.hcs.win32.computecore import (
    cancel_operation,
    close_operation,
    create_operation,
    get_operation_result,
    get_operation_result_and_process_info,
    wait_for_operation_result,
    wait_for_operation_result_and_process_info,
)
from hcsshim.hcs.win32.hresult import HCS_E_OPERATION_TIMEOUT, Win32Error

__all__ = ["run_operation", "run_process_operation", "submit_operation", "timeout_ms"]

T = TypeVar("T")


def timeout_ms(timeout: float | None) -> int:
    """A timeout in seconds as HcsWaitForOperationResult's milliseconds: None is INFINITE, a past one 0."""
    if timeout is None:
        return INFINITE
    if timeout <= 0:
        return 0
    return min(int(timeout * 1000), INFINITE - 1)


def _with_result(err: Win32Error, doc: str) -> Win32Error:
    """`err`, or a copy carrying `doc` when HCS produced a result document `err` lacks."""
    if doc and not err.result_text:
        return Win32Error(err.hresult, err.function, doc)
    return err


def _result_of(operation: HcsOperation) -> str:
    try:
        return get_operation_result(operation)
    except Win32Error as err:
        return err.result_text


def _process_result_of(operation: HcsOperation) -> str:
    try:
        return get_operation_result_and_process_info(operation)[1]
    except Win32Error as err:
        return err.result_text


def _start(operation: HcsOperation, call: Callable[[HcsOperation], T], result_of: Callable[[HcsOperation], str]) -> T:
    try:
        return call(operation)
    except Win32Error as err:
        attached = _with_result(err, result_of(operation))
        if attached is err:
            raise
        raise attached from err


def _cancel_quietly(operation: HcsOperation) -> None:
    try:
        cancel_operation(operation)
    except Win32Error:
        pass  # the timeout is what gets reported


def run_operation(call: Callable[[HcsOperation], T], timeout: float | None = None) -> tuple[T, str]:
    """Run `call(op)` under a new operation and wait for it: (what call returned, the result document)."""
    operation = create_operation()
    try:
        value = _start(operation, call, _result_of)
        try:
            doc = wait_for_operation_result(operation, timeout_ms(timeout))
        except Win32Error as err:
            if err.hresult == HCS_E_OPERATION_TIMEOUT:
                _cancel_quietly(operation)
            raise
        return value, doc
    finally:
        close_operation(operation)


def run_process_operation(call: Callable[[HcsOperation], T],
                          timeout: float | None = None) -> tuple[T, ProcessInformation, str]:
    """run_operation for process calls: (what call returned, the process information, the result document)."""
    operation = create_operation()
    try:
        value = _start(operation, call, _process_result_of)
        try:
            info, doc = wait_for_operation_result_and_process_info(operation, timeout_ms(timeout))
        except Win32Error as err:
            if err.hresult == HCS_E_OPERATION_TIMEOUT:
                _cancel_quietly(operation)
            raise
        return value, info, doc
    finally:
        close_operation(operation)


def submit_operation(call: Callable[[HcsOperation], T]) -> T:
    """Hand `call(op)` to HCS without waiting for its result; completion shows up as the handle's events."""
    operation = create_operation()
    try:
        return _start(operation, call, _result_of)
    finally:
        close_operation(operation)
