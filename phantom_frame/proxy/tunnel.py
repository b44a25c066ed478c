"""
Tunnels for upgraded connections (WebSocket and others).

The client's HTTP/1.1 connection is taken over from twisted.web
(L{take_over}), a raw connection to the origin carries the request head
(L{TunnelClient}), and once the origin answers C{101 Switching Protocols}
bytes are spliced both ways with back-pressure (L{splice}) until either side
closes. Nothing is cached.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple, Union
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime
from twisted.internet.interfaces import IStreamClientEndpoint, ITCPTransport, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from phantom_frame.proxy.answers import error_response
from phantom_frame.proxy.exchange import Exchange, set_status
from phantom_frame.proxy.origin import Header, Origin, UpstreamError
from phantom_frame.proxy.upstreams import UpstreamSet
from phantom_frame.proxy.status import forwarded

log = Logger()

#: The C{Cache-Status} of an upgrade the origin did not answer.
STATUS_FAILED = forwarded("bypass", "upgrade-failed")

#: The C{Cache-Status} logged for a relayed upgrade answer.
STATUS_UPGRADE = forwarded("bypass", "upgrade")

#: Client bytes held while the origin has not switched protocols; past this
#: the client's connection is paused.
EARLY_LIMIT = 65536

#: The longest answer head accepted from the origin.
HEAD_LIMIT = 65536

_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")


def splice(one: ITransport, other: ITransport) -> None:
    """
    Make each transport the other's streaming producer, so that a full write
    buffer on one side pauses reading on the other (as
    L{twisted.protocols.portforward} does).
    """
    one.registerProducer(other, True)
    other.registerProducer(one, True)


def close(transport: ITransport, registered: bool = True) -> None:
    """
    Close a spliced transport cleanly: drop its producer first (a transport
    with a producer registered waits for it before closing), then flush and
    close.

    @param registered: whether C{transport} has a producer registered.
    """
    if registered:
        transport.unregisterProducer()
    transport.loseConnection()


def take_over(request, protocol: IProtocol) -> None:
    """
    Detach the HTTP/1.1 connection carrying C{request} from twisted.web and
    connect it to C{protocol}, as autobahn's C{WebSocketResource} does, but
    at the L{HTTPChannel} rather than the transport, so that it works the
    same over TCP, TLS or any wrapping transport.

    From then on the channel passes every byte it receives to
    C{protocol.dataReceived}: first those it had buffered past the request
    (C{HTTPChannel._dataBuffer}), then those still in its line parser, then
    new ones. When the connection is lost, C{protocol.connectionLost} runs,
    then the channel's own, so that the request's C{notifyFinish} fires.
    The channel's idle timeout is off. It stays the transport's producer
    (idle: it writes nothing) until C{protocol} unregisters it to register
    its own; until then the request itself can still answer (an error) and
    C{finish}, provided C{channel.persistent} is false: the channel then
    closes the connection.

    @param request: a request on an L{HTTPChannel}.
    @param protocol: gets the connection; C{makeConnection} is called with
        the channel's transport.
    """
    channel = request.channel
    transport = channel.transport
    channel.setTimeout(None)
    channelLost = channel.connectionLost

    def connectionLost(reason: Failure) -> None:
        try:
            protocol.connectionLost(reason)
        finally:
            channelLost(reason)

    channel.dataReceived = protocol.dataReceived
    channel.rawDataReceived = protocol.dataReceived
    channel.connectionLost = connectionLost
    protocol.makeConnection(transport)
    buffered, channel._dataBuffer = b"".join(channel._dataBuffer), []
    if buffered:
        protocol.dataReceived(buffered)


def origin_endpoint(reactor, origin: Origin, trustRoot=None) -> IStreamClientEndpoint:
    """
    @param reactor: connects (and resolves names).
    @param origin: its C{url} gives host, port and scheme.
    @param trustRoot: for an C{https} origin, the certificate authorities to
        trust (L{twisted.internet.ssl.optionsForClientTLS}); the platform's
        when C{None}.
    @return: a TCP endpoint to the origin, with TLS verifying the origin's
        host name for C{https}.
    """
    parts = urlsplit(origin.url)
    host = parts.hostname or ""
    secure = origin.scheme == b"https"
    endpoint: IStreamClientEndpoint = HostnameEndpoint(
        reactor, host, parts.port or (443 if secure else 80)
    )
    if secure:
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(host, trustRoot=trustRoot), endpoint)
    return endpoint


def request_head(method: bytes, target: bytes, host: bytes, headers: List[Header], length: int) -> bytes:
    """
    @param length: the request body's length; C{0} for none.
    @return: an HTTP/1.1 request head.
    """
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + host]
    lines.extend(name + b": " + value for name, value in headers)
    if length:
        lines.append(b"Content-Length: %d" % (length,))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def parse_answer(head: bytes) -> Tuple[int, Optional[int]]:
    """
    @param head: a response head, up to its blank line.
    @return: the status code and the C{Content-Length} (C{None} when absent,
        invalid or overridden by C{Transfer-Encoding}).
    @raise ValueError: when C{head} is not an HTTP/1 response head.
    """
    lines = head.splitlines()
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit() or rest[3:4] not in (b"", b" "):
        raise ValueError(f"not an HTTP/1 response: {lines[0][:80]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return int(code), None
        if name == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    return int(code), length


def start_tunnel(
    exchange: Exchange,
    origin: Union[Origin, UpstreamSet],
    path_qs: bytes,
    headers: List[Header],
    clock: IReactorTime,
    timeout: float,
    endpoint: Optional[IStreamClientEndpoint] = None,
) -> object:
    """
    Tunnel an upgrade request to the origin (see L{Tunnel}).

    @param exchange: the client's request, on an HTTP/1.1 channel.
    @param origin: the origin (of several, one is chosen for the client);
        C{base_path + path_qs} is the upstream target.
    @param path_qs: the stripped path with its query.
    @param headers: the request headers to send after C{Host}, including
        C{Connection} and C{Upgrade}.
    @param clock: the reactor: connects, and times out.
    @param timeout: seconds the origin has to connect and answer the head.
    @param endpoint: reaches the origin (L{origin_endpoint} when omitted).
    @return: L{NOT_DONE_YET}, or an error body for a request that cannot be
        tunnelled (not on an HTTP/1.1 connection).
    """
    request = exchange.request
    channel = getattr(request, "channel", None)
    if channel is None or not exchange.alive:
        return NOT_DONE_YET
    if not isinstance(channel, HTTPChannel) or channel.transport is None:
        return error_response(request, 501, "Not Implemented: upgrades need HTTP/1.1")
    try:
        origin = origin.choose(exchange.view.client) if isinstance(origin, UpstreamSet) else origin
    except UpstreamError as e:
        return error_response(request, 502, f"Bad Gateway: {e}", [(b"cache-status", STATUS_FAILED.header)])
    content = request.content
    content.seek(0, 0)
    body = content.read()
    head = request_head(request.method, origin.base_path + path_qs, origin.netloc, headers, len(body))
    tunnel = Tunnel(exchange, origin.url, head + body, clock, timeout)
    take_over(request, tunnel)
    try:
        if endpoint is None:
            endpoint = origin_endpoint(clock, origin)
        tunnel.connect(endpoint)
    except Exception:
        tunnel.fail(Failure())
    return NOT_DONE_YET


class Tunnel(Protocol):
    """
    The client's end of a tunnel, connected by L{take_over}.

    Until the origin switches protocols, the client's bytes are held (its
    connection paused past L{EARLY_LIMIT}); they reach the origin only after
    its C{101}, so that nothing the client sends early is taken as a further
    request. The origin's answer head is relayed untouched: after a C{101}
    the two connections are spliced until either closes, then the other is
    closed cleanly; after another status, the answer is relayed and both
    connections close. No origin, or no answer within C{timeout}: the
    request is answered 502 or 504.
    """

    _CONNECTING, _WAITING, _SPLICED, _RELAYING, _DONE = range(5)

    def __init__(self, exchange: Exchange, url: str, head: bytes, clock: IReactorTime, timeout: float) -> None:
        """
        @param exchange: the client's request (answered only on failure).
        @param url: the origin, for log lines.
        @param head: the request head and body for the origin.
        @param clock: for the timeout.
        @param timeout: seconds the origin has to connect and answer.
        """
        self._exchange = exchange
        self._request = exchange.request
        self._url = url
        self._head = head
        self._clock = clock
        self._timeout = timeout
        self._state = self._CONNECTING
        self._early: List[bytes] = []
        self._earlySize = 0
        self._peer: Optional[TunnelClient] = None
        self._connecting: Optional[Deferred] = None
        self._timer: Optional[IDelayedCall] = None
        self._timedOut = False
        self._remaining: Optional[int] = None
        self._status: Optional[int] = None
        self._sent = 0

    def connect(self, endpoint: IStreamClientEndpoint) -> None:
        """
        Connect to the origin through C{endpoint}, within the timeout.
        """
        factory = Factory.forProtocol(lambda: TunnelClient(self))
        factory.noisy = False
        self._timer = self._clock.callLater(self._timeout, self._onTimeout)
        self._connecting = d = endpoint.connect(factory)
        d.addCallbacks(self._connected, self.fail)

    def _connected(self, peer: TunnelClient) -> None:
        self._connecting = None

    def _onTimeout(self) -> None:
        self._timer = None
        self._timedOut = True
        if self._connecting is not None:
            self._connecting.cancel()
        else:
            self.fail(Failure(TimeoutError("no answer")))

    def _stopTimer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def fail(self, reason: Failure) -> None:
        """
        The origin did not answer: answer the client 504 (after the timeout)
        or 502, log the reason, and close both connections.
        """
        if self._state == self._DONE:
            return
        self._state = self._DONE
        self._connecting = None
        self._stopTimer()
        if self._peer is not None:
            self._peer.transport.abortConnection()
        timedOut = self._timedOut or reason.check(TimeoutError) is not None
        if timedOut:
            code, text, why = 504, "Gateway Timeout", f"no answer within {self._timeout:g}s"
        else:
            code, text, why = 502, "Bad Gateway", reason.getErrorMessage()
        log.warn("upgrade to origin {origin} failed: {error}", origin=self._url, error=why)
        request = self._request
        if not self._exchange.alive:
            return
        request.channel.persistent = False
        request.responseHeaders = Headers()
        body = error_response(
            request, code, text, [(b"cache-status", STATUS_FAILED.header), (b"connection", b"close")]
        )
        set_status(request, STATUS_FAILED)
        request.write(body)
        request.finish()

    # The origin's side, from TunnelClient

    def originConnected(self, peer: TunnelClient) -> None:
        """
        The origin accepted the connection: send it the request head.
        """
        if self._state != self._CONNECTING:
            peer.transport.abortConnection()
            return
        self._state = self._WAITING
        self._peer = peer
        head, self._head = self._head, b""
        peer.transport.write(head)

    def originAnswered(self, status: int, length: Optional[int], head: bytes) -> None:
        """
        The origin sent its answer head: relay it, then splice (C{101}) or
        relay the answer's body and close.

        @param length: the answer's body length, C{None} when delimited by
            the end of the connection.
        """
        self._stopTimer()
        peer = self._peer
        assert peer is not None
        self._status = status
        early, self._early = b"".join(self._early), []
        # The channel steps aside: the origin's connection becomes the
        # client's producer, and the client reads again.
        self.transport.unregisterProducer()
        self.transport.resumeProducing()
        if status == 101:
            self._state = self._SPLICED
            splice(self.transport, peer.transport)
            self.fromOrigin(head)
            if early:
                peer.transport.write(early)
            return
        self._state = self._RELAYING
        if self._request.method == b"HEAD" or status in (204, 304):
            length = 0
        self._remaining = None if length is None else len(head) + length
        self.transport.registerProducer(peer.transport, True)
        self.fromOrigin(head)

    def fromOrigin(self, data: bytes) -> None:
        """
        Relay the origin's bytes to the client.
        """
        if self._state == self._SPLICED:
            self._sent += len(data)
            self.transport.write(data)
        elif self._state == self._RELAYING:
            if self._remaining is not None:
                data = data[: self._remaining]
                self._remaining -= len(data)
            self._sent += len(data)
            self.transport.write(data)
            if self._remaining == 0:
                self._closeBoth()

    def originLost(self, reason: Failure) -> None:
        """
        The origin's connection is gone: fail if it never answered, else
        close the client's connection once its data is flushed.
        """
        self._peer = None
        if self._state == self._WAITING:
            self.fail(Failure(ConnectionError("the origin closed the connection without answering")))
        elif self._state != self._DONE:
            self._state = self._DONE
            close(self.transport)

    def _closeBoth(self) -> None:
        self._state = self._DONE
        close(self.transport)
        if self._peer is not None:
            close(self._peer.transport, registered=False)

    # The client's side, from the taken-over channel

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes from the client: to the origin once spliced, held before.
        """
        if self._state == self._SPLICED:
            self._peer.transport.write(data)
        elif self._state in (self._CONNECTING, self._WAITING):
            self._early.append(data)
            self._earlySize += len(data)
            if self._earlySize > EARLY_LIMIT:
                self.transport.pauseProducing()

    def connectionLost(self, reason: Failure) -> None:
        """
        The client is gone: give up connecting, or close the origin's
        connection once its data is flushed; log the exchange.
        """
        state, self._state = self._state, self._DONE
        self._stopTimer()
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        if self._peer is not None and state != self._DONE:
            close(self._peer.transport, registered=state == self._SPLICED)
        if self._status is not None:
            self._logExchange()

    def _logExchange(self) -> None:
        request = self._request
        factory = getattr(request.channel, "factory", None)
        if factory is None:
            return
        request.setResponseCode(self._status)
        request.sentLength = self._sent
        request.responseHeaders.setRawHeaders(b"cache-status", [STATUS_UPGRADE.header])
        set_status(request, STATUS_UPGRADE)
        factory.log(request)


