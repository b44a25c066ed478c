"""
Writing answers: the C{Date} of an answer, short error answers, a blocking
webhook's verdict, and the request-target helpers every resource of the
proxy uses before it answers.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence, Tuple
from urllib.parse import unquote_to_bytes

from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers

from phantom_frame.proxy.exchange import Exchange
from phantom_frame.proxy.status import NONE, CacheStatus
from phantom_frame.proxy.target import TargetError, normalise_path


class _HTTPDates:
    """
    The HTTP date of a time, formatted once a second.
    """

    def __init__(self) -> None:
        self._second = -1
        self._date = b""

    def __call__(self, now: float) -> bytes:
        second = int(now)
        if second != self._second:
            self._date = datetimeToString(second)
            self._second = second
        return self._date


#: C{http_date(seconds)}: the C{Date} header value of a time (RFC 9110
#: §5.6.7), formatted once per second.
http_date = _HTTPDates()


def split_target(
    request, prefix_depth: Optional[Callable[[Sequence[bytes]], int]] = None
) -> Optional[Tuple[bytes, bytes]]:
    """
    Bring the request target to origin-form, rewriting the request's
    C{uri}, C{path} and C{postpath} for an absolute-form target, and
    normalise its path (L{normalise_path}); a request not traversed into
    (no C{prepath}) gets the normal C{path} and C{postpath}.

    @param prefix_depth: how many of the path's segments are the prefix
        of the server it is addressed to (see L{normalise_path}); by
        default, the segments traversed (C{prepath}), which a C{..} may
        not climb into either.
    @return: the normal path and the raw query (C{b""} for none), or
        C{None} when the target is malformed or its path refused.
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
    consumed = len(request.prepath)
    try:
        normal = normalise_path(path, prefix_depth or (lambda segments: consumed))
    except TargetError:
        return None
    if normal is not path and not consumed:
        request.path = normal
        request.postpath = [unquote_to_bytes(s) for s in normal[1:].split(b"/")]
    return normal, query


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


def send_error(
    exchange: Exchange,
    code: int,
    text: str,
    status: CacheStatus = NONE,
    headers: Iterable[Tuple[bytes, bytes]] = (),
) -> None:
    """
    Answer a request being rendered asynchronously with a short plain-text
    error (as L{error_response}), replacing any headers set so far; nothing
    is written to a request whose client is gone.

    @param status: the cache's part in the answer.
    @param headers: more C{(name, value)} headers to send.
    """
    if not exchange.alive:
        return
    request = exchange.request
    request.responseHeaders = Headers()
    body = error_response(request, code, text, headers)
    exchange.set_status(status, request.responseHeaders)
    request.write(body)
    request.finish()


def send_verdict(exchange: Exchange, verdict) -> None:
    """
    Answer with what a blocking webhook said (its status, C{Location}, body).
    """
    if not exchange.alive:
        return
    request = exchange.request
    request.responseHeaders = Headers()
    request.setResponseCode(verdict.status)
    for name, value in verdict.headers:
        request.responseHeaders.addRawHeader(name, value)
    if not request.responseHeaders.hasHeader(b"content-type") and verdict.body:
        request.responseHeaders.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(verdict.body)])
    request.write(verdict.body)
    request.finish()
