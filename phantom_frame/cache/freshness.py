"""
HTTP caching rules (RFC 9111, RFC 5861, RFC 9213) as pure functions: dates,
directives, ages, freshness lifetimes, storability of responses in a shared
cache, conditional requests and byte ranges.

Parsing is robust: malformed input never raises, and invalid or conflicting
freshness information is read the conservative way RFC 9111 recommends
(treated as stale).
"""

from __future__ import annotations

import base64
import calendar
import datetime
import hashlib
import math
import re
import time
from typing import Dict, Optional, Sequence, Tuple

import attr

from phantom_frame.cache.policy import (
    UNDERSTOOD_STATUSES,
    cache_control_values,
    header_value,
    header_values,
    parse_cache_control,
)

Headers = Sequence[Tuple[bytes, bytes]]

#: Statuses a cache may give a heuristic freshness lifetime (RFC 9110 §15.1).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
#: Answers to a fill that are relayed, never stored: a fill asks for the
#: whole, unconditional representation.
UNSTORED_STATUSES = frozenset({206, 304})
#: Heuristic lifetime: this fraction of the time since Last-Modified...
HEURISTIC_FRACTION = 0.1
#: ...but at most this long (as Squid and Apache do).
HEURISTIC_MAX = 86400.0

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)"
_LONG_DAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
_FLAGS = re.IGNORECASE | re.ASCII
#: RFC 9110 §5.6.7, exactly: single spaces, two-digit days, GMT.
_IMF = re.compile(_DAY + r", ([0-9]{2}) " + _MONTH + r" ([0-9]{4}) " + _TIME + r" GMT", _FLAGS)
_RFC850 = re.compile(_LONG_DAY + r", ([0-9]{2})-" + _MONTH + r"-([0-9]{2}) " + _TIME + r" GMT", _FLAGS)
_ASCTIME = re.compile(_DAY + r" " + _MONTH + r" ([0-9]{2}| [0-9]) " + _TIME + r" ([0-9]{4})", _FLAGS)


