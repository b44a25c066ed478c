"""
Cache keys: what a request is called in the cache.

The default key is C{METHOD:PATH} or C{METHOD:PATH?QUERY}, built from the
request as received (raw path and query, after the server's prefix has been
stripped). A custom key function receives a L{RequestInfo} and returns any
string it likes.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Tuple

import attr


@attr.s(frozen=True, auto_attribs=True, slots=True)
class RequestInfo:
    """
    What a cache key function knows about a request.

    @ivar method: the request method, as received (C{"GET"}).
    @ivar path: the raw path with the server's prefix stripped (C{"/users"}),
        without the query.
    @ivar query: the raw query string without the C{"?"}; C{""} when there is
        none.
    @ivar headers: the request headers, names lower-cased; repeated headers
        are joined with C{", "}.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]

    @classmethod
    def from_raw(
        cls,
        method: bytes,
        path: bytes,
        query: bytes,
        headers: Iterable[Tuple[bytes, bytes]],
    ) -> RequestInfo:
        """
        Build a L{RequestInfo} from the bytes of a request, decoding them as
        latin-1 (which never fails and round-trips every byte).

        @param method: the request method.
        @param path: the prefix-stripped raw path, without the query.
        @param query: the raw query, without the C{"?"}.
        @param headers: C{(name, value)} pairs as received, in any case,
            repeated names allowed.
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
        )


def default_cache_key(info: RequestInfo) -> str:
    """
    The key phantom-frame uses when no key function is configured.

    @param info: the request.
    @return: C{METHOD:PATH}, or C{METHOD:PATH?QUERY} when the query is not
        empty (a bare trailing C{"?"} counts as no query).
    """
    if info.query:
        return f"{info.method}:{info.path}?{info.query}"
    return f"{info.method}:{info.path}"
