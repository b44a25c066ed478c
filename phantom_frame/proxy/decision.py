"""
The one decision: for a request and the cache's state, how it is answered.

L{Decider.decide} returns a typed value -- L{Hit}, L{PartHit}, L{Stale},
L{Fill}, L{Await}, L{Bypass}, L{Reject} or L{Tunnel}; L{Decider.admit} also a
L{Purge} -- and an answer from a stored
entry carries an L{EntryAnswer} (L{phantom_frame.proxy.negotiation}). Whoever renders an answer (the
HTTP/1.1 channel's fast path, the twisted.web resource) renders that value;
the C{Cache-Status} header, the metrics label and the access-log field come
from the L{CacheStatus} it carries. Deciding changes nothing: counting a hit
is L{Decider.note}, called by whoever rendered it.
"""

from __future__ import annotations

import enum
import math
import weakref
from typing import Any, Callable, Dict, Optional, Union

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.freshness import NO_REQUEST_DIRECTIVES, RequestDirectives, parse_range
from phantom_frame.cache.partial import if_range_matches, single_range
from phantom_frame.cache.patterns import RequestFilter
from phantom_frame.cache.strategy import CacheStrategy
from phantom_frame.cache.variance import no_header
from phantom_frame.cache.topkeys import TopKeys
from phantom_frame.proxy import status as statuses
from phantom_frame.proxy.decisions import (
    ALLOW_GET_HEAD,
    Hit,
    PartHit,
    Stale,
    Fill,
    Await,
    Bypass,
    Reject,
    Tunnel,
    Purge,
    Decision,
    MALFORMED,
    BAD_HOST,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    NO_UPGRADES,
    ONLY_IF_CACHED,
    NOT_PRE_GENERATED,
    TUNNEL,
    TOO_MANY_REQUESTS,
    PURGE_UNAUTHORISED,
    PURGE_FORBIDDEN,
)
from phantom_frame.proxy.negotiation import GET_HEAD, Negotiator
from phantom_frame.proxy.purge import PurgeAccess
from phantom_frame.proxy.ratelimit import BucketStoreFactory, MemoryBucketStore, RateLimiter
from phantom_frame.proxy.scope import Scope
from phantom_frame.proxy.settings import CachePolicy, CreateProxyConfig, ProxyMode
from phantom_frame.proxy.view import RequestView

__all__ = [
    "ALLOW_GET_HEAD", "BAD_HOST", "Await", "Bypass", "Decider", "Decision", "Fill", "Freshness", "Hit",
    "MALFORMED", "METHOD_NOT_ALLOWED", "NOT_FOUND", "NOT_PRE_GENERATED", "NO_UPGRADES", "ONLY_IF_CACHED",
    "PURGE_FORBIDDEN", "PURGE_UNAUTHORISED", "PartHit", "Purge", "Reject", "Stale", "TOO_MANY_REQUESTS",
    "TUNNEL", "Tunnel", "request_directives",
]

log = Logger(namespace="phantom_frame.proxy")


def _no_token() -> Optional[str]:
    return None


def _purge_of(view: RequestView) -> Purge:
    """
    @return: the L{Purge} of the request's stripped path (and query).
    """
    pattern = view.path.decode("latin-1")
    return Purge(pattern + "?" + view.query.decode("latin-1") if view.query else pattern)


class Freshness(enum.Enum):
    """
    How a stored entry may be used now (RFC 9111 §4.2, §5.2.1, RFC 5861).
    """

    FRESH = "fresh"
    SERVE_STALE = "serve-stale"
    REFRESH_BEHIND = "refresh-behind"
    REVALIDATE = "revalidate"


def request_directives(view: RequestView) -> RequestDirectives:
    """
    @return: the request's caching directives (RFC 9111 §5.2.1).
    """
    headers = view.headers
    cc = headers.get("cache-control")
    pragma = headers.get("pragma")
    if cc is None and pragma is None:
        return NO_REQUEST_DIRECTIVES
    return RequestDirectives.parse(
        [cc.encode("latin-1")] if cc is not None else [],
        [pragma.encode("latin-1")] if pragma is not None else [],
    )


