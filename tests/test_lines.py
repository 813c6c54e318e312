"""The sans-I/O line splitter."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hlbook.node.lines import LineSplitter, LineTooLongError


def test_partial_line_is_kept_until_its_newline() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b'{"a":') == []
    assert splitter.pending == 5
    assert splitter.feed(b"1}\n{") == [b'{"a":1}']
    assert splitter.pending == 1
    assert splitter.feed(b'"b":2}\n') == [b'{"b":2}']
    assert splitter.pending == 0
    assert splitter.consumed == len(b'{"a":1}\n{"b":2}\n')


def test_empty_lines_are_skipped() -> None:
    assert LineSplitter().feed(b"\n\nx\n\n\ny\n") == [b"x", b"y"]


@given(
    lines=st.lists(st.binary(min_size=1).map(lambda b: b.replace(b"\n", b"")).filter(bool)),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000)),
)
def test_any_chunking_gives_the_same_lines(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    splitter = LineSplitter()
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out.extend(splitter.feed(data[start:end]))
    assert out == lines
    assert splitter.pending == 0
    assert splitter.consumed == len(data)


def test_overlong_line_is_reported_once_and_skipped() -> None:
    splitter = LineSplitter(max_line=8)
    assert splitter.feed(b"ok\n0123") == [b"ok"]
    with pytest.raises(LineTooLongError, match="longer than 8 bytes"):
        splitter.feed(b"456789")
    # The rest of the long line is discarded; the stream continues after it.
    assert splitter.feed(b"abcdef") == []
    assert splitter.feed(b"gh\nnext\n") == [b"next"]
    assert splitter.consumed == len(b"ok\n0123456789abcdefgh\nnext\n")


def test_lines_before_an_overlong_one_in_the_same_chunk_are_kept() -> None:
    splitter = LineSplitter(max_line=8)
    with pytest.raises(LineTooLongError) as raised:
        splitter.feed(b"ok\nfine\n0123456789")
    assert raised.value.lines == [b"ok", b"fine"]
    assert splitter.feed(b"x\nnext\n") == [b"next"]


def test_skip_line_discards_a_partial_first_line() -> None:
    splitter = LineSplitter()
    splitter.skip_line()
    assert splitter.feed(b'tail of a line"}\n{"whole":1}\n') == [b'{"whole":1}']
