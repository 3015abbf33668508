"""hcsshim.hcs.errors and hcsshim.hcs.timeouts: the HRESULT folding rule, upstream's codes and sentinels, which
predicate holds for which error (through every wrapper), the wrappers' messages and no double wrapping, the
ResultError document, and the HCSSHIM_TIMEOUT_* overrides."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest

from hcsshim.bridge.wire import E_FAIL, ERROR_NOT_FOUND, VMCOMPUTE_SYSTEM_NOT_FOUND, HResultError
from hcsshim.gojson import DecodeError
from hcsshim.hcs import errors as E
from hcsshim.hcs import timeouts

# -- the folding rule -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("hresult", "code"), [
    (0x80070490, 0x490),  # FACILITY_WIN32 folds to the Win32 code
    (-2147023728, 0x490),  # the same HRESULT as a signed int32
    (0x8007000D, 0xD),
    (0xC0070005, 0x5),  # severity bits do not matter
    (0xA0070057, 0x57),  # nor does the customer bit
    (0x00070490, 0x490),  # a success-severity facility-7 value folds too (upstream's mask ignores bit 31)
    (0xC0370103, 0xC0370103),  # HCS codes are kept whole
    (0x80370110, 0x80370110),
    (0x80004005, 0x80004005),
    (0x80170490, 0x80170490),  # another facility
    (0x490, 0x490),  # a plain Win32 code is already folded
    (0, 0),
])
def test_an_hresult_of_facility_win32_folds_to_its_win32_code(hresult: int, code: int) -> None:
    assert E.win32_from_hresult(hresult) == code


def test_a_win32_code_becomes_its_hresult_and_back() -> None:
    assert E.hresult_from_win32(0x490) == 0x80070490 == ERROR_NOT_FOUND
    assert E.hresult_from_win32(0) == 0
    assert E.hresult_from_win32(0xC037010E) == 0xC037010E
    assert E.win32_from_hresult(E.hresult_from_win32(0x5)) == 0x5


# -- codes and constants -----------------------------------------------------------------------------------------

UPSTREAM_CODES = {
    "ErrComputeSystemDoesNotExist": 0xC037010E, "ErrElementNotFound": 0x490, "ErrNotSupported": 0x32,
    "ErrInvalidData": 0xD, "ErrVmcomputeAlreadyStopped": 0xC0370110, "ErrVmcomputeSystemAlreadyStopped": 0x80370110,
    "ErrVmcomputeOperationPending": 0xC0370103, "ErrVmcomputeOperationInvalidState": 0xC0370105,
    "ErrInvalidState": 0x80370105, "HCS_E_OPERATION_TIMEOUT": 0x80370118, "ErrProcNotFound": 0x7F,
    "ErrVmcomputeOperationAccessIsDenied": 0x5, "ErrVmcomputeInvalidJSON": 0xC037010D,
    "ErrVmcomputeUnknownMessage": 0xC037010B, "ErrVmcomputeUnexpectedExit": 0xC0370106,
    "ErrProcessAlreadyStopped": 0x8037011F, "ErrInvalidHandle": 0x6,
}


def test_the_codes_have_upstreams_names_and_values() -> None:
    assert {name: getattr(E, name) for name in UPSTREAM_CODES} == UPSTREAM_CODES
    assert E.ErrComputeSystemDoesNotExist == VMCOMPUTE_SYSTEM_NOT_FOUND  # shared with the bridge's wire


def test_the_root_constants_have_upstreams_values() -> None:
    assert (E.WaitErrExecFailed, E.ERROR_GEN_FAILURE, E.ERROR_SHUTDOWN_IN_PROGRESS, E.WSAEINVAL,
            E.TimeoutInfinite) == (32767, 31, 1115, 10022, 0xFFFFFFFF)


@pytest.mark.parametrize(("cls", "message"), [
    (E.ErrHandleClose, "hcsshim: the handle generating this notification has been closed"),
    (E.ErrAlreadyClosed, "hcsshim: the handle has already been closed"),
    (E.ErrInvalidNotificationType, "hcsshim: invalid notification type"),
    (E.ErrInvalidProcessState, "the process is in an invalid state for the attempted operation"),
    (E.ErrTimeout, "hcsshim: timeout waiting for notification"),
    (E.ErrUnexpectedContainerExit, "unexpected container exit"),
    (E.ErrUnexpectedProcessAbort, "lost communication with compute service"),
    (E.ErrUnexpectedValue, "unexpected value returned from hcs"),
    (E.ErrOperationDenied, "operation denied"),
    (E.ErrPlatformNotSupported, "unsupported platform request"),
])
def test_a_sentinel_has_upstreams_message(cls: type[E.SentinelError], message: str) -> None:
    assert str(cls()) == message
    assert issubclass(cls, E.SentinelError)
    assert str(pickle.loads(pickle.dumps(cls()))) == message


def test_the_timeout_sentinel_is_a_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        raise E.ErrTimeout()


def test_an_errno_is_an_hresult_error_with_the_full_hresult_and_the_folded_code() -> None:
    e = E.Errno(0x490)
    assert isinstance(e, HResultError)
    assert (e.code, e.hresult, str(e)) == (0x490, 0x80070490, "Element not found.")
    assert E.Errno(-2147023728).code == 0x490
    assert E.Errno(0xC0370103).hresult == 0xC0370103
    assert str(E.Errno(0x80370999)) == "HRESULT 0x80370999"
    assert str(E.Errno(5, "custom")) == "custom"
    assert pickle.loads(pickle.dumps(e)).code == 0x490


# -- the predicates ------------------------------------------------------------------------------------------

PREDICATES: dict[str, Callable[[BaseException | None], bool]] = {
    "not_exist": E.is_not_exist, "already_closed": E.is_already_closed, "pending": E.is_pending,
    "timeout": E.is_timeout, "already_stopped": E.is_already_stopped, "not_supported": E.is_not_supported,
    "invalid_state": E.is_operation_invalid_state, "access_denied": E.is_access_is_denied,
    "invalid_handle": E.is_error_invalid_handle,
}

MATRIX: list[tuple[str, BaseException, set[str]]] = [
    ("ErrComputeSystemDoesNotExist", E.Errno(E.ErrComputeSystemDoesNotExist), {"not_exist"}),
    ("ErrElementNotFound", E.Errno(E.ErrElementNotFound), {"not_exist", "already_stopped"}),
    ("ERROR_NOT_FOUND from the bridge", HResultError(ERROR_NOT_FOUND), {"not_exist", "already_stopped"}),
    ("ErrNotSupported", E.Errno(E.ErrNotSupported), {"not_supported"}),
    ("ErrInvalidData", E.Errno(E.ErrInvalidData), {"not_supported"}),
    ("ErrInvalidData as an HRESULT", HResultError(0x8007000D), {"not_supported"}),
    ("ErrVmcomputeAlreadyStopped", E.Errno(E.ErrVmcomputeAlreadyStopped), {"already_stopped"}),
    ("ErrVmcomputeSystemAlreadyStopped", E.Errno(E.ErrVmcomputeSystemAlreadyStopped), {"already_stopped"}),
    ("ErrVmcomputeOperationPending", E.Errno(E.ErrVmcomputeOperationPending), {"pending"}),
    ("ErrVmcomputeOperationInvalidState", E.Errno(E.ErrVmcomputeOperationInvalidState), {"invalid_state"}),
    ("ErrInvalidState (v2)", E.Errno(E.ErrInvalidState), set()),
    ("HCS_E_OPERATION_TIMEOUT", E.Errno(E.HCS_E_OPERATION_TIMEOUT), set()),
    ("ErrProcNotFound", E.Errno(E.ErrProcNotFound), set()),
    ("ErrVmcomputeOperationAccessIsDenied", E.Errno(E.ErrVmcomputeOperationAccessIsDenied), {"access_denied"}),
    ("E_ACCESSDENIED", HResultError(0x80070005), {"access_denied"}),
    ("ErrVmcomputeInvalidJSON", E.Errno(E.ErrVmcomputeInvalidJSON), {"not_supported"}),
    ("ErrVmcomputeUnknownMessage", E.Errno(E.ErrVmcomputeUnknownMessage), {"not_supported"}),
    ("ErrVmcomputeUnexpectedExit", E.Errno(E.ErrVmcomputeUnexpectedExit), set()),
    ("ErrProcessAlreadyStopped", E.Errno(E.ErrProcessAlreadyStopped), {"already_stopped"}),
    ("ErrInvalidHandle", E.Errno(E.ErrInvalidHandle), {"invalid_handle"}),
    ("ErrAlreadyClosed", E.ErrAlreadyClosed(), {"already_closed"}),
    ("ErrTimeout", E.ErrTimeout(), {"timeout"}),
    ("a TimeoutError", TimeoutError("deadline"), {"timeout"}),
    ("ErrHandleClose", E.ErrHandleClose(), set()),
    ("E_FAIL", HResultError(E_FAIL), set()),
    ("a ValueError", ValueError("x"), set()),
]


class RootContainerError(Exception):
    """Stands in for the root package's ContainerError: it wraps through `inner`."""

    def __init__(self, inner: BaseException) -> None:
        super().__init__("container c1 encountered an error")
        self.inner = inner


