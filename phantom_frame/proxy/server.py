"""
L{ProxyServer}: one origin behind the cache, and L{ProxyResource}, the
twisted.web resource that turns its HTTP requests into cache operations.

The server decides how each request is answered: gated by webhooks, passed
through, answered fresh or stale from the cache, filled or revalidated, or
tunnelled. Its parts in other modules answer from a stored entry
(L{phantom_frame.proxy.serve.EntryAnswers}), fill the cache and keep snapshots
(L{phantom_frame.proxy.fill.CacheFills}), and pass requests through to the origin
(L{phantom_frame.proxy.passthrough.OriginRelay}).
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from phantom_frame.proxy.answers import (
    GET_HEAD,
    STATUS_COLLAPSED,
    STATUS_STALE,
    STATUS_STORED,
    alive,
    cache_status,
    error_response,
    hit_status,
    is_upgrade,
    send_error,
    send_verdict,
    split_target,
    stripped_path,
)
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.lock import NOT_SHARED, Exclusive
from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.variance import variant_of
from phantom_frame.cache.codec import STORED_CODING, Codec
from phantom_frame.cache.freshness import NO_REQUEST_DIRECTIVES, RequestDirectives
from phantom_frame.cache.keys import RequestInfo, default_cache_key
from phantom_frame.cache.patterns import RequestFilter
from phantom_frame.cache.store import FilesystemStore, MemoryStore
from phantom_frame.proxy.serve import EntryAnswers
from phantom_frame.proxy.fill import CacheFills
from phantom_frame.proxy.settings import CachePolicy, CacheStorageMode, CacheStrategy, CreateProxyConfig, ProxyMode
from phantom_frame.proxy.snapshots import Snapshots
from phantom_frame.proxy.tunnel import start_tunnel
from phantom_frame.proxy.origin import Origin, UpstreamError
from phantom_frame.proxy.webhooks import Webhooks

log = Logger()

_FRESH, _SERVE_STALE, _REFRESH_BEHIND, _REVALIDATE = (object() for _ in range(4))


class ProxyServer(CacheFills, EntryAnswers):
    """
    One origin: its settings, its cache and how its requests are answered.
    """

    def __init__(
        self,
        name: str,
        config: CreateProxyConfig,
        agent: IAgent,
        reactor,
        runner: Callable,
    ) -> None:
        """
        @param name: the server's name (config block), used for stats and
            the filesystem bucket.
        @param config: its settings.
        @param agent: reaches the origin.
        @param reactor: clock and threads.
        @param runner: runs blocking work (compression, file I/O) off the
            reactor thread.
        """
        self.name = name
        self.config = config
        self._clock = reactor
        self.origin = Origin(config.proxy_url, agent, reactor, config.upstream_timeout)
        self.filter = RequestFilter(config.include_paths, config.exclude_paths)
        if config.cache_storage_mode == CacheStorageMode.FILESYSTEM:
            import tempfile

            directory = config.cache_directory or tempfile.gettempdir() + "/phantom-frame"
            store = FilesystemStore(directory, name, runner)
        else:
            store = MemoryStore()
        self.cache = ResponseCache(
            name, store, reactor, config.cache_max_bytes, config.cache_404_capacity
        )
        self.codec = Codec(runner)
        self._runner = runner
        self.http_policy = config.cache_policy == CachePolicy.HTTP
        self.key_fn = config.cache_key_fn or default_cache_key
        self.pure_ssg = (
            config.proxy_mode == ProxyMode.PRE_GENERATE and not config.pre_generate_fallthrough
        )
        self.snapshots = (
            Snapshots(self, config.pre_generate_paths, config.pre_generate_concurrency)
            if config.proxy_mode == ProxyMode.PRE_GENERATE
            else None
        )
        self.webhooks = Webhooks(name, config.webhooks, agent, reactor)
        self.caching = config.cache_strategy != CacheStrategy.NONE
        self.stored_coding = STORED_CODING[config.compress_strategy]
        #: Whether plain hits may be answered by the channel's fast path.
        self.fast_path_ok = (
            self.caching
            and not self.webhooks
            and config.cache_key_fn is None
            and config.cache_storage_mode == CacheStorageMode.MEMORY
        )
        self.resource = ProxyResource(self)

    def open(self) -> None:
        """
        Prepare the store (filesystem mode empties the server's bucket).
        """
        self.cache.store.open()

    def close(self) -> None:
        """
        Drop the cache and close the store.
        """
        self.cache.close()

    # Requests

    def handle(self, request) -> Deferred[None]:
        """
        Answer C{request} (its target already normalised by L{split_target}).
        """
        d = Deferred.fromCoroutine(self._handle(request))
        request.notifyFinish().addErrback(lambda _: d.cancel())
        d.addErrback(self._unexpected, request)
        return d

    def _unexpected(self, failure: Failure, request) -> None:
        if failure.check(CancelledError):
            return
        log.failure(
            "unexpected error answering {method} {uri} for server {server}",
            failure,
            method=request.method,
            uri=request.uri,
            server=self.name,
        )
        send_error(request, 500, "Internal Server Error")

    async def _handle(self, request) -> None:
        method = request.method
        raw_path, query = split_target(request)  # checked by render
        path = stripped_path(request, raw_path)
        path_qs = path + b"?" + query if query else path
        webhooks = self.webhooks
        payload = b""
        if webhooks:
            payload = webhooks.payload(request, path, query)
            if webhooks.blocking:
                verdict = await webhooks.gate(payload)
                if verdict.status is not None:
                    send_verdict(request, verdict)
                    return
            if webhooks.notify:
                webhooks.fire(payload)
        if self.pure_ssg:
            # Pure SSG never reaches the origin at request time.
            if method not in GET_HEAD:
                send_error(request, 405, "Method Not Allowed", None, ((b"allow", b"GET, HEAD"),))
                return
        else:
            reason = self._bypass_reason(request, method, path)
            if reason is not None:
                await self._passthrough(request, path_qs, cache_status("fwd=bypass", "detail=" + reason))
                return
        key = await webhooks.key(payload) if webhooks.cache_key else None
        if key is None:
            info = RequestInfo.from_raw(
                b"GET" if method == b"HEAD" else method,
                path,
                query,
                # The default key reads no header: decode them only for a
                # custom key function.
                ()
                if self.key_fn is default_cache_key
                else (
                    (name, value)
                    for name, values in request.requestHeaders.getAllRawHeaders()
                    for value in values
                ),
            )
            try:
                key = self.key_fn(info)
            except Exception:
                log.failure("cache key function failed for {path!r} on server {server}",
                            path=path, server=self.name)
                await self._passthrough(request, path_qs, cache_status("fwd=bypass", "detail=key-error"))
                return
        header = _header_lookup(request)
        directives = self._request_directives(request)
        entry = self.cache.lookup(key, header)
        stale = None
        if entry is not None:
            now = self._clock.seconds()
            verdict = self._judge(entry, now, directives)
            if verdict is _FRESH:
                self.cache.hits += 1
                await self._serve(request, entry, hit_status(entry, entry.age(now)))
                return
            if verdict is _SERVE_STALE or verdict is _REFRESH_BEHIND:
                self.cache.hits += 1
                self.cache.stale += 1
                if verdict is _REFRESH_BEHIND:
                    self._refresh_behind(request, key, entry, path_qs, header)
                await self._serve(request, entry, STATUS_STALE)
                return
            stale = entry
        if directives.only_if_cached:
            send_error(request, 504, "Gateway Timeout: not cached (only-if-cached)",
                       cache_status("fwd=uri-miss", "detail=only-if-cached"))
            return
        if self.pure_ssg:
            # A snapshot being fetched is waited for; anything else is 404.
            waiter = self.cache.join(key)
            if waiter is None:
                send_error(request, 404, "Not Found", cache_status("fwd=uri-miss", "detail=not-pre-generated"))
                return
            await self._answer_fill(request, waiter, True, path_qs, header)
            return
        if directives.no_store:
            await self._passthrough(request, path_qs, cache_status("fwd=bypass", "detail=no-store"))
            return
        waiter, collapsed = self._fill(request, key, path_qs, header, stale)
        await self._answer_fill(request, waiter, collapsed, path_qs, header, stale, directives)

    def _request_directives(self, request) -> RequestDirectives:
        """
        The request's caching directives; the prerender policy ignores them
        (a browser's reload must not bypass a prerender cache).
        """
        if not self.http_policy:
            return NO_REQUEST_DIRECTIVES
        rh = request.requestHeaders
        cc = rh.getRawHeaders(b"cache-control", [])
        pragma = rh.getRawHeaders(b"pragma", [])
        if not cc and not pragma:
            return NO_REQUEST_DIRECTIVES
        return RequestDirectives.parse(cc, pragma)

    def _judge(self, entry: CacheEntry, now: float, directives: RequestDirectives) -> object:
        """
        Decide how a stored entry may be used (RFC 9111 §4.2, §5.2.1, RFC
        5861).
        """
        age = entry.age(now)
        lifetime = entry.lifetime
        if self.http_policy and directives is not NO_REQUEST_DIRECTIVES:
            if directives.no_cache:
                return _REVALIDATE
            if directives.max_age is not None and age > directives.max_age:
                return _REVALIDATE
            if directives.min_fresh is not None and lifetime - age < directives.min_fresh:
                return _REVALIDATE
        if age < lifetime:
            return _FRESH
        if entry.must_revalidate:
            return _REVALIDATE
        staleness = age - lifetime
        if directives.max_stale is not None and staleness <= directives.max_stale:
            return _SERVE_STALE
        if entry.stale_while_revalidate and staleness <= entry.stale_while_revalidate:
            return _REFRESH_BEHIND
        return _REVALIDATE

    def _may_serve_stale(self, entry: CacheEntry, directives: RequestDirectives) -> bool:
        """
        Whether C{entry} may stand in for a failed origin (C{stale-if-error}
        or the client's C{max-stale}; never with C{must-revalidate}).
        """
        if entry.must_revalidate:
            return False
        staleness = entry.age(self._clock.seconds()) - entry.lifetime
        allowance = max(entry.stale_if_error, directives.max_stale or 0.0)
        return allowance > 0 and staleness <= allowance

    async def _answer_fill(
        self,
        request,
        waiter: Deferred,
        collapsed: bool,
        path_qs: bytes,
        header,
        stale: Optional[CacheEntry] = None,
        directives: RequestDirectives = NO_REQUEST_DIRECTIVES,
    ) -> None:
        """
        Answer C{request} with what the fill it waits for gives; with a
        C{stale} entry being revalidated, fall back on it when the origin
        fails and that is allowed.
        """
        fwd = "fwd=stale" if stale is not None else "fwd=uri-miss"
        try:
            result = await waiter
        except UpstreamError as e:
            if stale is not None and self._may_serve_stale(stale, directives):
                self.cache.stale += 1
                await self._serve(request, stale, STATUS_STALE)
                return
            self._origin_failed(request, e, fwd)
            return
        if result is NOT_SHARED:
            await self._passthrough(request, path_qs, cache_status(fwd, "detail=not-shared"))
        elif isinstance(result, Exclusive):
            response, relay = result.value
            if (
                stale is not None
                and response.code >= 500
                and self._may_serve_stale(stale, directives)
            ):
                result.release()
                self.cache.stale += 1
                await self._serve(request, stale, STATUS_STALE)
                return
            await self._relay(request, response, relay, cache_status(fwd, "detail=" + result.reason))
        else:
            entry = result.entry
            if entry.vary and entry.variant != variant_of(entry.vary, header):
                await self._passthrough(request, path_qs, cache_status(fwd, "detail=vary"))
            elif stale is not None:
                status = cache_status("fwd=stale", "fwd-status=%d" % result.origin_status)
                if result.origin_status != 304:
                    status += b"; stored"
                await self._serve(request, entry, status)
            else:
                await self._serve(request, entry, STATUS_COLLAPSED if collapsed else STATUS_STORED)

    def _bypass_reason(self, request, method: bytes, path: bytes) -> Optional[str]:
        if not self.caching:
            return "strategy"
        reason = self.filter.bypass_reason(method.decode("latin-1"), path.decode("latin-1"))
        if reason is not None:
            return reason
        if not self.http_policy and request.requestHeaders.hasHeader(b"authorization"):
            # The http policy applies RFC 9111 §3.5 to the response instead.
            return "authorization"
        return None

    # Upgrades

    def tunnel(self, request) -> object:
        """
        Hand an upgrade request (WebSocket and others) to a raw tunnel to
        the origin: the request head goes upstream with the stripped path
        and forwarding headers, and bytes are spliced both ways.
        """
        if self.webhooks.blocking:
            d = Deferred.fromCoroutine(self._gated_tunnel(request))
            request.notifyFinish().addErrback(lambda _: d.cancel())
            d.addErrback(self._unexpected, request)
            return NOT_DONE_YET
        return self._tunnel(request)

    async def _gated_tunnel(self, request) -> None:
        raw_path, query = split_target(request)
        path = stripped_path(request, raw_path)
        verdict = await self.webhooks.gate(self.webhooks.payload(request, path, query))
        if verdict.status is not None:
            send_verdict(request, verdict)
            return
        body = self._tunnel(request)
        if body is not NOT_DONE_YET and alive(request):
            request.write(body)
            request.finish()

    def _tunnel(self, request) -> object:
        raw_path, query = split_target(request)
        path = stripped_path(request, raw_path)
        headers = self._forward_headers(request)
        headers.append((b"Connection", b"Upgrade"))
        for value in request.requestHeaders.getRawHeaders(b"upgrade", ()):
            headers.append((b"Upgrade", value))
        return start_tunnel(
            request,
            self.origin,
            path + b"?" + query if query else path,
            headers,
            self._clock,
            self.config.upstream_timeout,
        )

    # Invalidation

    def invalidate(self, pattern: str) -> int:
        """
        Drop matching entries; in pre_generate mode, fetch the tracked
        snapshots that lost their page again, in the background.
        """
        count = self.cache.invalidate(pattern)
        if self.snapshots is not None:
            self.snapshots.rewarm()
        return count

    def invalidate_all(self) -> int:
        """
        Drop every entry (and re-fetch the tracked snapshots, as above).
        """
        count = self.cache.invalidate_all()
        if self.snapshots is not None:
            self.snapshots.rewarm()
        return count


def _header_lookup(request) -> Callable[[str], Optional[str]]:
    """
    @return: a function giving a request header's value by lower-cased
        name (repeated headers joined with C{", "}), as text.
    """
    headers = request.requestHeaders

    def header(name: str) -> Optional[str]:
        values = headers.getRawHeaders(name.encode("latin-1"))
        if values is None:
            return None
        return ", ".join(v.decode("latin-1") for v in values)

    return header


class ProxyResource(Resource):
    """
    The twisted.web face of a L{ProxyServer}: mount it anywhere in a
    L{twisted.web.server.Site}; the path it is mounted at is stripped.
    """

    isLeaf = True

    # Not "server": Resource.putChild overwrites that attribute.
    def __init__(self, server: ProxyServer) -> None:
        super().__init__()
        self.proxy_server = server

    def render(self, request) -> object:
        """
        Gate the request, then answer it asynchronously.
        """
        request.defaultContentType = None
        if split_target(request) is None:
            return error_response(request, 400, "Bad Request: malformed request target")
        config = self.proxy_server.config
        if config.forward_get_only and request.method not in GET_HEAD:
            return error_response(
                request, 405, "Method Not Allowed", [(b"allow", b"GET, HEAD")]
            )
        if is_upgrade(request):
            if config.enable_websocket and (
                config.proxy_mode == ProxyMode.DYNAMIC or config.pre_generate_fallthrough
            ):
                return self.proxy_server.tunnel(request)
            return error_response(request, 501, "Not Implemented: protocol upgrades are not tunnelled")
        self.proxy_server.handle(request)
        return NOT_DONE_YET
