"""
The control site's HTTP/1.1 server: L{ControlSite}, which refuses a request
as soon as its head is complete when the head alone decides the answer.

twisted.web reads and spools a whole request body before any resource sees
the request, so a resource cannot answer 401 to an unauthenticated upload,
or 413 to one that is too large, before it has been read. L{ControlChannel}
asks L{ControlResource.refusal} when the channel has parsed the head (in
C{allHeadersReceived}, before C{Request.gotLength} makes the body's file and
before a C{100 Continue}), and when it gets a refusal writes it, closes the
connection and reads nothing more. L{ControlRequest} counts a chunked body
and refuses it as soon as it goes over L{MAX_BODY}. Everything else is the
stock channel and request.

This leans on C{HTTPChannel} internals (C{allHeadersReceived},
C{allContentReceived}, C{rawDataReceived}, C{_command}, C{_path},
C{length}), the same ones its own C{_respondToBadRequestAndDisconnect}
relies on; the tests in C{tests/ops/test_control_site.py} pin them.
"""

from __future__ import annotations

import json
from typing import List, Optional

from twisted.web import http, server

from phantom_frame.ops.control import ControlResource
from phantom_frame.ops.control_limits import MAX_BODY, TOO_LARGE, Refusal


def refusal_bytes(refusal: Refusal, head: bool = False) -> bytes:
    """
    Render a refusal as a complete HTTP/1.1 response that closes the
    connection.

    @param refusal: what to answer.
    @param head: whether the request was C{HEAD} (the body is left out).
    @return: the response's bytes.
    """
    body = json.dumps({"error": refusal.error}, sort_keys=True).encode("utf-8") + b"\n"
    reason = http.RESPONSES.get(refusal.code, b"Error")
    lines: List[bytes] = [
        b"HTTP/1.1 %d %s" % (refusal.code, reason),
        b"Content-Type: application/json",
        b"Cache-Control: no-store",
        b"Content-Length: %d" % (len(body),),
        b"Connection: close",
    ]
    lines.extend(b"%s: %s" % (name, value) for name, value in refusal.headers())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head else body)


class ControlRequest(server.Request):
    """
    A control request: refuses a body without a C{Content-Length} as soon
    as it goes over L{MAX_BODY} bytes.
    """

    _received = 0

    def handleContentChunk(self, data: bytes) -> None:
        """
        Keep a chunk of the body, or refuse the request when the body has
        grown too large.

        @param data: the chunk.
        """
        self._received += len(data)
        if self._received > MAX_BODY:
            channel = self.channel
            if isinstance(channel, ControlChannel):
                channel.refuse(TOO_LARGE)
            return
        super().handleContentChunk(data)


class ControlChannel(http.HTTPChannel):
    """
    An HTTP/1.1 channel that answers a refusal as soon as a request's head
    is complete.

    @ivar refused: the refusal sent, after which nothing more is read.
    """

    refused: Optional[Refusal] = None
    site: ControlSite

    def allHeadersReceived(self) -> None:
        """
        The head is complete: refuse the request now, or read its body.
        """
        request = self.requests[-1]
        refusal = self.site.control.refusal(self._command, self._path, request.requestHeaders, self.length)
        if refusal is None:
            super().allHeadersReceived()
        else:
            self.refuse(refusal, head=self._command == b"HEAD")

    def refuse(self, refusal: Refusal, head: bool = False) -> None:
        """
        Send a refusal and close the connection; no more bytes are read.

        @param refusal: what to answer.
        @param head: whether the request was C{HEAD}.
        """
        if self.refused is not None:
            return
        self.refused = refusal
        self.transport.write(refusal_bytes(refusal, head))
        self.loseConnection()

    def allContentReceived(self) -> None:
        """
        The body is complete: hand the request on, unless it was refused.
        """
        if self.refused is None:
            super().allContentReceived()

    def rawDataReceived(self, data: bytes) -> None:
        """
        Body bytes: ignored once the request is refused.

        @param data: the bytes.
        """
        if self.refused is None:
            super().rawDataReceived(data)


class ControlSite(server.Site):
    """
    The control site: HTTP/1.1 only, with L{ControlChannel} and
    L{ControlRequest}; tracebacks are never shown.

    @ivar control: the control resource, which decides refusals.
    """

    protocol = ControlChannel
    requestFactory = ControlRequest
    displayTracebacks = False

    def __init__(self, control: ControlResource, **kwargs) -> None:
        """
        @param control: the control resource, served at the root.
        @param kwargs: passed to L{server.Site} (C{reactor}, C{timeout}).
        """
        super().__init__(control, **kwargs)
        self.control = control

    def acceptableProtocols(self) -> List[bytes]:
        """
        @return: only C{http/1.1}: the refusals are written by the HTTP/1.1
            channel, so TLS must never negotiate C{h2}.
        """
        return [b"http/1.1"]