def wrappings(err: BaseException) -> list[BaseException]:
    cause = RuntimeError("while waiting")
    cause.__cause__ = err
    return [
        err,
        E.HcsError("op", err),
        E.SystemError("c1", "Start", err),
        E.ProcessError("c1", 42, "Kill", err),
        RootContainerError(E.SystemError("c1", "Shutdown", err)),
        cause,  # raise ... from err
    ]


@pytest.mark.parametrize(("label", "err", "holds"), MATRIX, ids=[m[0] for m in MATRIX])
def test_each_code_satisfies_exactly_its_predicates_through_every_wrapper(label: str, err: BaseException,
                                                                          holds: set[str]) -> None:
    for wrapped in wrappings(err):
        assert {name for name, p in PREDICATES.items() if p(wrapped)} == holds, (label, wrapped)


def test_predicates_of_none_are_false() -> None:
    assert not any(p(None) for p in PREDICATES.values())


def test_is_any_takes_codes_classes_and_instances() -> None:
    err = E.SystemError("c1", "Start", E.Errno(0x490))
    assert E.is_any(err, 0x80070490)  # compared folded
    assert E.is_any(err, 0x1, 0x490)
    assert not E.is_any(err, 0x1)
    assert not E.is_any(err)
    assert E.is_any(err, E.Errno)
    assert E.is_any(err, HResultError(ERROR_NOT_FOUND))
    sentinel = E.ErrAlreadyClosed()
    assert E.is_any(E.HcsError("wait", sentinel), sentinel, 0x5)


