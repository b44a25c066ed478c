"""
Sizes in the configuration: C{"256MiB"}, C{"8 MB"}, C{"512k"} or a number of
bytes.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Callable

from phantom_frame.config.values import Invalid, show, string_check

__all__ = ["SIZE_FORM", "check_size", "env_size", "parse_size", "size_check"]


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*\Z")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
}
SIZE_FORM = (
    'a size in bytes: an integer >= 0 or a string such as "256MiB", "8 MB"'
    ' or "512k"'
)


def parse_size(text: str) -> int:
    """
    Parse a size such as C{"256MiB"}, C{"8 MB"}, C{"512k"} or C{"1024"}.

    Units, in any case: C{B}; C{KB}, C{MB}, C{GB} (powers of 1000); C{KiB},
    C{MiB}, C{GiB} and the bare C{K}, C{M}, C{G} (powers of 1024). A
    fractional number is allowed and rounded down to whole bytes.

    @param text: the size.
    @return: the number of bytes.
    @raise ValueError: when C{text} is not a size.
    """
    match = _SIZE.match(text)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r}")
    return int(Fraction(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


_size_string = string_check(parse_size, SIZE_FORM)


def check_size(value: object) -> int:
    """
    @return: the number of bytes C{value} gives: an integer >= 0 or a
        string for L{parse_size}.
    @raise Invalid: otherwise.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value  # type: ignore[return-value]
    return _size_string(value)


def size_check(minimum: int) -> Callable[[object], int]:
    """
    @param minimum: the smallest accepted number of bytes.
    @return: a check accepting what L{check_size} accepts, when it gives at
        least C{minimum} bytes.
    """

    def check(value: object) -> int:
        size = check_size(value)
        if size < minimum:
            raise Invalid(f"expected a size of at least {minimum} bytes, got {show(value)}")
        return size

    return check


def env_size(text: str) -> int:
    """
    @return: the size an environment variable holds.
    @raise Invalid: when it holds none.
    """
    try:
        return parse_size(text)
    except ValueError:
        raise Invalid(SIZE_FORM) from None
