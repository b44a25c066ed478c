"""
L{ProxyServer}: one origin behind the cache, and L{ProxyResource}, the
twisted.web resource that turns its HTTP requests into cache operations.
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Callable, List, Optional, Tuple
from urllib.parse import unquote_to_bytes, urlsplit

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .cache.cache import NOT_SHARED, CacheEntry, Exclusive, ResponseCache, Shared, variant_of
from .cache.codec import STORED_CODING, Codec, DecodeError, choose_coding
from .cache.freshness import (
    NO_REQUEST_DIRECTIVES,
    RequestDirectives,
    ResponseDirectives,
    etag_matches_strong,
    etag_matches_weak,
    freshness_lifetime,
    http_bypass_reason,
    initial_age,
    parse_http_date,
    parse_range,
    weakened,
)
from .cache.keys import RequestInfo, default_cache_key
from .cache.patterns import RequestFilter
from .cache.policy import (
    header_value,
    is_soft_404,
    media_type,
    response_bypass_reason,
    vary_names,
)
from .cache.store import FilesystemStore, MemoryStore
from .proxyconfig import CachePolicy, CacheStorageMode, CacheStrategy, CreateProxyConfig, ProxyMode
from .snapshots import NotPreGenerated, SnapshotError, Snapshots
from .webhooks import Webhooks
from .upstream import (
    FILL_DROPPED,
    BodyRelay,
    Header,
    Origin,
    UpstreamError,
    UpstreamTimeout,
    body_producer,
    end_to_end,
    known_length,
)

log = Logger()

GET_HEAD = (b"GET", b"HEAD")
_SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS", b"TRACE")

#: Response headers the cache recomputes for every client.
_RECOMPUTED = frozenset(
    {b"content-length", b"content-encoding", b"vary", b"age", b"set-cookie"}
)

#: Media types whose bodies are compressed already: stored as they are.
_PRECOMPRESSED = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/avif",
    "video/",
    "audio/",
    "font/woff",
    "font/woff2",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/octet-stream",
)

#: Request headers the proxy sets itself (the Agent sets Content-Length from
#: the body it sends).
_REPLACED = frozenset(
    {b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
)

#: Stored headers a 304 from the origin never replaces.
_NOT_UPDATED = frozenset(
    {b"content-length", b"content-encoding", b"transfer-encoding", b"content-range", b"set-cookie"}
)


def _strong_etag(body: bytes) -> bytes:
    """
    @return: a strong entity-tag for C{body}: a hash of its bytes.
    """
    digest = hashlib.sha256(body).digest()[:12]
    return b'"pf-' + base64.urlsafe_b64encode(digest).rstrip(b"=") + b'"'


#: What a 304 from the cache carries (RFC 9110 §15.4.5).
_NOT_MODIFIED_HEADERS = (
    b"date",
    b"etag",
    b"last-modified",
    b"cache-control",
    b"expires",
    b"content-location",
    b"vary",
    b"age",
    b"cache-status",
)

_CODING_NAMES = {"br": b"br", "gzip": b"gzip", "deflate": b"deflate"}


def cache_status(*params: str) -> bytes:
    """
    @return: a C{Cache-Status} field value (RFC 9211) for this cache.
    """
    return "; ".join(("phantom-frame",) + params).encode("ascii")


STATUS_HIT = cache_status("hit")
STATUS_STORED = cache_status("fwd=uri-miss", "stored")
STATUS_COLLAPSED = cache_status("fwd=uri-miss", "collapsed")
STATUS_STALE = cache_status("hit", "detail=stale")

_FRESH, _SERVE_STALE, _REFRESH_BEHIND, _REVALIDATE = (object() for _ in range(4))


def split_target(request) -> Optional[Tuple[bytes, bytes]]:
    """
    Normalise the request target to origin-form, rewriting the request's
    C{uri}, C{path} and C{postpath} for an absolute-form target.

    @return: the raw path and the raw query (C{b""} for none), or C{None}
        when the target is malformed.
    """
    uri = request.uri
    if not uri.startswith(b"/"):
        lowered = uri[:8].lower()
        if not (lowered.startswith(b"http://") or lowered.startswith(b"https://")):
            return None
        slash = uri.find(b"/", uri.index(b"//") + 2)
        query = uri.find(b"?", uri.index(b"//") + 2)
        if slash < 0 or (0 <= query < slash):
            uri = b"/" + (uri[query:] if query >= 0 else b"")
        else:
            uri = uri[slash:]
        request.uri = uri
        request.path = uri.split(b"?", 1)[0]
        request.prepath = []
        request.postpath = [unquote_to_bytes(s) for s in request.path[1:].split(b"/")]
    path, _, query = uri.partition(b"?")
    path = path.split(b"#", 1)[0]
    if any(c < 0x21 or c == 0x7F for c in path):
        return None
    return path, query


def stripped_path(request, raw_path: bytes) -> bytes:
    """
    @return: C{raw_path} without the segments of the prefix this resource
        is mounted at (C{request.prepath}), starting with C{/}.
    """
    consumed = len(request.prepath)
    if not consumed:
        return raw_path
    return b"/" + b"/".join(raw_path.split(b"/")[1 + consumed :])


def is_upgrade(request) -> bool:
    """
    @return: whether the request asks to switch protocols: an C{Upgrade}
        header and the C{upgrade} token in C{Connection} (any case, any
        position).
    """
    headers = request.requestHeaders
    if not headers.hasHeader(b"upgrade"):
        return False
    for value in headers.getRawHeaders(b"connection", ()):
        for token in value.split(b","):
            if token.strip().lower() == b"upgrade":
                return True
    return False


def error_response(request, code: int, text: str, headers=()) -> bytes:
    """
    Prepare a short plain-text error answer (never a traceback).

    @return: the body, to be returned from C{render}.
    """
    request.setResponseCode(code)
    request.responseHeaders.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
    for name, value in headers:
        request.responseHeaders.setRawHeaders(name, [value])
    body = (text + "\n").encode("utf-8")
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
    return body


def _alive(request) -> bool:
    return not (request.finished or getattr(request, "_disconnected", False))


def _send_error(
    request, code: int, text: str, status: Optional[bytes] = None, headers=()
) -> None:
    if not _alive(request):
        return
    request.responseHeaders = Headers()
    body = error_response(request, code, text, headers)
    if status is not None:
        request.responseHeaders.setRawHeaders(b"cache-status", [status])
    request.write(body)
    request.finish()


def _send_verdict(request, verdict) -> None:
    """
    Answer with what a blocking webhook said (its status, C{Location}, body).
    """
    if not _alive(request):
        return
    request.responseHeaders = Headers()
    request.setResponseCode(verdict.status)
    for name, value in verdict.headers:
        request.responseHeaders.addRawHeader(name, value)
    if not request.responseHeaders.hasHeader(b"content-type") and verdict.body:
        request.responseHeaders.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(verdict.body)])
    request.write(verdict.body)
    request.finish()


class ProxyServer:
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
        _send_error(request, 500, "Internal Server Error")

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
                    _send_verdict(request, verdict)
                    return
            if webhooks.notify:
                webhooks.fire(payload)
        if self.pure_ssg:
            # Pure SSG never reaches the origin at request time.
            if method not in GET_HEAD:
                _send_error(request, 405, "Method Not Allowed", None, ((b"allow", b"GET, HEAD"),))
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
                (
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
                await self._serve(request, entry, self._hit_status(entry, now))
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
            _send_error(request, 504, "Gateway Timeout: not cached (only-if-cached)",
                        cache_status("fwd=uri-miss", "detail=only-if-cached"))
            return
        if self.pure_ssg:
            # A snapshot being fetched is waited for; anything else is 404.
            waiter = self.cache.join(key)
            if waiter is None:
                _send_error(request, 404, "Not Found", cache_status("fwd=uri-miss", "detail=not-pre-generated"))
                return
            await self._answer_fill(request, waiter, True, path_qs, header)
            return
        if directives.no_store:
            await self._passthrough(request, path_qs, cache_status("fwd=bypass", "detail=no-store"))
            return
        waiter, collapsed = self._fill(request, key, path_qs, header, stale)
        await self._answer_fill(request, waiter, collapsed, path_qs, header, stale, directives)

    def _fill(self, request, key: str, path_qs: bytes, header, stale: Optional[CacheEntry]):
        """
        Start (or join) the single-flight fill of C{key}: a revalidation
        when C{stale} is given.
        """
        fwd = self._forward_headers(request, FILL_DROPPED)
        authorized = request.requestHeaders.hasHeader(b"authorization")
        method = b"GET" if request.method == b"HEAD" else request.method
        body = None if method == b"GET" else _request_body(request)
        return self.cache.fill(
            key,
            lambda: Deferred.fromCoroutine(
                self._fetch_for_cache(
                    key, method, path_qs, fwd, header, stale=stale, authorized=authorized, body=body
                )
            ),
        )

    def _refresh_behind(self, request, key: str, entry: CacheEntry, path_qs: bytes, header) -> None:
        """
        Refresh a stale entry in the background (one refresh however many
        clients ask); a refresh that fails keeps the stale entry.
        """
        waiter, _ = self._fill(request, key, path_qs, header, entry)

        def done(result: object) -> None:
            if isinstance(result, Exclusive):
                result.release()
            elif isinstance(result, Failure):
                log.warn(
                    "server {server}: background refresh of {key!r} failed: {error}",
                    server=self.name,
                    key=key,
                    error=result.getErrorMessage(),
                )

        waiter.addBoth(done)

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

    def _hit_status(self, entry: CacheEntry, now: float) -> bytes:
        if entry.lifetime == math.inf:
            return STATUS_HIT
        return cache_status("hit", "ttl=%d" % int(entry.lifetime - entry.age(now)))

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

    def _origin_failed(self, request, error: UpstreamError, fwd: str) -> None:
        """
        Answer 504 for a timeout, 502 for any other origin failure, and log
        it with the server and origin.
        """
        if isinstance(error, UpstreamTimeout):
            code, text, detail = 504, "Gateway Timeout", "detail=timeout"
        else:
            code, text, detail = 502, "Bad Gateway", "detail=origin-error"
        _send_error(request, code, text, cache_status(fwd, detail))
        log.warn(
            "server {server}: origin {origin} failed: {error}",
            server=self.name,
            origin=self.origin.url,
            error=str(error),
        )

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

    def _forward_headers(self, request, drop: frozenset = frozenset()) -> List[Header]:
        headers = request.requestHeaders
        pairs = end_to_end(
            headers,
            drop | _REPLACED,
        )
        client = getattr(request.getClientAddress(), "host", None)
        forwarded = headers.getRawHeaders(b"x-forwarded-for", [])
        if client:
            forwarded = forwarded + [client.encode("ascii")]
        if forwarded:
            pairs.append((b"X-Forwarded-For", b", ".join(forwarded)))
        pairs.append((b"X-Forwarded-Proto", b"https" if request.isSecure() else b"http"))
        host = headers.getRawHeaders(b"host")
        if host:
            pairs.append((b"X-Forwarded-Host", host[0]))
        return pairs

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
            _send_verdict(request, verdict)
            return
        body = self._tunnel(request)
        if body is not NOT_DONE_YET and _alive(request):
            request.write(body)
            request.finish()

    def _tunnel(self, request) -> object:
        from .tunnel import start_tunnel

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

    # Cache fills

    async def _fetch_for_cache(
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
    ):
        config = self.config
        if stale is not None:
            # Revalidate with the stored validators (RFC 9111 §4.3.1).
            headers = list(headers)
            if stale.etag is not None and not stale.etag.startswith(b'"pf-'):
                headers.append((b"If-None-Match", stale.etag))
            if stale.last_modified is not None:
                headers.append((b"If-Modified-Since", stale.last_modified))
        request_time = self._clock.seconds()
        response = await self.origin.request(method, path_qs, headers, body)
        response_time = self._clock.seconds()
        rheaders = end_to_end(response.headers)
        status = response.code
        if status == 304 and stale is not None:
            response.deliverBody(BodyRelay(self._clock, config.upstream_timeout, 0))
            self._freshen(stale, rheaders, request_time, response_time)
            return Shared(stale, 304)
        directives = ResponseDirectives.parse(rheaders) if self.http_policy else None
        if snapshot:
            # Snapshots are stored whatever their media type; an error
            # status is a failed snapshot, not a page.
            reason = response_bypass_reason(status, rheaders, CacheStrategy.ALL)
            if status >= 400 or reason is not None:
                drain = BodyRelay(self._clock, config.upstream_timeout, 65536)
                response.deliverBody(drain)
                drain.ready().addCallbacks(lambda complete: complete or drain.abort(), lambda _: None)
                raise SnapshotError(
                    f"origin answered {status} {response.phrase.decode('latin-1')}"
                    if status >= 400
                    else f"not storable ({reason})"
                )
        else:
            reason = response_bypass_reason(status, rheaders, config.cache_strategy)
            if directives is not None:
                # A shared cache per RFC 9111: its own status rules and
                # freshness requirements.
                if reason == "status":
                    reason = None
                reason = reason or http_bypass_reason(status, rheaders, directives, authorized)
        if reason is None and status == 404 and not config.cache_404_capacity:
            reason = "status"
        length = known_length(response)
        if reason is None and length is not None and length > config.max_cacheable_bytes:
            if snapshot:
                raise SnapshotError(f"larger than max_cacheable_bytes ({length} bytes)")
            reason = "size"
        relay = BodyRelay(self._clock, config.upstream_timeout, None if reason else config.max_cacheable_bytes)
        response.deliverBody(relay)
        if reason is not None:
            return Exclusive((response, relay), reason, relay.abort)
        complete = await relay.ready()
        if not complete:
            if snapshot:
                relay.abort()
                raise SnapshotError("larger than max_cacheable_bytes")
            return Exclusive((response, relay), "size", relay.abort)
        body = relay.collected()
        try:
            identity = await self.codec.decode(body, header_value(rheaders, b"content-encoding"))
        except DecodeError as e:
            raise UpstreamError(f"origin sent a body that does not decode: {e}")
        not_found = status == 404
        phrase = response.phrase
        if (
            not not_found
            and config.use_404_meta
            and status == 200
            and is_soft_404(identity)
        ):
            if not config.cache_404_capacity:
                return Exclusive((response, relay), "status", relay.abort)
            not_found, status, phrase = True, 404, b"Not Found"
        coding = self.stored_coding
        media = media_type(rheaders) or ""
        if coding != "identity" and (len(identity) < 128 or media.startswith(_PRECOMPRESSED)):
            coding = "identity"
        encoded = identity
        if coding != "identity":
            encoded = await self.codec.encode(identity, coding)
            if len(encoded) >= len(identity):
                coding, encoded = "identity", identity
        names = vary_names(rheaders)
        etag = header_value(rheaders, b"etag")
        if etag is None and config.generate_etag:
            etag = await self._runner(_strong_etag, identity)
        stored = await self.cache.put_body(key, encoded)
        entry = CacheEntry(
            key=key,
            status=status,
            phrase=phrase,
            headers=tuple((n, v) for n, v in rheaders if n.lower() not in _RECOMPUTED),
            coding=coding,
            body=stored,
            identity_length=len(identity),
            stored_at=self._clock.seconds(),
            vary=names,
            variant=variant_of(names, header) if names else (),
            not_found=not_found,
            pinned=snapshot,
            etag=etag,
            last_modified=header_value(rheaders, b"last-modified"),
        )
        if not snapshot:
            self._set_freshness(entry, rheaders, directives, request_time, response_time)
        return Shared(entry, status)

    def _set_freshness(self, entry: CacheEntry, rheaders, directives, request_time: float, response_time: float) -> None:
        """
        Give C{entry} its lifetime and stale allowances: from the server's
        settings (prerender policy) or from the response (http policy).
        """
        entry.stored_at = response_time
        if directives is None:
            config = self.config
            entry.initial_age = 0.0
            entry.lifetime = math.inf if config.cache_ttl is None else config.cache_ttl
            entry.stale_while_revalidate = config.stale_while_revalidate or 0.0
            entry.stale_if_error = config.stale_if_error or 0.0
            return
        entry.initial_age = initial_age(rheaders, request_time, response_time)
        entry.lifetime = freshness_lifetime(entry.status, rheaders, directives)
        entry.stale_while_revalidate = directives.stale_while_revalidate
        entry.stale_if_error = directives.stale_if_error
        entry.must_revalidate = directives.must_revalidate or directives.no_cache

    def _freshen(self, entry: CacheEntry, rheaders, request_time: float, response_time: float) -> None:
        """
        Update a stored entry from a 304 (RFC 9111 §4.3.4): its headers
        are replaced by those the 304 carries, and its freshness starts over.
        """
        fresh = {n.lower() for n, _ in rheaders} - _NOT_UPDATED
        merged = [(n, v) for n, v in entry.headers if n.lower() not in fresh]
        merged.extend((n, v) for n, v in rheaders if n.lower() in fresh and n.lower() not in _RECOMPUTED)
        directives = ResponseDirectives.parse(merged) if self.http_policy else None
        self.cache.update(entry, tuple(merged))
        etag = header_value(rheaders, b"etag")
        if etag is not None:
            entry.etag = etag
        modified = header_value(rheaders, b"last-modified")
        if modified is not None:
            entry.last_modified = modified
        self._set_freshness(entry, merged, directives, request_time, response_time)

    # Snapshots

    def _snapshot_key(self, path: str) -> str:
        plain, _, query = path.partition("?")
        return self.key_fn(RequestInfo("GET", plain, query, {}))

    def require_snapshots(self) -> Snapshots:
        """
        @raise NotPreGenerated: unless this server is in pre_generate mode.
        """
        if self.snapshots is None:
            raise NotPreGenerated(f"server {self.name!r} is not in pre_generate mode")
        return self.snapshots

    def fetch_snapshot(self, path: str, limiter) -> Deferred[None]:
        """
        Fetch C{path} (through the single-flight fills, so requests for it
        wait for this fetch) and keep it as a snapshot; the stored page it
        replaces stays visible until the new one is stored.

        @param limiter: a L{DeferredSemaphore} bounding concurrent fetches;
            the fill is registered at once, the fetch runs when allowed.
        @return: a L{Deferred} firing when stored, failing with
            L{SnapshotError} or L{UpstreamError} otherwise.
        """
        key = self._snapshot_key(path)
        path_qs = path.encode("utf-8")

        def fetch() -> Deferred:
            return limiter.run(
                lambda: Deferred.fromCoroutine(
                    self._fetch_for_cache(key, b"GET", path_qs, [], _no_header, snapshot=True)
                )
            )

        waiter, _ = self.cache.fill(key, fetch)

        def stored(result: object) -> None:
            if isinstance(result, Exclusive):
                result.release()
                raise SnapshotError(f"not storable ({result.reason})")
            if result is NOT_SHARED:
                raise SnapshotError("not storable")
            if not result.entry.pinned:
                self.cache.pin(result.entry)

        return waiter.addCallback(stored)

    def drop_snapshot(self, path: str) -> None:
        """
        Forget the stored page of C{path}.
        """
        self.cache.drop(self._snapshot_key(path))

    def has_snapshot(self, path: str) -> bool:
        """
        @return: whether a page is stored for C{path}.
        """
        return self.cache.has(self._snapshot_key(path))

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

    # Answers

    async def _serve(self, request, entry: CacheEntry, status: bytes) -> None:
        """
        Answer from a stored entry: content negotiation, conditional
        requests (304), byte ranges (206/416), C{Age} and C{Cache-Status}.
        """
        rh = request.requestHeaders
        accept = rh.getRawHeaders(b"accept-encoding")
        coding = choose_coding(b", ".join(accept) if accept is not None else None, entry.coding)
        if coding is None:
            _send_error(request, 406, "Not Acceptable: no acceptable content-coding", status)
            return
        ranged = None
        if entry.status == 200 and request.method == b"GET" and rh.hasHeader(b"range"):
            ranged = self._range(request, entry)
            if ranged is not None:
                coding = "identity"
        etag = entry.etag
        if etag is not None and coding != "identity":
            etag = weakened(etag)
        if 200 <= entry.status < 300 and self._not_modified(request, entry):
            self._send_not_modified(request, entry, etag, status)
            return
        stored = entry.body
        body = stored.data
        if body is None:
            body = await self.cache.store.read(stored)
        if coding != entry.coding:
            body = await self.codec.decode(body, entry.coding.encode("ascii"))
        if not _alive(request):
            return
        headers = self._entry_headers(entry, etag, status)
        code, phrase = entry.status, entry.phrase
        if entry.status == 200:
            headers.setRawHeaders(b"accept-ranges", [b"bytes"])
        if ranged == "unsatisfiable":
            code, phrase, body = 416, b"Range Not Satisfiable", b""
            headers.setRawHeaders(b"content-range", [b"bytes */%d" % entry.identity_length])
            headers.removeHeader(b"content-type")
        elif ranged is not None:
            first, last = ranged
            code, phrase = 206, b"Partial Content"
            headers.setRawHeaders(b"content-range", [b"bytes %d-%d/%d" % (first, last, len(body))])
            body = body[first : last + 1]
        if coding != "identity":
            headers.setRawHeaders(b"content-encoding", [_CODING_NAMES[coding]])
        headers.setRawHeaders(b"content-length", [b"%d" % len(body)])
        request.setResponseCode(code, phrase)
        request.responseHeaders = headers
        request.write(body)
        request.finish()

    def _entry_headers(self, entry: CacheEntry, etag: Optional[bytes], status: bytes) -> Headers:
        headers = Headers()
        for name, value in entry.headers:
            headers.addRawHeader(name, value)
        if etag is not None:
            headers.setRawHeaders(b"etag", [etag])
        if not headers.hasHeader(b"date"):
            headers.setRawHeaders(b"date", [datetimeToString()])
        vary = [b"Accept-Encoding"] + [n.encode("latin-1") for n in entry.vary]
        headers.setRawHeaders(b"vary", [b", ".join(vary)])
        headers.setRawHeaders(b"age", [b"%d" % int(entry.age(self._clock.seconds()))])
        headers.setRawHeaders(b"cache-status", [status])
        return headers

    def _not_modified(self, request, entry: CacheEntry) -> bool:
        """
        RFC 9110 §13.2.2: C{If-None-Match} (weak comparison, lists, C{*}),
        else C{If-Modified-Since}, for GET and HEAD.
        """
        if request.method not in GET_HEAD:
            return False
        rh = request.requestHeaders
        inm = rh.getRawHeaders(b"if-none-match")
        if inm is not None:
            return etag_matches_weak(b", ".join(inm), entry.etag)
        ims = rh.getRawHeaders(b"if-modified-since")
        if ims and entry.last_modified is not None:
            since = parse_http_date(ims[0])
            modified = parse_http_date(entry.last_modified)
            return since is not None and modified is not None and modified <= since
        return False

    def _send_not_modified(self, request, entry: CacheEntry, etag: Optional[bytes], status: bytes) -> None:
        full = self._entry_headers(entry, etag, status)
        headers = Headers()
        for name in _NOT_MODIFIED_HEADERS:
            values = full.getRawHeaders(name)
            if values is not None:
                headers.setRawHeaders(name, values)
        request.setResponseCode(304, b"Not Modified")
        request.responseHeaders = headers
        request.write(b"")
        request.finish()

    def _range(self, request, entry: CacheEntry):
        """
        @return: what C{Range} asks of C{entry}'s identity body: C{None} (the
            whole body: no or an ignored range, or C{If-Range} not matching),
            C{"unsatisfiable"} or C{(first, last)}.
        """
        rh = request.requestHeaders
        if_range = rh.getRawHeaders(b"if-range")
        if if_range is not None:
            value = if_range[0].strip()
            if value.startswith((b'"', b"W/")):
                if not etag_matches_strong(value, entry.etag):
                    return None
            else:
                date = parse_http_date(value)
                modified = parse_http_date(entry.last_modified)
                if date is None or modified is None or date != modified:
                    return None
        return parse_range(rh.getRawHeaders(b"range")[0], entry.identity_length)

    async def _passthrough(self, request, path_qs: bytes, status: bytes) -> None:
        try:
            response = await self.origin.request(
                request.method,
                path_qs,
                self._forward_headers(request),
                _request_body(request),
            )
        except UpstreamError as e:
            self._origin_failed(request, e, "fwd=bypass")
            return
        if self.http_policy and request.method not in _SAFE_METHODS and 200 <= response.code < 400:
            self._invalidate_unsafe(request, path_qs, response)
        relay = BodyRelay(self._clock, self.config.upstream_timeout)
        response.deliverBody(relay)
        await self._relay(request, response, relay, status)

    def _invalidate_unsafe(self, request, path_qs: bytes, response) -> None:
        """
        RFC 9111 §4.4: a successful unsafe request invalidates what is
        stored for its target, and for its C{Location} and
        C{Content-Location} when they are on this server.
        """
        targets = [path_qs]
        prefix = b"/" + b"/".join(request.prepath) if request.prepath else b""
        host = (request.requestHeaders.getRawHeaders(b"host") or [b""])[0].lower()
        for name in (b"location", b"content-location"):
            for value in response.headers.getRawHeaders(name, ()):
                parts = urlsplit(value.decode("latin-1"))
                if parts.netloc and parts.netloc.encode("latin-1").lower() != host:
                    continue  # another origin
                path = parts.path.encode("latin-1")
                if not path.startswith(b"/"):
                    continue
                if prefix:
                    if path != prefix and not path.startswith(prefix + b"/"):
                        continue  # another server behind this proxy
                    path = path[len(prefix):] or b"/"
                targets.append(path + (b"?" + parts.query.encode("latin-1") if parts.query else b""))
        for target in targets:
            plain, _, query = target.partition(b"?")
            info = RequestInfo.from_raw(b"GET", plain, query, ())
            try:
                self.cache.drop(self.key_fn(info))
            except Exception:
                log.failure("cache key function failed for {path!r}", path=target)

    async def _relay(self, request, response, relay: BodyRelay, status: bytes) -> None:
        if not _alive(request):
            relay.abort()
            return
        request.setResponseCode(response.code, response.phrase)
        headers = Headers()
        for name, value in end_to_end(response.headers):
            headers.addRawHeader(name, value)
        if not headers.hasHeader(b"date"):
            headers.setRawHeaders(b"date", [datetimeToString()])
        length = known_length(response)
        if length is not None and request.method != b"HEAD" and response.code not in (204, 304):
            # twisted.web's client keeps the length out of the headers:
            # give it back, so the client gets it instead of chunks.
            headers.setRawHeaders(b"content-length", [b"%d" % length])
        headers.setRawHeaders(b"cache-status", [status])
        request.responseHeaders = headers
        if request.method == b"HEAD" and response.request.method != b"HEAD":
            # A GET fill answering a HEAD: the headers are the answer.
            request.write(b"")
            request.finish()
            relay.abort()
            return
        try:
            await relay.stream_to(request)
        except CancelledError:
            relay.abort()
            raise


def _request_body(request):
    """
    @return: a producer of the client's request body (as twisted.web
        spooled it), or C{None} when it sent none.
    """
    rh = request.requestHeaders
    if not (rh.hasHeader(b"content-length") or rh.hasHeader(b"transfer-encoding")):
        return None
    content = request.content
    content.seek(0, 2)
    return body_producer(content, content.tell())


def _no_header(name: str) -> Optional[str]:
    return None


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
