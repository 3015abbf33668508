"""The port of Go's sort.Slice (pdqsort) that orders upstream's xattr-block entries."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hcsshim.ext4.gosort import _heap_sort, _pdqsort, go_sort_slice
from hcsshim.ext4.xattrs import _less


def insertion(x: list, less) -> list:  # type: ignore[no-untyped-def]
    x = list(x)
    for i in range(1, len(x)):
        j = i
        while j > 0 and less(x[j], x[j - 1]):
            x[j], x[j - 1] = x[j - 1], x[j]
            j -= 1
    return x


@given(st.lists(st.integers(-50, 50), max_size=300))
def test_sorts_like_sorted_with_a_strict_order(xs: list[int]) -> None:
    got = list(xs)
    go_sort_slice(got, lambda a, b: a < b)
    assert got == sorted(xs)


@given(st.lists(st.integers(), max_size=120))
def test_the_heap_sort_fallback_sorts(xs: list[int]) -> None:
    got = list(xs)
    _heap_sort(got, lambda a, b: a < b, 0, len(got))
    assert got == sorted(xs)
    got = list(xs)
    _pdqsort(got, lambda a, b: a < b, 0, len(got), 0)
    assert got == sorted(xs)


@given(st.lists(st.integers(0, 2**16), max_size=200).map(sorted))
def test_sorted_and_reversed_inputs_take_the_hinted_paths(xs: list[int]) -> None:
    for inp in (xs, xs[::-1]):
        got = list(inp)
        go_sort_slice(got, lambda a, b: a < b)
        assert got == xs


xattr = st.tuples(st.sampled_from([1, 4, 6, 7]), st.binary(min_size=1, max_size=6), st.just(b""))


@given(st.lists(xattr, max_size=12).map(lambda x: sorted(x, key=lambda e: e[1])))
def test_up_to_12_entries_use_plain_insertion_sort_with_upstreams_comparator(xs: list) -> None:  # type: ignore[type-arg]
    got = list(xs)
    go_sort_slice(got, _less)
    assert got == insertion(xs, _less)


@given(st.lists(xattr, min_size=13, max_size=80))
def test_longer_lists_stay_permutations_with_upstreams_comparator(xs: list) -> None:  # type: ignore[type-arg]
    got = list(xs)
    go_sort_slice(got, _less)
    assert sorted(got) == sorted(xs)
