"""
L{Scope}: what a request to one server is called in its cache, and whether
it may share an answer -- the host its key is scoped by, its key (the
default or a custom one, without the C{ignore_query_params}), the
host-less snapshot it is answered from on a C{pre_generate} server, and
whether its cookies make it private.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from phantom_frame.cache.cookies import CookieRule
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.keys import QueryFilter, RequestInfo, request_host
from phantom_frame.proxy.settings import CookiePolicy, CreateProxyConfig, ProxyMode
from phantom_frame.proxy.target import TargetError, normalise_path
from phantom_frame.proxy.view import RequestView


class Scope:
    """
    Names the requests of one server.

    @ivar cookies: tells private requests.
    @ivar plain: whether keys depend on the request alone (no custom key
        function, which may read anything).
    @ivar snapshots: whether requests are answered from host-less
        snapshots when one is stored (see L{find}).
    """

    def __init__(self, config: CreateProxyConfig, cache: Any) -> None:
        """
        @param config: the server's settings.
        @param cache: its L{phantom_frame.cache.responses.ResponseCache}.
        """
        self._cache = cache
        self._key_fn: Optional[Callable[[RequestInfo], str]] = config.cache_key_fn
        self._query = QueryFilter(config.ignore_query_params)
        self._hosts: Dict[Tuple[Optional[str], bool], Optional[str]] = {}
        self.snapshots = self._snapshots = config.proxy_mode == ProxyMode.PRE_GENERATE
        self.plain = self._key_fn is None
        self.cookies = CookieRule(config.cookie_policy == CookiePolicy.STRICT, config.ignore_cookies)

    def host(self, view: RequestView) -> Optional[str]:
        """
        @return: the host that scopes the request's key
            (L{request_host}): C{""} for none, C{None} when malformed.
        """
        memo = (view.headers.get("host"), view.secure)
        host = self._hosts.get(memo, "-")
        if host == "-":
            host = request_host(*memo)
            if len(self._hosts) < 1024:
                self._hosts[memo] = host
        return host

    def key(self, method: bytes, path: bytes, query: bytes, headers: Mapping[str, str], host: str = "") -> str:
        """
        @param method: the request method (C{HEAD} is keyed as C{GET}).
        @param path: the normal, prefix-stripped path.
        @param query: the raw query, without the C{"?"}.
        @param headers: the request headers by lower-cased name.
        @param host: the host scoping the key (C{""}: host-less).
        @return: the request's cache key (see
            L{phantom_frame.cache.keys.default_cache_key}).
        @raise Exception: whatever a custom key function raises.
        """
        if method == b"HEAD":
            method = b"GET"
        text = query.decode("latin-1")
        if self._query:
            text = self._query.apply(text)
        if self._key_fn is None:
            scope = method.decode("latin-1") + ("://" + host if host else ":") + path.decode("latin-1")
            return scope + "?" + text if text else scope
        return self._key_fn(RequestInfo(method.decode("latin-1"), path.decode("latin-1"), text, headers, host))

    def key_of_target(self, target: bytes, view: Optional[RequestView] = None) -> str:
        """
        @param target: a stripped path (normalised here) and query.
        @param view: the request whose host scopes the key; without it the
            key is host-less, as snapshots are: a pre-generated page is
            fetched by the proxy itself and served for every host.
        @return: the key a C{GET} of C{target} is stored under.
        """
        path, _, query = target.partition(b"?")
        try:
            path = normalise_path(path)
        except TargetError:
            pass
        host = (self.host(view) or "") if view is not None else ""
        return self.key(b"GET", path, query, {}, host)

    def find(self, view: RequestView, host: str) -> Tuple[str, Optional[CacheEntry]]:
        """
        The key a request is decided under. On a C{pre_generate} server a
        request is answered from the host-less snapshot of its target when
        one is stored for its variant, or being fetched; otherwise, and on
        other servers, under its own key, scoped by its host.

        @param host: the request's host (L{host}).
        @return: the key, and the snapshot found (or C{None}: look the key
            up).
        @raise Exception: whatever a custom key function raises.
        """
        key = self.key(view.method, view.path, view.query, view.headers, host)
        if self._snapshots and host:
            shared = self.key(view.method, view.path, view.query, view.headers)
            entry = self._cache.lookup(shared, view.headers.get)
            if entry is not None or self._cache.in_flight(shared):
                return shared, entry
        return key, None

    def private(self, view: RequestView) -> bool:
        """
        @return: whether the request's cookies make it private (see
            L{CookieRule.private}).
        """
        return self.cookies.private(view.headers.get("cookie"))
