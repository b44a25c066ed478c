"""
L{ProxyServer}: one origin behind the cache. It holds its collaborators --
the cache, the origin, the L{Decider}, the L{Filler}, the L{Passthrough},
the L{EntryRenderer}, the snapshots and the webhooks -- and renders each
decision for twisted.web requests.
"""

from __future__ import annotations

import tempfile
from contextvars import Context, copy_context
from typing import Any, Callable, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent
from twisted.web.server import NOT_DONE_YET

from phantom_frame.cache.codec import STORED_CODING, Codec
from phantom_frame.cache.patterns import InvalidationPattern
from phantom_frame.cache.redis import TieredCache
from phantom_frame.cache.recoding import Recoder
from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.store import FilesystemStore, MemoryStore
from phantom_frame.proxy import status as statuses
from phantom_frame.proxy.answers import send_error, send_verdict
from phantom_frame.proxy.decision import (
    NOT_PRE_GENERATED,
    Await,
    Bypass,
    Decider,
    Decision,
    Fill,
    Hit,
    PartHit,
    Purge,
    Reject,
    Stale,
    Tunnel,
)
from phantom_frame.proxy.exchange import Exchange
from phantom_frame.proxy.receivers import FillAnswer, FillWaiting, SnapshotAnswer, reject_now, send_reject
from phantom_frame.proxy.fill import Filler
from phantom_frame.proxy.client import IOriginClient
from phantom_frame.proxy.health import health_checks
from phantom_frame.proxy.origin import UpstreamError
from phantom_frame.proxy.purge import purge_answer
from phantom_frame.proxy.ratelimit import admit_when_ready
from phantom_frame.proxy.rules import apply_rewrite
from phantom_frame.proxy.pool import OriginPool, endpoint_factory
from phantom_frame.proxy.passthrough import (
    Passthrough,
    content_location_is_target,
    forward_headers,
    request_body,
    unsafe_targets,
)
from phantom_frame.proxy.resource import ProxyResource
from phantom_frame.proxy.serve import EntryRenderer
from phantom_frame.proxy.settings import CacheStorageMode, CreateProxyConfig, ProxyMode
from phantom_frame.proxy.snapshots import SnapshotError, Snapshots
from phantom_frame.proxy.tunnel import start_tunnel
from phantom_frame.proxy.upstreams import UpstreamSet, origin_for
from phantom_frame.proxy.view import RequestView
from phantom_frame.proxy.webhooks import Webhooks

log = Logger()


