"""
Storing 206 answers (RFC 9111 §3.3-3.4), under the http policy: L{Parts}
turns a 206 a ranged fill brought into a part of its key's partial entry,
and parts that cover the whole representation into a complete entry.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from twisted.internet.interfaces import IReactorTime

from phantom_frame.cache.cookies import marked_shareable
from phantom_frame.cache.freshness import ResponseDirectives, http_bypass_reason
from phantom_frame.cache.lock import Exclusive, FillResult
from phantom_frame.cache.partial import (
    MIN_PARTIAL_BOUND,
    PartialEntry,
    parse_content_range,
    strong_validator,
)
from phantom_frame.cache.policy import (
    header_value,
    media_type,
    response_bypass_reason,
    vary_names,
)
from phantom_frame.proxy.origin import FILL_DROPPED, BodyRelay, Header, known_length
from phantom_frame.proxy.settings import CreateProxyConfig

#: Request headers a ranged fill never forwards: those of every fill but
#: C{Range} and C{If-Range}.
RANGED_DROPPED = FILL_DROPPED - {b"range", b"if-range"}

#: The reason of an L{Exclusive} whose 206 was stored as a part: relayed to
#: the one client that asked, with the C{Cache-Status} of a stored answer.
PART_STORED = "part-stored"

#: Headers of a part that every answer from its entry recomputes.
_UNKEPT = frozenset(
    {b"content-length", b"content-encoding", b"content-range", b"vary", b"age", b"set-cookie"}
)


def part_bound(config: CreateProxyConfig) -> int:
    """
    @return: the most bytes the parts of one partial entry may hold:
        C{max_cacheable_bytes}, but at least L{MIN_PARTIAL_BOUND}.
    """
    return max(config.max_cacheable_bytes, MIN_PARTIAL_BOUND)


def part_reason(
    headers: List[Header], strategy: Any, authorized: bool, private: bool, bound: int
) -> Optional[str]:
    """
    Whether a 206 may be stored as a part: as a 200 would be (RFC 9111 §3,
    with explicit or heuristic freshness), with one range of a known
    complete length (C{multipart/byteranges} is not stored), a strong
    validator, no content coding, no C{Vary} and at most C{bound} bytes.

    @param private: whether the request's cookies make it private: then
        only a response the origin marked shareable is stored.
    @return: L{None} when it may, else a short reason.
    """
    reason = response_bypass_reason(200, headers, strategy, check_status=False)
    reason = reason or http_bypass_reason(200, headers, ResponseDirectives.parse(headers), authorized)
    if reason is not None:
        return reason
    if (media_type(headers) or "").startswith("multipart/"):
        return "multipart"
    found = parse_content_range(header_value(headers, b"content-range"))
    if found is None:
        return "content-range"
    if strong_validator(header_value(headers, b"etag"), header_value(headers, b"last-modified")) is None:
        return "validator"
    coding = header_value(headers, b"content-encoding")
    if coding is not None and coding.strip().lower() != b"identity":
        return "coding"
    if vary_names(headers):
        return "vary"
    if private and not marked_shareable(headers):
        return "cookie"
    if found[1] - found[0] + 1 > bound:
        return "size"
    return None


class Parts:
    """
    How a server stores the 206 answers of its ranged fills.
    """

    def __init__(
        self,
        config: CreateProxyConfig,
        cache: Any,
        clock: IReactorTime,
        stored: Callable[..., Any],
        set_freshness: Callable[..., None],
    ) -> None:
        """
        @param config: the server's settings.
        @param cache: its L{phantom_frame.cache.responses.ResponseCache}.
        @param clock: for the origin's idle timeout.
        @param stored: makes the complete entry of a key from a whole
            body, as a fill does (L{phantom_frame.proxy.fill.Filler}'s
            C{_stored}: compressed per the server's strategy).
        @param set_freshness: gives an entry its freshness from a response
            (L{phantom_frame.proxy.fill.Filler.set_freshness}).
        """
        self._config = config
        self._cache = cache
        self._clock = clock
        self._stored = stored
        self._set_freshness = set_freshness
        self.bound = part_bound(config)

    async def store(
        self,
        key: str,
        response: Any,
        headers: List[Header],
        header: Callable[[str], Optional[str]],
        authorized: bool,
        private: bool,
        request_time: float,
        response_time: float,
    ) -> FillResult:
        """
        Store the 206 C{response} (its end-to-end C{headers}) of the ranged
        fill of C{key} as a part.

        @param header: looks the request's headers up (for the complete
            entry's variant).
        @return: the L{phantom_frame.cache.lock.Shared} complete entry when
            the parts now cover the whole representation, else an
            L{Exclusive} 206 for the client that asked, whose reason is
            L{PART_STORED} when the part was stored.
        @raise UpstreamError: the body broke off, or the complete body does
            not decode.
        """
        config = self._config
        reason = part_reason(headers, config.cache_strategy, authorized, private, self.bound)
        found = parse_content_range(header_value(headers, b"content-range"))
        length = known_length(response)
        if reason is None and length is not None and length != found[1] - found[0] + 1:
            reason = "content-range"
        relay = BodyRelay(self._clock, config.upstream_timeout, None if reason else self.bound)
        response.deliverBody(relay)
        if reason is not None:
            return Exclusive((response, relay), reason, relay.abort)
        complete = await relay.ready()
        body = relay.collected() if complete else b""
        if not complete or len(body) != found[1] - found[0] + 1:
            return Exclusive((response, relay), "content-range" if complete else "size", relay.abort)
        if not self._cache.in_flight(key):
            # An invalidation overtook the fill.
            return Exclusive((response, relay), "invalidated", relay.abort)
        candidate = PartialEntry(
            key=key,
            length=found[2],
            validator=strong_validator(header_value(headers, b"etag"), header_value(headers, b"last-modified")),
            headers=tuple((n, v) for n, v in headers if n.lower() not in _UNKEPT),
            etag=header_value(headers, b"etag"),
            last_modified=header_value(headers, b"last-modified"),
            stored_at=response_time,
            shareable=marked_shareable(headers),
        )
        directives = ResponseDirectives.parse(headers)
        self._set_freshness(candidate, headers, directives, request_time, response_time)
        partial = self._cache.add_part(candidate, found[0], body, self.bound)
        if partial is None:
            return Exclusive((response, relay), "size", relay.abort)
        if not partial.complete:
            return Exclusive((response, relay), PART_STORED, relay.abort)
        # The parts cover the representation: a complete entry replaces them.
        whole = await self._stored(
            key, 200, b"OK", list(partial.headers), partial.combined(), directives, header, False,
            request_time, response_time,
        )
        if whole is None:
            return Exclusive((response, relay), "status", relay.abort)
        return whole
