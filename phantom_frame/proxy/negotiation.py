"""
How an answer is made from a stored entry: content negotiation,
conditional requests (RFC 9110 §13.2.2) and byte ranges (§14), as a typed
L{EntryAnswer} (L{Full}, L{NotModified}, L{Partial}, L{Unsatisfiable},
L{NotAcceptable}) that every renderer renders.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import attr

from phantom_frame.cache.codec import alternative_codings, choose_coding
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.freshness import (
    etag_matches_strong,
    etag_matches_weak,
    parse_http_date,
    parse_range,
)
from phantom_frame.proxy.view import RequestView

#: The methods a stored entry answers.
GET_HEAD = (b"GET", b"HEAD")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Full:
    """
    The whole stored representation, in C{coding}.
    """

    coding: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class NotModified:
    """
    304: the client's validators match (C{coding} gives the ETag's form).
    """

    coding: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Partial:
    """
    206: bytes C{first} to C{last} (inclusive) of the identity body.
    """

    first: int
    last: int
    coding: str = "identity"


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Unsatisfiable:
    """
    416: the range asked for lies outside the body.
    """

    coding: str = "identity"


@attr.s(frozen=True, slots=True, auto_attribs=True)
class NotAcceptable:
    """
    406: no content coding the client accepts can be made.
    """

    coding: Optional[str] = None


EntryAnswer = Union[Full, NotModified, Partial, Unsatisfiable, NotAcceptable]




class Negotiator:
    """
    Chooses the answer a request gets from a stored entry.
    """

    def __init__(self) -> None:
        self._codings: Dict[Tuple[Optional[str], str, Tuple[str, ...]], Optional[str]] = {}
        #: One L{Full} per coding (it is immutable).
        self._full: Dict[str, Full] = {}

    def coding_for(self, accept: Optional[str], stored: str, made: Tuple[str, ...] = ()) -> Optional[str]:
        """
        @return: the coding to send a body stored in C{stored} in, for a
            client sending C{accept}: the stored one, one of C{made} (beside
            it already), one phantom-frame can make (L{alternative_codings})
            or identity; L{None} for none (see L{choose_coding}).
        """
        memo = (accept, stored, made)
        coding = self._codings.get(memo, "")
        if coding == "":
            raw = accept.encode("latin-1") if accept is not None else None
            coding = choose_coding(raw, stored, made, alternative_codings(stored))
            if len(self._codings) < 1024:
                self._codings[memo] = coding
        return coding

    def answer(self, view: RequestView, entry: CacheEntry) -> EntryAnswer:
        """
        Content negotiation, conditional requests (RFC 9110 §13.2.2) and
        byte ranges (§14) for an answer from C{entry}.
        """
        headers = view.headers
        made = tuple(entry.alternates) if entry.alternates else ()
        coding = self.coding_for(headers.get("accept-encoding"), entry.coding, made)
        if coding is None:
            return NotAcceptable()
        ranged = None
        if entry.status == 200 and view.method == b"GET" and "range" in headers:
            ranged = self._range(view, entry)
            if ranged is not None:
                coding = "identity"
        if 200 <= entry.status < 300 and self._not_modified(view, entry):
            return NotModified(coding)
        if ranged == "unsatisfiable":
            return Unsatisfiable()
        if ranged is not None:
            return Partial(ranged[0], ranged[1])
        full = self._full.get(coding)
        if full is None:
            full = self._full[coding] = Full(coding)
        return full

    @staticmethod
    def _not_modified(view: RequestView, entry: CacheEntry) -> bool:
        """
        C{If-None-Match} (weak comparison, lists, C{*}), else
        C{If-Modified-Since}, for GET and HEAD. An entry without
        C{Last-Modified} is compared by its C{Date}, or else by when it was
        received (RFC 9111 §4.3.2).
        """
        if view.method not in GET_HEAD:
            return False
        headers = view.headers
        inm = headers.get("if-none-match")
        if inm is not None:
            return etag_matches_weak(inm.encode("latin-1"), entry.etag)
        if "if-modified-since" not in headers:
            return False
        ims = view.values(b"if-modified-since")
        if not ims:
            return False
        since = parse_http_date(ims[0])
        if since is None:
            return False
        if entry.last_modified is not None:
            modified = parse_http_date(entry.last_modified)
        else:
            dates = [v for n, v in entry.headers if n.lower() == b"date"]
            modified = parse_http_date(dates[0]) if dates else None
            if modified is None:
                modified = entry.stored_at
        return modified is not None and modified <= since

    @staticmethod
    def _range(view: RequestView, entry: CacheEntry):
        """
        @return: what C{Range} asks of C{entry}'s identity body: C{None} (the
            whole body: an ignored range, or C{If-Range} not matching),
            C{"unsatisfiable"} or C{(first, last)}.
        """
        if_range = view.values(b"if-range")
        if if_range:
            value = if_range[0].strip()
            if value.startswith((b'"', b"W/")):
                if not etag_matches_strong(value, entry.etag):
                    return None
            else:
                date = parse_http_date(value)
                modified = parse_http_date(entry.last_modified)
                if date is None or modified is None or date != modified:
                    return None
        return parse_range(view.values(b"range")[0], entry.identity_length)
