"""
L{Exchange}: one client request being answered through twisted.web, and
whether its client is still there to be answered.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.web.http_headers import Headers

from phantom_frame.proxy.rules import NO_RULES, HeaderRules, variables_of
from phantom_frame.proxy.status import CacheStatus
from phantom_frame.proxy.view import RequestView


class Exchange:
    """
    A twisted.web request and its L{RequestView}.

    The client's departure is learned from C{notifyFinish()}, as Klein
    does: once the request is finished or its connection lost, nothing more
    may be written to it.

    @ivar request: the twisted.web request.
    @ivar view: what the proxy reads of it.
    @ivar rules: the server's header rules, applied to the answer's
        headers (L{set_status}) and to what is forwarded.
    """

    __slots__ = ("request", "view", "rules", "shared", "_over")

    def __init__(self, request: Any, view: Optional[RequestView] = None, rules: HeaderRules = NO_RULES) -> None:
        self.request = request
        self.view = view
        self.rules = rules
        #: The view the HTTP/1.1 channel remembers for the request's head,
        #: shared by every request with the same head bytes (L{view} is its
        #: copy), or C{None}: what is forwarded for it is made once.
        self.shared: Optional[RequestView] = None
        self._over = False
        request.notifyFinish().addBoth(self._ended)

    def _ended(self, result: object) -> None:
        self._over = True

    @property
    def alive(self) -> bool:
        """
        @return: whether the request may still be written to.
        """
        return not self._over and not self.request.finished

    def write_entry(self, entry: Any, answer: Any, status: CacheStatus, now: float) -> bool:
        """
        Write the whole answer from a stored entry in one go, when this
        exchange can (see L{phantom_frame.proxy.serve.EntryRenderer.render}).

        @return: whether it did; a twisted.web request never does.
        """
        return False

    def set_status(self, status: CacheStatus, headers: Headers) -> None:
        """
        Give the answer its C{Cache-Status} (in C{headers}, the headers
        about to be sent), and tell the site's log and metrics what it was.
        """
        if status.header:
            headers.setRawHeaders(b"cache-status", [status.header])
        rules = self.rules
        if (rules.response_set or rules.response_remove) and self.view is not None:
            rules.response(headers, variables_of(self.view))
        set_status(self.request, status)


def set_status(request: Any, status: CacheStatus) -> None:
    """
    Note C{status} on a twisted.web request, for its site's log and metrics
    (see L{phantom_frame.http.site.ProxySite.log}).
    """
    request.phantomStatus = status
