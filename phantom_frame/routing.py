"""
L{Router}: picks the server whose C{bind_to} prefix is the longest match of
the request path, on segment boundaries, and strips that prefix.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

from twisted.web.resource import IResource, Resource

from .proxy import error_response, split_target

Route = Tuple[str, IResource]


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
        @param routes: C{(bind_to, resource)} pairs.
        @raise ValueError: on a malformed or duplicate prefix, or two C{"*"}.
        """
        super().__init__()
        self._table: Dict[Tuple[bytes, ...], IResource] = {}
        self._fallback: Optional[IResource] = None
        self._depths: Tuple[int, ...] = ()
        for prefix, resource in routes:
            if prefix == "*":
                if self._fallback is not None:
                    raise ValueError("only one server may bind to '*'")
                self._fallback = resource
                continue
            segments = prefix_segments(prefix)
            if segments in self._table:
                raise ValueError(f"two servers bind to {prefix!r}")
            self._table[segments] = resource
        self._depths = tuple(sorted({len(s) for s in self._table}, reverse=True))

    def match(self, segments) -> Tuple[Optional[IResource], int]:
        """
        @param segments: the request's unquoted path segments (C{postpath}).
        @return: the resource and how many segments its prefix takes, or
            C{(None, 0)}.
        """
        table = self._table
        count = len(segments)
        for depth in self._depths:
            if depth <= count:
                resource = table.get(tuple(segments[:depth]))
                if resource is not None:
                    return resource, depth
        return self._fallback, 0

    def render(self, request) -> object:
        """
        Hand the request to the matching server's resource with the prefix
        moved from C{postpath} to C{prepath}.
        """
        request.defaultContentType = None
        if split_target(request) is None:
            return error_response(request, 400, "Bad Request: malformed request target")
        resource, depth = self.match(request.postpath)
        if resource is None:
            return error_response(request, 404, "Not Found")
        if depth:
            request.prepath.extend(request.postpath[:depth])
            del request.postpath[:depth]
        return resource.render(request)
