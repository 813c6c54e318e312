"""Exact prices and sizes.

The node writes prices and sizes as decimal strings (``"81311.0"``,
``"0.00033"``). hlbook keeps them as integers scaled by ``10**12`` so that
sums and comparisons are exact and cheap; floats never appear in a book.

Parsing and formatting go through bounded caches: a book sees the same few
thousand price and size strings over and over, and a dictionary hit is several
times cheaper than re-parsing (see ``benchmarks/``).
"""

import re
from collections.abc import Mapping
from decimal import MAX_PREC, Context, Decimal
from typing import Final

__all__ = [
    "FORMATTED",
    "PARSED",
    "SCALE",
    "SCALE_DIGITS",
    "NumberError",
    "canonical",
    "exact",
    "fmt",
    "parse",
    "to_decimal",
]

SCALE_DIGITS = 12
"""Fractional digits kept exactly. Hyperliquid uses at most 8 (spot prices)."""

SCALE: int = 10**SCALE_DIGITS

# ASCII digits only: ``\d`` would also match other scripts' digits, which int() reads.
_NUMBER = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")
# Exact context for to_decimal: the default 28 digits would round large values.
_EXACT = Context(prec=MAX_PREC)
# Bounded: ~10 MB per cache when full; a live book uses a few thousand prices.
_CACHE_LIMIT = 1 << 16

_POW10 = [10**i for i in range(SCALE_DIGITS + 1)]

_parse_cache: dict[str, int] = {}
PARSED: Final[Mapping[str, int]] = _parse_cache
"""What :func:`parse` has cached (text -> scaled integer), read-only: a hot loop may
look a value up here (``PARSED.get(text)``) and call :func:`parse` only on a miss."""
_fmt_cache: dict[int, str] = {}
FORMATTED: Final[Mapping[int, str]] = _fmt_cache
"""What :func:`fmt` has cached (scaled integer -> text), read-only, like :data:`PARSED`."""


class NumberError(ValueError):
    """A price or size string that is not an exact decimal hlbook can hold."""


def _parse_uncached(text: str) -> int:
    match = _NUMBER.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise NumberError(f"not a decimal number: {text!r}")
    sign: str = match.group(1)
    whole: str = match.group(2)
    frac: str = match.group(3) or ""
    if len(frac) > SCALE_DIGITS:
        # Dropping digits would make the book inexact; refuse instead.
        stripped = frac.rstrip("0")
        if len(stripped) > SCALE_DIGITS:
            raise NumberError(f"more than {SCALE_DIGITS} decimal places: {text!r}")
        frac = stripped
    value = int(whole) * SCALE + (int(frac.ljust(SCALE_DIGITS, "0")) if frac else 0)
    return -value if sign else value


def _fmt_uncached(value: int) -> str:
    whole, frac = divmod(abs(value), SCALE)
    sign = "-" if value < 0 else ""
    if frac == 0:
        return f"{sign}{whole}.0"
    digits = f"{frac:0{SCALE_DIGITS}d}".rstrip("0")
    return f"{sign}{whole}.{digits}"


def parse(text: str) -> int:
    """Parse a node decimal string into a scaled integer (``value * 10**12``).

    Raises :class:`NumberError` for anything that is not a plain decimal
    (exponents, spaces, underscores, more than 12 significant decimal places).
    """
    try:
        return _parse_cache[text]
    except KeyError:
        pass
    except TypeError:  # unhashable: certainly not a string
        raise NumberError(f"not a decimal number: {text!r}") from None
    value = _parse_uncached(text)
    if len(_parse_cache) >= _CACHE_LIMIT:
        _parse_cache.clear()
    _parse_cache[text] = value
    return value


def fmt(value: int) -> str:
    """Format a scaled integer in the node's canonical form.

    The shortest exact decimal, with ``.0`` added for whole numbers:
    ``"81311.0"``, ``"0.00033"``, ``"1096.0"``. The same string object is
    returned for the same value while it is cached, which keeps books small.
    """
    try:
        return _fmt_cache[value]
    except KeyError:
        pass
    text = _fmt_uncached(value)
    if len(_fmt_cache) >= _CACHE_LIMIT:
        _fmt_cache.clear()
    _fmt_cache[value] = text
    return text


def exact(text: str) -> tuple[str, int]:
    """``(canonical text, scaled value)`` of a decimal string, bypassing the caches.

    For values that rarely repeat across the whole process (a snapshot's
    sizes), where caching would only cost memory.
    """
    if text.__class__ is str:
        # Fast path for what the node writes: already canonical (no sign, no leading
        # zero, no trailing zero but in "x.0", at most SCALE_DIGITS decimals). A
        # bootstrap does this for every distinct size (~10^5).
        whole, dot, frac = text.partition(".")
        if (
            dot
            and whole.isdigit()
            and frac.isdigit()
            and text.isascii()
            and len(frac) <= SCALE_DIGITS
            and (whole == "0" or whole[0] != "0")
            and (frac == "0" or frac[-1] != "0")
        ):
            return text, int(whole) * SCALE + int(frac) * _POW10[SCALE_DIGITS - len(frac)]
    elif not isinstance(text, str):
        raise NumberError(f"not a decimal number: {text!r}")
    value = _parse_uncached(text)
    return _fmt_uncached(value), value


def canonical(text: str) -> str:
    """Return the canonical spelling of a node decimal string."""
    return fmt(parse(text))


def to_decimal(value: int) -> Decimal:
    """Convert a scaled integer to an exact :class:`decimal.Decimal`."""
    return Decimal(value).scaleb(-SCALE_DIGITS, _EXACT).normalize(_EXACT)
