"""
Timing origin requests: L{TimingAgent} (an L{IAgent}) and L{TimingClient}
(an L{IOriginClient}) time the requests to one origin into the metrics'
upstream histogram, and onto the client request being answered for the
access log.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer
from zope.interface import implementer

from phantom_frame.http.routing import current_request
from phantom_frame.proxy.client import IRelayingClient, IResponseReceiver

__all__ = ["TimingAgent", "TimingClient"]


@implementer(IAgent)
class TimingAgent:
    """
    An L{IAgent} that times the requests another one makes to one origin:
    from the request to the response head (or the failure), into the
    upstream histogram, and onto the client request being answered (as
    C{request.phantomUpstream}, seconds, summed over its upstream requests)
    for the access log.

    The client request is the one L{phantom_frame.http.routing.Router} was
    rendering when the upstream request started (see
    L{phantom_frame.http.routing.current_request}); requests made outside any
    (snapshot warm-up) are only counted in the histogram.
    """

    def __init__(
        self,
        agent: IAgent,
        clock: IReactorTime,
        observe: Callable[[float], None],
        failed: Callable[[], None],
    ) -> None:
        """
        @param agent: makes the requests.
        @param clock: measures them.
        @param observe: records a duration, in seconds.
        @param failed: counts a request that failed (refused, reset, timed
            out or cancelled).
        """
        self._agent = agent
        self._clock = clock
        self._observe = observe
        self._failed = failed
        self.prefix: Optional[bytes] = None

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Optional[Headers] = None,
        bodyProducer: Optional[IBodyProducer] = None,
    ) -> Deferred:
        """
        Make the request with the wrapped agent and time it. When L{prefix}
        is set, only URIs under it (the origin's, as opposed to a webhook's)
        are timed.

        @return: the wrapped agent's L{Deferred}, unchanged.
        """
        d = self._agent.request(method, uri, headers, bodyProducer)
        prefix = self.prefix
        if prefix is not None and not (
            uri.startswith(prefix) and uri[len(prefix) : len(prefix) + 1] in (b"/", b"?", b"")
        ):
            return d
        clock = self._clock
        started = clock.seconds()
        client = current_request.get()

        def done(result: Any) -> Any:
            elapsed = clock.seconds() - started
            self._observe(elapsed)
            if isinstance(result, Failure):
                self._failed()
            if client is not None:
                client.phantomUpstream = (getattr(client, "phantomUpstream", None) or 0.0) + elapsed
            return result

        d.addBoth(done)
        return d


@implementer(IRelayingClient)
class TimingClient:
    """
    An L{IOriginClient} that times the requests another one makes, as
    L{TimingAgent} does: from the request to the final head (or the failure
    before it), into the upstream histogram and onto the client request
    being answered (C{request.phantomUpstream}).

    Its L{relay} leaves the timing to the receiver, which knows when the
    head came (see L{phantom_frame.proxy.client.IRelayReceiver.timing}):
    nothing stands between the client and the receiver.
    """

    def __init__(
        self,
        client: Any,
        clock: IReactorTime,
        observe: Callable[[float], None],
        failed: Callable[[], None],
    ) -> None:
        """
        @param client: makes the requests.
        @param clock: measures them.
        @param observe: records a duration, in seconds.
        @param failed: counts a request that failed before its head.
        """
        self._client = client
        self._clock = clock
        self._observe = observe
        self._failed = failed

    def request(self, method: bytes, target: bytes, headers: Any, receiver: Any, body: Any = None) -> Deferred:
        """
        Make the request with the wrapped client and time it.

        @return: the wrapped client's L{Deferred}.
        """
        timed = _Timed(receiver, self, self._clock.seconds(), current_request.get())
        d = self._client.request(method, target, headers, timed, body)
        d.addErrback(timed.failed)
        return d

    def relay(self, method: bytes, target: bytes, headers: Any, receiver: Any, body: Any = None) -> Any:
        """
        Make the request with the wrapped client, the receiver timing it
        (as its C{timing}, this client's L{timed} is called; for a
        receiver that is C{attributed}, the time is also added to the
        client request being answered, if any, as L{request} does). A wrapped
        client that is no L{IRelayingClient} is asked with C{request}, its
        L{Deferred} ending the receiver's answer.

        @return: what cancels the request.
        """
        # (Only a receiver that asks for it: reading the context variable
        # costs a pass-through on PyPy a fifth of its time.)
        client = current_request.get() if getattr(receiver, "attributed", False) else None
        receiver.timing = self if client is None else _Attributed(self, client)
        relay = getattr(self._client, "relay", None)
        if relay is not None:
            return relay(method, target, headers, receiver, body)
        d = self._client.request(method, target, headers, receiver, body)
        d.addCallbacks(receiver.responseDone, receiver.responseFailed)
        return d

    def timed(self, seconds: float, failed: bool) -> None:
        """
        Record a request a receiver timed (see L{relay}).

        @param seconds: from the request to its final head, or to its
            failure before it.
        @param failed: whether it failed before its final head.
        """
        self._observe(seconds)
        if failed:
            self._failed()

    def _record(self, started: float, client: Any) -> None:
        elapsed = self._clock.seconds() - started
        self._observe(elapsed)
        if client is not None:
            client.phantomUpstream = (getattr(client, "phantomUpstream", None) or 0.0) + elapsed


@implementer(IResponseReceiver)
class _Timed:
    """
    A receiver that notes when the final head came, for a L{TimingClient}.
    """

    __slots__ = ("_receiver", "_timing", "_started", "_client", "_timed")

    def __init__(self, receiver: Any, timing: TimingClient, started: float, client: Any) -> None:
        self._receiver = receiver
        self._timing = timing
        self._started = started
        self._client = client
        self._timed = False

    def interimReceived(self, head: Any) -> None:
        self._receiver.interimReceived(head)

    def headReceived(self, head: Any, producer: Any) -> None:
        self._timed = True
        self._timing._record(self._started, self._client)
        self._receiver.headReceived(head, producer)

    def bodyReceived(self, data: bytes) -> None:
        self._receiver.bodyReceived(data)

    def failed(self, failure: Failure) -> Failure:
        if not self._timed:
            self._timed = True
            self._timing._record(self._started, self._client)
            self._timing._failed()
        return failure


class _Attributed:
    """
    The C{timing} of a relayed request made while a client request was
    being answered: recorded by the L{TimingClient}, and added to that
    request's C{phantomUpstream}.
    """

    __slots__ = ("_timing", "_client")

    def __init__(self, timing: TimingClient, client: Any) -> None:
        self._timing = timing
        self._client = client

    def timed(self, seconds: float, failed: bool) -> None:
        """
        See L{TimingClient.timed}.
        """
        self._timing.timed(seconds, failed)
        client = self._client
        client.phantomUpstream = (getattr(client, "phantomUpstream", None) or 0.0) + seconds
