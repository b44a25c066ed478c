"""
L{OriginPool}: kept-alive connections to origins, reused last-in first-out,
bounded and closed when idle too long; L{OriginClient}, the
L{IOriginClient} of one origin, sends requests over them, with timeouts on
an injected clock, cancellation, and one retry of an idempotent request
that a reused connection lost before any answer.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Union

from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from phantom_frame.proxy.client import (
    Header,
    IRelayingClient,
    IRelayReceiver,
    IResponseReceiver,
    OriginError,
    OriginTimeout,
    OriginUnreachable,
    RequestBody,
    ResponseHead,
    StalledBody,
)
from phantom_frame.proxy.address import OriginAddress, endpoint_factory
from phantom_frame.proxy.connection import OriginConnection, request_head
from phantom_frame.proxy.deadlines import Deadlines

__all__ = ["IDEMPOTENT", "OriginAddress", "OriginClient", "OriginPool", "endpoint_factory"]

#: Methods a client may repeat when a request may not have arrived
#: (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

log = Logger()


class _Route(Factory):
    """
    One origin in a pool: its endpoint and idle connections (oldest first);
    the factory of its connections.
    """

    noisy = False

    def __init__(self, pool: OriginPool, address: OriginAddress, endpoint: IStreamClientEndpoint) -> None:
        self.pool = pool
        self.address = address
        self.endpoint = endpoint
        self.authority = address.authority
        self.idle: List[OriginConnection] = []

    def buildProtocol(self, addr: Any) -> OriginConnection:
        """
        @return: a connection of this origin.
        """
        connection = OriginConnection(self.pool._forget)
        connection.route = self
        return connection


class OriginPool:
    """
    Connections to origins, kept alive between requests.

    @ivar connections: connections made so far.
    @ivar reused: requests sent on a kept-alive connection.
    @ivar retries: requests sent again after a reused connection was lost.
    """

    def __init__(
        self,
        clock: IReactorTime,
        endpoint_for: Callable[[OriginAddress], IStreamClientEndpoint],
        max_idle_per_origin: int = 64,
        max_idle: int = 1024,
        keepalive_timeout: float = 4.0,
    ) -> None:
        """
        @param clock: schedules timeouts and closes idle connections.
        @param endpoint_for: the endpoint of an origin (see
            L{endpoint_factory}); asked once per origin.
        @param max_idle_per_origin: idle connections kept per origin; beyond,
            the oldest is closed.
        @param max_idle: idle connections kept in all.
        @param keepalive_timeout: seconds an idle connection is kept (below
            the origin's own: Node.js closes after 5).
        """
        if max_idle_per_origin < 0 or max_idle < 0 or keepalive_timeout < 0:
            raise ValueError("pool bounds and timeout must not be negative")
        self._clock = clock
        self._endpoint_for = endpoint_for
        self._per_origin = max_idle_per_origin
        self._max = max_idle
        self._keepalive = keepalive_timeout
        self._routes: Dict[OriginAddress, _Route] = {}
        self._idle: Dict[OriginConnection, float] = {}
        self._sweeper: Optional[IDelayedCall] = None
        self._sweep_at = 0.0
        self._deadlines = Deadlines(clock)
        self.connections = 0
        self.reused = 0
        self.retries = 0

    def client(
        self,
        origin: Union[str, OriginAddress],
        timeout: float = 30.0,
        keepalive_timeout: Optional[float] = None,
    ) -> OriginClient:
        """
        @param origin: an L{OriginAddress} or an http(s) URL.
        @param timeout: seconds to connect and get a final head, and at most
            between two body chunks.
        @param keepalive_timeout: seconds a connection this client used is
            kept idle; the pool's when C{None}.
        @return: the L{IOriginClient} of C{origin}, sharing this pool.
        """
        if isinstance(origin, str):
            origin = OriginAddress.from_url(origin)
        route = self._routes.get(origin)
        if route is None:
            route = self._routes[origin] = _Route(self, origin, self._endpoint_for(origin))
        keepalive = self._keepalive if keepalive_timeout is None else max(0.0, keepalive_timeout)
        return OriginClient(self, route, timeout, keepalive)

    @property
    def idle(self) -> int:
        """The idle connections, over every origin."""
        return len(self._idle)

    def close(self) -> Deferred[None]:
        """
        Close every idle connection (those in use close when their exchange
        ends).

        @return: a L{Deferred} firing once they are all closed.
        """
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        closing = list(self._idle)
        lost = [c.whenLost() for c in closing]
        for connection in closing:
            self._drop(connection)
        return gatherResults(lost).addCallback(lambda _: None)

    def _connect(self, route: _Route) -> Deferred[OriginConnection]:
        return route.endpoint.connect(route).addCallback(self._made)

    def _made(self, connection: OriginConnection) -> OriginConnection:
        self.connections += 1
        return connection

    def _take(self, route: _Route) -> Optional[OriginConnection]:
        idle = route.idle
        if not idle:
            return None
        connection = idle.pop()
        del self._idle[connection]
        self.reused += 1
        return connection

    def _release(self, connection: OriginConnection, keepalive: float) -> None:
        idle = connection.route.idle
        if self._per_origin == 0 or self._max == 0:
            connection.close()
            return
        if len(idle) >= self._per_origin:
            self._drop(idle[0])
        elif len(self._idle) >= self._max:
            self._drop(next(iter(self._idle)))
        idle.append(connection)
        until = self._idle[connection] = self._clock.seconds() + keepalive
        sweeper = self._sweeper
        if sweeper is None:
            self._sweeper = self._clock.callLater(keepalive, self._sweep)
            self._sweep_at = until
        elif self._sweep_at > until:
            sweeper.reset(keepalive)
            self._sweep_at = until

    def _forget(self, connection: OriginConnection) -> None:
        if self._idle.pop(connection, None) is not None:
            connection.route.idle.remove(connection)

    def _drop(self, connection: OriginConnection) -> None:
        self._forget(connection)
        connection.close()

    def _sweep(self) -> None:
        self._sweeper = None
        now = self._clock.seconds()
        expired = [connection for connection, until in self._idle.items() if until <= now]
        for connection in expired:
            self._drop(connection)
        if self._idle:
            self._sweep_at = min(self._idle.values())
            self._sweeper = self._clock.callLater(self._sweep_at - now, self._sweep)


@implementer(IRelayingClient)
class OriginClient:
    """
    The L{IOriginClient} of one origin, over an L{OriginPool}; an
    L{IRelayingClient}, for receivers told of the end themselves.
    """

    def __init__(self, pool: OriginPool, route: _Route, timeout: float, keepalive: float) -> None:
        """Made by L{OriginPool.client}."""
        self.pool = pool
        self.route = route
        self.timeout = timeout
        self.keepalive = keepalive
        self.address = route.address

    def request(
        self,
        method: bytes,
        target: bytes,
        headers: List[Header],
        receiver: IResponseReceiver,
        body: Union[None, bytes, RequestBody] = None,
    ) -> Deferred[ResponseHead]:
        """See L{IOriginClient.request}."""
        return self._start(method, target, headers, receiver, body, True).deferred

    def relay(
        self,
        method: bytes,
        target: bytes,
        headers: List[Header],
        receiver: IRelayReceiver,
        body: Union[None, bytes, RequestBody] = None,
    ) -> _Exchange:
        """See L{IRelayingClient.relay}."""
        return self._start(method, target, headers, receiver, body, False)

    def _start(
        self,
        method: bytes,
        target: bytes,
        headers: List[Header],
        receiver: Any,
        body: Union[None, bytes, RequestBody],
        deferred: bool,
    ) -> _Exchange:
        if body is None:
            framing = b""
        elif isinstance(body, bytes):
            framing = b"Content-Length: %d\r\n" % (len(body),)
        else:
            framing = body.framing()
        data, persistent = request_head(method, target, self.route.authority, headers, framing)
        if isinstance(body, bytes):
            data += body
            body = None
        exchange = _Exchange(self, method, data, body, receiver, persistent, deferred)
        # Sent on an idle connection, or on a new one.
        connection = self.pool._take(self.route)
        if connection is None:
            exchange._connect()
        else:
            exchange.reused = True
            exchange._send(connection)
        return exchange


@implementer(IPushProducer)
class _Exchange:
    """
    One request and its answer: the connection it uses, its deadline, and
    its L{Deferred}, or none when the receiver is told of the end itself
    (L{OriginClient.relay}). Given to the receiver as the producer of the
    body.
    """

    __slots__ = (
        "client", "method", "data", "body", "receiver", "persistent", "deferred", "deadlines",
        "connection", "connecting", "head", "reused", "retried", "done", "sent", "paused",
    )

    def __init__(
        self,
        client: OriginClient,
        method: bytes,
        data: bytes,
        body: Optional[RequestBody],
        receiver: IResponseReceiver,
        persistent: bool,
        deferred: bool = True,
    ) -> None:
        self.client = client
        self.method = method
        self.data = data
        self.body = body
        self.receiver = receiver
        self.persistent = persistent
        self.deferred: Optional[Deferred[ResponseHead]] = Deferred(self._cancel) if deferred else None
        self.deadlines = client.pool._deadlines
        self.deadlines.watch(self, client.timeout)
        self.connection: Optional[OriginConnection] = None
        self.connecting: Optional[Deferred[OriginConnection]] = None
        self.head: Optional[ResponseHead] = None
        self.reused = False
        self.retried = False
        self.done = False
        self.sent = False
        self.paused = False

    def _connect(self) -> None:
        d = self.connecting = self.client.pool._connect(self.client.route)
        d.addCallbacks(self._connected, self._unreachable)

    def _connected(self, connection: OriginConnection) -> None:
        self.connecting = None
        if self.done:
            connection.close()
        else:
            self._send(connection)

    def _unreachable(self, failure: Failure) -> None:
        self.connecting = None
        if not self.done:
            text = failure.getErrorMessage() or failure.type.__name__
            self._error(OriginUnreachable(f"{self.client.address.host}:{self.client.address.port}: {text}"))

    def _send(self, connection: OriginConnection) -> None:
        self.connection = connection
        connection.send(self, self.data)
        if self.body is None:
            self.sent = True
        else:
            self.body.attach(self, connection.transport)

    def answered(self, head: ResponseHead, waits: bool = True) -> None:
        """
        The final head came: deliver it; the timeout now runs between
        body chunks.

        @param waits: whether more of the answer is to come (C{False} when
            its whole body came with the head: no body timeout is needed).
        """
        self.head = head
        if waits and not self.paused and not self.done:
            self.deadlines.watch(self, self.client.timeout)
        self.receiver.headReceived(head, self)

    def progress(self) -> None:
        """
        Bytes moved: restart the timeout.
        """
        if not self.paused and not self.done:
            self.deadlines.watch(self, self.client.timeout)

    def completed(self, connection: OriginConnection, reusable: bool) -> None:
        """
        The answer is complete: keep C{connection} if both sides allow and
        the request went out whole, else close it; fire the L{Deferred}, or
        tell the receiver.
        """
        self.connection = None
        reusable = reusable and self.sent and self.persistent
        self._halt()
        if reusable:
            self.client.pool._release(connection, self.client.keepalive)
        else:
            connection.close()
        d = self.deferred
        if d is not None:
            d.callback(self.head)
            return
        try:
            self.receiver.responseDone(self.head)
        except Exception:
            log.failure("the receiver of a complete answer failed", Failure())

    def lost(self, connection: OriginConnection, error: Union[OriginError, Failure], untouched: bool) -> None:
        """
        The exchange broke with C{error}; C{untouched} when the origin sent
        nothing of an answer, which may allow one retry.
        """
        self.connection = None
        if (
            untouched
            and self.reused
            and not self.retried
            and self.method in IDEMPOTENT
            and (self.body is None or self.body.sent == 0)
        ):
            # The origin closed a kept-alive connection as the request went
            # out: it never saw it (RFC 9112 §9.3.1).
            self.retried = True
            self.reused = False
            self.client.pool.retries += 1
            self._connect()
            return
        self._error(error)

    def _halt(self) -> None:
        self.done = True
        self.deadlines.forget(self)
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.abort()
        connecting, self.connecting = self.connecting, None
        if connecting is not None:
            connecting.cancel()
        if self.body is not None:
            self.body.detach()

    def _error(self, error: Union[OriginError, Failure]) -> None:
        self._halt()
        failure = error if isinstance(error, Failure) else Failure(error)
        d = self.deferred
        if d is not None:
            d.errback(failure)
            return
        try:
            self.receiver.responseFailed(failure)
        except Exception:
            log.failure("the receiver of a failed answer failed", Failure())

    def expired(self) -> None:
        """
        The timeout ran out: fail with L{OriginTimeout} before the final
        head, L{StalledBody} after it.
        """
        address = self.client.address
        if self.head is None:
            error: OriginError = OriginTimeout(
                f"no answer from {address.host}:{address.port} within {self.client.timeout:g}s"
            )
        else:
            error = StalledBody(f"no body bytes within {self.client.timeout:g}s")
        self._error(error)

    def cancel(self) -> None:
        """
        Abandon the request: its connection is closed; its L{Deferred}
        fails, or the receiver is told, with C{CancelledError}.
        """
        d = self.deferred
        if d is not None:
            d.cancel()
        elif not self.done:
            self._error(CancelledError())

    def _cancel(self, deferred: Deferred[ResponseHead]) -> None:
        if not self.done:
            self._halt()

    def pauseProducing(self) -> None:
        """
        Stop reading the body (and its timeout) until resumed.
        """
        connection = self.connection
        if connection is None or self.paused:
            return
        self.paused = True
        self.deadlines.forget(self)
        connection.pause()

    def resumeProducing(self) -> None:
        """
        Read the body again.
        """
        connection = self.connection
        if connection is None or not self.paused:
            return
        self.paused = False
        self.deadlines.watch(self, self.client.timeout)
        connection.resume()

    def stopProducing(self) -> None:
        """
        Abandon the answer: as cancelling the request.
        """
        self.cancel()