class TunnelClient(Protocol):
    """
    The origin's end of a L{Tunnel}: sends the request head when connected,
    reads the origin's answer head (dropping interim C{1xx} answers other
    than C{101}), then passes every byte to the tunnel.
    """

    def __init__(self, tunnel: Tunnel) -> None:
        """
        @param tunnel: the client's end.
        """
        self.tunnel = tunnel
        self._buffer: Optional[bytes] = b""

    def connectionMade(self) -> None:
        """
        Tell the tunnel, which sends the request head. Small writes go out
        at once, as on the client's side.
        """
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.tunnel.originConnected(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Collect the answer head, then relay.
        """
        if self._buffer is None:
            self.tunnel.fromOrigin(data)
            return
        data = self._buffer + data
        while True:
            end = _END_OF_HEAD.search(data)
            if end is None:
                if len(data) > HEAD_LIMIT:
                    self._buffer = None
                    self.tunnel.fail(Failure(ValueError("answer head too long")))
                else:
                    self._buffer = data
                return
            head, data = data[: end.end()], data[end.end() :]
            try:
                status, length = parse_answer(head)
            except ValueError:
                self._buffer = None
                self.tunnel.fail(Failure())
                return
            if status == 101 or not 100 <= status < 200:
                break
        self._buffer = None
        self.tunnel.originAnswered(status, length, head)
        if data:
            self.tunnel.fromOrigin(data)

    def connectionLost(self, reason: Failure) -> None:
        """
        Tell the tunnel.
        """
        self.tunnel.originLost(reason)