class _Prepared:
    """
    What L{Decider.decide} finds of a request before it looks at the cache,
    and the answer it last gave for it from a fresh entry.

    @ivar decider: whose it is.
    @ivar early: the decision made without the cache (a bypass, a
        refusal), or C{None}.
    @ivar host: the host scoping the key.
    @ivar key: the cache key, or C{None} when it is found per request
        (snapshots, a custom key function).
    @ivar private: whether the request's cookies make it private.
    @ivar directives: the request's caching directives.
    """

    __slots__ = ("decider", "early", "host", "key", "private", "directives", "_entry", "_version", "_ttl",
                 "_answer", "_status")

    def __init__(self, decider: "Decider") -> None:
        self.decider = decider
        self.early: Optional[Decision] = None
        self.host = ""
        self.key: Optional[str] = None
        self.private = False
        self.directives = NO_REQUEST_DIRECTIVES
        self._entry: Optional["weakref.ReferenceType[CacheEntry]"] = None
        self._version = 0
        self._ttl = -1
        self._answer: Any = None
        self._status: Any = None

    def hit(self, decider: "Decider", view: RequestView, key: str, entry: CacheEntry, age: float) -> Hit:
        """
        @return: the L{Hit} of C{entry}, fresh at C{age}, with the answer
            and status of the last one when nothing they depend on changed
            (the same entry, no entry changed in place since --
            L{phantom_frame.cache.responses.ResponseCache.changes} -- the same
            seconds of freshness left). The entry is held weakly: a view
            kept for later keeps no evicted entry alive.
        """
        lifetime = entry.lifetime
        ttl = -1 if lifetime == math.inf else int(lifetime - age)
        ref = self._entry
        changes = decider._cache.changes
        if ref is not None and ref() is entry and self._version == changes and self._ttl == ttl:
            return Hit(key, entry, self._answer, self._status)
        answer, status = decider.answer(view, entry), statuses.hit(entry, age)
        self._entry, self._version, self._ttl = weakref.ref(entry), changes, ttl
        self._answer, self._status = answer, status
        return Hit(key, entry, answer, status)


