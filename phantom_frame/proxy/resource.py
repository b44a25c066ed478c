"""
L{ProxyResource}: the twisted.web face of a
L{phantom_frame.proxy.server.ProxyServer}, for library mode, HTTP/2 and
whatever the HTTP/1.1 channel does not answer itself.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource

from phantom_frame.proxy.answers import error_response, is_upgrade, split_target
from phantom_frame.proxy.decision import MALFORMED
from phantom_frame.proxy.view import view_of


def request_target(request: Any):
    """
    @return: the raw path and query of a twisted.web request, as the router
        found them (C{phantomTarget}) or parsed now; C{None} when malformed.
    """
    target = getattr(request, "phantomTarget", None)
    if target is None:
        target = split_target(request)
    return target


class ProxyResource(Resource):
    """
    Mount it anywhere in a L{twisted.web.server.Site}; the path it is
    mounted at is stripped.
    """

    isLeaf = True

    # Not "server": Resource.putChild overwrites that attribute.
    def __init__(self, server: Any) -> None:
        super().__init__()
        self.proxy_server = server

    def render(self, request) -> object:
        """
        Decide how to answer the request, and answer (asynchronously, for
        most decisions).
        """
        request.defaultContentType = None
        target = request_target(request)
        if target is None:
            return error_response(request, MALFORMED.code, MALFORMED.text)
        raw_path, query = target
        consumed = len(request.prepath)
        if consumed:
            prefix = b"/" + b"/".join(request.prepath)
            path = b"/" + b"/".join(raw_path.split(b"/")[1 + consumed :])
        else:
            prefix, path = b"", raw_path
        return self.proxy_server.handle(
            request, view_of(request, path, query, prefix), is_upgrade(request)
        )
