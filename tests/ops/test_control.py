"""
Tests for L{phantom_frame.ops.control}: auth first, then body, then server.
"""

from __future__ import annotations

import json
from typing import List

from treq.testing import StubTreq
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.store import StoredBody
from phantom_frame.cache.threads import runInline
from phantom_frame.cache.patterns import MAX_PATTERN
from phantom_frame.ops.control import MAX_BODY, ControlResource

TOKEN = "s3cret"
AUTH = {"Authorization": "Bearer " + TOKEN}


def due(clock: Clock) -> List[IDelayedCall]:
    """
    @return: the calls due now.
    """
    return [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]


def turn(clock: Clock) -> None:
    """
    Run the calls due now, as one turn of a reactor's loop would: not the
    calls they schedule for now in turn.
    """
    for call in due(clock):
        clock.calls.remove(call)
        call.func(*call.args, **call.kw)


class ControlTests(SynchronousTestCase):
    """
    The control routes over two servers with a few stored entries.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        _, self.handle = create_proxy(
            CreateProxyConfig("http://127.0.0.1:1"), self.clock, agent=object(), name="site", runner=runInline
        )
        create_proxy(
            CreateProxyConfig("http://127.0.0.1:2"),
            self.clock,
            agent=object(),
            name="api",
            handle=self.handle,
            runner=runInline,
        )
        for server in self.handle.servers():
            for key in ("GET:/a", "GET:/b/1", "GET:/b/2"):
                server.cache._store(
                    CacheEntry(key, 200, b"OK", (), "identity", StoredBody(1, b"x", None), 1, 0.0)
                )
        self.client = StubTreq(ControlResource(self.handle, TOKEN))

    def call(self, method: str, path: str, body=None, headers=AUTH, raw=None):
        """
        @return: the status code and the decoded JSON answer.
        """
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        response = self.successResultOf(
            self.client.request(method, "http://control" + path, headers=headers, data=data)
        )
        content = self.successResultOf(response.content())
        return response, json.loads(content)

    def counts(self):
        return {name: stats["entries"] for name, stats in self.handle.stats().items()}

    def test_auth_required(self) -> None:
        """
        Without the right bearer token every route but C{/health} answers
        401 with C{WWW-Authenticate: Bearer}, before looking at the body.
        """
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response, answer = self.call("POST", "/refresh-cache", headers=headers, raw=b"{bad json")
            self.assertEqual(response.code, 401)
            self.assertTrue(response.headers.getRawHeaders(b"www-authenticate")[0].startswith(b"Bearer"))
        self.assertEqual(self.counts(), {"site": 3, "api": 3})
        response, answer = self.call("GET", "/health", headers={})
        self.assertEqual((response.code, answer), (200, {"status": "ok"}))

    def test_every_route_requires_auth(self) -> None:
        """
        Every route but C{/health} answers 401 without the token, whatever
        its method and body.
        """
        resource = ControlResource(self.handle, TOKEN)
        routes = sorted({path.decode() for _, path in resource._routes})
        self.assertEqual(len(routes), 17)
        for path in routes:
            for method in ("GET", "POST"):
                response, _ = self.call(method, path, headers={}, raw=b"{bad")
                self.assertEqual(response.code, 401, (method, path))
        self.assertEqual(self.counts(), {"site": 3, "api": 3})

    def test_refresh_cache(self) -> None:
        """
        C{POST /refresh-cache} and C{/invalidate_all} clear every server,
        or the one named.
        """
        response, answer = self.call("POST", "/invalidate_all", {"server": "api"})
        self.assertEqual((response.code, answer["invalidated"]), (200, 3))
        self.assertEqual(self.counts(), {"site": 3, "api": 0})
        response, answer = self.call("POST", "/refresh-cache")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.counts(), {"site": 0, "api": 0})

    def test_invalidate(self) -> None:
        """
        C{POST /invalidate} drops matching keys before answering.
        """
        response, answer = self.call("POST", "/invalidate", {"pattern": "/b/*", "server": "site"})
        self.assertEqual((response.code, answer["invalidated"]), (200, 2))
        self.assertEqual(self.counts(), {"site": 1, "api": 3})

    def test_bulk_invalidate(self) -> None:
        """
        C{POST /bulk_invalidate} answers a summary with one result per
        pattern, failures included.
        """
        response, answer = self.call("POST", "/bulk_invalidate", {"patterns": ["/a", "", "GET:/b/1"]})
        self.assertEqual(response.code, 200)
        self.assertEqual((answer["requested"], answer["succeeded"], answer["failed"]), (3, 2, 1))
        self.assertEqual([r["ok"] for r in answer["results"]], [True, False, True])
        self.assertEqual(self.counts(), {"site": 1, "api": 1})

    def test_bulk_one_pattern_per_turn(self) -> None:
        """
        With a clock, C{POST /bulk_invalidate} walks the caches for one
        pattern per turn of the event loop, and answers after the last.
        """
        self.client = StubTreq(ControlResource(self.handle, TOKEN, clock=self.clock))
        d = self.client.request(
            "POST", "http://control/bulk_invalidate", headers=AUTH, data=json.dumps({"patterns": ["/a", "/b/1", "/b/2"]}).encode()
        )
        self.assertEqual(self.counts(), {"site": 2, "api": 2})
        turn(self.clock)
        self.client.flush()
        self.assertNoResult(d)
        self.assertEqual(self.counts(), {"site": 1, "api": 1})
        turn(self.clock)
        self.client.flush()
        response = self.successResultOf(d)
        answer = json.loads(self.successResultOf(response.content()))
        self.assertEqual((response.code, answer["succeeded"]), (200, 3))
        self.assertEqual([r["invalidated"] for r in answer["results"]], [2, 2, 2])
        self.assertEqual(self.counts(), {"site": 0, "api": 0})
        self.assertEqual(due(self.clock), [])

    def test_bulk_snapshots_one_per_turn(self) -> None:
        """
        With a clock, a bulk snapshot call starts one path's operation per
        turn of the event loop, and answers once every one has finished.
        """
        config = CreateProxyConfig("http://127.0.0.1:3").with_proxy_mode("pre_generate")
        create_proxy(config, self.clock, agent=object(), name="ssg", handle=self.handle, runner=runInline)
        self.clock.advance(0)
        self.assertEqual(due(self.clock), [])
        self.client = StubTreq(ControlResource(self.handle, TOKEN, clock=self.clock))
        body = json.dumps({"paths": ["/x", "/y", "/z"], "server": "ssg"}).encode()
        d = self.client.request("POST", "http://control/bulk_remove_snapshot", headers=AUTH, data=body)
        self.client.flush()
        self.assertNoResult(d)
        self.assertEqual(len(due(self.clock)), 1)
        turn(self.clock)
        self.client.flush()
        self.assertNoResult(d)
        turn(self.clock)
        self.client.flush()
        response = self.successResultOf(d)
        answer = json.loads(self.successResultOf(response.content()))
        self.assertEqual((response.code, answer["requested"], answer["succeeded"]), (200, 3, 3))
        self.assertEqual(due(self.clock), [])

    def test_bad_bodies(self) -> None:
        """
        Invalid JSON, a non-object, a missing or mistyped field: 400.
        """
        for raw in (b"{bad", b"[1]", b'{"pattern": 5}', b"{}", b'{"pattern": "/a", "server": 3}'):
            response, answer = self.call("POST", "/invalidate", raw=raw)
            self.assertEqual(response.code, 400, raw)
            self.assertIn("error", answer)

    def test_scheme_any_case(self) -> None:
        """
        The C{Bearer} scheme is matched whatever its case.
        """
        for scheme in ("bearer", "BEARER", "BeArEr"):
            response, _ = self.call("GET", "/stats", headers={"Authorization": f"{scheme} {TOKEN}"})
            self.assertEqual(response.code, 200, scheme)

    def test_two_authorization_headers(self) -> None:
        """
        Two C{Authorization} headers are 400, even when the second holds the
        token, and the body is not looked at.
        """
        for values in (["Bearer wrong", "Bearer " + TOKEN], ["Bearer " + TOKEN] * 2):
            response, answer = self.call("POST", "/refresh-cache", headers={"Authorization": values})
            self.assertEqual(response.code, 400)
            self.assertIn("Authorization", answer["error"])
        self.assertEqual(self.counts(), {"site": 3, "api": 3})

    def test_deep_json(self) -> None:
        """
        JSON nested deeper than 32 levels is 400, 100,000 open brackets
        included; 32 levels are accepted, and brackets inside strings do
        not count.
        """
        for raw in (b"[" * 100000, b'{"pattern": "/a", "x": ' + b"[" * 32 + b"]" * 32 + b"}"):
            response, answer = self.call("POST", "/invalidate", raw=raw)
            self.assertEqual(response.code, 400)
            self.assertIn("nested deeper than 32 levels", answer["error"])
        raw = b'{"pattern": "/a", "x": ' + b"[" * 31 + b"]" * 31 + b"}"
        response, answer = self.call("POST", "/invalidate", raw=raw)
        self.assertEqual((response.code, answer["invalidated"]), (200, 2))
        response, answer = self.call("POST", "/invalidate", {"pattern": "/b/" + "[" * 100 + "*"})
        self.assertEqual((response.code, answer["invalidated"]), (200, 0))

    def test_body_too_large(self) -> None:
        """
        A body over 1 MiB reaching the resource is 413; one of exactly
        1 MiB is read.
        """
        body = b'{"pattern": "/a"}'
        response, answer = self.call("POST", "/invalidate", raw=body + b" " * (MAX_BODY + 1 - len(body)))
        self.assertEqual(response.code, 413)
        response, answer = self.call("POST", "/invalidate", raw=body + b" " * (MAX_BODY - len(body)))
        self.assertEqual((response.code, answer["invalidated"]), (200, 2))

    def test_long_pattern(self) -> None:
        """
        A pattern over 4 KiB is 400, with an error that does not echo it;
        in a bulk call it is one failed result. A pattern of 4 KiB is
        accepted.
        """
        pattern = "/u" + "*a" * 200000
        response, answer = self.call("POST", "/invalidate", {"pattern": pattern})
        self.assertEqual(response.code, 400)
        self.assertLess(len(answer["error"]), 200)
        response, answer = self.call("POST", "/bulk_invalidate", {"patterns": [pattern, "/a"]})
        self.assertEqual(response.code, 200)
        self.assertEqual([r["ok"] for r in answer["results"]], [False, True])
        response, answer = self.call("POST", "/invalidate", {"pattern": "/b" + "*" * (MAX_PATTERN - 2)})
        self.assertEqual((response.code, answer["invalidated"]), (200, 4))

    def test_order_of_errors(self) -> None:
        """
        A bad body is reported (400) before an unknown server (404).
        """
        response, _ = self.call("POST", "/invalidate", {"server": "nope"})
        self.assertEqual(response.code, 400)
        response, answer = self.call("POST", "/invalidate", {"pattern": "*", "server": "nope"})
        self.assertEqual(response.code, 404)
        self.assertEqual(self.counts(), {"site": 3, "api": 3})

    def test_stats(self) -> None:
        """
        C{GET /stats} lists each server's counters.
        """
        response, answer = self.call("GET", "/stats")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            set(answer["servers"]["site"]),
            {"entries", "bytes", "hits", "misses", "stale", "coalesced", "evictions"},
        )
        self.assertEqual(answer["servers"]["api"]["entries"], 3)

    def test_unknown_route_and_method(self) -> None:
        """
        Unknown routes get 404; a known route with the wrong method 405.
        """
        response, _ = self.call("GET", "/nope")
        self.assertEqual(response.code, 404)
        response, _ = self.call("GET", "/invalidate")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"POST"])

    def test_open_without_token(self) -> None:
        """
        Without a configured token the routes are open (the site listens on
        localhost by default).
        """
        self.client = StubTreq(ControlResource(self.handle, None))
        response, _ = self.call("POST", "/refresh-cache", headers={})
        self.assertEqual(response.code, 200)
