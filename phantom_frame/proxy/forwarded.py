"""
L{forwarded_fields}: the header fields a request is forwarded to its origin
with, serialised once for the requests whose heads have the same header
lines (the channel remembers the heads it parsed: see
L{phantom_frame.http.fasthits}).
"""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, List, Optional, Tuple, Union

from phantom_frame.proxy.heads import Fields
from phantom_frame.proxy.origin import Header
from phantom_frame.proxy.passthrough import forward_headers
from phantom_frame.proxy.view import RequestView

__all__ = ["FORWARDED_KEPT", "fill_fields", "forwarded_fields"]

#: The fields forwarded for the header fields of a remembered request head,
#: a client and the headers left out (see L{forwarded_fields}), and how
#: many are kept.
_forwarded: Dict[Tuple[int, Optional[str], bool, FrozenSet[bytes]], Tuple[Any, Any, Any, Fields]] = {}
FORWARDED_KEPT = 1024


def forwarded_fields(
    shared: Any, view: Any, origin: Any, rules: Any, drop: FrozenSet[bytes] = frozenset()
) -> Union[Fields, List[Header]]:
    """
    The header fields that forward C{view} to C{origin}: those of
    L{forward_headers} after the origin's C{Host}.

    @param shared: the view remembered for the request's head, that every
        request with the same head bytes shares (C{view} is its copy with
        the client's address and request id), or C{None}.
    @param drop: more request headers (lower-cased) not to forward (a
        fill's: L{phantom_frame.proxy.origin.FILL_DROPPED}).
    @return: L{Fields} serialised once per remembered head's header fields
        (shared by heads that differ only in their request line), client
        and C{drop} (header rules with request headers to set or remove are
        applied anew each time, as pairs).
    @raise ValueError: for fields that cannot be sent.
    """
    fields = _remembered(shared, view, origin, rules, drop)
    if fields is not None:
        return fields
    headers = forward_headers(view, drop, rules)
    headers.insert(0, origin.host)
    return headers


def fill_fields(
    view: Any, shared: Any, origin: Any, rules: Any, drop: FrozenSet[bytes]
) -> Union[Fields, List[Header]]:
    """
    The header fields a fill forwards C{view} with, but C{drop}: the
    L{Fields} of L{forwarded_fields} (with the origin's C{Host}) when the
    channel remembers the request's head (C{shared}), else pairs without
    C{Host} (for L{phantom_frame.proxy.origin.Origin.request} to add).

    @raise ValueError: for fields that cannot be sent.
    """
    fields = _remembered(shared, view, origin, rules, drop)
    return forward_headers(view, drop, rules) if fields is None else fields


def _remembered(shared: Any, view: Any, origin: Any, rules: Any, drop: FrozenSet[bytes]) -> Optional[Fields]:
    """
    @return: the L{Fields} of L{forwarded_fields} made once per remembered
        head, or C{None} when they are made anew (no remembered head,
        header rules with request headers to set or remove, or a client
        request id that was refused, which is not forwarded).
    """
    if shared is None or rules.request_set or rules.request_remove:
        return None
    rid = view.headers.get("x-request-id")
    known_rid = shared.headers.get("x-request-id")
    if known_rid is not None and known_rid != rid:
        return None
    # (By the remembered head's fields, which the heads of new paths with
    # the same header lines share: what is forwarded depends on nothing
    # else but the client and the connection's security.)
    fields = shared.headers
    key = (id(fields), view.client, shared.secure, drop)
    known = _forwarded.get(key)
    if known is None or known[0] is not fields or known[1] is not origin or known[2] is not rules:
        base = RequestView(
            shared.method, shared.path, shared.query, shared.headers, None, view.client, shared.secure,
            shared.prefix,
        )
        headers = forward_headers(base, drop, rules)
        headers.insert(0, origin.host)
        known = (fields, origin, rules, Fields.of(headers))
        if len(_forwarded) >= FORWARDED_KEPT:
            _forwarded.clear()
        _forwarded[key] = known
    if known_rid is None and rid is not None:
        return known[3].plus(b"x-request-id", rid.encode("latin-1"))
    return known[3]

