"""
The control site: cache refresh and invalidation, statistics and health.

Every route but C{GET /health} requires C{Authorization: Bearer TOKEN} when
a token is configured; the check comes before anything else is looked at.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Callable, Dict, Optional, Tuple

from twisted.logger import Logger
from twisted.web.resource import Resource

from .library import CacheHandle, UnknownServer

log = Logger()

#: Largest control request body accepted.
MAX_BODY = 1024 * 1024


class BadRequest(Exception):
    """
    The request body is not what the route expects (answered 400).
    """


def _json(request, code: int, payload: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    body = json.dumps(payload, sort_keys=True).encode("utf-8") + b"\n"
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


class ControlResource(Resource):
    """
    The control API over a L{CacheHandle}.
    """

    isLeaf = True

    def __init__(self, handle: CacheHandle, token: Optional[str] = None) -> None:
        """
        @param handle: the caches to act on.
        @param token: the bearer token every route but C{/health} requires;
            C{None} leaves the site open (it listens on localhost by default).
        """
        super().__init__()
        self._handle = handle
        self._expected = None if token is None else b"Bearer " + token.encode("utf-8")
        self._routes: Dict[Tuple[bytes, bytes], Callable[[Any], Tuple[int, Any]]] = {
            (b"POST", b"/refresh-cache"): self._invalidate_all,
            (b"POST", b"/invalidate_all"): self._invalidate_all,
            (b"POST", b"/invalidate"): self._invalidate,
            (b"POST", b"/bulk_invalidate"): self._bulk_invalidate,
            (b"GET", b"/stats"): self._stats,
        }

    def _authorized(self, request) -> bool:
        if self._expected is None:
            return True
        given = request.getHeader(b"authorization") or b""
        return hmac.compare_digest(given, self._expected)

    def render(self, request) -> bytes:
        """
        Dispatch: health, then auth, then route, then body.
        """
        path = request.path.rstrip(b"/") or b"/"
        method = request.method
        if path == b"/health":
            if method not in (b"GET", b"HEAD"):
                request.setHeader(b"allow", b"GET, HEAD")
                return _json(request, 405, {"error": "method not allowed"})
            return _json(request, 200, {"status": "ok"})
        if not self._authorized(request):
            request.setHeader(b"www-authenticate", b'Bearer realm="phantom-frame"')
            return _json(request, 401, {"error": "unauthorized"})
        route = self._routes.get((b"GET" if method == b"HEAD" else method, path))
        if route is None:
            allowed = sorted(m.decode() for m, p in self._routes if p == path)
            if allowed:
                request.setHeader(b"allow", ", ".join(allowed).encode())
                return _json(request, 405, {"error": "method not allowed"})
            return _json(request, 404, {"error": "no such route"})
        try:
            body = self._body(request) if method == b"POST" else {}
            code, payload = route(body)
        except BadRequest as e:
            return _json(request, 400, {"error": str(e)})
        except UnknownServer as e:
            return _json(request, 404, {"error": f"unknown server {e.args[0]!r}"})
        return _json(request, code, payload)

    def _body(self, request) -> Dict[str, Any]:
        content = request.content
        content.seek(0, 2)
        size = content.tell()
        if size == 0:
            return {}
        if size > MAX_BODY:
            raise BadRequest("request body too large")
        content.seek(0)
        try:
            value = json.loads(content.read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"invalid JSON: {e}")
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
        return 200, {"ok": True, "invalidated": dropped}

    def _invalidate(self, body: Dict[str, Any]) -> Tuple[int, Any]:
        pattern = self._field(body, "pattern", str)
        server = self._server(body)
        try:
            dropped = self._handle.invalidate(pattern, server)
        except ValueError as e:
            raise BadRequest(f"bad pattern {pattern!r}: {e}")
        log.info("control: invalidated {pattern!r} ({count} dropped)", pattern=pattern, count=dropped)
        return 200, {"ok": True, "pattern": pattern, "invalidated": dropped}

    def _bulk_invalidate(self, body: Dict[str, Any]) -> Tuple[int, Any]:
        patterns = self._field(body, "patterns", list)
        server = self._server(body)
        results = []
        for pattern in patterns:
            try:
                count = self._handle.invalidate(pattern, server)
            except ValueError as e:
                results.append({"pattern": pattern, "ok": False, "error": str(e)})
            else:
                results.append({"pattern": pattern, "ok": True, "invalidated": count})
        succeeded = sum(1 for r in results if r["ok"])
        return 200, {
            "requested": len(patterns),
            "succeeded": succeeded,
            "failed": len(patterns) - succeeded,
            "results": results,
        }

    def _stats(self, body: Dict[str, Any]) -> Tuple[int, Any]:
        return 200, {"servers": self._handle.stats()}