class Decider:
    """
    Decides how one server answers each request.

    @ivar top_keys: the hits of the busiest keys, counted by L{note}.
    """

    def __init__(
        self,
        name: str,
        config: CreateProxyConfig,
        cache: Any,
        clock: IReactorTime,
        buckets: BucketStoreFactory = MemoryBucketStore,
    ) -> None:
        """
        @param name: the server's name, for logs.
        @param config: the server's settings.
        @param cache: its L{phantom_frame.cache.responses.ResponseCache}.
        @param clock: gives entries their age and fills rate-limit buckets.
        @param buckets: makes the bucket store of each rate limit.
        """
        self._name = name
        self._config = config
        self._cache = cache
        self._clock = clock
        self.filter = RequestFilter(config.include_paths, config.exclude_paths)
        self.http_policy = config.cache_policy == CachePolicy.HTTP
        self.scope = Scope(config, cache)
        self.caching = config.cache_strategy != CacheStrategy.NONE
        self.pure_ssg = (
            config.proxy_mode == ProxyMode.PRE_GENERATE and not config.pre_generate_fallthrough
        )
        self._tunnels = config.enable_websocket and (
            config.proxy_mode == ProxyMode.DYNAMIC or config.pre_generate_fallthrough
        )
        #: The server's L{RateLimiter}, or C{None} when it has no limits.
        self.limiter: Optional[RateLimiter] = (
            RateLimiter(name, config.rate_limits, clock, buckets) if config.rate_limits else None
        )
        self.negotiator = Negotiator()
        #: C{answer(view, entry)}: see L{Negotiator.answer}.
        self.answer = self.negotiator.answer
        #: C{coding_for(accept, stored, made=())}: see L{Negotiator.coding_for}.
        self.coding_for = self.negotiator.coding_for
        self.top_keys = TopKeys()
        #: Compresses the entries stored in identity once they are served
        #: again (a L{phantom_frame.cache.recoding.Recoder}), or C{None}.
        self.recoder: Any = None
        self._purge_access = PurgeAccess(config.purge_allow)
        #: Returns the bearer token a C{PURGE} may carry (the control
        #: site's C{control_auth}, read at each request so that a reload's
        #: new token applies), or L{None} for none.
        self.purge_token: Callable[[], Optional[str]] = _no_token

    # Keys

    def key(self, method: bytes, path: bytes, query: bytes, headers: Dict[str, str], host: str = "") -> str:
        """
        @return: the cache key of a request (see L{Scope.key}).
        @raise Exception: whatever a custom key function raises.
        """
        return self.scope.key(method, path, query, headers, host)

    def key_of_target(self, target: bytes, view: Optional[RequestView] = None) -> str:
        """
        @return: the key a C{GET} of C{target} is stored under, for the
            host of C{view} or host-less (see L{Scope.key_of_target}).
        """
        return self.scope.key_of_target(target, view)

    # The decision

    def admit(self, view: RequestView, upgrade: bool) -> Optional[Decision]:
        """
        The checks made before anything else (and before webhooks). With
        rate limits, an admitted request is counted against them (this is
        the one check that changes something: call it once per request).

        @param upgrade: whether the request asks to switch protocols.
        @return: a L{Purge}, L{Reject} or L{Tunnel}, or C{None} to go on
            deciding.
        """
        if self.scope.host(view) is None:
            return BAD_HOST
        if view.method == b"PURGE" and self._config.purge_method:
            return self._purge(view)
        limiter = self.limiter
        if limiter is not None:
            wait = limiter.check(view)
            if wait is not None:
                return Reject(429, TOO_MANY_REQUESTS, headers=((b"retry-after", b"%d" % wait),))
        if self._config.forward_get_only and view.method not in GET_HEAD:
            return METHOD_NOT_ALLOWED
        if upgrade:
            return TUNNEL if self._tunnels else NO_UPGRADES
        return None

    def _purge(self, view: RequestView) -> Decision:
        """
        @return: a L{Purge} for a client L{PurgeAccess} lets in, else the
            L{Reject} it says (401 without credentials, 403 otherwise).
        """
        refused = self._purge_access.refusal(view, self.purge_token())
        if refused is None:
            return _purge_of(view)
        return PURGE_UNAUTHORISED if refused == 401 else PURGE_FORBIDDEN

    def decide(self, view: RequestView, key: Optional[str] = None) -> Decision:
        """
        Decide how to answer a request that L{admit} let through.

        What depends on the request alone (its host, a bypass, its key, its
        privacy, its directives) is kept on the view, so that a view decided
        again (the HTTP/1.1 channel keeps the views of the request heads it
        sees) is decided from the cache's state alone.

        @param key: the request's cache key when a webhook gave one.
        @return: the decision.
        """
        prepared = view.prepared
        if prepared is None or prepared.decider is not self or key is not None:
            prepared = self._prepare(view, key)
            if key is None and self.scope.plain:
                view.prepared = prepared
        early = prepared.early
        if early is not None:
            return early
        key = prepared.key
        entry = None
        if key is None:
            try:
                key, entry = self.scope.find(view, prepared.host)
            except Exception:
                log.failure(
                    "cache key function failed for {path!r} on server {server}",
                    path=view.path,
                    server=self._name,
                )
                return Bypass(statuses.bypass("key-error"))
        private = prepared.private
        directives = prepared.directives
        if entry is None:
            entry = self._cache.lookup(key, view.headers.get)
        if entry is None and self.pure_ssg:
            # A snapshot that varies answers every variant with the one it
            # was fetched as (without request headers): the origin is never
            # asked for another.
            shared = self.scope.key(view.method, view.path, view.query, view.headers)
            entry = self._cache.lookup(shared, no_header)
            if entry is not None:
                key = shared
        stale = None
        if entry is not None:
            if private and not entry.shareable:
                return Bypass(statuses.bypass("cookie"))
            now = self._clock.seconds()
            age = entry.age(now)
            verdict = self.judge(entry, age, directives)
            if verdict is Freshness.FRESH:
                return prepared.hit(self, view, key, entry, age)
            if verdict is not Freshness.REVALIDATE:
                # A private request starts no refresh: its cookies would go
                # into a fill other requests are answered from.
                refresh = verdict is Freshness.REFRESH_BEHIND and not private
                return Stale(key, entry, self.answer(view, entry), refresh)
            stale = entry
        ranged = False
        if entry is None and self.http_policy and view.method == b"GET" and "range" in view.headers:
            parted = self._from_parts(view, key, private, directives)
            if not isinstance(parted, bool):
                return parted
            ranged = parted
        if directives.only_if_cached:
            return ONLY_IF_CACHED
        if self.pure_ssg:
            return Await(key) if self._cache.in_flight(key) else NOT_PRE_GENERATED
        if directives.no_store:
            return Bypass(statuses.bypass("no-store"))
        if private and self._cache.in_flight(key):
            # Another request's answer, shareable or not, is not this one's.
            return Bypass(statuses.bypass("cookie"))
        return Fill(key, stale, directives, private, ranged)

    def _prepare(self, view: RequestView, key: Optional[str]) -> "_Prepared":
        """
        @param key: the request's cache key when a webhook gave one.
        @return: what the decision of C{view} depends on that the cache
            does not hold.
        """
        prepared = _Prepared(self)
        host = self.scope.host(view)
        if host is None:
            prepared.early = BAD_HOST
            return prepared
        if self.pure_ssg:
            # Pure SSG never reaches the origin at request time.
            if view.method not in GET_HEAD:
                prepared.early = METHOD_NOT_ALLOWED
                return prepared
        else:
            reason = self._bypass_reason(view)
            if reason is not None:
                prepared.early = Bypass(statuses.bypass(reason))
                return prepared
        prepared.host = host
        if key is None and self.scope.plain and not self.scope.snapshots:
            key = self.scope.key(view.method, view.path, view.query, view.headers, host)
        prepared.key = key
        # Cookies make a request private, but snapshots are for everyone.
        prepared.private = not self.pure_ssg and self.scope.private(view)
        prepared.directives = request_directives(view) if self.http_policy else NO_REQUEST_DIRECTIVES
        return prepared

    def _from_parts(
        self, view: RequestView, key: str, private: bool, directives: RequestDirectives
    ) -> Union[PartHit, bool]:
        """
        A C{GET} with C{Range} for a key without a complete entry, under
        the http policy: answered from the key's partial entry when it is
        fresh, C{If-Range} (if any) matches it and its parts cover the
        range; else filled with the range forwarded when it is a single
        range.

        @return: a L{PartHit}, or whether the fill forwards the range.
        """
        value = view.headers["range"].encode("latin-1")
        if not single_range(value):
            return False
        partial = self._cache.partial(key)
        if partial is None or (private and not partial.shareable):
            return True
        if_range = view.values(b"if-range")
        if if_range and not if_range_matches(if_range[0], partial.etag, partial.last_modified):
            return True
        age = partial.age(self._clock.seconds())
        if self.judge(partial, age, directives) is not Freshness.FRESH:
            return True
        wanted = parse_range(value, partial.length)
        if not isinstance(wanted, tuple) or not partial.covers(*wanted):
            return True
        return PartHit(key, partial, wanted[0], wanted[1], statuses.hit(partial, age))

    def _bypass_reason(self, view: RequestView) -> Optional[str]:
        if not self.caching:
            return "strategy"
        reason = self.filter.bypass_reason(view.method.decode("latin-1"), view.path.decode("latin-1"))
        if reason is not None:
            return reason
        if not self.http_policy and "authorization" in view.headers:
            # The http policy applies RFC 9111 §3.5 to the response instead.
            return "authorization"
        return None

    def judge(self, entry: CacheEntry, age: float, directives: RequestDirectives) -> Freshness:
        """
        @return: how C{entry}, at C{age}, may be used for a request with
            C{directives}.
        """
        lifetime = entry.lifetime
        if directives is not NO_REQUEST_DIRECTIVES:
            if directives.no_cache:
                return Freshness.REVALIDATE
            if directives.max_age is not None and age > directives.max_age:
                return Freshness.REVALIDATE
            if directives.min_fresh is not None and lifetime - age < directives.min_fresh:
                return Freshness.REVALIDATE
        if age < lifetime:
            return Freshness.FRESH
        if entry.must_revalidate:
            return Freshness.REVALIDATE
        staleness = age - lifetime
        if directives.max_stale is not None and staleness <= directives.max_stale:
            return Freshness.SERVE_STALE
        if entry.stale_while_revalidate and staleness <= entry.stale_while_revalidate:
            return Freshness.REFRESH_BEHIND
        return Freshness.REVALIDATE

    def may_serve_stale(self, entry: CacheEntry, directives: RequestDirectives) -> bool:
        """
        @return: whether C{entry} may stand in for a failed origin
            (C{stale-if-error} or the client's C{max-stale}; never with
            C{must-revalidate}).
        """
        if entry.must_revalidate:
            return False
        staleness = entry.age(self._clock.seconds()) - entry.lifetime
        allowance = max(entry.stale_if_error, directives.max_stale or 0.0)
        return allowance > 0 and staleness <= allowance

    def note(self, decision: Union[Hit, PartHit, Stale]) -> None:
        """
        Count an answer from a stored entry, once it is being rendered;
        an entry stored in identity to be compressed once served again is
        compressed now (see L{recoder}).
        """
        cache = self._cache
        cache.hits += 1
        self.top_keys.hit(decision.key)
        if decision.status.result == "stale":
            cache.stale += 1
        recoder = self.recoder
        if recoder is not None and type(decision) is not PartHit:
            recoder.served(decision.entry)
