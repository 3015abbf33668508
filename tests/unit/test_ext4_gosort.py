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


# Inputs and the order Go 1.19's sort.Slice gave them with upstream's comparator (index, then name length, then
# name; not a strict weak order), from a Go program run against the local reference toolchain. Each item is the
# prefix index digit followed by the name. Lengths 13..300 go through pdqsort's partitions and pattern breaking.
GO_CASES = [
    (
        '6ccabcb 4cbcaaa 1c 6bcbcaa 4bcacaa 6bbb 6bacac 7baa 4ba 0ab 0aaab 7a 1a 4a',
        '0aaab 0ab 1a 4a 4ba 6bbb 4bcacaa 1c 4cbcaaa 7a 7baa 6bacac 6bcbcaa 6ccabcb',
    ),
    (
        '6cbcbb 7abb 4aab 6abc 0aaccac 6baabaa 7babbbb 0caabcc 7ab 6ccaccc 4ba 0cc 6aa 0acbab 7c 7ba 4cba '
        '0bbcc 0cccba 4a 0ba 6bc 1bcacb 7c 7ccbbaa 6aac 0bcc 6abc 0cabcbc 6caaba 6bccaa 6bbac 6c 4bbab 0cac '
        '0bbac 7aaabca 4bc 0aaab 1aba 0bcacc 4aa 6babcba 7aabcab 7bac 6bccccc 0c 1cbc 7bcbabc 4baabcc 0cab',
        '4a 1aba 6c 4aa 4baabcc 6aa 7ab 7ba 0c 0cac 4bc 6bc 0aaab 0acbab 0aaccac 4aab 6aac 6abc 7abb 6abc 0ba '
        '4ba 7bac 0bcc 0cab 4cba 0bbac 0bbcc 1bcacb 0bcacc 0caabcc 0cabcbc 6baabaa 0cc 0cccba 4bbab 6bbac '
        '6bccaa 6caaba 1cbc 6cbcbb 6babcba 6bccccc 6ccaccc 7aaabca 7aabcab 7babbbb 7bcbabc 7c 7c 7ccbbaa',
    ),
    (
        '1aa 4bcabbb 0cbacb 1aaaaac 1cbb 0bcbcc 6bac 1acacbc 7bba 4aaac 4abcbc 1cb 4aabcaa 7abc 4bcbbc 7a 7a '
        '6bbabcb 4b 1a 0bbbb 1ab 0cacbc 1acaa 6bbcc 7acaaca 4a 1cbac 1aca 4c 1bbbb 0cbbaab 7a 7a 7b 6ba 7cac '
        '0acbb 0bcbb 4acab 7caa 0aacc 0cca 7babcba 4c 1aab 0bcaa 4bbab 0bc 7a 6cc 1bbbabb 1aca 7abcacc 0acbb '
        '4c 1c 6bbc 6bcab 4abbac 1caab 0cbabc 1cccacc 6bab 6aabbac 0aa 6a 0bcac 6cbba 6cbccc 7ba 1ac 6cbac '
        '1bcb 1ababa 6bcca 4bbcb 7a 0c 4ca 6ccc 6aa 4bacca 0ba 4caaaba 7b 0ccab 4b 0ac 0bb 7aabbbb 0ccbcca '
        '6bca 6bcbbca 1aabc 7bbabac 4ccccc 4ccbab 1bcbcbb 1ac 7c 4bcbb 6cb 7aaa 0a 6ccb 0a 0bb',
        '0a 0a 0aa 0c 1a 1c 4a 6a 0aacc 1aa 6aa 1ab 1aaaaac 1aab 1aabc 1ababa 7a 7a 7a 7a 7a 7a 7aaa 7abc '
        '4aaac 6aabbac 7aabbbb 4abbac 4abcbc 4aabcaa 7abcacc 4b 4b 7b 7b 4c 4c 4c 7c 0ac 0ba 0bb 0bb 0bc 1ac '
        '1ac 1cb 1aca 1aca 6ba 7ba 6bab 1bcb 1cbb 1acaa 7acaaca 4acab 0cca 6bac 7bba 6bbc 6bca 4ca 7caa 6cb '
        '6cc 6ccb 6ccc 1acacbc 7cac 0acbb 0acbb 0bbbb 1bbbabb 4bbab 0bcaa 0bcac 7babcba 0bcbb 0bcbcc 0ccab '
        '4bacca 7bbabac 6bbabcb 1bbbb 4bbcb 1bcbcbb 1caab 4bcabbb 6bbcc 6bcab 4bcbb 4bcbbc 4caaaba 6bcca '
        '6bcbbca 0cacbc 0cbabc 0cbacb 0cbbaab 0ccbcca 1cbac 1cccacc 6cbac 6cbba 6cbccc 4ccbab 4ccccc',
    ),
    (
        '1bacba 7cab 1acccab 4ac 4bcb 1ccc 1bcb 6a 4ccbaa 0b 4abbcaa 6ccb 7b 6bbaa 7aab 0a 4bcca 0cc 6aab '
        '4aac 7acaba 4bab 4c 6ac 0cc 7cc 7c 7caabcb 7cc 6cbb 6abbb 6ccacc 6bac 7bccc 4cabcac 0bbabc 0abcc 1aa '
        '4cc 7bacb 7cb 6ba 6a 6abaabb 4a 7baacb 0aabcb 4ac 1cccbcb 6baacb 1cccccc 6bbb 7ccbaaa 1bc 6abcacc '
        '4ac 7bbc 0aabc 4ccc 7bbcbbc 7bcbccc 6ccaa 6ba 6bc 4cca 1aaacab 6cacaba 0bccbbb 0b 6ccacc 6ccbcac 0ac '
        '7caa 7bb 6ababac 6cb 0c 4ccabc 4ab 4bbbcca 0a 0aaaaab 1cbcc 1ba 0cbabc 0bbcac 7aabbcb 1b 6a 7bba '
        '7bbcccc 7a 0ba 1a 1b 6c 6ca 0caaa 1cbca 1cca 7cba 6b 4bbcbab 4aacbcb 7c 0ca 6a 4c 1bbbbbb 7acbb '
        '7caac 4b 7caa 4bbaba 0bccbac 0ab 0acba 1cbab 7bccbcc 4aacc 0cbbabb 7ababc 7cccab 0ababb 4aac 0abc '
        '6cca 6ab 0b 0bcaba 6a 6ab 1cbcac 1abaab 1ba 6aaca 4c 1bb 1b 7cbabba 0cac 7b 1b 4bbabcc 6baca 0bcc '
        '1bab 6cccccc 6acb 7abac 6cc 7c 7bcabba 6ab 1bcabcc 0acacb 0abaaab 6cabcaa 6a 4aaccbc 1cbbaca 1c 6bcb '
        '6cbbac 1bba 7ccabac 4cab 0cbaca 0cababa 1c 7aaaaca 0bccca 0bccc 7ccc 6cbac 0a 6ba 0caaa 4acca '
        '7bcbbcc 7c 0ab 1bbbccb 6cacbcc 0aa 4bab 6bbcccb 7abbab 7cacbab 1baaba 4ab 1ccccac 6bbabbc 0c 7cbbb '
        '7bbcbca 1abacc 1abcb 6aababc 7cacbaa 1a 0b 0abbac 1ccac 6bbb 4baabba 4aacb 0cc 1ccacba 7c 1aa '
        '4aaaaba 6baabcc 0babacc 7bcbacc 4a 4aaaba 0baa 1bbbcca 6acabbc 1cac 7bcb 0bccbb 1cacaa 6bcaaa '
        '0cbcbcb 4accccb 7bbb 7ca 0bc 6aa 0aacaa 6baabc 4bacca 6caccc 4caaaca 4bbc 1a 1a 4bcbccb 6aaca '
        '0abccaa 0a 7cc 1bbcb 4bccb 1ab 7abb 6abc 7acbca 6bcccab 1cacaca 1abcaaa 7cbacc 1bab 4ab 0a 1ca 7cbc '
        '4c 0acaccb 6bbb 4aac 7b 7cccacc 7bacac 6accb 1ccc 1a',
        '0a 0a 0a 0a 0a 0aa 0aaaaab 0aabc 0b 0b 0b 0b 0aabcb 0aacaa 0c 0c 1a 1a 1a 1a 1a 4a 4a 1aa 1aa '
        '1aaacab 4aaaaba 6a 6a 6a 6a 6a 6a 6aa 6aab 7a 7aab 7aaaaca 4aaaba 6aababc 0ab 0ab 0ababb 0ac 0ba 1ab '
        '0bc 0abbac 0ca 0cc 0cc 0cc 0abaaab 4ab 4ab 4ab 6ab 6ab 6ab 4aac 4aac 4aac 4aacb 4aacc 4aacbcb 6aaca '
        '6aaca 6abbb 7abb 1b 1b 1b 1b 1ba 1ba 1bb 1bc 1c 1c 1ca 4b 6b 4c 4c 4c 4c 6c 7b 7b 7b 0abc 6abc 0abcc '
        '0acacb 1abcb 0baa 0acba 0abccaa 0acaccb 0babacc 0bbabc 0bbcac 0bcaba 0bcc 0bccbac 0cac 0bccbb '
        '0bccbbb 1bab 1bab 1bba 1bcb 1bbcb 7c 7c 7c 7c 7c 7abac 4ac 4ac 4ac 6ac 4acca 6accb 6ba 6ba 6ba 7bb '
        '6bc 6ca 7ca 6acb 7acbb 6cb 7cb 4bab 4bab 4bbc 4bcb 4bcca 4cab 6bac 7bba 6baca 6bbaa 4cc 6cc 6bbb '
        '6bbb 6bbb 6bcb 7bbb 7bbc 7bcb 4bccb 7caa 7caa 7cab 7cc 7cc 7cc 7bacb 1cac 1cca 7cba 4cca 6cbb 7cbc '
        '6cca 6ccb 1ccc 1ccc 4ccc 7ccc 7aabbcb 4aaccbc 0bccc 0bccca 7bccc 0caaa 0caaa 0cababa 0cbabc 7caac '
        '1cbab 1cbca 6cbac 7cbbb 1cbcc 6ccaa 1ccac 0cbaca 0cbbabb 0cbcbcb 1abaab 6abaabb 1abacc 1abcaaa '
        '1baaba 6baabc 6ababac 6baacb 7ababc 1acccab 1bacba 1cacaa 4bacca 4bbaba 1cbcac 4ccabc 6bcaaa 6caccc '
        '6cbbac 1bbbbbb 1bbbcca 6ccacc 6ccacc 4ccbaa 1bbbccb 1bcabcc 1cacaca 1cbbaca 1ccacba 1cccbcb 1ccccac '
        '1cccccc 4abbcaa 4accccb 4baabba 4bbabcc 4bbbcca 4bbcbab 4bcbccb 4caaaca 4cabcac 6abcacc 6acabbc '
        '6baabcc 6bbabbc 6bbcccb 6bcccab 6cabcaa 6cacaba 6cacbcc 6ccbcac 6cccccc 7abbab 7acaba 7acbca 7baacb '
        '7bacac 7cbacc 7cccab 7bbcbbc 7bbcbca 7bbcccc 7bcabba 7bcbacc 7bcbbcc 7bcbccc 7bccbcc 7caabcb 7cacbaa '
        '7cacbab 7cbabba 7ccabac 7ccbaaa 7cccacc',
    ),
]


def test_matches_go_sort_slice_on_cases_recorded_from_go() -> None:
    def less(a: tuple[int, str], b: tuple[int, str]) -> bool:
        return a[0] < b[0] or len(a[1]) < len(b[1]) or a[1] < b[1]

    for before, want in GO_CASES:
        xs = [(int(t[0]), t[1:]) for t in before.split()]
        go_sort_slice(xs, less)
        assert " ".join(f"{i}{n}" for i, n in xs) == want
