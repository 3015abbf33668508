"""Go's sort.Slice (pattern-defeating quicksort, Go 1.19+), step for step, for upstream's block-xattr order.

Upstream sorts xattr-block entries with sort.Slice and a comparator that is not a strict weak order, so the
result depends on the exact sequence of comparisons and swaps. For n <= 12 that is an insertion sort; longer
lists go through pdqsort's pivot choice, partitioning, pattern breaking and heap-sort fallback, reproduced here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_MAX_INSERTION = 12
_U64 = (1 << 64) - 1


def go_sort_slice(x: list[T], less: Callable[[T, T], bool]) -> None:
    """Sort x in place exactly as Go's sort.Slice(x, less) would."""
    n = len(x)
    _pdqsort(x, less, 0, n, n.bit_length())


def _swap(x: list[T], i: int, j: int) -> None:
    x[i], x[j] = x[j], x[i]


def _insertion_sort(x: list[T], less: Callable[[T, T], bool], a: int, b: int) -> None:
    for i in range(a + 1, b):
        j = i
        while j > a and less(x[j], x[j - 1]):
            _swap(x, j, j - 1)
            j -= 1


def _sift_down(x: list[T], less: Callable[[T, T], bool], lo: int, hi: int, first: int) -> None:
    root = lo
    while True:
        child = 2 * root + 1
        if child >= hi:
            return
        if child + 1 < hi and less(x[first + child], x[first + child + 1]):
            child += 1
        if not less(x[first + root], x[first + child]):
            return
        _swap(x, first + root, first + child)
        root = child


def _heap_sort(x: list[T], less: Callable[[T, T], bool], a: int, b: int) -> None:
    first, lo, hi = a, 0, b - a
    for i in range((hi - 1) // 2, -1, -1):
        _sift_down(x, less, i, hi, first)
    for i in range(hi - 1, -1, -1):
        _swap(x, first, first + i)
        _sift_down(x, less, lo, i, first)


_INCREASING, _DECREASING, _UNKNOWN = 1, 2, 0


def _pdqsort(x: list[T], less: Callable[[T, T], bool], a: int, b: int, limit: int) -> None:
    was_balanced = True
    was_partitioned = True
    while True:
        length = b - a
        if length <= _MAX_INSERTION:
            _insertion_sort(x, less, a, b)
            return
        if limit == 0:
            _heap_sort(x, less, a, b)
            return
        if not was_balanced:
            _break_patterns(x, a, b)
            limit -= 1
        pivot, hint = _choose_pivot(x, less, a, b)
        if hint == _DECREASING:
            _reverse_range(x, a, b)
            pivot = (b - 1) - (pivot - a)
            hint = _INCREASING
        if was_balanced and was_partitioned and hint == _INCREASING and _partial_insertion_sort(x, less, a, b):
            return
        if a > 0 and not less(x[a - 1], x[pivot]):
            a = _partition_equal(x, less, a, b, pivot)
            continue
        mid, already = _partition(x, less, a, b, pivot)
        was_partitioned = already
        left, right = mid - a, b - mid
        threshold = length // 8
        if left < right:
            was_balanced = left >= threshold
            _pdqsort(x, less, a, mid, limit)
            a = mid + 1
        else:
            was_balanced = right >= threshold
            _pdqsort(x, less, mid + 1, b, limit)
            b = mid


def _partition(x: list[T], less: Callable[[T, T], bool], a: int, b: int, pivot: int) -> tuple[int, bool]:
    _swap(x, a, pivot)
    i, j = a + 1, b - 1
    while i <= j and less(x[i], x[a]):
        i += 1
    while i <= j and not less(x[j], x[a]):
        j -= 1
    if i > j:
        _swap(x, j, a)
        return j, True
    _swap(x, i, j)
    i += 1
    j -= 1
    while True:
        while i <= j and less(x[i], x[a]):
            i += 1
        while i <= j and not less(x[j], x[a]):
            j -= 1
        if i > j:
            break
        _swap(x, i, j)
        i += 1
        j -= 1
    _swap(x, j, a)
    return j, False


def _partition_equal(x: list[T], less: Callable[[T, T], bool], a: int, b: int, pivot: int) -> int:
    _swap(x, a, pivot)
    i, j = a + 1, b - 1
    while True:
        while i <= j and not less(x[a], x[i]):
            i += 1
        while i <= j and less(x[a], x[j]):
            j -= 1
        if i > j:
            break
        _swap(x, i, j)
        i += 1
        j -= 1
    return i


def _partial_insertion_sort(x: list[T], less: Callable[[T, T], bool], a: int, b: int) -> bool:
    max_steps, shortest_shifting = 5, 50
    i = a + 1
    for _ in range(max_steps):
        while i < b and not less(x[i], x[i - 1]):
            i += 1
        if i == b:
            return True
        if b - a < shortest_shifting:
            return False
        _swap(x, i, i - 1)
        if i - a >= 2:
            j = i - 1
            while j >= 1:
                if not less(x[j], x[j - 1]):
                    break
                _swap(x, j, j - 1)
                j -= 1
        if b - i >= 2:
            j = i + 1
            while j < b:
                if not less(x[j], x[j - 1]):
                    break
                _swap(x, j, j - 1)
                j += 1
    return False


def _break_patterns(x: list[T], a: int, b: int) -> None:
    length = b - a
    if length >= 8:
        r = length
        modulus = 1 << length.bit_length()
        idx = a + (length // 4) * 2 - 1
        for i in range(3):
            r ^= (r << 13) & _U64  # Go's xorshift (sort.go): <<13, >>17, <<5 on a uint64 seeded with the length
            r ^= r >> 17
            r ^= (r << 5) & _U64
            other = r & (modulus - 1)
            if other >= length:
                other -= length
            _swap(x, idx + i, a + other)


def _choose_pivot(x: list[T], less: Callable[[T, T], bool], a: int, b: int) -> tuple[int, int]:
    shortest_ninther, max_swaps = 50, 4 * 3
    n = b - a
    swaps = [0]
    i, j, k = a + n // 4 * 1, a + n // 4 * 2, a + n // 4 * 3
    if n >= 8:
        if n >= shortest_ninther:
            i = _median(x, less, i - 1, i, i + 1, swaps)
            j = _median(x, less, j - 1, j, j + 1, swaps)
            k = _median(x, less, k - 1, k, k + 1, swaps)
        j = _median(x, less, i, j, k, swaps)
    if swaps[0] == 0:
        return j, _INCREASING
    if swaps[0] == max_swaps:
        return j, _DECREASING
    return j, _UNKNOWN


def _order2(x: list[T], less: Callable[[T, T], bool], a: int, b: int, swaps: list[int]) -> tuple[int, int]:
    if less(x[b], x[a]):
        swaps[0] += 1
        return b, a
    return a, b


def _median(x: list[T], less: Callable[[T, T], bool], a: int, b: int, c: int, swaps: list[int]) -> int:
    a, b = _order2(x, less, a, b, swaps)
    b, c = _order2(x, less, b, c, swaps)
    a, b = _order2(x, less, a, b, swaps)
    return b


def _reverse_range(x: list[T], a: int, b: int) -> None:
    i, j = a, b - 1
    while i < j:
        _swap(x, i, j)
        i += 1
        j -= 1
