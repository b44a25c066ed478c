"""
Several origins behind one server: L{UpstreamSet} holds an L{Origin} per
C{upstreams} URL and offers the surface of one L{Origin} (C{request},
C{url}, C{netloc}, C{base_path}, C{scheme}, C{url_for}, C{timeout}), so
that the fill, the pass-through and the snapshots need not know there are
several.

Each request goes to one healthy upstream, chosen by the C{load_balancing}
policy (L{Balancing}). A request the chosen upstream refused or reset
before answering anything (an L{UpstreamError} that is not an
L{UpstreamTimeout}) moves to the next healthy upstream when its method is
idempotent (RFC 9110 §9.2.2) and its body, if any, is held in memory (a
streamed L{RequestBody} serves one request only): each upstream is tried
at most once. With no healthy upstream, a request fails
at once with an L{UpstreamError}, which the stale-if-error paths and the
502 answers already handle.

Each upstream keeps its own counts (L{UpstreamStats}): requests, errors, a
latency histogram and whether it is healthy, read by the metrics at scrape
time. Health itself is set by the active checks of
L{phantom_frame.proxy.health}.
"""

from __future__ import annotations

import bisect
import random as _random
import zlib
from typing import Any, Callable, Iterable, List, Optional, Sequence, Set, Tuple, Union

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime

from phantom_frame.cache.strategy import Choice
from phantom_frame.proxy.client import IOriginClient, RequestBody
from phantom_frame.proxy.origin import Header, Origin, UpstreamError, UpstreamTimeout

__all__ = [
    "IDEMPOTENT",
    "LATENCY_BUCKETS",
    "Balancing",
    "Upstream",
    "UpstreamSet",
    "UpstreamStats",
    "origin_for",
]

#: The methods a failed request may be sent again for (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

#: Upper bounds, in seconds, of the latency histogram of each upstream.
LATENCY_BUCKETS: Tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Balancing(Choice):
    """
    How a server's upstreams share its requests (C{load_balancing}).
    """

    #: In turn.
    ROUND_ROBIN = "round_robin"
    #: At random.
    RANDOM = "random"
    #: The one with the fewest requests waiting for an answer head.
    LEAST_CONN = "least_conn"
    #: By the client's address: one client, one upstream (while it is
    #: healthy).
    IP_HASH = "ip_hash"


#: The first bucket's bound: most requests answer within it.
_FIRST_BOUND = LATENCY_BUCKETS[0]


