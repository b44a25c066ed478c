"""
Cache keys: what a request is called in the cache.

The default key is C{METHOD:PATH} or C{METHOD:PATH?QUERY}, built from the
request's normal path (prefix stripped) and its raw query without the
C{ignore_query_params}, scoped by the request's host as Varnish's default
hash is: C{GET://example.com/users?page=2}. A request without a C{Host}
(and a snapshot, fetched by the proxy itself) has the host-less key
C{GET:/users?page=2}. Paths are normal, so they never begin with C{//}: a
host-scoped key and a host-less one never collide.

A custom key function receives a L{RequestInfo} and returns any string it
likes.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote

import attr

from phantom_frame.cache.globs import Glob, GlobSet


@attr.s(frozen=True, auto_attribs=True, slots=True)
class RequestInfo:
    """
    What a cache key function knows about a request.

    @ivar method: the request method, as received (C{"GET"}).
    @ivar path: the normal path with the server's prefix stripped
        (C{"/users"}), without the query.
    @ivar query: the raw query string without the C{"?"} and without the
        server's C{ignore_query_params}; C{""} when there is none.
    @ivar headers: the request headers, names lower-cased; repeated headers
        are joined with C{", "}.
    @ivar host: the request's host, lower-cased, without the default port
        of its scheme (C{"example.com"}, C{"example.com:8080"}); C{""} when
        the request named none.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    host: str = ""

    @classmethod
    def from_raw(
        cls,
        method: bytes,
        path: bytes,
        query: bytes,
        headers: Iterable[Tuple[bytes, bytes]],
        host: str = "",
    ) -> RequestInfo:
        """
        Build a L{RequestInfo} from the bytes of a request, decoding them as
        latin-1 (which never fails and round-trips every byte).

        @param method: the request method.
        @param path: the prefix-stripped normal path, without the query.
        @param query: the raw query, without the C{"?"}.
        @param headers: C{(name, value)} pairs as received, in any case,
            repeated names allowed.
        @param host: the request's host (see L{request_host}).
        @return: the request's description.
        """
        joined: Dict[str, List[str]] = {}
        for name, value in headers:
            joined.setdefault(name.decode("latin-1").lower(), []).append(
                value.decode("latin-1")
            )
        return cls(
            method=method.decode("latin-1"),
            path=path.decode("latin-1"),
            query=query.decode("latin-1"),
            headers={name: ", ".join(values) for name, values in joined.items()},
            host=host,
        )


def default_cache_key(info: RequestInfo) -> str:
    """
    The key phantom-frame uses when no key function is configured.

    @param info: the request.
    @return: C{METHOD://HOST/PATH?QUERY} (C{METHOD:/PATH?QUERY} when the
        host is C{""}), without C{?QUERY} when the query is empty (a bare
        trailing C{"?"} counts as no query).
    """
    scope = f"{info.method}://{info.host}" if info.host else f"{info.method}:"
    if info.query:
        return f"{scope}{info.path}?{info.query}"
    return scope + info.path


#: A host and an optional port, lower-cased: a DNS name or IPv4 address
#: (letters, digits, C{-}, C{_}, dots between labels, perhaps one trailing
#: dot) or a bracketed IPv6 literal.
_HOST = re.compile(
    r"((?:[a-z0-9_-]+\.)*[a-z0-9_-]+\.?|\[[0-9a-f:.]+(?:%25[a-z0-9._~-]+)?\])(?::([0-9]{0,5}))?"
)


def request_host(value: Optional[str], secure: bool) -> Optional[str]:
    """
    The host a request's key is scoped by.

    @param value: the request's C{Host} header (C{None} when absent).
    @param secure: whether it came over TLS (443 is then the default port,
        else 80).
    @return: the host lower-cased, without a trailing dot and without the
        default port (C{"example.com"}, C{"example.com:8080"}); C{""} for
        no (or an empty) C{Host}; C{None} when C{value} is not one valid
        C{host[:port]} (two hosts joined, a path, spaces...).
    """
    if not value:
        return ""
    match = _HOST.fullmatch(value.lower())
    if match is None:
        return None
    name, port = match.groups()
    if name.endswith(".") and len(name) > 1:
        name = name[:-1]
    if not port:
        return name
    number = int(port)
    if number > 65535:
        return None
    if number == (443 if secure else 80):
        return name
    return f"{name}:{number}"


class QueryFilter:
    """
    Leaves the parameters named by C{ignore_query_params} out of a query:
    the rest keeps its order and spelling.
    """

    def __init__(self, names: Sequence[str]) -> None:
        """
        @param names: globs of parameter names (C{"utm_*"}, C{"_rsc"}); a
            name is matched as sent and percent-decoded.
        """
        self._names = GlobSet(Glob(name) for name in names) if names else None

    def __bool__(self) -> bool:
        """
        @return: whether any parameter is left out.
        """
        return self._names is not None

    def apply(self, query: str) -> str:
        """
        @param query: a raw query, without the C{"?"}.
        @return: C{query} without the ignored parameters (C{""} when none
            is left).
        """
        names = self._names
        if names is None or not query:
            return query
        kept = []
        for part in query.split("&"):
            name = part.split("=", 1)[0]
            if names.matches(name) or ("%" in name or "+" in name) and names.matches(
                unquote(name.replace("+", " "), "latin-1")
            ):
                continue
            kept.append(part)
        return "&".join(kept)

