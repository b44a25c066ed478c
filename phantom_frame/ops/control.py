"""
The control site: cache refresh and invalidation, statistics, metrics,
configuration reload and health.

Every route but C{GET /health} requires C{Authorization: Bearer TOKEN} when
a token is configured; the check comes before anything else is looked at.
L{ControlResource.refusal} makes the checks that need only the request's
head (the token, the body's announced length), so that the control site
(L{phantom_frame.ops.control_site}) can answer them before reading a body;
the resource makes them again, then reads and checks the body (see
L{phantom_frame.ops.control_limits}).
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from phantom_frame.ops.control_limits import (
    HEALTH,
    MAX_BODY,
    TOO_LARGE,
    TWO_TOKENS,
    UNAUTHORIZED,
    BadRequest,
    BodyTooLarge,
    Refusal,
    json_body,
    route_path,
)
from phantom_frame.proxy.exchange import Exchange
from phantom_frame.proxy.handle import CacheHandle, UnknownServer
from phantom_frame.proxy.snapshots import NotPreGenerated, SnapshotError
from phantom_frame.proxy.origin import UpstreamError

log = Logger()

def _short(text: str) -> str:
    """
    @return: C{text} quoted, cut to its first 60 characters.
    """
    return repr(text) if len(text) <= 60 else repr(text[:60]) + "..."


def _json(request, code: int, payload: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    body = json.dumps(payload, sort_keys=True).encode("utf-8") + b"\n"
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def _text(request, code: int, content_type: bytes, body: bytes) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


class TextAnswer:
    """
    A route's answer that is not JSON: a body and its media type.
    """

    def __init__(self, body: bytes, content_type: bytes) -> None:
        """
        @param body: the bytes to send.
        @param content_type: their C{Content-Type}.
        """
        self.body = body
        self.content_type = content_type


def _answer(request, code: int, payload: Any) -> bytes:
    if isinstance(payload, TextAnswer):
        return _text(request, code, payload.content_type, payload.body)
    return _json(request, code, payload)


def _summary(paths: List[str], outcomes) -> Dict[str, Any]:
    """
    @return: the answer of a bulk call: counts and one result per path.
    """
    results = []
    for path, (ok, value) in zip(paths, outcomes):
        item: Dict[str, Any] = {"path": path, "ok": ok}
        if not ok:
            item["error"] = value.getErrorMessage()
        results.append(item)
    return _bulk(results)


def _bulk(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """
    @param results: one C{{"ok": bool, ...}} per item.
    @return: the answer of a bulk call: the counts and the results.
    """
    succeeded = sum(1 for r in results if r["ok"])
    return {
        "requested": len(results),
        "succeeded": succeeded,
        "failed": len(results) - succeeded,
        "results": results,
    }


def _query(request) -> Dict[str, Any]:
    """
    @return: the query parameters of a C{GET}, by name (the last value of
        a repeated one), as text.
    """
    args = request.args or {}
    return {k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace") for k, v in args.items() if v}


class ControlResource(Resource):
    """
    The control API over a L{CacheHandle}.

    @ivar metrics: what C{GET /metrics} shows (a
        L{phantom_frame.ops.metrics.Metrics}); without it the route is 404.
    @ivar reloader: what C{POST /reload} calls (a
        L{phantom_frame.ops.reload.Reloader}); without it the route is 404.
    """

    isLeaf = True

    def __init__(
        self,
        handle: CacheHandle,
        token: Optional[str] = None,
        metrics: Any = None,
        reloader: Any = None,
        clock: Optional[IReactorTime] = None,
    ) -> None:
        """
        @param handle: the caches to act on.
        @param token: the bearer token every route but C{/health} requires;
            C{None} leaves the site open (it listens on localhost by default).
        @param metrics: see L{metrics}.
        @param reloader: see L{reloader}.
        @param clock: what bulk calls yield to between items, so that each
            turn of the event loop walks the caches once (one pattern) or
            starts one snapshot call; without it they run all at once.
        """
        super().__init__()
        self._handle = handle
        self._clock = clock
        self.metrics = metrics
        self.reloader = reloader
        self.set_token(token)
        self._routes: Dict[Tuple[bytes, bytes], Callable[[Any], Tuple[int, Any]]] = {
            (b"POST", b"/refresh-cache"): self._invalidate_all,
            (b"POST", b"/invalidate_all"): self._invalidate_all,
            (b"POST", b"/invalidate"): self._invalidate,
            (b"POST", b"/bulk_invalidate"): self._bulk_invalidate,
            (b"GET", b"/stats"): self._stats,
            (b"POST", b"/add_snapshot"): self._snapshot("add_snapshot"),
            (b"POST", b"/refresh_snapshot"): self._snapshot("refresh_snapshot"),
            (b"POST", b"/remove_snapshot"): self._snapshot("remove_snapshot"),
            (b"POST", b"/bulk_add_snapshot"): self._bulk_snapshot("add_snapshot"),
            (b"POST", b"/bulk_refresh_snapshot"): self._bulk_snapshot("refresh_snapshot"),
            (b"POST", b"/bulk_remove_snapshot"): self._bulk_snapshot("remove_snapshot"),
            (b"POST", b"/refresh_all_snapshots"): self._refresh_all,
            (b"GET", b"/snapshots"): self._list_snapshots,
            (b"GET", b"/metrics"): self._metrics,
            (b"POST", b"/reload"): self._reload,
            (b"GET", b"/top_keys"): self._top_keys,
            (b"GET", b"/progress"): self._progress,
        }

    def set_token(self, token: Optional[str]) -> None:
        """
        Require another bearer token from the next request on.

        @param token: the new token, or C{None} to leave the site open.
        """
        self._expected = None if token is None else token.encode("utf-8")

    def _auth_refusal(self, headers: Headers) -> Optional[Refusal]:
        """
        Check the bearer token: one C{Authorization} header, its scheme
        C{Bearer} in any case, its credentials compared in constant time.

        @param headers: the request headers.
        @return: L{None} when the request may go on, else the refusal.
        """
        if self._expected is None:
            return None
        given = headers.getRawHeaders(b"authorization", [])
        if len(given) > 1:
            return TWO_TOKENS
        scheme, _, credentials = (given[0] if given else b"").partition(b" ")
        # Compared whatever the scheme, so the time taken does not depend on it.
        credentials = credentials.lstrip(b" ")
        matches = hmac.compare_digest(credentials, self._expected)
        if scheme.lower() != b"bearer" or not credentials or not matches:
            return UNAUTHORIZED
        return None

    def refusal(
        self, method: bytes, target: bytes, headers: Headers, length: Optional[int]
    ) -> Optional[Refusal]:
        """
        Decide what can be decided from a request's head, in the order the
        answers take: the token (401, or 400 for two C{Authorization}
        headers), then the announced body length (413).

        @param method: the request method.
        @param target: the request target.
        @param headers: the request headers.
        @param length: the body's C{Content-Length}, L{None} when it is
            chunked.
        @return: L{None} when the request may go on, else the refusal.
        """
        if route_path(target) != HEALTH:
            refusal = self._auth_refusal(headers)
            if refusal is not None:
                return refusal
        if length is not None and length > MAX_BODY:
            return TOO_LARGE
        return None

    def render(self, request) -> object:
        """
        Dispatch: health, then auth, then route, then body.
        """
        path = route_path(request.path)
        method = request.method
        if path == HEALTH:
            if method not in (b"GET", b"HEAD"):
                request.setHeader(b"allow", b"GET, HEAD")
                return _json(request, 405, {"error": "method not allowed"})
            return _json(request, 200, {"status": "ok"})
        refusal = self._auth_refusal(request.requestHeaders)
        if refusal is not None:
            for name, value in refusal.headers():
                request.setHeader(name, value)
            return _json(request, refusal.code, {"error": refusal.error})
        route = self._routes.get((b"GET" if method == b"HEAD" else method, path))
        if route is None:
            allowed = sorted(m.decode() for m, p in self._routes if p == path)
            if allowed:
                request.setHeader(b"allow", ", ".join(allowed).encode())
                return _json(request, 405, {"error": "method not allowed"})
            return _json(request, 404, {"error": "no such route"})
        try:
            body = self._body(request) if method == b"POST" else _query(request)
            result = route(body)
        except Exception as e:
            return self._error(request, e)
        if not isinstance(result, Deferred):
            code, payload = result
            return _answer(request, code, payload)

        exchange = Exchange(request)

        def answer(outcome: Any) -> None:
            if not exchange.alive:
                return
            if isinstance(outcome, Failure):
                body = self._error(request, outcome.value)
            else:
                code, payload = outcome
                body = _answer(request, code, payload)
            request.write(body)
            request.finish()

        result.addBoth(answer)
        return NOT_DONE_YET

    def _error(self, request, error: BaseException) -> bytes:
        """
        Map an exception to its answer: 400, 404 or 502 with the reason.
        """
        if isinstance(error, BodyTooLarge):
            return _json(request, 413, {"error": str(error)})
        if isinstance(error, (BadRequest, NotPreGenerated)):
            return _json(request, 400, {"error": str(error)})
        if isinstance(error, UnknownServer):
            return _json(request, 404, {"error": f"unknown server {error.args[0]!r}"})
        if isinstance(error, (SnapshotError, UpstreamError)):
            return _json(request, 502, {"error": str(error)})
        log.failure("control request failed", Failure(error))
        return _json(request, 500, {"error": "internal error"})

    def _body(self, request) -> Dict[str, Any]:
        content = request.content
        content.seek(0, 2)
        size = content.tell()
        if size == 0:
            return {}
        if size > MAX_BODY:
            raise BodyTooLarge(TOO_LARGE.error)
        content.seek(0)
        value = json_body(content.read())
        if not isinstance(value, dict):
            raise BadRequest("expected a JSON object")
        return value

    @staticmethod
    def _field(body: Dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
        value = body.get(name)
        if value is None:
            if required:
                raise BadRequest(f"missing {name!r}")
            return None
        if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            expected = "a list of strings" if kind is list else "a string"
            raise BadRequest(f"{name!r} must be {expected}")
        return value

    def _server(self, body: Dict[str, Any]) -> Optional[str]:
        name = self._field(body, "server", str, required=False)
        if name is not None:
            self._handle.server(name)
        return name

    def _invalidate_all(self, body: Dict[str, Any]) -> Tuple[int, Any]:
        server = self._server(body)
        dropped = self._handle.invalidate_all(server)
        log.info("control: invalidated all entries ({count} dropped)", count=dropped)
        return self._confirmed({"ok": True, "invalidated": dropped})

    def _invalidate(self, body: Dict[str, Any]) -> Tuple[int, Any]:
        pattern = self._field(body, "pattern", str)
        server = self._server(body)
        try:
            dropped = self._handle.invalidate(pattern, server)
        except ValueError as e:
            raise BadRequest(f"bad pattern {_short(pattern)}: {e}")
        log.info("control: invalidated {pattern!r} ({count} dropped)", pattern=pattern, count=dropped)
        return self._confirmed({"ok": True, "pattern": pattern, "invalidated": dropped})

    def _confirmed(self, body: Dict[str, Any]) -> Any:
        """
        @return: C{(200, body)}, once the nodes sharing a Redis tier have
            confirmed the invalidation or snapshot change (C{nodes_confirmed}
            then says how many did within a second).
        """
        waiting = self._handle.confirmations()
        if waiting is None:
            return 200, body
        return waiting.addCallback(lambda count: (200, {**body, "nodes_confirmed": count}))

    def _one_per_turn(self, items: List[str], call: Callable[[str], Any]) -> Deferred[List[Any]]:
        """
        Call C{call} on each item in order, one item per turn of the event
        loop (the first at once), or all at once without a clock.

        @return: a L{Deferred} firing with the results, in order, or failing
            with the first exception raised.
        """
        if self._clock is None or len(items) < 2:
            return maybeDeferred(lambda: [call(item) for item in items])
        clock = self._clock
        results: List[Any] = []
        done: Deferred[List[Any]] = Deferred()

        def step(index: int) -> None:
            try:
                results.append(call(items[index]))
            except BaseException:
                done.errback()
                return
            if index + 1 < len(items):
                clock.callLater(0, step, index + 1)
            else:
                done.callback(results)

        step(0)
        return done

    def _bulk_invalidate(self, body: Dict[str, Any]) -> Deferred:
        patterns = self._field(body, "patterns", list)
        server = self._server(body)

        def invalidate(pattern: str) -> Dict[str, Any]:
            try:
                count = self._handle.invalidate(pattern, server)
            except ValueError as e:
                return {"pattern": pattern, "ok": False, "error": str(e)}
            return {"pattern": pattern, "ok": True, "invalidated": count}

        return self._one_per_turn(patterns, invalidate).addCallback(lambda results: self._confirmed(_bulk(results)))

    def _path(self, body: Dict[str, Any], name: str = "path") -> str:
        path = self._field(body, name, str)
        if not path.startswith("/"):
            raise BadRequest(f"{name!r} must start with '/'")
        return path

    def _paths(self, body: Dict[str, Any]) -> List[str]:
        paths = self._field(body, "paths", list)
        for path in paths:
            if not path.startswith("/"):
                raise BadRequest(f"every path must start with '/', got {path!r}")
        return paths

    def _snapshot(self, operation: str) -> Callable[[Dict[str, Any]], Deferred]:
        def route(body: Dict[str, Any]) -> Deferred:
            path = self._path(body)
            server = self._server(body)
            d = getattr(self._handle, operation)(path, server)
            return d.addCallback(lambda _: self._confirmed({"ok": True, "path": path}))

        return route

    def _bulk_snapshot(self, operation: str) -> Callable[[Dict[str, Any]], Deferred]:
        def route(body: Dict[str, Any]) -> Deferred:
            paths = self._paths(body)
            server = self._server(body)
            self._handle._snapshot_servers(server)
            call = getattr(self._handle, operation)
            started = self._one_per_turn(paths, lambda path: call(path, server))
            started.addCallback(lambda ds: DeferredList(ds, consumeErrors=True))
            return started.addCallback(lambda outcomes: self._confirmed(_summary(paths, outcomes)))

        return route

    def _refresh_all(self, body: Dict[str, Any]) -> Deferred:
        server = self._server(body)

        def summarise(results: Dict[str, Dict[str, Optional[str]]]) -> Tuple[int, Any]:
            items = [
                {"server": name, "path": path, "ok": reason is None, **({"error": reason} if reason else {})}
                for name, paths in results.items()
                for path, reason in paths.items()
            ]
            return 200, _bulk(items)

        return self._handle.refresh_all_snapshots(server).addCallback(summarise)

    def _list_snapshots(self, body: Dict[str, Any]) -> Tuple[int, Any]:
        return 200, {"servers": self._handle.snapshots()}

    def _stats(self, body: Dict[str, Any]) -> Tuple[int, Any]:
        return 200, {"servers": self._handle.stats()}

    def _metrics(self, body: Dict[str, Any]) -> Tuple[int, Any]:
        if self.metrics is None:
            return 404, {"error": "no such route"}
        from phantom_frame.ops.metrics import CONTENT_TYPE

        return 200, TextAnswer(self.metrics.render(), CONTENT_TYPE)

    def _reload(self, body: Dict[str, Any]) -> Tuple[int, Any]:
        if self.reloader is None:
            return 404, {"error": "no such route"}
        result = self.reloader.reload()
        return (200 if result.ok else 400), result.as_json()

    def _top_keys(self, query: Dict[str, Any]) -> Tuple[int, Any]:
        raw = query.get("n", "10")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise BadRequest(f"'n' must be a whole number from 1 to 1000, got {_short(raw)}")
        name = query.get("server")
        servers = [self._handle.server(name)] if name else list(self._handle.servers())
        return 200, {
            "servers": {
                s.name: {
                    "hits": s.decider.top_keys.total,
                    "keys": [
                        {"key": key, "hits": hits, "error": error}
                        for key, hits, error in s.decider.top_keys.top(int(raw))
                    ],
                }
                for s in servers
            }
        }

    def _progress(self, query: Dict[str, Any]) -> Tuple[int, Any]:
        servers = self._handle._snapshot_servers(query.get("server") or None)
        return 200, {
            "servers": {
                s.name: None if s.snapshots.progress is None else s.snapshots.progress.as_json()
                for s in servers
            }
        }