def test_a_wrapper_is_matched_only_through_what_it_wraps() -> None:
    wrapped = E.HcsError("wait", E.ErrTimeout())
    assert wrapped.hresult == E_FAIL
    assert not E.is_any(wrapped, E_FAIL)


def test_predicates_follow_duck_typed_codes_and_do_not_loop() -> None:
    class Win32Like(OSError):
        def __init__(self) -> None:
            super().__init__("HcsOpenComputeSystem: not found")
            self.hresult = 0xC037010E

    assert E.is_not_exist(E.SystemError("c1", "open", Win32Like()))
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert not E.is_not_exist(a)
    assert [str(e) for e in E.unwrap(a)] == ["a", "b"]


def test_timeout_is_a_wrapper_method_as_upstreams_net_error() -> None:
    assert E.HcsError("wait", TimeoutError()).timeout()
    assert not E.HcsError("wait", E.Errno(5)).timeout()


# -- wrappers -------------------------------------------------------------------------------------------------

EVENTS = [E.ErrorEvent(message="boom", stack_trace="at x", provider="p", event_id=7, flags=2, source="s"),
          E.ErrorEvent(message="second")]


def test_messages_are_worded_as_upstream_words_them() -> None:
    code = E.Errno(E.ErrVmcomputeOperationPending)
    assert str(E.HcsError("CreateComputeSystem", code)) == "CreateComputeSystem: The operation is pending."
    assert str(E.SystemError("c1", "Start", code)) == "Start c1: The operation is pending."
    assert str(E.ProcessError("c1", 42, "Kill", code)) == "Kill c1:42: The operation is pending."
    assert str(E.SystemError("c1", "Start", code, EVENTS)) == (
        "Start c1: The operation is pending.\n"
        "[Event Detail: boom Stack Trace: at x Provider: p EventID: 7 flags: 2 Source: s]\n"
        "[Event Detail: second]")


def test_a_wrapper_takes_its_hresult_from_what_it_wraps() -> None:
    e = E.SystemError("c1", "Start", 0x490)
    assert (e.hresult, e.id, e.op, e.inner) == (0x80070490, "c1", "Start", e.err)
    assert isinstance(e.err, E.Errno) and isinstance(e, HResultError)
    bridged = HResultError(0xC0370109, "guest timeout", [{"Result": -1}])
    assert E.ProcessError("c1", 7, "wait", bridged).records == [{"Result": -1}]
    assert E.HcsError("x", ValueError("bad")).hresult == E_FAIL


