"""Exact prices and sizes: node strings to scaled integers and back."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hlbook.numbers import (
    SCALE,
    SCALE_DIGITS,
    NumberError,
    canonical,
    exact,
    fmt,
    parse,
    to_decimal,
)


def reference_canonical(value: Decimal) -> str:
    """The node's canonical text, computed with :mod:`decimal` only."""
    text = format(value.normalize(), "f")
    if "." not in text:
        text += ".0"
    return "0.0" if text in ("-0.0", "0") else text


@pytest.mark.parametrize(
    ("text", "scaled", "canon"),
    [
        ("81311.0", 81311 * SCALE, "81311.0"),
        ("0.00033", 33 * 10 ** (SCALE_DIGITS - 5), "0.00033"),
        ("1096.0", 1096 * SCALE, "1096.0"),
        ("1096", 1096 * SCALE, "1096.0"),
        ("1096.000", 1096 * SCALE, "1096.0"),
        ("0.0", 0, "0.0"),
        ("0", 0, "0.0"),
        ("-0.0", 0, "0.0"),
        ("00012.50", 12_500_000_000_000, "12.5"),
        ("0.012345", 12_345_000_000, "0.012345"),
        ("106217.0", 106217 * SCALE, "106217.0"),
        ("-2.5", -25 * 10 ** (SCALE_DIGITS - 1), "-2.5"),
        ("0.000000000001", 1, "0.000000000001"),
        # Trailing zeros past 12 places are exact and accepted.
        ("1.00000000000000000", SCALE, "1.0"),
        ("123456789012345678.123456789012", 123456789012345678123456789012, None),
    ],
)
def test_known_values(text: str, scaled: int, canon: str | None) -> None:
    assert parse(text) == scaled
    expected = canon if canon is not None else text
    assert fmt(scaled) == expected
    assert canonical(text) == expected
    assert exact(text) == (expected, scaled)
    assert to_decimal(scaled) == Decimal(text)


@pytest.mark.parametrize(
    "text",
    [
        "1e5",
        "1E5",
        "1.5e-3",
        "8.1311e4",
        "inf",
        "-inf",
        "nan",
        "NaN",
        "Infinity",
        "",
        " ",
        " 1.0",
        "1.0 ",
        "1.0\n",
        "1_000.0",
        "+1.0",
        "1.",
        ".5",
        "-",
        "1.2.3",
        "0x10",
        "1,5",
        "abc",
        "--1",
        "0.0000000000001",  # 13 significant decimal places: would be rounded
        "1.1234567890123",
        "١٢٣",  # Arabic-Indic digits: int() reads them, the node never writes them
        "１２.５",  # fullwidth digits
        "1.٥",
    ],
)
def test_rejects_garbage(text: str) -> None:
    with pytest.raises(NumberError):
        parse(text)
    with pytest.raises(NumberError):
        canonical(text)
    with pytest.raises(NumberError):
        exact(text)


@pytest.mark.parametrize("value", [1.5, 1, None, b"1.0", ["1.0"], {"1": 1}, Decimal("1.5")])
def test_rejects_non_strings(value: object) -> None:
    with pytest.raises(NumberError):
        parse(value)  # type: ignore[arg-type]


def test_number_error_is_value_error() -> None:
    assert issubclass(NumberError, ValueError)


def test_cached_results_are_shared_and_stable() -> None:
    first = fmt(parse("81311.0"))
    again = fmt(parse("81311.000"))
    assert first == again == "81311.0"
    assert first is again
    # A rejected string is not cached as anything.
    for _ in range(2):
        with pytest.raises(NumberError):
            parse("1e3")


def test_sums_are_exact() -> None:
    # 0.1 + 0.2 is the classic float trap; a level of many tiny sizes is the real one.
    assert fmt(parse("0.1") + parse("0.2")) == "0.3"
    total = sum(parse("0.00033") for _ in range(3000))
    assert fmt(total) == "0.99"
    sizes = ["0.61488", "0.0175", "0.18385", "1.22985", "0.00001"]
    assert fmt(sum(map(parse, sizes))) == str(sum(map(Decimal, sizes)))
    assert fmt(parse("81311.0") - parse("81310.9")) == "0.1"


decimals = st.decimals(
    min_value=Decimal("-1e15"),
    max_value=Decimal("1e15"),
    places=SCALE_DIGITS,
    allow_nan=False,
    allow_infinity=False,
)


@given(decimals)
def test_round_trip_against_decimal(value: Decimal) -> None:
    text = format(value, "f")
    scaled = parse(text)
    assert Decimal(scaled) / SCALE == value
    assert fmt(scaled) == reference_canonical(value)
    assert parse(fmt(scaled)) == scaled
    assert to_decimal(scaled) == value


@given(st.lists(decimals, max_size=30))
def test_sums_match_decimal(values: list[Decimal]) -> None:
    total = sum((parse(format(v, "f")) for v in values), 0)
    assert fmt(total) == reference_canonical(sum(values, Decimal(0)))


@given(
    st.integers(min_value=0, max_value=10**20),
    st.integers(min_value=0, max_value=SCALE_DIGITS),
    st.integers(min_value=0, max_value=6),
)
def test_trailing_and_leading_zeros(whole: int, places: int, pad: int) -> None:
    digits = str(whole).rjust(places + 1, "0")
    text = digits[: len(digits) - places] + ("." + digits[-places:] if places else "")
    padded = "0" * pad + text + ("0" * pad if places else "")
    assert parse(padded) == parse(text)
    assert canonical(padded) == reference_canonical(Decimal(text))
    # exact() has a fast path for canonical spellings: it must agree on every spelling.
    for spelling in (padded, text, "-" + text, text + ".0", canonical(text)):
        try:
            expected = (canonical(spelling), parse(spelling))
        except NumberError:
            with pytest.raises(NumberError):
                exact(spelling)
        else:
            assert exact(spelling) == expected


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_reprs_with_exponents_are_rejected(value: float) -> None:
    text = repr(value)
    if "e" in text or "n" in text:  # exponent, inf, nan
        with pytest.raises(NumberError):
            parse(text)
