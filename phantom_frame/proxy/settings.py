"""
The per-origin settings of the library: L{CreateProxyConfig} and its enums.

A config file's C{[server.NAME]} block becomes one L{CreateProxyConfig}; library
users build one with the same builder methods as the original phantom-frame.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import attr

from phantom_frame.cache.strategy import CacheStrategy, Choice as _Choice, CompressStrategy
from phantom_frame.proxy.health import HealthCheck
from phantom_frame.proxy.ratelimit import RateLimit
from phantom_frame.proxy.rules import NO_RULES, HeaderRules, Rewrite, rewrites
from phantom_frame.proxy.upstreams import Balancing

MiB = 1024 * 1024


class CacheStorageMode(_Choice):
    """
    Where stored bodies live (C{redis}: in the shared Redis tier, with a
    memory L1 in front).
    """

    MEMORY = "memory"
    FILESYSTEM = "filesystem"
    REDIS = "redis"


class ProxyMode(_Choice):
    """
    Dynamic (fill on miss) or pre-generated (snapshots fetched at start).
    """

    DYNAMIC = "dynamic"
    PRE_GENERATE = "pre_generate"


class CachePolicy(_Choice):
    """
    Store until invalidated (or C{cache_ttl}), or follow RFC 9111.
    """

    PRERENDER = "prerender"
    HTTP = "http"


class CookiePolicy(_Choice):
    """
    Whether cookies make a request private (C{strict}) or never do
    (C{ignore}, the original phantom-frame's behaviour).
    """

    STRICT = "strict"
    IGNORE = "ignore"


class WebhookType(_Choice):
    """
    What a webhook's answer means for the request.
    """

    BLOCKING = "blocking"
    NOTIFY = "notify"
    CACHE_KEY = "cache_key"


@attr.s(auto_attribs=True, frozen=True)
class Webhook:
    """
    One C{[[server.NAME.webhooks]]} entry.
    """

    url: str
    type: WebhookType = WebhookType.NOTIFY
    timeout_ms: int = 5000


def _tuple(value) -> tuple:
    return tuple(value)


@attr.s(auto_attribs=True, frozen=True)
class CreateProxyConfig:
    """
    Everything that describes one origin and how its responses are cached.

    Values are immutable: every C{with_*} method returns a new config.
    """

    proxy_url: str = "http://localhost:8080"
    include_paths: Tuple[str, ...] = attr.ib(default=(), converter=_tuple)
    exclude_paths: Tuple[str, ...] = attr.ib(default=(), converter=_tuple)
    enable_websocket: bool = True
    forward_get_only: bool = False
    cache_key_fn: Optional[Callable] = attr.ib(default=None, eq=False)
    cache_404_capacity: int = 100
    use_404_meta: bool = False
    cache_strategy: CacheStrategy = attr.ib(
        default=CacheStrategy.ALL, converter=CacheStrategy
    )
    compress_strategy: CompressStrategy = attr.ib(
        default=CompressStrategy.BROTLI, converter=CompressStrategy
    )
    compress_on_fill: bool = False
    cache_storage_mode: CacheStorageMode = attr.ib(
        default=CacheStorageMode.MEMORY, converter=CacheStorageMode
    )
    cache_directory: Optional[str] = None
    proxy_mode: ProxyMode = attr.ib(default=ProxyMode.DYNAMIC, converter=ProxyMode)
    pre_generate_paths: Tuple[str, ...] = attr.ib(default=(), converter=_tuple)
    pre_generate_fallthrough: bool = False
    pre_generate_concurrency: int = 8
    cache_max_bytes: int = 256 * MiB
    max_cacheable_bytes: int = 8 * MiB
    upstream_timeout: float = 30.0
    upstream_keepalive_timeout: float = 4.0
    cache_policy: CachePolicy = attr.ib(
        default=CachePolicy.PRERENDER, converter=CachePolicy
    )
    cache_ttl: Optional[float] = None
    stale_while_revalidate: Optional[float] = None
    stale_if_error: Optional[float] = None
    generate_etag: bool = False
    webhooks: Tuple[Webhook, ...] = attr.ib(default=(), converter=_tuple)
    rate_limits: Tuple[RateLimit, ...] = attr.ib(default=(), converter=_tuple)
    upstreams: Tuple[str, ...] = attr.ib(default=(), converter=_tuple)
    load_balancing: Balancing = attr.ib(default=Balancing.ROUND_ROBIN, converter=Balancing)
    health_check: Optional[HealthCheck] = None
    execute: Optional[str] = None
    execute_dir: Optional[str] = None
    ignore_query_params: Tuple[str, ...] = attr.ib(default=(), converter=_tuple)
    cookie_policy: CookiePolicy = attr.ib(default=CookiePolicy.STRICT, converter=CookiePolicy)
    ignore_cookies: Tuple[str, ...] = attr.ib(default=(), converter=_tuple)
    #: Accept C{PURGE PATH} on the proxy listeners (see
    #: L{phantom_frame.proxy.decision.Purge}).
    purge_method: bool = False
    #: Networks (CIDR strings) whose clients may C{PURGE} without the token.
    purge_allow: Tuple[str, ...] = attr.ib(default=(), converter=_tuple)
    #: Rules rewriting the stripped path before keys, patterns and
    #: forwarding: L{Rewrite}s, C{(from, to)} pairs or C{{"from", "to"}}.
    rewrite: Tuple[Rewrite, ...] = attr.ib(default=(), converter=rewrites)
    #: Headers set and removed on forwarded requests and on answers (see
    #: L{HeaderRules}).
    headers: HeaderRules = NO_RULES

    def _with(self, **changes) -> CreateProxyConfig:
        return attr.evolve(self, **changes)

    def with_include_paths(self, paths) -> CreateProxyConfig:
        """
        @param paths: patterns (C{"/api/*"}, C{"POST /search"}) to cache.
        """
        return self._with(include_paths=paths)

    def with_exclude_paths(self, paths) -> CreateProxyConfig:
        """
        @param paths: patterns never cached; exclusion wins over inclusion.
        """
        return self._with(exclude_paths=paths)

    def with_websocket_enabled(self, enabled: bool) -> CreateProxyConfig:
        """
        @param enabled: whether C{Upgrade} requests are tunnelled.
        """
        return self._with(enable_websocket=enabled)

    def with_forward_get_only(self, enabled: bool) -> CreateProxyConfig:
        """
        @param enabled: answer methods other than GET and HEAD with 405.
        """
        return self._with(forward_get_only=enabled)

    def with_cache_key_fn(self, fn: Callable) -> CreateProxyConfig:
        """
        @param fn: called with a L{phantom_frame.RequestInfo}, returns the key.
        """
        return self._with(cache_key_fn=fn)

    def with_cache_404_capacity(self, capacity: int) -> CreateProxyConfig:
        """
        @param capacity: entries in the 404 cache; 0 disables it.
        """
        return self._with(cache_404_capacity=capacity)

    def with_use_404_meta(self, enabled: bool) -> CreateProxyConfig:
        """
        @param enabled: treat C{<meta name="phantom-404" content="true">} as a 404.
        """
        return self._with(use_404_meta=enabled)

    def with_cache_strategy(self, strategy) -> CreateProxyConfig:
        """
        @param strategy: a L{CacheStrategy} or its name.
        """
        return self._with(cache_strategy=strategy)

    caching_strategy = with_cache_strategy

    def with_compress_strategy(self, strategy) -> CreateProxyConfig:
        """
        @param strategy: a L{CompressStrategy} or its name.
        """
        return self._with(compress_strategy=strategy)

    compression_strategy = with_compress_strategy

    def with_compress_on_fill(self, enabled: bool) -> CreateProxyConfig:
        """
        @param enabled: compress stored bodies at the fill, before they are
            stored and answered, rather than once served again.
        """
        return self._with(compress_on_fill=enabled)

    def with_cache_storage_mode(self, mode) -> CreateProxyConfig:
        """
        @param mode: a L{CacheStorageMode} or its name.
        """
        return self._with(cache_storage_mode=mode)

    def with_cache_directory(self, directory: str) -> CreateProxyConfig:
        """
        @param directory: where filesystem mode keeps bodies.
        """
        return self._with(cache_directory=directory)

    def with_proxy_mode(self, mode) -> CreateProxyConfig:
        """
        @param mode: a L{ProxyMode} or its name.
        """
        return self._with(proxy_mode=mode)

    def with_pre_generate_paths(self, paths) -> CreateProxyConfig:
        """
        @param paths: paths fetched at start in pre-generate mode.
        """
        return self._with(pre_generate_paths=paths)

    def with_pre_generate_fallthrough(self, enabled: bool) -> CreateProxyConfig:
        """
        @param enabled: in pre-generate mode, send misses to the origin.
        """
        return self._with(pre_generate_fallthrough=enabled)

    def with_cache_max_bytes(self, limit: int) -> CreateProxyConfig:
        """
        @param limit: bound on the bytes stored for this origin.
        """
        return self._with(cache_max_bytes=limit)

    def with_max_cacheable_bytes(self, limit: int) -> CreateProxyConfig:
        """
        @param limit: larger responses stream through unstored.
        """
        return self._with(max_cacheable_bytes=limit)

    def with_upstream_timeout(self, seconds: float) -> CreateProxyConfig:
        """
        @param seconds: how long the origin may keep us waiting (then 504).
        """
        return self._with(upstream_timeout=seconds)

    def with_ignore_query_params(self, names) -> CreateProxyConfig:
        """
        @param names: globs of query parameter names left out of the cache
            key (still forwarded): C{"utm_*"}, C{"fbclid"}, C{"_rsc"}.
        """
        return self._with(ignore_query_params=names)

    def with_cookie_policy(self, policy) -> CreateProxyConfig:
        """
        @param policy: a L{CookiePolicy} or its name: C{"strict"} (a request
            with a cookie is answered from, and stored in, the cache only
            for responses the origin marked shareable) or C{"ignore"}.
        """
        return self._with(cookie_policy=policy)

    def with_ignore_cookies(self, names) -> CreateProxyConfig:
        """
        @param names: globs of cookie names that never make a request
            private: C{"_ga*"}, C{"_gid"}.
        """
        return self._with(ignore_cookies=names)

    def with_rate_limits(self, limits) -> CreateProxyConfig:
        """
        @param limits: L{RateLimit}s, each applied to every request (cache
            hits included); over one, a request gets 429.
        """
        return self._with(rate_limits=limits)

    def with_upstreams(self, urls) -> CreateProxyConfig:
        """
        @param urls: several origin URLs to use instead of C{proxy_url},
            sharing the requests (see L{with_load_balancing}).
        """
        return self._with(upstreams=urls)

    def with_load_balancing(self, policy) -> CreateProxyConfig:
        """
        @param policy: a L{Balancing} or its name: C{"round_robin"},
            C{"random"}, C{"least_conn"} or C{"ip_hash"}.
        """
        return self._with(load_balancing=policy)

    def with_health_check(self, check: Optional[HealthCheck]) -> CreateProxyConfig:
        """
        @param check: how the upstreams are checked, or L{None} for never.
        """
        return self._with(health_check=check)

    def with_upstream_keepalive_timeout(self, seconds: float) -> CreateProxyConfig:
        """
        @param seconds: how long an idle connection to the origin is kept
            for the next request (below the origin's own keep-alive
            timeout: Node.js closes after 5 seconds).
        """
        return self._with(upstream_keepalive_timeout=seconds)