def parse_http_date(value: Optional[bytes]) -> Optional[float]:
    """
    Parse an HTTP-date (RFC 9110 §5.6.7): an IMF-fixdate, exactly as the
    grammar has it (C{Sun, 06 Nov 1994 08:49:37 GMT}), or one of the
    obsolete forms recipients must accept, RFC 850
    (C{Sunday, 06-Nov-94 08:49:37 GMT}) and asctime
    (C{Sun Nov  6 08:49:37 1994}). Names, and C{GMT}, in any case.

    @return: seconds since the epoch, or C{None} when absent or invalid.
    """
    if not value:
        return None
    text = value.decode("latin-1").strip(" \t")
    m = _IMF.fullmatch(text)
    if m is not None:
        day, month, year, hh, mm, ss = m.groups()
        year_number = int(year)
    else:
        m = _RFC850.fullmatch(text)
        if m is not None:
            day, month, year, hh, mm, ss = m.groups()
            # RFC 9110: a two-digit year more than 50 years ahead is in the past.
            now_year = time.gmtime().tm_year
            year_number = int(year) + (now_year // 100) * 100
            if year_number > now_year + 50:
                year_number -= 100
        else:
            m = _ASCTIME.fullmatch(text)
            if m is None:
                return None
            month, day, hh, mm, ss, year = m.groups()
            year_number = int(year)
    hour, minute, second = int(hh), int(mm), int(ss)
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second
        return None
    try:
        datetime.date(year_number, _MONTHS[month.lower()], int(day))
    except ValueError:
        return None
    return float(calendar.timegm((year_number, _MONTHS[month.lower()], int(day), hour, minute, second)))


def _seconds(value: Optional[str]) -> Optional[float]:
    """
    @return: a delta-seconds value, or C{None} when invalid.
    """
    if value is None or not value.isdigit():
        return None
    return float(value)


@attr.s(frozen=True, auto_attribs=True)
class ResponseDirectives:
    """
    The caching directives of a response, from C{CDN-Cache-Control} when it
    has any (RFC 9213: it then replaces C{Cache-Control}), else from
    C{Cache-Control}.

    @ivar invalid: some freshness directive was malformed or given twice
        with different values: the response is treated as stale.
    @ivar must_understand: C{must-understand}: C{no-store} is lifted for a
        status whose caching rules the cache knows (RFC 9111 §5.2.2.3).
    @ivar cdn: the directives came from C{CDN-Cache-Control} (C{Expires}
        is then ignored as well).
    """

    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    must_revalidate: bool = False
    max_age: Optional[float] = None
    s_maxage: Optional[float] = None
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    invalid: bool = False
    cdn: bool = False
    must_understand: bool = False

    @classmethod
    def parse(cls, headers: Headers) -> ResponseDirectives:
        values, cdn = cache_control_values(headers)
        directives = parse_cache_control(values)
        invalid = _conflicting(values, ("max-age", "s-maxage"))

        def seconds(name: str) -> Optional[float]:
            nonlocal invalid
            if name not in directives:
                return None
            parsed = _seconds(directives[name])
            if parsed is None:
                invalid = True
                return 0.0
            return parsed

        max_age = seconds("max-age")
        s_maxage = seconds("s-maxage")
        # A bare stale-while-revalidate (RFC 5861 wants seconds) is what
        # Next.js sends for ISR pages: stale for as long as it takes, one
        # background refresh at a time.
        if "stale-while-revalidate" in directives and directives["stale-while-revalidate"] is None:
            swr = math.inf
        else:
            swr = _seconds(directives.get("stale-while-revalidate")) or 0.0
        sie = _seconds(directives.get("stale-if-error")) or 0.0
        return cls(
            no_store="no-store" in directives,
            no_cache="no-cache" in directives,
            private="private" in directives,
            public="public" in directives,
            must_revalidate="must-revalidate" in directives or "proxy-revalidate" in directives,
            max_age=max_age,
            s_maxage=s_maxage,
            stale_while_revalidate=swr,
            stale_if_error=sie,
            invalid=invalid,
            cdn=cdn,
            must_understand="must-understand" in directives,
        )

    @property
    def explicit(self) -> bool:
        """
        Whether the directives give an explicit lifetime.
        """
        return self.s_maxage is not None or self.max_age is not None

    @property
    def never_stale(self) -> bool:
        """
        Whether a stale response must be revalidated before any use, in a
        shared cache: C{must-revalidate}, C{proxy-revalidate}, C{no-cache},
        and C{s-maxage}, which implies C{proxy-revalidate} (RFC 9111
        §5.2.2.10) -- unless the response grants C{stale-while-revalidate}
        itself: its explicit permission (as Next.js sends with
        C{s-maxage}) is taken over the implied prohibition.
        """
        if self.must_revalidate or self.no_cache:
            return True
        return self.s_maxage is not None and not self.stale_while_revalidate

    def stores_despite_no_store(self, status: int) -> bool:
        """
        @return: whether C{must-understand} lifts C{no-store} for C{status}.
        """
        return self.must_understand and status in UNDERSTOOD_STATUSES


def _conflicting(values: Sequence[bytes], names: Sequence[str]) -> bool:
    """
    @return: whether one of C{names} appears twice with different values.
    """
    seen: Dict[str, str] = {}
    for value in values:
        for item in value.decode("latin-1").split(","):
            name, _, argument = item.strip().partition("=")
            name = name.strip().lower()
            if name in names:
                argument = argument.strip().strip('"')
                if name in seen and seen[name] != argument:
                    return True
                seen[name] = argument
    return False


@attr.s(frozen=True, auto_attribs=True)
class RequestDirectives:
    """
    The caching directives of a request (RFC 9111 §5.2.1).

    @ivar max_stale: how stale a response may be: C{None} for not at all,
        C{math.inf} for any.
    """

    no_store: bool = False
    no_cache: bool = False
    only_if_cached: bool = False
    max_age: Optional[float] = None
    min_fresh: Optional[float] = None
    max_stale: Optional[float] = None

    @classmethod
    def parse(cls, cache_control: Sequence[bytes], pragma: Sequence[bytes] = ()) -> RequestDirectives:
        directives = parse_cache_control(cache_control)
        no_cache = "no-cache" in directives
        if not cache_control and any(b"no-cache" in p.lower() for p in pragma):
            no_cache = True
        max_stale: Optional[float] = None
        if "max-stale" in directives:
            argument = directives["max-stale"]
            max_stale = math.inf if argument is None else _seconds(argument)
        max_age = directives.get("max-age")
        min_fresh = directives.get("min-fresh")
        return cls(
            no_store="no-store" in directives,
            no_cache=no_cache,
            only_if_cached="only-if-cached" in directives,
            # An invalid max-age asks for something fresh: 0, conservatively.
            max_age=None if "max-age" not in directives else (_seconds(max_age) or 0.0),
            min_fresh=None if "min-fresh" not in directives else (_seconds(min_fresh) or 0.0),
            max_stale=max_stale,
        )


NO_REQUEST_DIRECTIVES = RequestDirectives()


def age_value(headers: Headers) -> float:
    """
    @return: the C{Age} header's value; a malformed one is ignored (0).
    """
    value = header_values(headers, b"age")
    if not value:
        return 0.0
    first = value[0].split(b",")[0].strip()
    return float(first) if first.isdigit() else 0.0


def initial_age(headers: Headers, request_time: float, response_time: float) -> float:
    """
    RFC 9111 §4.2.3: the corrected initial age of a response.
    """
    date = parse_http_date(header_value(headers, b"date"))
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    corrected = age_value(headers) + (response_time - request_time)
    return max(apparent, corrected)


def freshness_lifetime(
    status: int, headers: Headers, directives: ResponseDirectives, response_time: Optional[float] = None
) -> float:
    """
    RFC 9111 §4.2.1: how long a response stays fresh in a shared cache.

    @param response_time: when the response was received: it stands for a
        missing or invalid C{Date} (RFC 9110 §6.6.1).
    @return: seconds; 0 for a response that must be revalidated before
        each use (or whose freshness information is invalid).
    """
    if directives.invalid or directives.no_cache:
        return 0.0
    if directives.s_maxage is not None:
        return directives.s_maxage
    if directives.max_age is not None:
        return directives.max_age
    date = parse_http_date(header_value(headers, b"date"))
    if date is None:
        date = response_time
    expires_values = [] if directives.cdn else header_values(headers, b"expires")
    if expires_values:
        if len({v.strip() for v in expires_values}) > 1:
            return 0.0
        expires = parse_http_date(expires_values[0])
        if expires is None or date is None:
            return 0.0  # "0" and other invalid dates mean already expired
        return max(0.0, expires - date)
    last_modified = parse_http_date(header_value(headers, b"last-modified"))
    if (status in HEURISTIC_STATUSES or directives.public) and last_modified is not None:
        if date is not None and date > last_modified:
            return min(HEURISTIC_MAX, (date - last_modified) * HEURISTIC_FRACTION)
    return 0.0


def has_validator(headers: Headers) -> bool:
    """
    @return: whether the response has an C{ETag} or a C{Last-Modified}.
    """
    return bool(header_values(headers, b"etag") or header_values(headers, b"last-modified"))


def http_bypass_reason(
    status: int, headers: Headers, directives: ResponseDirectives, authorized: bool
) -> Optional[str]:
    """
    Whether a shared cache may store a response (RFC 9111 §3, §3.5), beyond
    the rules every policy applies (see L{policy.response_bypass_reason}):
    any final status with explicit freshness (C{s-maxage}, C{max-age},
    C{Expires}); without it, a heuristically cacheable status (RFC 9110
    §15.1) or C{public}, with a way to freshness or to revalidation. 206
    and 304 answers to a fill are never stored (see L{UNSTORED_STATUSES}).

    @param authorized: whether the request carried C{Authorization}.
    @return: C{None} when it may, else a short reason.
    """
    if directives.no_store and not directives.stores_despite_no_store(status):
        return "no-store"
    if directives.private:
        return "private"
    if authorized and not (directives.public or directives.must_revalidate or directives.s_maxage is not None):
        return "authorization"
    if status < 200 or status in UNSTORED_STATUSES:
        return "status"
    if directives.explicit or (not directives.cdn and header_values(headers, b"expires")):
        return None
    if status not in HEURISTIC_STATUSES and not directives.public:
        return "no-freshness"
    if directives.no_cache or has_validator(headers) or directives.public:
        return None
    return "no-freshness"


def _opaque(tag: bytes) -> bytes:
    tag = tag.strip()
    return tag[2:] if tag.startswith(b"W/") else tag


def etag_matches_weak(header: bytes, etag: Optional[bytes]) -> bool:
    """
    C{If-None-Match} evaluation: weak comparison, lists and C{*}.
    """
    if header.strip() == b"*":
        return True
    if not etag:
        return False
    wanted = _opaque(etag)
    return any(_opaque(candidate) == wanted for candidate in _split_tags(header))


def etag_matches_strong(header: bytes, etag: Optional[bytes]) -> bool:
    """
    Strong comparison of one entity-tag (for C{If-Range}).
    """
    if not etag or etag.startswith(b"W/"):
        return False
    header = header.strip()
    return not header.startswith(b"W/") and header == etag.strip()


def _split_tags(header: bytes):
    """
    Split an entity-tag list, respecting quotes (tags may hold commas).
    """
    tags, current, quoted = [], b"", False
    for char in header:
        c = bytes((char,))
        if c == b'"':
            quoted = not quoted
        if c == b"," and not quoted:
            tags.append(current)
            current = b""
        else:
            current += c
    tags.append(current)
    return [t.strip() for t in tags if t.strip()]


def strong_etag(body: bytes) -> bytes:
    """
    @return: a strong entity-tag for C{body}, made when the origin sent
        none (C{generate_etag}): a hash of its bytes.
    """
    digest = hashlib.sha256(body).digest()[:12]
    return b'"pf-' + base64.urlsafe_b64encode(digest).rstrip(b"=") + b'"'


def weakened(etag: bytes) -> bytes:
    """
    @return: C{etag} as a weak validator (for a representation phantom-frame
        compressed itself: the bytes differ from the origin's).
    """
    return etag if etag.startswith(b"W/") else b"W/" + etag


def parse_range(value: Optional[bytes], length: int):
    """
    Parse a C{Range} header for a representation of C{length} bytes.

    @return: C{None} to ignore it (absent, malformed, several ranges, not
        bytes), C{"unsatisfiable"}, or C{(first, last)} inclusive.
    """
    if not value:
        return None
    text = value.decode("latin-1").strip()
    unit, _, spec = text.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0 or length == 0:
            return "unsatisfiable"
        return (max(0, length - suffix), length - 1)
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = int(last) if last else length - 1
    if last and end < start:
        return None
    if start >= length:
        return "unsatisfiable"
    return (start, min(end, length - 1))
