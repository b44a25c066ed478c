"""
Cookies and shared answers: which requests are private (they carry a
cookie that may change the answer), and which responses the origin marked
shareable (so that they may be stored from, and served to, private
requests).

With C{cookie_policy = "strict"} a request that carries a cookie not named
by C{ignore_cookies} is private: it is answered from a stored entry, and
its own answer is stored, only when the origin marked that answer
shareable. A route that reads the session cookie without saying so (a JSON
C{whoami}) is thus never handed from one visitor to another, while pages
and assets the origin marks public are shared.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple

from phantom_frame.cache.globs import Glob, GlobSet
from phantom_frame.cache.policy import as_pairs, header_index, parse_cache_control

__all__ = ["CookieRule", "marked_shareable"]

#: Response headers addressed to shared caches whose lifetime makes a
#: response shareable (RFC 9213 C{CDN-Cache-Control}, the Edge
#: Architecture's C{Surrogate-Control}).
_SURROGATE = (b"cdn-cache-control", b"surrogate-control")

_LIFETIMES = ("max-age", "s-maxage")


def _seconds(value: Optional[str]) -> bool:
    """
    @return: whether C{value} is a delta-seconds value.
    """
    return value is not None and value.isdigit() and value.isascii()


def marked_shareable(headers: Iterable[Tuple[bytes, bytes]]) -> bool:
    """
    Whether the origin marked a response as one for everybody.

    @param headers: the response headers, as received.
    @return: L{True} for C{Cache-Control: public} or C{s-maxage=N}, or a
        C{CDN-Cache-Control} or C{Surrogate-Control} lifetime
        (C{max-age=N}, C{s-maxage=N}).
    """
    index = header_index(as_pairs(headers))
    values = index.get(b"cache-control")
    if values:
        directives = parse_cache_control(values)
        if "public" in directives or _seconds(directives.get("s-maxage")):
            return True
    for name in _SURROGATE:
        values = index.get(name)
        if values:
            surrogate = parse_cache_control(values)
            if any(_seconds(surrogate.get(lifetime)) for lifetime in _LIFETIMES):
                return True
    return False


class CookieRule:
    """
    Tells private requests by their cookies.
    """

    def __init__(self, strict: bool, ignored: Sequence[str] = ()) -> None:
        """
        @param strict: C{cookie_policy = "strict"}; otherwise cookies never
            make a request private.
        @param ignored: C{ignore_cookies}: globs of cookie names that never
            make a request private (C{"_ga*"}, C{"_gid"}).
        """
        self.strict = strict
        self._ignored = GlobSet(Glob(name) for name in ignored) if ignored else None

    def private(self, cookie: Optional[str]) -> bool:
        """
        @param cookie: the request's C{Cookie} header (repeated ones joined
            with C{", "}), or C{None}.
        @return: whether the request carries a cookie that makes it
            private: under the strict policy, any cookie whose name no
            C{ignore_cookies} glob matches (a pair without C{=} is a name).
        """
        if not self.strict or not cookie:
            return False
        ignored = self._ignored
        if ignored is None:
            return any(pair.strip() for pair in cookie.split(";"))
        for pair in cookie.replace(", ", ";").split(";"):
            name = pair.split("=", 1)[0].strip()
            if name and not ignored.matches(name):
                return True
        return False
