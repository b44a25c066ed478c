"""
Prometheus metrics for one running proxy, served by the control site at
C{GET /metrics}.

Each L{Metrics} has its own L{CollectorRegistry} (never the process-wide
default one), so several proxies, and tests, can live in one process.
Per-request work is a few dictionary lookups and counter increments; cache
sizes, cache counters and snapshot progress are read from the servers at
scrape time only.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IAgent

from phantom_frame._version import __version__
from phantom_frame.proxy.status import RESULTS
from phantom_frame.proxy.upstreams import LATENCY_BUCKETS, UpstreamStats
from phantom_frame.ops.timing import TimingAgent, TimingClient

#: Every metric name starts with this.
PREFIX = "phantom_frame_"

#: The C{Content-Type} of L{Metrics.render}'s output: the Prometheus text
#: exposition format, which every Prometheus version reads.
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: The values of the C{cache} label (see L{phantom_frame.proxy.status}).
CACHE_RESULTS = RESULTS

#: Histogram buckets, in seconds, for request and upstream durations (the
#: per-upstream histograms use the same).
DURATION_BUCKETS = LATENCY_BUCKETS

#: How many kinds of request (server, method, status, result) the counting
#: cells are remembered for, by their raw method and status (the labels
#: they count under are few).
_CHILDREN_KEPT = 4096

#: The C{server} label of a request no server took (404 from routing, a
#: malformed request target).
NO_SERVER = ""


@lru_cache(maxsize=512)
def method_class(method: bytes) -> str:
    """
    @return: C{"get_head"} for GET and HEAD, C{"other"} for anything else.
    """
    return "get_head" if method in (b"GET", b"HEAD") else "other"


def status_class(code: int) -> str:
    """
    @return: C{"1xx"} to C{"5xx"}, or C{"other"} for a code out of range.
    """
    if 100 <= code <= 599:
        return "%dxx" % (code // 100)
    return "other"


class Metrics:
    """
    The metrics of one running proxy.

    @ivar registry: this proxy's own registry.
    @ivar handle: the servers whose caches and snapshots are reported.
    @ivar site: the proxy's site, for requests in flight and open tunnels
        (see L{phantom_frame.http.site.ProxySite}); L{None} until set.
    @ivar open_tunnels: returns how many upgrade tunnels are open, or
        L{None} when unknown (the gauge is then left out); by default, the
        site's count.
    """

    def __init__(self, handle: Any, clock: IReactorTime) -> None:
        """
        @param handle: the L{phantom_frame.embed.CacheHandle} of the
            servers; read at scrape time, so servers replaced by a reload
            are reported from then on.
        @param clock: times upstream requests.
        """
        self.handle = handle
        self.site: Any = None
        self.open_tunnels: Callable[[], Optional[int]] = self._site_tunnels
        self._clock = clock
        self.registry = CollectorRegistry()
        self.reloads = Counter(
            PREFIX + "config_reloads",
            "Configuration reloads, by outcome (ok or error).",
            ["outcome"],
            registry=self.registry,
        )
        self.origin_starts = Counter(
            PREFIX + "origin_starts",
            "Starts of supervised origin commands (execute), by server.",
            ["server"],
            registry=self.registry,
        )
        #: The cells each kind of answered request counts into (see
        #: L{observe}): plain lists of numbers, read at scrape time, since a
        #: prometheus_client child takes a lock per update.
        self._children: Dict[Tuple[Optional[str], str, str, str], Tuple[List[int], "_Durations"]] = {}
        #: Requests, by (server, method class, status class, cache result).
        self.requests: Dict[Tuple[str, str, str, str], List[int]] = {}
        #: Durations (and body bytes sent), by (server, cache result).
        self.durations: Dict[Tuple[str, str], "_Durations"] = {}
        #: Origin requests' times to their heads, and their failures, by
        #: server.
        self.upstream: Dict[str, "_Durations"] = {}
        self.registry.register(_StateCollector(self))
        self.registry.register(_RequestCollector(self))

    def timing_agent(self, agent: IAgent, server: str) -> TimingAgent:
        """
        @param agent: reaches the origin of C{server}.
        @param server: the server's name, the C{server} label.
        @return: C{agent}, timed into the upstream histogram.
        """
        cells = self._upstream(server)
        return TimingAgent(agent, self._clock, cells.observe, cells.failed)

    def timing_client(self, client: Any, server: str) -> TimingClient:
        """
        @param client: the L{IOriginClient} of C{server}'s origin.
        @param server: the server's name, the C{server} label.
        @return: C{client}, timed into the upstream histogram.
        """
        cells = self._upstream(server)
        return TimingClient(client, self._clock, cells.observe, cells.failed)

    def _upstream(self, server: str) -> "_Durations":
        """
        @return: the cells the origin requests of C{server} count into.
        """
        cells = self.upstream.get(server)
        if cells is None:
            cells = self.upstream[server] = _Durations()
        return cells

    def observe(
        self,
        server: Optional[str],
        method: bytes,
        code: int,
        result: str,
        duration: float,
        sent: int = 0,
    ) -> None:
        """
        Count one answered request.

        @param server: the name of the server that took it, or L{None}.
        @param method: its method.
        @param code: its status code.
        @param result: the result of its L{phantom_frame.proxy.status.CacheStatus}.
        @param duration: seconds from its arrival to the end of its answer.
        @param sent: the bytes of its answer's body.
        """
        key = (server, method, code, result)
        children = self._children.get(key)
        if children is None:
            name = NO_SERVER if server is None else server
            labels = (name, method_class(method), status_class(code), result)
            durations = self.durations.get((name, result))
            if durations is None:
                durations = self.durations[(name, result)] = _Durations()
            children = (self.requests.setdefault(labels, [0]), durations)
            if len(self._children) < _CHILDREN_KEPT:
                self._children[key] = children
        children[0][0] += 1
        durations = children[1]
        durations.observe(duration)
        durations.sent += sent

    def render(self) -> bytes:
        """
        @return: every metric, in the Prometheus text exposition format.
        """
        return generate_latest(self.registry)

    def _site_tunnels(self) -> Optional[int]:
        site = self.site
        count = getattr(site, "tunnels", None)
        return count if isinstance(count, int) else None


class _StateCollector:
    """
    Reads, at scrape time, what the servers hold: cache sizes and counters,
    snapshot progress, requests in flight and open tunnels.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._warmed: "WeakKeyDictionary[Any, Dict[str, Optional[str]]]" = WeakKeyDictionary()

    def _warm_up_results(self, server: Any) -> Optional[Dict[str, Optional[str]]]:
        """
        @return: the results of C{server}'s warm-up once it is over, else
            L{None}.
        """
        if server in self._warmed:
            return self._warmed[server]
        warmed = server.snapshots.warmed
        if warmed.called:
            box: list = []

            def keep(results: Any) -> Any:
                box.append(results)
                return results

            warmed.addCallback(keep)
            if box and isinstance(box[0], dict):
                self._warmed[server] = box[0]
                return box[0]
        return None

    def collect(self) -> Iterator[Metric]:
        """
        @return: the families, freshly read.
        """
        metrics = self._metrics
        info = GaugeMetricFamily(PREFIX + "info", "The running phantom-frame version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        site = metrics.site
        if site is not None:
            yield GaugeMetricFamily(
                PREFIX + "requests_in_flight",
                "Requests being answered by the proxy listeners.",
                value=site.active,
            )
        nodes = {
            id(n): n
            for s in metrics.handle.servers()
            for n in (getattr(s.cache, "node", None), getattr(s.decider.limiter, "node", None))
            if n
        }
        if nodes:
            yield CounterMetricFamily(
                PREFIX + "redis_errors",
                "Redis commands that failed or timed out (answered from L1 and the origin).",
                value=sum(n.errors for n in nodes.values()),
            )
        tunnels = metrics.open_tunnels()
        if tunnels is not None:
            yield GaugeMetricFamily(
                PREFIX + "tunnels_open",
                "Upgrade (WebSocket) requests being tunnelled: connecting or spliced.",
                value=tunnels,
            )
        entries = GaugeMetricFamily(
            PREFIX + "cache_entries", "Stored responses, by server and store.", labels=["server", "store"]
        )
        size = GaugeMetricFamily(
            PREFIX + "cache_bytes",
            "Bytes of stored responses (bodies, headers and overhead), by server and store.",
            labels=["server", "store"],
        )
        limit = GaugeMetricFamily(
            PREFIX + "cache_max_bytes", "The cache_max_bytes bound, by server.", labels=["server"]
        )
        counters = {
            name: CounterMetricFamily(PREFIX + "cache_" + name, text, labels=["server"])
            for name, text in (
                ("hits", "Requests answered from the cache, by server."),
                ("misses", "Cache misses that went to the origin, by server."),
                ("stale", "Stale entries served or revalidated, by server."),
                ("coalesced", "Requests that waited for another request's fill, by server."),
                ("evictions", "Entries evicted to stay within cache_max_bytes, by server."),
                ("invalidations", "Invalidations (all, or by pattern), by server."),
                ("compressions", "Stored bodies compressed once served again, by server."),
            )
        }
        tracked = GaugeMetricFamily(
            PREFIX + "snapshots_tracked", "Snapshot paths of a pre_generate server.", labels=["server"]
        )
        stored = GaugeMetricFamily(
            PREFIX + "snapshots_stored",
            "Tracked snapshot paths whose page is stored (pre-generation progress).",
            labels=["server"],
        )
        complete = GaugeMetricFamily(
            PREFIX + "snapshot_warmup_complete",
            "1 once the start-up pre-generation is over, else 0.",
            labels=["server"],
        )
        failures = GaugeMetricFamily(
            PREFIX + "snapshot_warmup_failures",
            "Paths that failed in the start-up pre-generation.",
            labels=["server"],
        )
        for server in list(metrics.handle.servers()):
            name = server.name
            cache = server.cache
            store = server.config.cache_storage_mode.value
            entries.add_metric([name, store], cache.entry_count)
            size.add_metric([name, store], cache.bytes)
            limit.add_metric([name], server.config.cache_max_bytes)
            for counter, family in counters.items():
                family.add_metric([name], getattr(cache, counter))
            snapshots = server.snapshots
            if snapshots is None:
                continue
            paths = list(snapshots.tracked)
            tracked.add_metric([name], len(paths))
            stored.add_metric([name], sum(1 for p in paths if server.snapshots.has(p)))
            results = self._warm_up_results(server)
            complete.add_metric([name], 0 if results is None else 1)
            if results is not None:
                failures.add_metric([name], sum(1 for r in results.values() if r is not None))
        yield entries
        yield size
        yield limit
        yield from counters.values()
        yield tracked
        yield stored
        yield complete
        yield failures
        yield from _upstream_families(metrics.handle.servers())


class _Durations(UpstreamStats):
    """
    The durations of answered requests (of one server and cache result, or
    the origin requests of one server), as a histogram over
    L{DURATION_BUCKETS} (the upstreams' own buckets), their body bytes and
    failures.

    @ivar sent: the sum of their body bytes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def failed(self) -> None:
        """
        Count one failure.
        """
        self.errors += 1


class _RequestCollector:
    """
    Reads, at scrape time, the counts L{Metrics.observe} keeps: requests,
    their durations and their body bytes.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """
        @return: the families, freshly read.
        """
        metrics = self._metrics
        requests = CounterMetricFamily(
            PREFIX + "requests",
            "Requests answered by the proxy listeners, by server, method class,"
            " status class and cache result.",
            labels=["server", "method", "status", "cache"],
        )
        for labels, cell in list(metrics.requests.items()):
            requests.add_metric(list(labels), cell[0])
        yield requests
        durations = HistogramMetricFamily(
            PREFIX + "request_duration_seconds",
            "Time from the request's arrival to the end of its answer, by"
            " server and cache result.",
            labels=["server", "cache"],
        )
        sent = CounterMetricFamily(
            PREFIX + "response_bytes",
            "Body bytes of the answers of the proxy listeners, by server and cache result.",
            labels=["server", "cache"],
        )
        for labels, cells in list(metrics.durations.items()):
            durations.add_metric(list(labels), cells.cumulative(), cells.total)
            sent.add_metric(list(labels), cells.sent)
        yield durations
        yield sent
        upstream = HistogramMetricFamily(
            PREFIX + "upstream_request_duration_seconds",
            "Time from an origin request to its response head (or failure), by server.",
            labels=["server"],
        )
        errors = CounterMetricFamily(
            PREFIX + "upstream_errors",
            "Origin requests that failed (refused, reset, timed out, cancelled), by server.",
            labels=["server"],
        )
        for server, cells in list(metrics.upstream.items()):
            upstream.add_metric([server], cells.cumulative(), cells.total)
            errors.add_metric([server], cells.errors)
        yield upstream
        yield errors


def _upstream_families(servers: Iterator[Any]) -> Iterator[Metric]:
    """
    @param servers: the running servers.
    @return: the families of the upstreams of the servers that have several
        (or health checks), labelled by server and upstream URL: requests,
        failures, latency to the response head, and health.
    """
    labels = ["server", "upstream"]
    requests = CounterMetricFamily(
        PREFIX + "upstream_requests", "Requests sent to each upstream, by server and upstream.", labels=labels
    )
    failed = CounterMetricFamily(
        PREFIX + "upstream_failures",
        "Requests to each upstream that failed (refused, reset, timed out), by server and upstream.",
        labels=labels,
    )
    latency = HistogramMetricFamily(
        PREFIX + "upstream_latency_seconds",
        "Time from a request to an upstream to its response head (or failure), by server and upstream.",
        labels=labels,
    )
    healthy = GaugeMetricFamily(
        PREFIX + "upstream_healthy",
        "1 while an upstream gets requests, 0 while it fails its health checks.",
        labels=labels,
    )
    for server in list(servers):
        for upstream in getattr(server.origin, "upstreams", ()):
            stats, names = upstream.stats, [server.name, upstream.url]
            requests.add_metric(names, stats.requests)
            failed.add_metric(names, stats.errors)
            latency.add_metric(names, stats.cumulative(), stats.total)
            healthy.add_metric(names, 1 if upstream.healthy else 0)
    yield requests
    yield failed
    yield latency
    yield healthy
