"""
Filling the cache: L{Filler} fetches a response from the origin (one
single-flight fill per key) and turns it into a stored entry (or says why
it is not stored), revalidates a stale entry with a conditional request,
gives entries their freshness, and fetches the pre-generated pages
(snapshots).
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from phantom_frame.cache.codec import STORED_CODING, Codec, DecodeError
from phantom_frame.cache.cookies import marked_shareable
from phantom_frame.cache.entry import NOT_YET_COMPRESSED, CacheEntry
from phantom_frame.cache.lock import NOT_SHARED, Exclusive, Shared, Waiter
from phantom_frame.cache.variance import no_header, variant_of
from phantom_frame.cache.freshness import (
    ResponseDirectives,
    freshness_lifetime,
    http_bypass_reason,
    initial_age,
    strong_etag,
)
from phantom_frame.cache.policy import (
    as_pairs, header_index, header_value, is_soft_404, media_type, opaque_coding, response_bypass_reason, vary_names,
)
from phantom_frame.proxy.fetch import PENDING, Fetch
from phantom_frame.proxy.forwarded import fill_fields
from phantom_frame.proxy.parts import RANGED_DROPPED, Parts
from phantom_frame.proxy.receivers import SnapshotLanded, release
from phantom_frame.proxy.settings import CacheStrategy, CreateProxyConfig
from phantom_frame.proxy.settle import is_deferred, settle
from phantom_frame.proxy.snapshots import SnapshotError
from phantom_frame.proxy.view import RequestView
from phantom_frame.proxy.origin import (
    FILL_DROPPED,
    BodyRelay,
    Header,
    UpstreamError,
)

#: Logged as the server's own events (namespace C{phantom_frame.proxy}).
log = Logger(namespace="phantom_frame.proxy")

#: Response headers the cache recomputes for every client (the request id
#: is each answer's own).
_RECOMPUTED = frozenset(
    {b"content-length", b"content-encoding", b"vary", b"age", b"set-cookie", b"x-request-id"}
)

#: What the cache recomputes of a body whose coding it cannot undo: its
#: C{Content-Encoding} is kept.
_RECOMPUTED_OPAQUE = _RECOMPUTED - {b"content-encoding"}

#: Media types whose bodies are compressed already: stored as they are.
_PRECOMPRESSED = (
    "image/jpeg", "image/png", "image/gif", "image/webp", "image/avif", "video/", "audio/", "font/woff",
    "font/woff2", "application/zip", "application/gzip", "application/x-gzip", "application/octet-stream",
)

#: Stored headers a 304 from the origin never replaces.
_NOT_UPDATED = frozenset(
    {b"content-length", b"content-encoding", b"transfer-encoding", b"content-range", b"set-cookie"}
)


class Filler:
    """
    How a server fills its cache from its origin.
    """

    def __init__(
        self,
        name: str,
        config: CreateProxyConfig,
        cache: Any,
        origin: Any,
        codec: Codec,
        clock: IReactorTime,
        runner: Callable,
        http_policy: bool,
        compress_later: bool = False,
    ) -> None:
        """
        @param name: the server's name, for logs.
        @param config: the server's settings.
        @param cache: where entries are stored
            (L{phantom_frame.cache.responses.ResponseCache}).
        @param origin: the L{phantom_frame.proxy.origin.Origin}.
        @param codec: decodes what the origin sends and encodes what is
            stored.
        @param clock: gives entries their times.
        @param runner: runs blocking work off the reactor thread.
        @param http_policy: whether RFC 9111 decides what is stored.
        @param compress_later: store bodies in identity, to be compressed
            once served again (L{phantom_frame.cache.recoding.Recoder}),
            rather than compress them before storing them; snapshots are
            compressed at once.
        """
        self._name = name
        self._config = config
        self._cache = cache
        self._origin = origin
        self._codec = codec
        self._clock = clock
        self._runner = runner
        self._http_policy = http_policy
        self._compress_later = compress_later
        self._stored_coding = STORED_CODING[config.compress_strategy]
        self.parts = Parts(config, cache, clock, self._stored, self.set_freshness)

    # Fills

    def fill(
        self, view: RequestView, key: str, stale: Optional[CacheEntry], body: Any = None, private: bool = False,
        ranged: bool = False, shared: Optional[RequestView] = None, waiter: Optional[Waiter] = None,
    ):
        """
        Start (or join) the single-flight fill of C{key} for the request
        C{view}: a revalidation when C{stale} is given.

        @param body: a producer of the request body (for a method other
            than GET or HEAD that an include pattern caches).
        @param private: whether the request's cookies make it private: its
            response is stored only when the origin marked it shareable.
        @param ranged: forward C{Range} and C{If-Range}: a 206 is a part.
        @param shared: the view the HTTP/1.1 channel remembers for the
            request's head (see L{phantom_frame.proxy.exchange.Exchange.shared}):
            the fields forwarded for it are made once.
        @param waiter: this caller's L{Waiter}, told by a plain call.
        @return: this caller's waiter (C{waiter}, or else a L{Deferred})
            and whether it joined a fill another request started (see
            C{ResponseCache.fill}).
        """
        drop = RANGED_DROPPED if ranged else FILL_DROPPED
        # (A revalidation adds its validators to the pairs.)
        fwd = fill_fields(view, shared if stale is None else None, self._origin, self._config.headers, drop)
        authorized = "authorization" in view.headers
        method = b"GET" if view.method == b"HEAD" else view.method
        target = view.target
        header = view.headers.get
        return self._cache.fill(
            key,
            lambda: self.fetch(
                key, method, target, fwd, header, stale=stale, authorized=authorized,
                body=None if method == b"GET" else body, private=private, ranged=ranged,
            ),
            waiter,
        )

    def refresh_behind(self, view: RequestView, key: str, entry: CacheEntry) -> None:
        """
        Refresh a stale entry in the background (one refresh however many
        clients ask); a refresh that fails keeps the stale entry.
        """
        waiter, _ = self.fill(view, key, entry)
        waiter.addCallbacks(release, self._refresh_failed, errbackArgs=(key,))

    def _refresh_failed(self, failure: Failure, key: str) -> None:
        log.warn(
            "server {server}: background refresh of {key!r} failed: {error}",
            server=self._name,
            key=key,
            error=failure.getErrorMessage(),
        )

    def fetch(
        self,
        key: str,
        method: bytes,
        path_qs: bytes,
        headers: List[Header],
        header: Callable[[str], Optional[str]],
        snapshot: bool = False,
        stale: Optional[CacheEntry] = None,
        authorized: bool = False,
        body=None,
        private: bool = False,
        ranged: bool = False,
    ) -> Fetch:
        """
        Fetch C{path_qs} from the origin for the fill of C{key}: a
        conditional request when C{stale} is given, a snapshot (stored
        whatever its media type, pinned, failing rather than answering
        with an error page) when C{snapshot} is set; a 206 to a C{ranged}
        fill is a part (L{Parts.store}).

        @return: the L{Fetch}, which tells its one listener (the fill lock's
            flight; see L{Fetch.addBoth}, or L{Fetch.deferred}) of a
            L{Shared} stored entry, or an L{Exclusive} response for the one
            client that asked, with why it is not stored (C{cookie}: a
            C{private} request's response the origin did not mark
            shareable); or of a failure: L{SnapshotError} (a snapshot that
            cannot be stored) or L{UpstreamError} (the origin failed, or its
            body broke off or does not decode). Cancelling it cancels the
            request, or abandons the body.
        """
        fetch = Fetch(self, key, header, snapshot, stale, authorized, private, ranged)
        return fetch.start(self._origin, method, path_qs, headers, body, self._clock.seconds())

    def _answered(self, response: Any, fetch: Fetch) -> Any:
        """
        The origin's answer head came (see L{fetch}): decide what becomes of
        it (what the fill gives), or read its body to store (L{PENDING}).
        """
        key, header, snapshot, stale = fetch.key, fetch.header, fetch.snapshot, fetch.stale
        authorized, private, ranged, request_time = fetch.authorized, fetch.private, fetch.ranged, fetch.request_time
        config = self._config
        response_time = self._clock.seconds()
        rheaders = tuple(response.pairs)
        status = response.code
        if status == 304 and stale is not None:
            response.deliverBody(BodyRelay(self._clock, None, 0))
            self._freshen(stale, rheaders, request_time, response_time)
            return Shared(stale, 304)
        if ranged and status == 206:
            return Deferred.fromCoroutine(
                self.parts.store(key, response, rheaders, header, authorized, private, request_time, response_time)
            )
        directives = ResponseDirectives.parse(rheaders) if self._http_policy else None
        if snapshot:
            # Snapshots are stored whatever their media type; an error
            # status is a failed snapshot, not a page.
            reason = response_bypass_reason(status, rheaders, CacheStrategy.ALL)
            if status >= 400 or reason is not None:
                drain = BodyRelay(self._clock, None, 65536)
                response.deliverBody(drain)
                drain.ready().addCallbacks(lambda complete: complete or drain.abort(), lambda _: None)
                raise SnapshotError(
                    f"origin answered {status} {response.phrase.decode('latin-1')}"
                    if status >= 400
                    else f"not storable ({reason})"
                )
        else:
            # The http policy is a shared cache per RFC 9111: its own status
            # rules and freshness requirements.
            reason = response_bypass_reason(
                status, rheaders, config.cache_strategy, check_status=directives is None
            )
            if directives is not None:
                reason = reason or http_bypass_reason(status, rheaders, directives, authorized)
            if reason is None and stale is not None and status >= 500:
                # A 5xx never replaces a stored page: the answer stands for
                # an origin that failed (RFC 9111 §4.3.3).
                reason = "status"
        if reason is None and status == 404 and not config.cache_404_capacity:
            reason = "status"
        shareable = snapshot or marked_shareable(rheaders)
        if reason is None and private and not shareable:
            reason = "cookie"
        length = response.length
        if reason is None and length is not None and length > config.max_cacheable_bytes:
            if snapshot:
                raise SnapshotError(f"larger than max_cacheable_bytes ({length} bytes)")
            reason = "size"
        # A revalidation's answer is read whole (up to the limit) before
        # any client sees it, stored or not, so that a body that breaks
        # off can fall back on the stale entry.
        if not (reason is None or (stale is not None and status < 500)):
            relay = BodyRelay(self._clock, None, None)
            response.deliverBody(relay)
            return Exclusive((response, relay), reason, relay.abort)
        relay = BodyRelay(self._clock, None, config.max_cacheable_bytes, fetch.ready())
        fetch.reading = (response, relay, reason, rheaders, directives, response_time, shareable)
        response.deliverBody(relay)
        return PENDING

    def _buffered(self, complete: bool, fetch: Fetch) -> Any:
        """
        The body L{_answered} reads (see C{fetch.reading}) came whole
        (C{complete}), or overflowed the limit: store it, or hand the
        response on.
        """
        response, relay, reason, rheaders, directives, response_time, shareable = fetch.reading
        snapshot = fetch.snapshot
        if reason is not None:
            return Exclusive((response, relay), reason, relay.abort)
        if not complete:
            if snapshot:
                relay.abort()
                raise SnapshotError("larger than max_cacheable_bytes")
            return Exclusive((response, relay), "size", relay.abort)
        stored = settle(
            self._stored(
                fetch.key, response.code, response.phrase, rheaders, relay.collected(), directives, fetch.header,
                snapshot, fetch.request_time, response_time, shareable,
            )
        )
        if is_deferred(stored):
            return stored.addCallback(_kept, response, relay)
        return _kept(stored, response, relay)

    async def _stored(
        self, key: str, status: int, phrase: bytes, rheaders: List[Header], body: bytes, directives: Any,
        header: Callable[[str], Optional[str]], snapshot: bool, request_time: float, response_time: float,
        shareable: Optional[bool] = None,
    ) -> Optional[Shared]:
        """
        Store a whole response as the entry of C{key}.

        @param shareable: whether the origin marked it shareable, when the
            caller knows (L{marked_shareable} of C{rheaders}).
        @return: the L{Shared} entry, or C{None} for a soft 404 that has no
            404 cache to go to.
        @raise UpstreamError: the body does not decode.
        """
        config = self._config
        rheaders = as_pairs(rheaders)
        coding = header_value(rheaders, b"content-encoding")
        # A coding phantom-frame cannot undo: the body is the origin's
        # representation, stored and sent as it is, Content-Encoding kept.
        opaque = coding is not None and opaque_coding(rheaders)
        identity = body
        if coding is not None and not opaque:
            try:
                identity = await self._codec.decode(body, coding)
            except DecodeError as e:
                raise UpstreamError(f"origin sent a body that does not decode: {e}")
        not_found = status == 404
        if (
            not not_found
            and not opaque
            and config.use_404_meta
            and status == 200
            and is_soft_404(identity)
        ):
            if not config.cache_404_capacity:
                return None
            not_found, status, phrase = True, 404, b"Not Found"
        coding = self._stored_coding
        media = media_type(rheaders) or ""
        if coding != "identity" and (opaque or len(identity) < 128 or media.startswith(_PRECOMPRESSED)):
            coding = "identity"
        encoded = identity
        pending = coding != "identity" and self._compress_later and not snapshot
        if pending:
            # Compressed once it is served again (Recoder).
            coding = "identity"
        elif coding != "identity":
            encoded = await self._codec.encode(identity, coding)
            if len(encoded) >= len(identity):
                coding, encoded = "identity", identity
        vary = header_value(rheaders, b"vary")
        names = vary_names(rheaders) if vary is not None else ()
        etag = header_value(rheaders, b"etag")
        if etag is None and config.generate_etag:
            etag = await self._runner(strong_etag, identity)
        stored = self._cache.put_body_now(key, encoded)
        if stored is None:
            stored = await self._cache.put_body(key, encoded)
        recomputed = _RECOMPUTED_OPAQUE if opaque else _RECOMPUTED
        kept = rheaders
        if not recomputed.isdisjoint(header_index(rheaders)):
            kept = tuple([pair for pair in rheaders if pair[0].lower() not in recomputed])
        entry = CacheEntry(
            key=key,
            status=status,
            phrase=phrase,
            headers=kept,
            coding=coding,
            body=stored,
            identity_length=len(identity),
            stored_at=self._clock.seconds(),
            vary=names,
            vary_header=vary or None,
            variant=variant_of(names, header) if names else (),
            not_found=not_found,
            pinned=snapshot,
            etag=etag,
            last_modified=header_value(rheaders, b"last-modified"),
            shareable=(snapshot or marked_shareable(rheaders)) if shareable is None else shareable,
            alternates=NOT_YET_COMPRESSED if pending else None,
        )
        if not snapshot:
            self.set_freshness(entry, rheaders, directives, request_time, response_time)
        return Shared(entry, status, identity if coding != "identity" else None)

    def set_freshness(self, entry: CacheEntry, rheaders, directives, request_time: float, response_time: float) -> None:
        """
        Give C{entry} its lifetime and stale allowances: from the server's
        settings (prerender policy) or from the response (http policy).
        """
        entry.stored_at = response_time
        if directives is None:
            config = self._config
            entry.initial_age = 0.0
            entry.lifetime = math.inf if config.cache_ttl is None else config.cache_ttl
            entry.stale_while_revalidate = config.stale_while_revalidate or 0.0
            entry.stale_if_error = config.stale_if_error or 0.0
            return
        entry.initial_age = initial_age(rheaders, request_time, response_time)
        entry.lifetime = freshness_lifetime(entry.status, rheaders, directives, response_time)
        entry.stale_while_revalidate = directives.stale_while_revalidate
        entry.stale_if_error = directives.stale_if_error
        entry.must_revalidate = directives.never_stale

    def _freshen(self, entry: CacheEntry, rheaders, request_time: float, response_time: float) -> None:
        """
        Update a stored entry from a 304 (RFC 9111 §4.3.4): its headers
        are replaced by those the 304 carries, and its freshness starts over.
        """
        fresh = {n.lower() for n, _ in rheaders} - _NOT_UPDATED
        merged = [(n, v) for n, v in entry.headers if n.lower() not in fresh]
        merged.extend((n, v) for n, v in rheaders if n.lower() in fresh and n.lower() not in _RECOMPUTED)
        directives = ResponseDirectives.parse(merged) if self._http_policy else None
        self._cache.update(entry, tuple(merged))
        entry.shareable = entry.pinned or marked_shareable(merged)
        etag = header_value(rheaders, b"etag")
        if etag is not None:
            entry.etag = etag
        modified = header_value(rheaders, b"last-modified")
        if modified is not None:
            entry.last_modified = modified
        self.set_freshness(entry, merged, directives, request_time, response_time)

    def adopt(
        self, view: RequestView, key: str, response: Any, body: bytes, request_time: float, response_time: float
    ) -> None:
        """
        Store a POST's answer as the C{GET} entry of C{key} (its
        C{Content-Location} is its own target: RFC 9110 §9.3.3, RFC 9111
        §4), when it is storable with explicit freshness and no fill of
        C{key} is running.
        """
        rheaders = response.pairs
        directives = ResponseDirectives.parse(rheaders)
        status = response.code
        reason = response_bypass_reason(
            status, rheaders, self._config.cache_strategy, check_status=False
        ) or http_bypass_reason(status, rheaders, directives, "authorization" in view.headers)
        explicit = directives.explicit or (not directives.cdn and header_value(rheaders, b"expires"))
        if reason is not None or not explicit or self._cache.in_flight(key):
            return
        header = view.headers.get

        async def store() -> Any:
            stored = await self._stored(
                key, status, response.phrase, rheaders, body, directives, header, False, request_time, response_time
            )
            return stored or NOT_SHARED

        waiter, _ = self._cache.fill(key, lambda: Deferred.fromCoroutine(store()))
        waiter.addCallbacks(release, self._adopt_failed, errbackArgs=(key,))

    def _adopt_failed(self, failure: Failure, key: str) -> None:
        log.warn(
            "server {server}: storing a POST answer as {key!r} failed: {error}",
            server=self._name,
            key=key,
            error=failure.getErrorMessage(),
        )

    # Snapshots

    def fetch_snapshot(self, key: str, target: bytes, limiter, since: Optional[float] = None) -> Deferred[None]:
        """
        Fetch C{target} (through the single-flight fills, so requests for it
        wait for this fetch) and keep it as the snapshot of C{key}; the
        stored page it replaces stays visible until the new one is stored.

        @param limiter: a L{DeferredSemaphore} bounding concurrent fetches;
            the fill is registered at once, the fetch runs when allowed.
        @param since: for a cache shared by nodes (C{fill_snapshot}).
        @return: a L{Deferred} firing when stored, failing with
            L{SnapshotError} or L{UpstreamError} otherwise.
        """

        def fetch() -> Deferred:
            return limiter.run(lambda: self.fetch(key, b"GET", target, [], no_header, snapshot=True).deferred())

        shared = getattr(self._cache, "fill_snapshot", None)
        waiter, _ = self._cache.fill(key, fetch) if shared is None else shared(key, fetch, since)
        return waiter.addCallback(lambda result: result.deliver(SnapshotLanded(self._cache)))


def _kept(stored: Optional[Shared], response: Any, relay: BodyRelay) -> Any:
    """
    @return: what storing a response gave: its L{Shared} entry, or the
        response for the one client that asked (a soft 404 with no 404
        cache to go to).
    """
    return Exclusive((response, relay), "status", relay.abort) if stored is None else stored
