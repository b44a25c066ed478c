"""
Writing answers: the C{Cache-Status} values, short error answers, a
blocking webhook's verdict, and the request-target helpers every resource
of the proxy uses before it answers.
"""

from __future__ import annotations

import math

from typing import Optional, Tuple
from urllib.parse import unquote_to_bytes

from twisted.web.http_headers import Headers

#: The methods a stored entry answers.
GET_HEAD = (b"GET", b"HEAD")


def cache_status(*params: str) -> bytes:
    """
    @return: a C{Cache-Status} field value (RFC 9211) for this cache.
    """
    return "; ".join(("phantom-frame",) + params).encode("ascii")


STATUS_HIT = cache_status("hit")
STATUS_STORED = cache_status("fwd=uri-miss", "stored")
STATUS_COLLAPSED = cache_status("fwd=uri-miss", "collapsed")
STATUS_STALE = cache_status("hit", "detail=stale")


def hit_status(entry, age: float) -> bytes:
    """
    @return: the C{Cache-Status} of a fresh hit on C{entry} at C{age}, with
        the seconds of freshness left (C{ttl}) when they are finite.
    """
    if entry.lifetime == math.inf:
        return STATUS_HIT
    return cache_status("hit", "ttl=%d" % int(entry.lifetime - age))


def split_target(request) -> Optional[Tuple[bytes, bytes]]:
    """
    Normalise the request target to origin-form, rewriting the request's
    C{uri}, C{path} and C{postpath} for an absolute-form target.

    @return: the raw path and the raw query (C{b""} for none), or C{None}
        when the target is malformed.
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
    return path, query


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


def alive(request) -> bool:
    """
    @return: whether C{request} may still be written to: neither finished
        nor disconnected.
    """
    return not (request.finished or getattr(request, "_disconnected", False))


def send_error(
    request, code: int, text: str, status: Optional[bytes] = None, headers=()
) -> None:
    """
    Answer a request being rendered asynchronously with a short plain-text
    error (as L{error_response}), replacing any headers set so far; nothing
    is written to a request that is no longer L{alive}.

    @param status: the C{Cache-Status} to send, if any.
    @param headers: more C{(name, value)} headers to send.
    """
    if not alive(request):
        return
    request.responseHeaders = Headers()
    body = error_response(request, code, text, headers)
    if status is not None:
        request.responseHeaders.setRawHeaders(b"cache-status", [status])
    request.write(body)
    request.finish()


def send_verdict(request, verdict) -> None:
    """
    Answer with what a blocking webhook said (its status, C{Location}, body).
    """
    if not alive(request):
        return
    request.responseHeaders = Headers()
    request.setResponseCode(verdict.status)
    for name, value in verdict.headers:
        request.responseHeaders.addRawHeader(name, value)
    if not request.responseHeaders.hasHeader(b"content-type") and verdict.body:
        request.responseHeaders.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(verdict.body)])
    request.write(verdict.body)
    request.finish()
