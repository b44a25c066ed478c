"""
HTTP/2 with prior knowledge (C{h2c}, RFC 9113 section 3.3) on the plain
HTTP listener.

twisted.web speaks HTTP/2 only when TLS negotiates C{h2} with ALPN. A
client that knows the server speaks HTTP/2 may instead open a cleartext
connection and start with the connection preface
(C{PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n}). L{PriorKnowledgeChannel}
looks at the first 24 bytes of a cleartext connection: the preface hands
the connection to twisted.web's C{H2Connection}, through the same site, so
the same resource gives the same answers; anything else goes to the
HTTP/1.1 channel as it arrived.

Prior knowledge is for cleartext TCP only: over TLS the protocol is the one
ALPN chose, as RFC 9113 requires. Without the C{h2} extra
(C{twisted[http2]}), nothing is sniffed and a preface gets the HTTP/1.1
channel's answer (C{400 Bad Request}, then the connection closes).

It leans on twisted.web internals (L{_GenericHTTPChannelProtocol} and how
it swaps channels after ALPN), pinned by C{tests/http/test_h2c.py}.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IProtocol, ISSLTransport
from twisted.web import http
from twisted.web.http import _GenericHTTPChannelProtocol

#: What every HTTP/2 connection starts with (RFC 9113 section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_available() -> bool:
    """
    @return: whether twisted.web can speak HTTP/2 here (the C{h2} extra is
        installed).
    """
    return bool(http.H2_ENABLED)


class PriorKnowledgeChannel(_GenericHTTPChannelProtocol):
    """
    twisted.web's generic HTTP channel (HTTP/1.1, or HTTP/2 when TLS
    negotiates it with ALPN) that also serves HTTP/2 to a cleartext
    connection opening with the HTTP/2 connection preface.

    @ivar http2: whether a preface switches the connection to HTTP/2.
    """

    def __init__(self, channel: IProtocol, http2: Optional[bool] = None) -> None:
        """
        @param channel: the HTTP/1.1 channel that serves every other
            connection.
        @param http2: whether to serve HTTP/2 to a preface; L{None} (the
            default) means whenever twisted.web can (L{h2_available}).
        """
        super().__init__(channel)
        self.http2 = h2_available() if http2 is None else http2
        self._head = b""
        # Set now, so the instance's attributes keep their layout when it
        # is replaced by the chosen channel's own (see _chosen).
        self.dataReceived = self._sniff

    def _chosen(self) -> None:
        """
        Once the protocol is known and the chosen channel has had its first
        bytes, later bytes go straight to it: nothing is left to decide
        here (the channel is never swapped again).
        """
        if self._negotiatedProtocol is not None:
            self.dataReceived = self._channel.dataReceived

    def _sniff(self, data: bytes) -> None:
        """
        While the protocol is still unknown on a cleartext connection, hold
        bytes that may still become the preface; then hand them all to the
        HTTP/2 connection (a preface) or the HTTP/1.1 channel (anything
        else).
        """
        if self._negotiatedProtocol is not None or not self.http2:
            _GenericHTTPChannelProtocol.dataReceived(self, data)
            return self._chosen()
        transport = self._channel.transport
        if ISSLTransport.providedBy(transport):
            _GenericHTTPChannelProtocol.dataReceived(self, data)
            return self._chosen()
        head = self._head + data
        if len(head) < len(PREFACE) and PREFACE.startswith(head):
            self._head = head
            return None
        self._head = b""
        if head.startswith(PREFACE):
            self._speakHTTP2(transport)
        _GenericHTTPChannelProtocol.dataReceived(self, head)
        return self._chosen()

    def _speakHTTP2(self, transport: Any) -> None:
        """
        Swap the HTTP/1.1 channel for an C{H2Connection} of the same site,
        as twisted.web does when ALPN picks C{h2}.
        """
        from twisted.web._http2 import H2Connection

        old = self._channel
        producer = old._networkProducer
        producer.unregisterProducer()
        old.setTimeout(None)
        factory = self._factory
        reactor = getattr(factory, "reactor", None)
        channel = H2Connection(reactor)
        channel.requestFactory = self._requestFactory
        channel.site = self._site
        channel.factory = factory
        channel.timeOut = self._timeOut
        if self._callLater is not None:
            channel.callLater = self._callLater
        self._channel = channel
        self._negotiatedProtocol = b"h2"
        channel.makeConnection(transport)
        producer.registerProducer(channel, True)
