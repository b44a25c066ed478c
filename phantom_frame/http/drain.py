"""
Draining a proxy site for a graceful stop.

L{Drain} knows the open connections of one site. Once L{Drain.start} is
called, every connection is closed as soon as it is idle: at once for an
idle keep-alive connection, after its last answer for a busy one. Every
answer whose head is written from then on says C{Connection: close}, and the
fast path stands aside so that the stock path can say it. A connection is
closed with C{loseConnection}, which hands every byte still buffered to the
kernel before closing; L{Drain.closed} fires from C{connectionLost}, so a
process that waits for it never cuts an answer short.

HTTP/2 connections (negotiated over TLS) are closed (C{GOAWAY}, then the
transport) once none of their streams is open; until then new streams are
served as usual, since HTTP/2 has no C{Connection: close}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import _GenericHTTPChannelProtocol

from phantom_frame.http.channel import FastHTTPChannel
from phantom_frame.http.h2c import PriorKnowledgeChannel

log = Logger()


class Drain:
    """
    The open connections of one site, and their closing on a graceful stop.

    @ivar draining: whether L{start} was called: idle connections are closed
        and every answer says C{Connection: close}.
    """

    def __init__(self, clock: IReactorTime) -> None:
        """
        @param clock: schedules the re-check of HTTP/2 connections after one
            of their requests ends.
        """
        self._clock = clock
        self.draining = False
        self._open: Dict[TrackedConnection, None] = {}
        self._waiting: List[Deferred[None]] = []

    @property
    def open(self) -> int:
        """
        How many connections are open.
        """
        return len(self._open)

    def opened(self, connection: TrackedConnection) -> None:
        """
        Note a new connection; while draining, it is idle, so it is closed.
        """
        self._open[connection] = None
        if self.draining:
            connection.close_if_idle()

    def lost(self, connection: TrackedConnection) -> None:
        """
        Note that C{connection} is closed.
        """
        self._open.pop(connection, None)
        if not self._open:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def start(self) -> Deferred[None]:
        """
        Start draining: close every idle connection now, and every other one
        once its requests are answered.

        @return: L{closed}.
        """
        self.draining = True
        self._close_idle()
        return self.closed()

    def closed(self) -> Deferred[None]:
        """
        @return: a L{Deferred} firing once no connection is open (the bytes
            of their answers handed to the kernel).
        """
        if not self._open:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def request_done(self) -> None:
        """
        A request of this site was answered (or abandoned): while draining,
        close the connections that became idle. An HTTP/2 stream ends just
        after its request: those are looked at again on the next turn.
        """
        if not self.draining:
            return
        self._close_idle()
        if any(c.multiplexed for c in self._open):
            self._clock.callLater(0, self._close_idle)

    def _close_idle(self) -> None:
        for connection in list(self._open):
            connection.close_if_idle()

    def abort(self) -> int:
        """
        Abort every connection still open (the grace period is over).

        @return: how many were open.
        """
        connections = list(self._open)
        for connection in connections:
            connection.abort()
        return len(connections)


class DrainingChannel(FastHTTPChannel):
    """
    The proxy's HTTP/1.1 channel: while its site drains, every answer head
    says C{Connection: close} (but interim C{1xx} ones) and the connection
    closes after it; the fast path stands aside.
    """

    def _draining(self) -> bool:
        drain = getattr(self.site, "drain", None)
        return drain is not None and drain.draining

    def _fastHits(self, data: bytes) -> int:
        """
        Answer plain hits, unless the site drains.
        """
        if self._draining():
            return 0
        return FastHTTPChannel._fastHits(self, data)

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        """
        A request that arrives while the site drains is the connection's
        last.
        """
        if self._draining():
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return FastHTTPChannel.checkPersistence(self, request, version)

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Any, body: Optional[bytes] = None
    ) -> None:
        """
        Write an answer head (and C{body}, as L{FastHTTPChannel.writeHeaders}
        does); once the site drains, the answer is the connection's last,
        and says so.
        """
        if not code.startswith(b"1") and self._draining():
            self.persistent = False
            headers.setRawHeaders(b"connection", [b"close"])
        FastHTTPChannel.writeHeaders(self, version, code, reason, headers, body)


class TrackedConnection(PriorKnowledgeChannel):
    """
    twisted.web's generic channel (HTTP/1.1, or HTTP/2 when TLS negotiates
    it or a cleartext connection opens with the HTTP/2 preface: see
    L{PriorKnowledgeChannel}) that registers with its site's L{Drain} while
    it is connected.
    """

    _closing = False

    def _drain(self) -> Any:
        return getattr(self._site, "drain", None)

    def makeConnection(self, transport: Any) -> None:
        """
        Connect, and register with the site's L{Drain}.
        """
        _GenericHTTPChannelProtocol.makeConnection(self, transport)
        drain = self._drain()
        if drain is not None:
            drain.opened(self)

    def connectionLost(self, reason: Failure) -> None:
        """
        Let the channel know, then the site's L{Drain}.
        """
        try:
            _GenericHTTPChannelProtocol.connectionLost(self, reason)
        finally:
            drain = self._drain()
            if drain is not None:
                drain.lost(self)

    @property
    def multiplexed(self) -> bool:
        """
        Whether the connection carries HTTP/2.
        """
        return not isinstance(self._channel, FastHTTPChannel)

    def busy(self) -> bool:
        """
        @return: whether a request is being received or answered on it
            (an open tunnel counts).
        """
        channel = self._channel
        if getattr(channel, "relaying", False):
            return True
        requests = getattr(channel, "requests", None)
        if requests is not None:
            return bool(requests)
        return bool(getattr(channel, "streams", None))

    def close_if_idle(self) -> None:
        """
        Close the connection (its buffered bytes are sent first) unless a
        request is being received or answered on it.
        """
        if self._closing or self.busy():
            return
        channel = self._channel
        if channel.transport is None:
            return
        self._closing = True
        if self.multiplexed:
            conn = getattr(channel, "conn", None)
            if conn is not None:
                try:
                    conn.close_connection()
                    channel.transport.write(conn.data_to_send())
                except Exception:
                    log.failure("could not say GOAWAY to an HTTP/2 client")
            channel.transport.loseConnection()
        else:
            channel.loseConnection()

    def abort(self) -> None:
        """
        Close the connection now, whatever it was sending.
        """
        transport = self._channel.transport
        if transport is not None:
            transport.abortConnection()


def tracked_channel_factory(*site: Any) -> TrackedConnection:
    """
    The L{Site.protocol} of a proxy site (called with the site as a class
    attribute, with nothing as an instance attribute): a
    L{TrackedConnection} around a L{DrainingChannel}.
    """
    return TrackedConnection(DrainingChannel())