class ProxyServer:
    """
    One origin: its settings, its cache and how its requests are answered.

    @ivar name: the server's name.
    @ivar config: its settings.
    @ivar cache: its stored responses.
    @ivar origin: where its requests go (an L{Origin}, or an L{UpstreamSet}).
    @ivar health: the L{HealthChecks} of its upstreams, or C{None}.
    @ivar origin_pool: the server's own connections to its origins, or
        C{None} when it was given a client.
    @ivar decider: decides how each request is answered.
    @ivar filler: fills the cache from the origin.
    @ivar passthrough: relays what the cache does not answer.
    @ivar entries: writes answers from stored entries.
    @ivar snapshots: the tracked snapshots of a C{pre_generate} server, or
        C{None}.
    @ivar webhooks: the server's webhooks.
    @ivar fast_path_ok: whether the channel's fast path may answer for it.
    @ivar byte_path_ok: whether the channel may pass its requests through
        at the byte level (L{phantom_frame.http.relay.ByteRelay}): not with
        several upstreams.
    """

    def __init__(
        self,
        name: str,
        config: CreateProxyConfig,
        agent: IAgent,
        reactor,
        runner: Callable,
        client: Optional[IOriginClient] = None,
        redis: Any = None,
        client_for: Optional[Callable[[str], IOriginClient]] = None,
    ) -> None:
        """
        @param name: the server's name (config block), used for stats and
            the filesystem bucket.
        @param config: its settings.
        @param agent: makes the webhook calls.
        @param reactor: clock, connections and threads.
        @param runner: runs blocking work (compression, file I/O) off the
            reactor thread; its C{background} runner, when it has one (a
            L{ThreadRunner}), compresses stored bodies nobody waits for.
        @param client: reaches the origin (every upstream, when there are
            several); when C{None} and without C{client_for}, the server
            keeps its own L{OriginPool} (see L{origin_pool}).
        @param redis: the L{phantom_frame.cache.bus.RedisNode} of a
            C{redis} server.
        @param client_for: returns the client of each upstream URL (instead
            of C{client}).
        @raise ValueError: for a C{redis} server without one.
        """
        self.name = name
        self.config = config
        self._clock = reactor
        self.origin_pool: Optional[OriginPool] = None
        if client_for is None and client is not None:
            client_for = lambda url, given=client: given
        if client_for is None:
            pool = self.origin_pool = OriginPool(
                reactor, endpoint_factory(reactor), keepalive_timeout=config.upstream_keepalive_timeout
            )
            client_for = lambda url: pool.client(url, config.upstream_timeout)
        self.origin: Any = origin_for(config, client_for, reactor)
        self.health = health_checks(name, self.origin, config.health_check, reactor)
        self.tiered = config.cache_storage_mode == CacheStorageMode.REDIS
        if self.tiered:
            if redis is None:
                raise ValueError(f"server {name!r}: cache_storage_mode 'redis' needs a Redis node")
            self.cache: Any = TieredCache(name, redis, reactor, config.cache_404_capacity, config.upstream_timeout)
        else:
            if config.cache_storage_mode == CacheStorageMode.FILESYSTEM:
                directory = config.cache_directory or tempfile.gettempdir() + "/phantom-frame"
                store: Any = FilesystemStore(directory, name, runner)
            else:
                store = MemoryStore()
            self.cache = ResponseCache(name, store, reactor, config.cache_max_bytes, config.cache_404_capacity)
        codec = Codec(runner)
        self.decider = Decider(name, config, self.cache, reactor)
        policy, caching = self.decider.http_policy, self.decider.caching
        # Stored bodies are compressed once served again, on the runner's
        # idle-priority threads; on a Redis tier, at the fill (the other
        # nodes read the compressed body).
        coding = STORED_CODING[config.compress_strategy]
        later = coding != "identity" and not config.compress_on_fill and not self.tiered
        if later:
            self.decider.recoder = Recoder(self.cache, Codec(getattr(runner, "background", runner)), coding)
        self.filler = Filler(
            name, config, self.cache, self.origin, codec, reactor, runner, policy, compress_later=later
        )
        self.passthrough = Passthrough(
            name, self.origin, reactor, config.upstream_timeout, self._invalidate_unsafe if policy else None,
            self._adopt_unsafe if policy and caching else None, config.max_cacheable_bytes,
        )
        self.entries = EntryRenderer(reactor, self.cache, codec)
        self.snapshots = (
            Snapshots(
                name, config.pre_generate_paths, config.pre_generate_concurrency, self.filler, self.cache,
                self.decider.key_of_target, clock=reactor,
            )
            if config.proxy_mode == ProxyMode.PRE_GENERATE
            else None
        )
        self.webhooks = Webhooks(name, config.webhooks, agent, reactor)
        self.fast_path_ok = (
            self.decider.caching
            and not self.webhooks
            and config.cache_key_fn is None
            and config.cache_storage_mode != CacheStorageMode.FILESYSTEM
        )
        # Several upstreams: every request through UpstreamSet.request, for
        # the balancing, the failover and the per-upstream counts.
        self.byte_path_ok = (
            not self.webhooks and config.cache_key_fn is None and not isinstance(self.origin, UpstreamSet)
        )
        self.resource = ProxyResource(self)

    def open(self) -> None:
        """
        Prepare the store (filesystem mode empties the server's bucket).
        """
        self.cache.store.open()

    def close(self) -> None:
        """
        Stop the health checks, drop the cache and close the store, and the
        idle connections of the server's own origin pool.
        """
        if self.health is not None:
            self.health.stopService()
        self.cache.close()
        if self.origin_pool is not None:
            self.origin_pool.close()

    # Requests

    def handle(self, request, view: RequestView, upgrade: bool) -> Any:
        """
        Answer a twisted.web C{request} whose view is C{view}.

        @param upgrade: whether it asks to switch protocols.
        @return: what C{render} returns: C{NOT_DONE_YET} or a body.
        """
        if self.config.rewrite:
            apply_rewrite(self.config.rewrite, view)
        limiter = self.decider.limiter
        waiting = None if limiter is None else limiter.ready(view)
        if waiting is not None:
            return admit_when_ready(request, waiting, lambda: self._admitted(request, view, upgrade))
        return self._admitted(request, view, upgrade)

    def _admitted(self, request, view: RequestView, upgrade: bool) -> Any:
        """
        L{handle}, once the rate limits can answer at once.
        """
        decision = self.decider.admit(view, upgrade)
        if isinstance(decision, Reject):
            return reject_now(request, decision)
        if isinstance(decision, Purge):
            return purge_answer(self, request, decision.pattern)
        exchange = Exchange(request, view, self.config.headers)
        if decision is None or self.webhooks.blocking:
            d = Deferred.fromCoroutine(self._answer(exchange, decision))
            request.notifyFinish().addErrback(lambda _: d.cancel())
            d.addErrback(self._unexpected, exchange)
            return NOT_DONE_YET
        return self._tunnel(exchange)

    def _unexpected(self, failure: Failure, exchange: Exchange) -> None:
        if failure.check(CancelledError):
            return
        request = exchange.request
        log.failure(
            "unexpected error answering {method} {uri} for server {server}",
            failure,
            method=request.method,
            uri=request.uri,
            server=self.name,
        )
        send_error(exchange, 500, "Internal Server Error")

    async def _answer(self, exchange: Exchange, admitted: Optional[Decision]) -> None:
        view = exchange.view
        webhooks = self.webhooks
        key = None
        if webhooks:
            payload = webhooks.payload(view)
            if webhooks.blocking:
                verdict = await webhooks.gate(payload)
                if verdict.status is not None:
                    send_verdict(exchange, verdict)
                    return
            if isinstance(admitted, Tunnel):
                body = self._tunnel(exchange)
                if isinstance(body, bytes) and exchange.alive:
                    exchange.request.write(body)
                    exchange.request.finish()
                return
            if webhooks.notify:
                webhooks.fire(payload)
            if webhooks.cache_key:
                key = await webhooks.key(payload)
        if self.tiered:
            await self._prefetch(view, key)
        await self.render(exchange, self.decider.decide(view, key))

    async def _prefetch(self, view: RequestView, key: Optional[str]) -> None:
        """
        A C{redis} server: read what Redis holds for the request into L1
        before deciding (the decision reads L1 only).
        """
        if self.decider.filter.bypass_reason(view.method.decode("latin-1"), view.path.decode("latin-1")):
            return
        host = self.decider.scope.host(view)
        if host is None:
            return  # the decision answers 400
        try:
            key = key if key is not None else self.decider.key(
                view.method, view.path, view.query, view.headers, host
            )
        except Exception:
            return  # the decision logs it and bypasses
        await self.cache.prefetch(key, view.headers.get)

    def render_fill(self, exchange: Exchange, fill: Fill, failed: Callable[[Failure], object]) -> Any:
        """
        Answer C{exchange}, decided a L{Fill} from L1 alone (by the HTTP/1.1
        channel), its fill's result told by a plain call (L{FillWaiting}): a
        C{redis} server reads Redis first and decides again.

        @param failed: told of what fails unexpectedly.
        @return: what gives the answer up (its C{cancel()}).
        """
        if self.tiered:
            return Deferred.fromCoroutine(self._render_tiered(exchange)).addErrback(failed)
        return FillWaiting(self, exchange, fill, failed).start()

    async def _render_tiered(self, exchange: Exchange) -> None:
        """
        L{render_fill} for a C{redis} server.
        """
        view = exchange.view
        await self._prefetch(view, None)
        await self.render(exchange, self.decider.decide(view))

    async def render(self, exchange: Exchange, decision: Decision) -> None:
        """
        Answer C{exchange} as C{decision} says.
        """
        if isinstance(decision, (Hit, Stale)):
            self.decider.note(decision)
            if isinstance(decision, Stale) and decision.refresh:
                self.filler.refresh_behind(exchange.view, decision.key, decision.entry)
            await self.entries.render(exchange, decision.entry, decision.answer, decision.status)
        elif isinstance(decision, PartHit):
            self.decider.note(decision)
            self.entries.render_part(exchange, decision.partial, decision.first, decision.last, decision.status)
        elif isinstance(decision, Fill):
            await self._fill(exchange, decision, request_body(exchange.request))
        elif isinstance(decision, Await):
            await self._await_snapshot(exchange, decision.key)
        elif isinstance(decision, Bypass):
            await self.passthrough.forward(exchange, decision.status)
        elif isinstance(decision, Reject):
            send_error(exchange, decision.code, decision.text, decision.status, decision.headers)
        else:
            raise TypeError(f"cannot render {decision!r}")

    def _fill(self, exchange: Exchange, fill: Fill, body: Any) -> Deferred[None]:
        """
        Start (or join) the fill C{fill} decided, and answer with what it
        gives; with a stale entry being revalidated, fall back on it when
        the origin fails and that is allowed.

        @param body: the request's body (see L{request_body}), or C{None}.
        @return: a L{Deferred} firing once answered (cancelling it gives
            the answer up: a fill nobody waits for any more is cancelled).
        """
        filler, shared = self.filler, exchange.shared
        waiter, collapsed = filler.fill(exchange.view, fill.key, fill.stale, body, fill.private, fill.ranged, shared)
        # What follows runs when the fill is done, with the context
        # variables of the request being answered (an answer that asks the
        # origin again is timed for it).
        return waiter.addBoth(self._filled, exchange, collapsed, fill, copy_context())

    def _filled(self, result: Any, exchange: Exchange, collapsed: bool, fill: Fill, context: Context) -> Any:
        """
        Answer with the fill's result, or for its failure (L{_fill_failed}).
        """
        return FillAnswer(self, exchange, collapsed, fill, context).take(result)

    def _fill_failed(self, failure: Failure, exchange: Exchange, fill: Fill, context: Context) -> Any:
        """
        Answer for a fill that failed: from the stale entry, or as an origin
        that failed; a request that joined a snapshot fetch that stored
        nothing asks the origin itself.
        """
        error = failure.value
        if isinstance(error, UpstreamError):
            stale = fill.stale
            if stale is not None and self.decider.may_serve_stale(stale, fill.directives):
                return context.run(Deferred.fromCoroutine, self._serve_stale(exchange, stale))
            self.passthrough.origin_failed(exchange, error, "stale" if stale is not None else "uri-miss")
            return None
        if isinstance(error, SnapshotError):
            forward = self.passthrough.forward(exchange, statuses.forwarded("uri-miss", "not-shared"))
            return context.run(Deferred.fromCoroutine, forward)
        return failure

    async def _await_snapshot(self, exchange: Exchange, key: str) -> None:
        """
        A pure pre-generated server: answer with the snapshot of C{key}
        being fetched, whatever its variant (the origin is never asked for
        this request). A snapshot that cannot be stored answers 404, as a
        path without one; an origin that fails, 502 (504 for a timeout).
        """
        waiter = self.cache.join(key)
        if waiter is None:
            await self.render(exchange, self.decider.decide(exchange.view, key))
            return
        try:
            result = await waiter
        except SnapshotError:
            send_reject(exchange, NOT_PRE_GENERATED)
            return
        except UpstreamError as e:
            self.passthrough.origin_failed(exchange, e, "uri-miss")
            return
        await result.deliver(SnapshotAnswer(self, exchange))

    async def _serve_stale(self, exchange: Exchange, entry: Any) -> None:
        """
        Answer from a stale entry standing in for a failed origin.
        """
        decision = Stale("", entry, self.decider.answer(exchange.view, entry), False)
        self.decider.note(decision)
        await self.entries.render(exchange, entry, decision.answer, decision.status)

    # Upgrades

    def _tunnel(self, exchange: Exchange) -> Any:
        """
        Hand an upgrade request (WebSocket and others) to a raw tunnel to
        the origin: the request head goes upstream with the stripped path
        and forwarding headers, and bytes are spliced both ways.
        """
        view = exchange.view
        headers = forward_headers(view, rules=self.config.headers)
        headers.append((b"Connection", b"Upgrade"))
        for value in view.values(b"upgrade"):
            headers.append((b"Upgrade", value))
        return start_tunnel(
            exchange,
            self.origin,
            view.target,
            headers,
            self._clock,
            self.config.upstream_timeout,
        )

    # Invalidation

    def _invalidate_unsafe(self, view: RequestView, response: Any) -> None:
        """
        RFC 9111 §4.4: drop what a successful unsafe request invalidates.
        """
        for target in unsafe_targets(view, response):
            try:
                self.cache.drop(self.decider.key_of_target(target, view))
            except Exception:
                log.failure("cache key function failed for {path!r}", path=target)

    def _adopt_unsafe(
        self, view: RequestView, response: Any, body: bytes, request_time: float, response_time: float
    ) -> None:
        """
        RFC 9111 §4: store a POST's answer for GETs of its target when its
        C{Content-Location} is that target (and a GET of it is cached).
        """
        if not content_location_is_target(view, response):
            return
        if self.decider.filter.bypass_reason("GET", view.path.decode("latin-1")) is not None:
            return
        try:
            key = self.decider.key_of_target(view.target, view)
        except Exception:
            log.failure("cache key function failed for {path!r}", path=view.target)
            return
        self.filler.adopt(view, key, response, body, request_time, response_time)

    def invalidate(self, pattern: str, keep_snapshots: bool = False) -> int:
        """
        Drop the entries whose key matches C{pattern}; in pre_generate mode,
        fetch the matching tracked snapshots again, in the background.

        @param keep_snapshots: keep the pages of those snapshots until their
            new pages are stored (and when their fetch fails), so that a
            pre-generated site never shows a gap; their other variants and
            every other entry go as usual.
        @return: how many entries were dropped or are being replaced.
        @raise ValueError: on an empty pattern.
        """
        snapshots = self.snapshots
        if snapshots is None:
            return self.cache.invalidate(pattern)
        regenerated = snapshots.matching(InvalidationPattern(pattern).matches)
        if not keep_snapshots:
            count = self.cache.invalidate(pattern)
        else:
            count = self.cache.invalidate(pattern, regenerated.__contains__)
            count += sum(1 for e in self.cache.entries() if e.pinned and e.key in regenerated)
        snapshots.regenerate(list(regenerated.values()))
        return count

    def invalidate_all(self, keep_snapshots: bool = False) -> int:
        """
        Drop every entry; in pre_generate mode, fetch every tracked snapshot
        again (see L{invalidate} for C{keep_snapshots}).

        @return: how many entries were dropped or are being replaced.
        """
        if self.snapshots is None or not keep_snapshots:
            count = self.cache.invalidate_all()
            if self.snapshots is not None:
                self.snapshots.regenerate(list(self.snapshots.matching(lambda key: True).values()))
            return count
        return self.invalidate("*", keep_snapshots=True)