class UpstreamStats:
    """
    The counts of one upstream.

    @ivar requests: requests sent to it (a failed-over request counts once
        for each upstream it was sent to).
    @ivar errors: those that failed (refused, reset, timed out).
    @ivar counts: per bucket of L{LATENCY_BUCKETS} (and one more for
        anything slower), how many requests took that long to answer (or
        fail); not cumulative.
    @ivar total: the sum of those durations, in seconds.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.counts: List[int] = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """
        Count one request that took C{seconds} to its response head or its
        failure.
        """
        self.counts[0 if seconds <= _FIRST_BOUND else bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> List[Tuple[str, int]]:
        """
        @return: C{(upper bound, count at or below it)} pairs, as Prometheus
            histograms have them, ending with C{"+Inf"}.
        """
        pairs, running = [], 0
        for bound, count in zip(LATENCY_BUCKETS + (float("inf"),), self.counts):
            running += count
            pairs.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return pairs


class Upstream:
    """
    One origin of an L{UpstreamSet}.

    @ivar origin: reaches it.
    @ivar healthy: whether it gets requests (set by the health checks).
    @ivar active: its requests waiting for their response head.
    @ivar stats: its counts.
    """

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.healthy = True
        self.active = 0
        self.stats = UpstreamStats()

    @property
    def url(self) -> str:
        """
        Its URL, the C{upstream} label of its metrics.
        """
        return self.origin.url


class UpstreamSet:
    """
    Several L{Origin}s standing in for one (see the module docstring).

    Between requests, C{url}, C{netloc}, C{base_path}, C{scheme}, C{timeout}
    and C{url_for} are those of the upstream chosen last (the first one
    before any choice): what log lines name.

    @ivar upstreams: the upstreams, in configuration order.
    @ivar balancing: the policy.
    """

    def __init__(
        self,
        origins: Sequence[Origin],
        clock: IReactorTime,
        balancing: Balancing = Balancing.ROUND_ROBIN,
        random: Callable[[], float] = _random.random,
    ) -> None:
        """
        @param origins: at least one.
        @param clock: times the requests.
        @param balancing: a L{Balancing} or its name.
        @param random: returns a float in [0, 1), for C{random}.
        @raise ValueError: without origins.
        """
        if not origins:
            raise ValueError("an upstream set needs at least one origin")
        self.upstreams: Tuple[Upstream, ...] = tuple(Upstream(o) for o in origins)
        self.balancing = Balancing(balancing)
        self._clock = clock
        self._random = random
        self._next = 0
        self._last = self.upstreams[0].origin

    # The surface of one Origin

    @property
    def url(self) -> str:
        """
        The URL of the upstream chosen last.
        """
        return self._last.url

    @property
    def netloc(self) -> bytes:
        """
        The C{host[:port]} of the upstream chosen last.
        """
        return self._last.netloc

    @property
    def base_path(self) -> bytes:
        """
        The base path of the upstream chosen last.
        """
        return self._last.base_path

    @property
    def scheme(self) -> bytes:
        """
        The scheme of the upstream chosen last.
        """
        return self._last.scheme

    @property
    def timeout(self) -> float:
        """
        The timeout of the upstream chosen last.
        """
        return self._last.timeout

    def url_for(self, path_and_query: bytes) -> bytes:
        """
        @return: the absolute URL of C{path_and_query} at the upstream
            chosen last.
        """
        return self._last.url_for(path_and_query)

    # Choosing

    def healthy(self) -> List[Upstream]:
        """
        @return: the upstreams that get requests, in configuration order.
        """
        return [u for u in self.upstreams if u.healthy]

    def choose(self, client: Optional[str] = None) -> Origin:
        """
        Choose the upstream of one request (a tunnel, say) that is not
        sent through L{request}.

        @param client: the client's address, for C{ip_hash}.
        @return: its L{Origin}.
        @raise UpstreamError: when no upstream is healthy.
        """
        upstream = self._pick(client, set())
        if upstream is None:
            raise UpstreamError(self._none_left(set()))
        return upstream.origin

    def _pick(self, client: Optional[str], tried: Set[int]) -> Optional[Upstream]:
        """
        @param client: the client's address, for C{ip_hash}.
        @param tried: indices of upstreams not to choose.
        @return: the chosen healthy upstream, or L{None} when none is left.
        """
        upstreams = self.upstreams
        candidates = [i for i, u in enumerate(upstreams) if u.healthy and i not in tried]
        if not candidates:
            return None
        policy = self.balancing
        if policy == Balancing.RANDOM:
            index = candidates[min(int(self._random() * len(candidates)), len(candidates) - 1)]
        elif policy == Balancing.IP_HASH:
            # A stable place on the ring of every upstream; when that one
            # is down (or tried), the next one after it: only its clients
            # move.
            start = zlib.crc32((client or "").encode("utf-8")) % len(upstreams)
            index = min(candidates, key=lambda i: (i - start) % len(upstreams))
        else:
            start = self._next
            order = sorted(candidates, key=lambda i: (i - start) % len(upstreams))
            if policy == Balancing.LEAST_CONN:
                fewest = min(upstreams[i].active for i in order)
                order = [i for i in order if upstreams[i].active == fewest]
            index = order[0]
            self._next = (index + 1) % len(upstreams)
        chosen = upstreams[index]
        self._last = chosen.origin
        return chosen

    def _none_left(self, tried: Set[int]) -> str:
        if tried:
            return "every healthy upstream failed"
        return "no healthy upstream (all %d failed their health checks)" % len(self.upstreams)

    # Requests

    def request(
        self,
        method: bytes,
        path_and_query: bytes,
        headers: Iterable[Header],
        body: Union[None, bytes, RequestBody] = None,
    ) -> Deferred[Any]:
        """
        Send a request to a healthy upstream, and to the next ones while
        they refuse or reset it before answering, when that is safe (see
        the module docstring).

        @param headers: the request headers; the last C{X-Forwarded-For}
            address (the one the proxy appended) is the client's, for
            C{ip_hash}.
        @return: what L{Origin.request} returns for the upstream that
            answered, or its failure (an L{UpstreamError} at once when no
            upstream is healthy). Cancelling it cancels the request.
        """
        pairs = list(headers)
        client = _client_of(pairs) if self.balancing == Balancing.IP_HASH else None
        first = self._pick(client, set())
        if first is None:
            return fail(UpstreamError(self._none_left(set())))
        retry = method in IDEMPOTENT and len(self.upstreams) > 1 and not isinstance(body, RequestBody)
        return Deferred.fromCoroutine(self._send(first, client, method, path_and_query, pairs, body, retry))

    async def _send(
        self,
        upstream: Upstream,
        client: Optional[str],
        method: bytes,
        path_and_query: bytes,
        headers: List[Header],
        body: Union[None, bytes, RequestBody],
        retry: bool,
    ) -> Any:
        tried: Set[int] = set()
        clock = self._clock
        while True:
            tried.add(self.upstreams.index(upstream))
            stats = upstream.stats
            stats.requests += 1
            upstream.active += 1
            started = clock.seconds()
            try:
                response = await upstream.origin.request(method, path_and_query, headers, body)
            except UpstreamError as e:
                error: Optional[UpstreamError] = e
            else:
                error = None
            finally:
                upstream.active -= 1
                stats.observe(clock.seconds() - started)
            if error is None:
                return response
            stats.errors += 1
            if not retry or isinstance(error, UpstreamTimeout):
                raise error
            following = self._pick(client, tried)
            if following is None:
                raise error
            upstream = following


def _client_of(headers: List[Header]) -> Optional[str]:
    """
    @return: the last address of the last C{X-Forwarded-For} header (the
        one the proxy appended for its client), or L{None}.
    """
    for name, value in reversed(headers):
        if name.lower() == b"x-forwarded-for":
            return value.rsplit(b",", 1)[-1].strip().decode("latin-1")
    return None


def origin_for(
    config: Any, client_for: Callable[[str], IOriginClient], clock: IReactorTime
) -> Union[Origin, UpstreamSet]:
    """
    The origin side of one server.

    @param config: its L{phantom_frame.proxy.settings.CreateProxyConfig}.
    @param client_for: returns the L{IOriginClient} that reaches an
        upstream URL.
    @param clock: schedules timeouts and times requests.
    @return: one L{Origin} for a C{proxy_url} without health checks, else
        an L{UpstreamSet} of its C{upstreams} (or of its C{proxy_url}).
    """
    timeout = config.upstream_timeout
    if not config.upstreams and config.health_check is None:
        return Origin(config.proxy_url, client_for(config.proxy_url), clock, timeout)
    urls = config.upstreams or (config.proxy_url,)
    origins = [Origin(url, client_for(url), clock, timeout) for url in urls]
    return UpstreamSet(origins, clock, config.load_balancing)
