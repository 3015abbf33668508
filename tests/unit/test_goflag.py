"""Go-style command lines (hcsshim.goflag), as Go's flag package parses them."""

from __future__ import annotations

import pytest

from hcsshim.goflag import FlagError, FlagSet, HelpRequested


def flags() -> FlagSet:
    fs = FlagSet("tool")
    fs.string("log-format", "text", "format", choices=("text", "json"))
    fs.string("root", "/run/x", "root")
    fs.bool("v4", "v4")
    fs.int("count", 1, "count")
    return fs


def test_single_and_double_dashes_equals_and_bare_booleans_are_go_forms() -> None:
    args, rest = flags().parse(["--log-format=json", "-root", "/r", "-v4", "--count", "0x10", "pos", "-x"])
    assert (args.log_format, args.root, args.v4, args.count) == ("json", "/r", True, 16)
    assert rest == ["pos", "-x"]  # parsing stops at the first non-flag


def test_defaults_apply_and_double_dash_ends_the_flags() -> None:
    args, rest = flags().parse(["-v4=false", "--", "-root"])
    assert (args.log_format, args.root, args.v4, args.count) == ("text", "/run/x", False, 1)
    assert rest == ["-root"]


@pytest.mark.parametrize("argv, message", [
    (["-nope"], "flag provided but not defined: -nope"),
    (["-root"], "flag needs an argument: -root"),
    (["-v4=maybe"], "invalid boolean value 'maybe' for flag -v4"),
    (["-count", "x"], "invalid value 'x' for flag -count"),
    (["-log-format", "xml"], "invalid value 'xml' for flag -log-format: one of text, json"),
])
def test_bad_command_lines_are_reported_in_gos_words(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=message):
        flags().parse(argv)


@pytest.mark.parametrize("arg", ["-h", "-help", "--help"])
def test_help_is_asked_for_with_h_or_help(arg: str) -> None:
    with pytest.raises(HelpRequested):
        flags().parse([arg])
    assert "-log-format string" in flags().usage() and "(one of text, json; default text)" in flags().usage()
