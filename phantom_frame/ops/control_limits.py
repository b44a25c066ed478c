"""
What the control site accepts: the token, the body's size and its JSON.

The checks that need only a request's head give a L{Refusal}, which the
control site (L{phantom_frame.ops.control_site}) sends before reading any
body and the resource (L{phantom_frame.ops.control}) renders when it is
reached another way.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from operator import neg
from typing import Any, List, Tuple

import attr

#: Largest control request body accepted, in bytes.
MAX_BODY = 1024 * 1024

#: Deepest nesting of arrays and objects accepted in a request body.
MAX_DEPTH = 32

#: The open route, answered without a token.
HEALTH = b"/health"


class BadRequest(Exception):
    """
    The request body is not what the route expects (answered 400).
    """


class BodyTooLarge(BadRequest):
    """
    The request body is over L{MAX_BODY} bytes (answered 413).
    """


@attr.s(frozen=True, auto_attribs=True)
class Refusal:
    """
    An error answer decided from the request's head alone.

    @ivar code: the status code: 400, 401 or 413.
    @ivar error: the reason, shown as C{{"error": ...}}.
    @ivar challenge: whether the answer carries C{WWW-Authenticate}.
    """

    code: int
    error: str
    challenge: bool = False

    def headers(self) -> List[Tuple[bytes, bytes]]:
        """
        @return: the headers the answer carries besides the JSON ones.
        """
        if self.challenge:
            return [(b"www-authenticate", CHALLENGE)]
        return []


#: The C{WWW-Authenticate} value of a 401.
CHALLENGE = b'Bearer realm="phantom-frame"'

#: No token, another scheme or a wrong token.
UNAUTHORIZED = Refusal(401, "unauthorized", challenge=True)
#: A body over L{MAX_BODY} bytes.
TOO_LARGE = Refusal(413, "request body too large")
#: More than one C{Authorization} header.
TWO_TOKENS = Refusal(400, "more than one Authorization header")


def route_path(target: bytes) -> bytes:
    """
    @param target: a request target, as on the request line.
    @return: the route it names: its path without the query or a trailing
        C{/}.
    """
    return target.split(b"?", 1)[0].rstrip(b"/") or b"/"


def json_body(raw: bytes) -> Any:
    """
    Decode a request body as JSON, refusing deep nesting before decoding.

    @param raw: the body, at most L{MAX_BODY} bytes.
    @return: the decoded value.
    @raise BadRequest: when it is not UTF-8 JSON nested at most
        L{MAX_DEPTH} levels.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"invalid JSON: {e}")
    if too_deep(raw):
        raise BadRequest(f"invalid JSON: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"invalid JSON: {e}")


_BRACKETS = bytes.maketrans(b"[]{}", b"()()")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_RUNS = re.compile(rb"\(+|\)+")


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """
    Whether JSON text nests arrays and objects deeper than C{limit}, found
    without recursion and without a Python loop over its bytes: a few
    passes of C{bytes} methods, then a sum over runs of brackets.

    Brackets inside strings do not count. The answer is exact for JSON;
    for other text, L{False} still means that decoding cannot nest deeper
    than C{limit} before it fails: up to where it fails, no prefix opens
    more than C{limit} brackets it has not closed.

    @param raw: UTF-8 (or ASCII) JSON text.
    @param limit: the deepest nesting accepted.
    @return: L{True} when the text nests deeper.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    # Escapes go first (a backslash pairs with the character after it, left
    # to right), then every other segment between quotes is inside a string.
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    nesting = b"".join(unescaped.split(b'"')[::2]).translate(_BRACKETS, _NOT_BRACKETS)
    # A pass removes every innermost pair, "()", which lowers the deepest
    # point by exactly one when the brackets balance, and by at most one
    # otherwise. Passes go on while they shrink the text by a quarter or
    # more; after that, innermost pairs, and so runs of brackets, are few.
    passes = 0
    while nesting and passes < limit:
        shorter = nesting.replace(b"()", b"")
        removed = len(nesting) - len(shorter)
        if not removed:
            break
        nesting = shorter
        passes += 1
        if removed * 3 < len(shorter):
            break
    return _deepest(nesting) > limit - passes


def _deepest(nesting: bytes) -> int:
    """
    @param nesting: C{(} and C{)} only.
    @return: how many more C{(} than C{)} the most unbalanced prefix holds
        (0 for none).
    """
    if not nesting:
        return 0
    sizes = list(map(len, _RUNS.findall(nesting)))
    # Runs alternate: negate the runs of ")".
    closes = 0 if nesting.startswith(b")") else 1
    sizes[closes::2] = map(neg, sizes[closes::2])
    return max(0, max(accumulate(sizes)))
