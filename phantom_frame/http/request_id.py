"""
Request ids: the C{X-Request-Id} of every request the proxy listeners
answer.

A client's own id is kept when it is 1 to L{MAX_LENGTH} visible ASCII
characters (C{!} to C{~}: no spaces, no control characters); anything else,
or none, gets a new id: a random per-process prefix and a counter, in
hexadecimal (C{"1f3a9c5e02d4-2a"}), so that making one costs a counter step
and a format, and ids stay unique across processes (a forked child draws a
new prefix).
"""

from __future__ import annotations

import itertools
import os
from typing import Iterator, Optional, Sequence

__all__ = ["HEADER", "MAX_LENGTH", "acceptable", "new_request_id", "request_id"]

#: The header's name, lower-cased as twisted.web keys it.
HEADER = b"x-request-id"

#: The longest client id kept.
MAX_LENGTH = 128

_prefix = ""
_counter: Iterator[int] = itertools.count(1)


def _reseed() -> None:
    """
    Draw a new random prefix and start counting again.
    """
    global _prefix, _counter
    _prefix = os.urandom(6).hex() + "-"
    _counter = itertools.count(1)


_reseed()
if hasattr(os, "register_at_fork"):  # pragma: no branch
    os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """
    @return: an id no other request of this process (or of another
        process, with overwhelming likelihood) got.
    """
    return "%s%x" % (_prefix, next(_counter))


def acceptable(value: str) -> bool:
    """
    @param value: a client's C{X-Request-Id}, as text.
    @return: whether it is kept: 1 to L{MAX_LENGTH} visible ASCII
        characters.
    """
    # Printable ASCII is " " to "~"; the space is refused on its own.
    return 0 < len(value) <= MAX_LENGTH and value.isascii() and value.isprintable() and " " not in value


def request_id(given: Optional[Sequence[bytes]]) -> bytes:
    """
    @param given: the values of the client's C{X-Request-Id} headers, or
        L{None} when it sent none.
    @return: the request's id: the client's when it sent exactly one
        L{acceptable} value, else a L{new_request_id}.
    """
    if given is not None and len(given) == 1:
        if acceptable(given[0].decode("latin-1")):
            return given[0]
    return new_request_id().encode("ascii")