def test_wrappers_pickle() -> None:
    e = pickle.loads(pickle.dumps(E.ProcessError("c1", 42, "Kill", 0x5, EVENTS)))
    assert (str(e), e.pid, e.system_id) == (str(E.ProcessError("c1", 42, "Kill", 0x5, EVENTS)), 42, "c1")


def test_make_functions_do_not_double_wrap() -> None:
    inner = E.SystemError("c1", "Start", 0x490)
    assert E.make_system_error("c2", "Modify", inner) is inner
    wrapped_by_root = RootContainerError(inner)
    assert E.make_system_error("c1", "Modify", wrapped_by_root) is wrapped_by_root
    made = E.make_system_error("c1", "Pause", E.ErrTimeout())
    assert isinstance(made, E.SystemError) and str(made) == "Pause c1: hcsshim: timeout waiting for notification"
    proc = E.make_process_error("c1", 4, "Signal", 0x6)
    assert E.make_process_error("c1", 4, "Kill", proc) is proc
    assert isinstance(E.make_process_error("c1", 4, "Kill", inner), E.ProcessError)  # a SystemError is not one
    assert E.make_hcs_error("op", inner) is inner
    assert isinstance(E.make_hcs_error("op", 0x5), E.HcsError)


# -- the ResultError document ---------------------------------------------------------------------------------


def test_a_result_document_gives_the_hresult_message_and_events() -> None:
    text = ('{"Error":-1070137074,"ErrorMessage":"A virtual machine or container with the specified identifier '
            'does not exist.","ErrorEvents":[{"Message":"boom","StackTrace":"at x","Provider":"p","EventId":7,'
            '"Flags":2,"Source":"s"},{"Message":"second","Data":[{"Type":"String","Value":"x"}]}]}')
    hresult, message, events = E.parse_result_error(text)
    assert (hresult, message) == (0xC037010E, "A virtual machine or container with the specified identifier "
                                              "does not exist.")
    assert events == EVENTS
    assert E.parse_result_error(b'{"Error":0}') == (0, "", [])


@pytest.mark.parametrize("text", ["", "  \n", None, b""])
def test_no_result_document_is_no_error(text: str | bytes | None) -> None:
    assert E.parse_result_error(text) == (0, "", [])


@pytest.mark.parametrize(("text", "message"), [
    ("{", "HCS result document: invalid JSON"),
    ("[]", "HCS result document: expected a JSON object, got array"),
    ('{"Error":"bad"}', "HCS result document: field Error: expected int32, got string"),
    ('{"ErrorEvents":[{"EventId":70000}]}', r"HCS result document.ErrorEvents\[0\]: field EventId: expected uint16"),
])
def test_a_malformed_result_document_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        E.parse_result_error(text)
    with pytest.raises(ValueError):
        E.parse_result_error(text)


# -- timeouts -------------------------------------------------------------------------------------------------


def test_the_timeouts_default_as_upstreams() -> None:
    d = timeouts.DEFAULTS
    assert {d.system_create, d.system_start, d.system_pause, d.system_resume, d.system_save, d.syscall_watcher,
            d.tar2vhd, d.external_command_start, d.external_command_complete} == {240.0}
    assert (d.testd_retry_loop, d.gcs_connection) == (5.0, 120.0)
    assert timeouts.load({}) == d
    assert len(timeouts.ENV) == 11 and all(v.startswith("HCSSHIM_TIMEOUT_") for v in timeouts.ENV.values())


def test_an_environment_variable_overrides_a_timeout_in_seconds() -> None:
    t = timeouts.load({"HCSSHIM_TIMEOUT_SYSTEMSTART": "30", "HCSSHIM_TIMEOUT_GCSCONNECTION": "+7",
                       "HCSSHIM_TIMEOUT_TESTDRETRYLOOP": "007"})
    assert (t.system_start, t.gcs_connection, t.testd_retry_loop, t.system_create) == (30.0, 7.0, 7.0, 240.0)


@pytest.mark.parametrize("text", ["", "0", "-5", "1.5", " 5", "5s", "1_0", "abc", "99999999999999999999"])
def test_a_bad_override_keeps_the_default(text: str) -> None:
    assert timeouts.load({"HCSSHIM_TIMEOUT_SYSTEMSAVE": text}).system_save == 240.0
    assert timeouts.duration_from_environment("X", 1.5, {"X": text}) == 1.5


def test_the_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HCSSHIM_TIMEOUT_TAR2VHD", "9")
    assert timeouts.load().tar2vhd == 9.0
