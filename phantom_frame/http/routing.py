"""
L{Router}: picks the server whose C{bind_to} prefix is the longest match of
the request path, on segment boundaries, and strips that prefix. The path
is normalised first (L{phantom_frame.proxy.target}): the route, the
patterns, the key and the origin all see the one normal path, and a C{..}
that climbs out of the prefix the path was addressed to is a 400.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import unquote_to_bytes

from twisted.web.resource import IResource, Resource

from phantom_frame.proxy.answers import error_response, split_target

#: A route: C{(bind_to, resource)} or C{(bind_to, resource, name)}.
Route = Union[Tuple[str, IResource], Tuple[str, IResource, Optional[str]]]

#: The request a server's resource is rendering, set by L{Router.render} for
#: the duration of that call. Coroutines and Deferreds started from it see
#: it too (they run in a copy of the context they were started in), which
#: lets an origin L{IAgent} wrapper attribute upstream time to the client
#: request that caused it.
current_request: ContextVar[Optional[Any]] = ContextVar(
    "phantom_frame_current_request", default=None
)


def prefix_segments(prefix: str) -> Tuple[bytes, ...]:
    """
    @param prefix: a C{bind_to} value other than C{"*"}: C{/seg[/seg...]}.
    @return: its segments, as the request's unquoted path segments are.
    """
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"bind_to must be '*' or /seg[/seg...], got {prefix!r}")
    return tuple(s.encode("utf-8") for s in prefix[1:].split("/"))


class Router(Resource):
    """
    Longest-prefix dispatch over server resources; C{"*"} takes what no
    prefix matches; with no C{"*"}, unmatched requests get 404.
    """

    isLeaf = True

    def __init__(self, routes: Iterable[Route]) -> None:
        """
        @param routes: C{(bind_to, resource)} pairs, or C{(bind_to, resource,
            name)} triples naming the server behind each prefix. A route
            without a name takes the C{name} of the resource's C{server}
            attribute when it has one (as L{phantom_frame.proxy.server.ProxyResource}
            does). Every request the router hands on carries its server's
            name as C{request.phantomServer}.
        @raise ValueError: on a malformed or duplicate prefix, or two C{"*"}.
        """
        super().__init__()
        self._table: Dict[Tuple[bytes, ...], IResource] = {}
        self._names: Dict[Tuple[bytes, ...], Optional[str]] = {}
        self._fallback: Optional[IResource] = None
        self._fallbackName: Optional[str] = None
        self._depths: Tuple[int, ...] = ()
        self._routes: List[Tuple[str, IResource, Optional[str]]] = []
        for route in routes:
            prefix, resource = route[0], route[1]
            name = route[2] if len(route) > 2 else _name_of(resource)  # type: ignore[misc]
            self._routes.append((prefix, resource, name))
            if prefix == "*":
                if self._fallback is not None:
                    raise ValueError("only one server may bind to '*'")
                self._fallback = resource
                self._fallbackName = name
                continue
            segments = prefix_segments(prefix)
            if segments in self._table:
                raise ValueError(f"two servers bind to {prefix!r}")
            self._table[segments] = resource
            self._names[segments] = name
        self._depths = tuple(sorted({len(s) for s in self._table}, reverse=True))

    @property
    def routes(self) -> Sequence[Tuple[str, IResource, Optional[str]]]:
        """
        @return: the C{(bind_to, resource, name)} triples, in the order given.
        """
        return tuple(self._routes)

    def match(self, segments) -> Tuple[Optional[IResource], int]:
        """
        @param segments: the request's unquoted path segments (C{postpath}).
        @return: the resource and how many segments its prefix takes, or
            C{(None, 0)}.
        """
        resource, depth, _ = self._lookup(segments)
        return resource, depth

    def match_raw(self, segments: Sequence[bytes]) -> Tuple[Optional[IResource], int]:
        """
        @param segments: path segments as sent (percent-encoded).
        @return: as L{match}, for the decoded segments.
        """
        return self.match([unquote_to_bytes(s) if b"%" in s else s for s in segments])

    def _depth(self, segments: Sequence[bytes]) -> int:
        """
        @return: how many of the (encoded) C{segments} the prefix of their
            route takes.
        """
        return self.match_raw(segments)[1]

    def _lookup(self, segments) -> Tuple[Optional[IResource], int, Optional[str]]:
        """
        @return: the resource, how many segments its prefix takes, and the
            server's name, or C{(None, 0, None)}.
        """
        table = self._table
        count = len(segments)
        for depth in self._depths:
            if depth <= count:
                key = tuple(segments[:depth])
                resource = table.get(key)
                if resource is not None:
                    return resource, depth, self._names[key]
        return self._fallback, 0, self._fallbackName

    def render(self, request) -> object:
        """
        Hand the request to the matching server's resource with the prefix
        moved from C{postpath} to C{prepath}.
        """
        request.defaultContentType = None
        target = split_target(request, self._depth)
        if target is None:
            return error_response(request, 400, "Bad Request: malformed request target")
        request.phantomTarget = target
        resource, depth, name = self._lookup(request.postpath)
        if resource is None:
            return error_response(request, 404, "Not Found")
        request.phantomServer = name
        if depth:
            request.prepath.extend(request.postpath[:depth])
            del request.postpath[:depth]
        token = current_request.set(request)
        try:
            return resource.render(request)
        finally:
            current_request.reset(token)


def _name_of(resource: IResource) -> Optional[str]:
    """
    @return: the name of the server behind C{resource}, when it tells.
    """
    name = getattr(getattr(resource, "proxy_server", None), "name", None)
    return name if isinstance(name, str) else None
