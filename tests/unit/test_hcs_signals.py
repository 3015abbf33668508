"""hcsshim.hcs.signals: every LCOW and WCOW mapping by number and by name, the defaults of an empty signal, what a
guest without signal support accepts, KILL meaning terminate on WCOW, the refusals (ErrInvalidSignal with
upstream's message), numbers read as strconv.Atoi reads them, names upper-cased as strings.ToUpper does, and the
documents as Go writes and reads them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim import gojson
from hcsshim.hcs.backend import document_text
from hcsshim.hcs.errors import SentinelError
from hcsshim.hcs.signals import (
    SIGNAL_MAP_LCOW,
    SIGNAL_VALUES_WCOW,
    ErrInvalidSignal,
    SignalProcessOptionsLCOW,
    SignalProcessOptionsWCOW,
    validate_lcow,
    validate_sigstr_lcow,
    validate_sigstr_wcow,
    validate_wcow,
)

LINUX_SIGNALS = {  # the table, written out independently of the module's
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
    "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17, "CLD": 17,
    "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26,
    "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}

# "15" in Arabic-Indic digits (int() reads it, Atoi does not), and two letters Go and Python upper-case alike or not
ARABIC_15 = "\N{ARABIC-INDIC DIGIT ONE}\N{ARABIC-INDIC DIGIT FIVE}"
DOTLESS_I = "\N{LATIN SMALL LETTER DOTLESS I}"
LIGATURE_ST = "\N{LATIN SMALL LIGATURE ST}"

WCOW_BY_NUMBER = [(0, "CtrlC"), (1, "CtrlBreak"), (2, "CtrlClose"), (5, "CtrlLogOff"), (6, "CtrlShutdown"),
                  (15, "CtrlShutdown")]
WCOW_BY_NAME = [("CtrlC", "CtrlC"), ("CtrlBreak", "CtrlBreak"), ("CtrlClose", "CtrlClose"),
                ("CtrlLogOff", "CtrlLogOff"), ("CtrlShutdown", "CtrlShutdown"), ("TERM", "CtrlShutdown")]


def lcow(n: int) -> SignalProcessOptionsLCOW:
    return SignalProcessOptionsLCOW(signal=n)


def wcow(value: str) -> SignalProcessOptionsWCOW:
    return SignalProcessOptionsWCOW(signal=value)


# -- the error ---------------------------------------------------------------------------------------------------


def test_the_invalid_signal_error_reads_as_upstreams_and_is_a_value_error() -> None:
    err = ErrInvalidSignal()
    assert str(err) == "invalid signal value"
    assert isinstance(err, SentinelError)
    assert isinstance(err, ValueError)


# -- LCOW ----------------------------------------------------------------------------------------------------------


def test_the_lcow_table_is_the_linux_signal_table() -> None:
    assert dict(SIGNAL_MAP_LCOW) == LINUX_SIGNALS


@pytest.mark.parametrize(("name", "number"), sorted(LINUX_SIGNALS.items()))
def test_every_linux_signal_is_accepted_by_name_and_by_number_when_signals_are_supported(name: str,
                                                                                           number: int) -> None:
    assert validate_sigstr_lcow(name, True) == lcow(number)
    assert validate_sigstr_lcow(name.lower(), True) == lcow(number)
    assert validate_sigstr_lcow(str(number), True) == lcow(number)
    assert validate_lcow(number, True) == lcow(number)


def test_an_empty_lcow_signal_is_sigterm_or_a_kill_when_signals_are_not_supported() -> None:
    assert validate_sigstr_lcow("", True) == lcow(15)
    assert validate_sigstr_lcow("", False) is None


@pytest.mark.parametrize("sigstr", ["TERM", "term", "15", "KILL", "Kill", "9", "6", "+15", "009"])
def test_an_lcow_guest_without_signal_support_takes_term_and_kill_as_a_kill(sigstr: str) -> None:
    assert validate_sigstr_lcow(sigstr, False) is None


@pytest.mark.parametrize("number", [6, 9, 15])
def test_lcow_numbers_meaning_kill_give_no_document_without_signal_support(number: int) -> None:
    assert validate_lcow(number, False) is None


@pytest.mark.parametrize("sigstr", ["90", "test", "INT", "2", "HUP", "CtrlShutdown", "SIGTERM", "-15"])
def test_an_lcow_guest_without_signal_support_refuses_anything_else(sigstr: str) -> None:
    with pytest.raises(ErrInvalidSignal, match=r"^invalid signal value$"):
        validate_sigstr_lcow(sigstr, False)


@pytest.mark.parametrize("sigstr", [
    "90", "SIGTEST", "0", "32", "64", "-9", "-15", "SIGTERM", "sigkill", "CtrlC", "TERM ", " 15", "1_5", ARABIC_15,
    "0x0f", "99999999999999999999999", "+",
])
def test_an_lcow_signal_outside_the_table_is_refused(sigstr: str) -> None:
    with pytest.raises(ErrInvalidSignal):
        validate_sigstr_lcow(sigstr, True)


@pytest.mark.parametrize("number", [0, 32, 64, -1, -9, -15, 1 << 63, 1 << 70])
def test_an_lcow_number_outside_the_table_is_refused(number: int) -> None:
    with pytest.raises(ErrInvalidSignal):
        validate_lcow(number, True)
    with pytest.raises(ErrInvalidSignal):
        validate_lcow(number, False)


def test_lcow_numbers_are_read_as_go_atoi_reads_them() -> None:
    assert validate_sigstr_lcow("+15", True) == lcow(15)
    assert validate_sigstr_lcow("0015", True) == lcow(15)
    for text in (" 15", "15 ", "1_5", ARABIC_15, "15.0", "0xf"):  # Python's int() would take the first four
        with pytest.raises(ErrInvalidSignal):
            validate_sigstr_lcow(text, True)


def test_lcow_names_are_upper_cased_character_by_character_as_go_does() -> None:
    assert validate_sigstr_lcow(DOTLESS_I + "nt", True) == lcow(2)  # "I" for Go as for Python
    with pytest.raises(ErrInvalidSignal):
        validate_sigstr_lcow(LIGATURE_ST + "op", True)  # str.upper makes it "STOP"; Go keeps the ligature


# -- WCOW ----------------------------------------------------------------------------------------------------------


def test_the_wcow_values_are_the_console_control_names() -> None:
    assert SIGNAL_VALUES_WCOW == ("CtrlC", "CtrlBreak", "CtrlClose", "CtrlLogOff", "CtrlShutdown")


@pytest.mark.parametrize(("number", "value"), WCOW_BY_NUMBER)
def test_every_wcow_signal_number_maps_to_its_console_control_name(number: int, value: str) -> None:
    assert validate_wcow(number, True) == wcow(value)
    assert validate_sigstr_wcow(str(number), True) == wcow(value)


@pytest.mark.parametrize(("name", "value"), WCOW_BY_NAME)
def test_every_wcow_signal_name_maps_to_its_console_control_name_in_any_case(name: str, value: str) -> None:
    assert validate_sigstr_wcow(name, True) == wcow(value)
    assert validate_sigstr_wcow(name.upper(), True) == wcow(value)
    assert validate_sigstr_wcow(name.lower(), True) == wcow(value)


def test_sigterm_is_ctrl_shutdown_on_wcow() -> None:
    assert validate_wcow(15, True) == wcow("CtrlShutdown")
    assert validate_sigstr_wcow("TERM", True) == wcow("CtrlShutdown")
    assert validate_sigstr_wcow("15", True) == wcow("CtrlShutdown")


@pytest.mark.parametrize("sigstr", ["KILL", "kill", "9"])
def test_kill_on_wcow_means_terminate_not_a_signal(sigstr: str) -> None:
    assert validate_sigstr_wcow(sigstr, True) is None
    assert validate_sigstr_wcow(sigstr, False) is None


def test_sigkill_by_number_on_wcow_means_terminate() -> None:
    assert validate_wcow(9, True) is None
    assert validate_wcow(9, False) is None


def test_an_empty_wcow_signal_is_ctrl_shutdown_or_a_kill_when_signals_are_not_supported() -> None:
    assert validate_sigstr_wcow("", True) == wcow("CtrlShutdown")
    assert validate_sigstr_wcow("", False) is None


@pytest.mark.parametrize("sigstr", ["CtrlShutdown", "CTRLSHUTDOWN", "6", "TERM", "15", "KILL", "9"])
def test_a_wcow_guest_without_signal_support_takes_shutdown_term_and_kill_as_a_kill(sigstr: str) -> None:
    assert validate_sigstr_wcow(sigstr, False) is None


@pytest.mark.parametrize("sigstr", ["2", "0", "1", "5", "test", "CtrlC", "CtrlBreak", "INT", "-6"])
def test_a_wcow_guest_without_signal_support_refuses_anything_else(sigstr: str) -> None:
    with pytest.raises(ErrInvalidSignal, match=r"^invalid signal value$"):
        validate_sigstr_wcow(sigstr, False)


@pytest.mark.parametrize("sigstr", [
    "20", "CtrlTest", "3", "4", "7", "-1", "-15", "SIGTERM", "SIGKILL", "INT", "HUP", "USR1", "Ctrl C", " 15",
    "99999999999999999999999",
])
def test_a_wcow_signal_outside_the_mapping_is_refused(sigstr: str) -> None:
    with pytest.raises(ErrInvalidSignal):
        validate_sigstr_wcow(sigstr, True)


@pytest.mark.parametrize("number", [3, 4, 7, 10, 20, -1, -6, 1 << 63])
def test_a_wcow_number_outside_the_mapping_is_refused(number: int) -> None:
    with pytest.raises(ErrInvalidSignal):
        validate_wcow(number, True)
    with pytest.raises(ErrInvalidSignal):
        validate_wcow(number, False)


# -- the documents -------------------------------------------------------------------------------------------------


def test_the_lcow_document_is_written_as_go_writes_it() -> None:
    assert gojson.dumps(validate_sigstr_lcow("TERM", True)) == '{"Signal":15}'
    assert gojson.dumps(validate_lcow(10, True)) == '{"Signal":10}'
    assert document_text(validate_sigstr_lcow("", True)) == '{"Signal":15}'  # what Process.signal sends
    assert gojson.dumps(SignalProcessOptionsLCOW()) == "{}"  # omitempty


def test_the_wcow_document_is_written_as_go_writes_it() -> None:
    assert gojson.dumps(validate_sigstr_wcow("TERM", True)) == '{"Signal":"CtrlShutdown"}'
    assert gojson.dumps(validate_wcow(0, True)) == '{"Signal":"CtrlC"}'
    assert document_text(validate_sigstr_wcow("ctrlbreak", True)) == '{"Signal":"CtrlBreak"}'
    assert gojson.dumps(SignalProcessOptionsWCOW()) == "{}"


def test_the_documents_read_back_as_go_reads_them() -> None:
    assert gojson.loads('{"signal":9}', SignalProcessOptionsLCOW) == lcow(9)
    assert gojson.loads('{"Signal":"CtrlLogOff","Other":1}', SignalProcessOptionsWCOW) == wcow("CtrlLogOff")
    with pytest.raises(gojson.DecodeError):
        gojson.loads('{"Signal":"TERM"}', SignalProcessOptionsLCOW)


# -- properties ----------------------------------------------------------------------------------------------------


@given(st.text(max_size=12), st.booleans())
def test_any_lcow_string_gives_a_table_signal_none_or_the_error(sigstr: str, supported: bool) -> None:
    try:
        result = validate_sigstr_lcow(sigstr, supported)
    except ErrInvalidSignal:
        return
    if supported:
        assert result is not None and result.signal in LINUX_SIGNALS.values()
    else:
        assert result is None


@given(st.text(max_size=12), st.booleans())
def test_any_wcow_string_gives_a_console_control_name_none_or_the_error(sigstr: str, supported: bool) -> None:
    try:
        result = validate_sigstr_wcow(sigstr, supported)
    except ErrInvalidSignal:
        return
    if supported and result is not None:
        assert result.signal in SIGNAL_VALUES_WCOW
    else:
        assert result is None


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1), st.booleans())
def test_a_number_string_and_the_number_validate_alike(number: int, supported: bool) -> None:
    for by_string, by_number in ((validate_sigstr_lcow, validate_lcow), (validate_sigstr_wcow, validate_wcow)):
        try:
            expected = by_number(number, supported)
        except ErrInvalidSignal:
            with pytest.raises(ErrInvalidSignal):
                by_string(str(number), supported)
        else:
            assert by_string(str(number), supported) == expected
