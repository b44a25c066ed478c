"""
The supervisor's control site with C{workers} above 1: every control call
goes to every worker's private control site, and the answers are merged.

Invalidations sum C{"invalidated"}; bulk calls merge their results item by
item (an item is ok when it is ok on every worker); C{/stats} sums every
counter of every server; C{/metrics} sums the workers' samples (see
L{merge_metrics}); C{/snapshots} is worker 0's list (snapshot calls reach
every worker, so the lists agree). Every JSON answer says how many workers
there are (C{"workers"}) and how many answered it (C{"workers_confirmed"}):
a worker being restarted does not answer, and starts with an empty cache
anyway. When a worker refuses the call (a bad pattern, an unknown server),
its answer is the answer.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any, Callable, Dict, List, Optional, Tuple

import treq
from prometheus_client.utils import floatToGoString
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.logger import Logger
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from phantom_frame.ops.control import ControlResource, TextAnswer
from phantom_frame.ops.metrics import CONTENT_TYPE, PREFIX

log = Logger()

Answer = Tuple[int, Any]
Merge = Callable[[List[Any]], Any]


@implementer(IAgentEndpointFactory)
class WorkerSockets:
    """
    Reaches C{http://worker-N/...} on worker N's private control socket.
    """

    def __init__(self, reactor: Any, sockets: List[str]) -> None:
        """
        @param reactor: connects.
        @param sockets: the socket path of each worker, in order.
        """
        self._reactor = reactor
        self._sockets = sockets

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        """
        @param uri: a C{http://worker-N/...} URI.
        @return: the endpoint of worker N's socket.
        """
        index = int(uri.host.rpartition(b"-")[2])
        return UNIXClientEndpoint(self._reactor, self._sockets[index], timeout=5)


def _sum_invalidated(payloads: List[Any]) -> Any:
    merged = dict(payloads[0])
    merged["invalidated"] = sum(p.get("invalidated", 0) for p in payloads)
    return _nodes(merged, payloads)


def _bulk(payloads: List[Any]) -> Any:
    """
    @return: the bulk answer whose item I{i} is ok when it is on every
        worker, with the counts of every worker summed and the first error.
    """
    results: List[Dict[str, Any]] = []
    for items in zip(*(p.get("results", []) for p in payloads)):
        item = dict(items[0])
        item["ok"] = all(i.get("ok") for i in items)
        if "invalidated" in item:
            item["invalidated"] = sum(i.get("invalidated", 0) for i in items)
        errors = [i["error"] for i in items if "error" in i]
        if errors:
            item["error"] = errors[0]
        results.append(item)
    succeeded = sum(1 for item in results if item["ok"])
    merged = {"requested": len(results), "succeeded": succeeded, "failed": len(results) - succeeded,
              "results": results}
    return _nodes(merged, payloads)


def _nodes(merged: Dict[str, Any], payloads: List[Any]) -> Dict[str, Any]:
    """
    @return: C{merged}, with the C{nodes_confirmed} of the Redis bus when
        the workers report it: the fewest nodes that confirmed any worker's
        change (every one of them confirmed every change).
    """
    counts = [p["nodes_confirmed"] for p in payloads if isinstance(p.get("nodes_confirmed"), int)]
    if counts:
        merged["nodes_confirmed"] = min(counts)
    return merged


def _stats(payloads: List[Any]) -> Any:
    servers: Dict[str, Dict[str, Any]] = {}
    for payload in payloads:
        for name, counters in payload.get("servers", {}).items():
            merged = servers.setdefault(name, {})
            for key, value in counters.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    merged[key] = merged.get(key, 0) + value
                else:
                    merged.setdefault(key, value)
    return {"servers": servers}


def _first(payloads: List[Any]) -> Any:
    return payloads[0]


def combine(answers: List[Optional[Answer]], merge: Merge) -> Answer:
    """
    @param answers: each worker's answer, or L{None} when it gave none.
    @param merge: merges the payloads when every answer is a success.
    @return: the merged answer; the first refusal when a worker refused;
        502 when no worker answered. A JSON object answer gets C{"workers"}
        and C{"workers_confirmed"}.
    """
    got = [answer for answer in answers if answer is not None]
    refused = [answer for answer in got if not 200 <= answer[0] < 300]
    confirmed = len(got) - len(refused)
    if not got:
        code, payload = 502, {"error": "no worker answered"}
    elif refused:
        code, payload = refused[0]
    else:
        code, payload = got[0][0], merge([answer[1] for answer in got])
    if isinstance(payload, dict):
        payload = dict(payload, workers=len(answers), workers_confirmed=confirmed)
    return code, payload


def merge_metrics(texts: List[bytes], workers: int) -> bytes:
    """
    Sum the workers' metrics, in the Prometheus text format: a sample with
    the same name and labels on several workers is their sum (their
    minimum for C{*_created} and C{snapshot_warmup_complete}, their maximum
    for C{info}); C{phantom_frame_workers} and
    C{phantom_frame_workers_answering} are added.

    @param texts: each answering worker's exposition.
    @param workers: how many workers there are.
    @return: the merged exposition.
    """
    families: Dict[str, Tuple[List[str], Dict[str, float]]] = {}
    current: Optional[Tuple[List[str], Dict[str, float]]] = None
    for text in texts:
        for line in text.decode("utf-8").splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                current = families.setdefault(line.split(" ", 3)[2], ([], {}))
                if line not in current[0]:
                    current[0].append(line)
                continue
            if not line or line.startswith("#") or current is None:
                continue
            key, _, value = line.rpartition(" ")
            number = float(value)
            name = key.partition("{")[0]
            samples = current[1]
            if key not in samples:
                samples[key] = number
            elif name.endswith("_created") or name == PREFIX + "snapshot_warmup_complete":
                samples[key] = min(samples[key], number)
            elif name == PREFIX + "info":
                samples[key] = max(samples[key], number)
            else:
                samples[key] += number
    lines: List[str] = []
    for meta, samples in families.values():
        lines.extend(meta)
        lines.extend(f"{key} {floatToGoString(value)}" for key, value in samples.items())
    for name, text, value in (
        ("workers", "Worker processes the supervisor runs.", workers),
        ("workers_answering", "Workers whose metrics are in this answer.", len(texts)),
    ):
        lines += [f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} gauge",
                  f"{PREFIX}{name} {floatToGoString(value)}"]
    return ("\n".join(lines) + "\n").encode("utf-8")


class FanOutResource(ControlResource):
    """
    The control API of a supervisor: every route is called on every worker
    and the answers merged (see the module's description). C{GET /health}
    and the bearer token are checked here, as by L{ControlResource}.

    @ivar reloader: checks the file before C{POST /reload} reaches the
        workers (a L{phantom_frame.ops.workers.HangupForwarder}).
    """

    def __init__(self, sockets: List[str], token: Optional[str], reactor: Any, timeout: float = 30.0) -> None:
        """
        @param sockets: the private control socket of each worker.
        @param token: the bearer token of the control sites.
        @param reactor: connects to the workers.
        @param timeout: seconds a worker has to answer.
        """
        super().__init__(None, token, clock=reactor)  # type: ignore[arg-type]
        self._reactor = reactor
        self._sockets = sockets
        self._timeout = timeout
        self._token = token
        pool = HTTPConnectionPool(reactor, persistent=False)
        self._agent = Agent.usingEndpointFactory(reactor, WorkerSockets(reactor, sockets), pool=pool)
        merges: Dict[bytes, Merge] = {
            b"/refresh-cache": _sum_invalidated,
            b"/invalidate_all": _sum_invalidated,
            b"/invalidate": _sum_invalidated,
            b"/bulk_invalidate": _bulk,
            b"/stats": _stats,
            b"/bulk_add_snapshot": _bulk,
            b"/bulk_refresh_snapshot": _bulk,
            b"/bulk_remove_snapshot": _bulk,
            b"/refresh_all_snapshots": _bulk,
        }
        routes = {}
        for method, path in self._routes:
            routes[(method, path)] = self._fan(method, path, merges.get(path, _first))
        routes[(b"GET", b"/metrics")] = self._metrics_route
        routes[(b"POST", b"/reload")] = self._reload_route
        self._routes = routes

    def configure(self, config: Any) -> None:
        """
        Use a reloaded configuration's C{control_auth}, here and towards the
        workers.

        @param config: the new L{phantom_frame.config.Config}.
        """
        self._token = config.control_auth
        self.set_token(config.control_auth)

    async def _call(self, index: int, method: bytes, path: bytes, body: Dict[str, Any]) -> Answer:
        headers = Headers({b"content-type": [b"application/json"]})
        if self._token is not None:
            headers.addRawHeader(b"authorization", b"Bearer " + self._token.encode("utf-8"))
        producer = None
        if method == b"POST":
            producer = FileBodyProducer(BytesIO(json.dumps(body).encode("utf-8")))
        d = self._agent.request(method, b"http://worker-%d%s" % (index, path), headers, producer)
        d.addTimeout(self._timeout, self._reactor)
        response = await d
        data = await treq.content(response)
        kind = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if kind.startswith(b"application/json"):
            return response.code, json.loads(data)
        return response.code, TextAnswer(data, kind)

    def call_all(self, method: bytes, path: bytes, body: Dict[str, Any]) -> Deferred[List[Optional[Answer]]]:
        """
        Make the call on every worker at once.

        @return: a L{Deferred} firing with each worker's answer, L{None}
            for a worker that gave none (logged).
        """
        calls = [
            Deferred.fromCoroutine(self._call(index, method, path, body))
            for index in range(len(self._sockets))
        ]

        def answers(outcomes: List[Tuple[bool, Any]]) -> List[Optional[Answer]]:
            result: List[Optional[Answer]] = []
            for index, (ok, value) in enumerate(outcomes):
                if not ok:
                    log.warn("control: worker-{index} did not answer {path}: {reason}",
                             index=index, path=path.decode(), reason=value.getErrorMessage())
                result.append(value if ok else None)
            return result

        return DeferredList(calls, consumeErrors=True).addCallback(answers)

    def _fan(self, method: bytes, path: bytes, merge: Merge) -> Callable[[Dict[str, Any]], Deferred[Answer]]:
        def route(body: Dict[str, Any]) -> Deferred[Answer]:
            return self.call_all(method, path, body).addCallback(combine, merge)

        return route

    def _metrics_route(self, body: Dict[str, Any]) -> Deferred[Answer]:
        def merged(answers: List[Optional[Answer]]) -> Answer:
            texts = [a[1].body for a in answers if a is not None and isinstance(a[1], TextAnswer)]
            if not texts:
                return 502, {"error": "no worker answered", "workers": len(answers), "workers_confirmed": 0}
            return 200, TextAnswer(merge_metrics(texts, len(answers)), CONTENT_TYPE)

        return self.call_all(b"GET", b"/metrics", body).addCallback(merged)

    def _reload_route(self, body: Dict[str, Any]) -> Any:
        if self.reloader is None:
            return 404, {"error": "no such route"}
        errors = self.reloader.check()
        if errors is not None:
            return 400, {"ok": False, "errors": list(errors), "workers": len(self._sockets),
                         "workers_confirmed": 0}
        return self.call_all(b"POST", b"/reload", body).addCallback(combine, _first)
