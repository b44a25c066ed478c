"""
Tests for L{phantom_frame.proxy.decision}: the one decision, built alone
over an in-memory cache on a fake clock.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.lock import Shared
from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.store import MemoryStore, StoredBody
from phantom_frame.proxy import decision as d
from phantom_frame.proxy import negotiation as n
from phantom_frame.proxy.decision import Decider
from phantom_frame.proxy.settings import CreateProxyConfig
from phantom_frame.proxy.view import RequestView, joined_headers

BODY = b"x" * 1000


def view(path: str = "/p", method: bytes = b"GET", **headers: str) -> RequestView:
    """
    @return: a request for C{path} (C{?query} allowed) with C{headers}
        (underscores become dashes).
    """
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    target, _, query = path.encode().partition(b"?")
    return RequestView(method, target, query, joined_headers(raw), raw, "127.0.0.1")


class DeciderTests(SynchronousTestCase):
    """
    L{Decider.decide} gives every kind of decision, and changes nothing.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)

    def decider(self, config: Optional[CreateProxyConfig] = None) -> Decider:
        config = config or CreateProxyConfig("http://origin.test")
        self.cache = ResponseCache("t", MemoryStore(), self.clock, 1 << 20, 10)
        return Decider("t", config, self.cache, self.clock)

    def store(self, key: str = "GET:/p", lifetime: float = math.inf, **fields: Any) -> CacheEntry:
        """
        Store an entry under C{key} through a fill, as the proxy does.
        """
        entry = CacheEntry(
            key=key,
            status=fields.pop("status", 200),
            phrase=b"OK",
            headers=((b"Content-Type", b"text/html"),),
            coding=fields.pop("coding", "identity"),
            body=StoredBody(len(BODY), BODY),
            identity_length=len(BODY),
            stored_at=self.clock.seconds(),
            lifetime=lifetime,
            **fields,
        )
        waiter, _ = self.cache.fill(key, lambda: succeed(Shared(entry)))
        self.successResultOf(waiter)
        return entry

    def test_fill_then_hit(self) -> None:
        """
        An unknown key is a L{Fill}; a stored one a L{Hit} with a L{Full}
        answer; deciding counts nothing (L{Decider.note} does).
        """
        decider = self.decider()
        fill = decider.decide(view())
        self.assertEqual(fill, d.Fill("GET:/p", None, fill.directives))
        entry = self.store()
        hit = decider.decide(view())
        self.assertIsInstance(hit, d.Hit)
        self.assertEqual((hit.key, hit.entry, hit.answer), ("GET:/p", entry, n.Full("identity")))
        self.assertEqual(hit.status.header, b"phantom-frame; hit")
        self.assertEqual(self.cache.hits, 0)
        decider.note(hit)
        self.assertEqual(self.cache.hits, 1)

    def test_head_and_query_keys(self) -> None:
        """
        HEAD shares GET's key; the query is part of it.
        """
        decider = self.decider()
        self.store("GET:/p?a=1")
        self.assertIsInstance(decider.decide(view("/p?a=1", b"HEAD")), d.Hit)
        self.assertIsInstance(decider.decide(view("/p?a=2")), d.Fill)
        self.assertEqual(decider.key_of_target(b"/p?a=1"), "GET:/p?a=1")

    def test_entry_answers(self) -> None:
        """
        Validators give L{NotModified}, ranges L{Partial} or
        L{Unsatisfiable}, a refused coding L{NotAcceptable}, an accepted
        stored coding L{Full} in it.
        """
        decider = self.decider()
        self.store(etag=b'"e"', coding="br")
        answer = lambda **h: decider.decide(view(**h)).answer  # noqa: E731
        self.assertEqual(answer(if_none_match='"e"'), n.NotModified("identity"))
        self.assertEqual(answer(if_none_match='W/"e"', accept_encoding="br"), n.NotModified("br"))
        self.assertEqual(answer(range="bytes=0-9"), n.Partial(0, 9))
        self.assertEqual(answer(range="bytes=5000-"), n.Unsatisfiable())
        self.assertEqual(answer(range="bytes=0-9", if_range='"other"'), n.Full("identity"))
        self.assertEqual(answer(accept_encoding="identity;q=0"), n.NotAcceptable())
        self.assertEqual(answer(accept_encoding="gzip, br"), n.Full("br"))
        # (Immutable, a whole answer in a coding is made once.)
        self.assertIs(answer(accept_encoding="br"), answer(accept_encoding="gzip, br"))

    def test_other_codings(self) -> None:
        """
        A client that does not accept the stored coding gets a L{Full} in
        one phantom-frame can make (one already made beside the entry at
        equal quality), not identity; an identity entry is only ever sent
        as it is.
        """
        decider = self.decider()
        entry = self.store(coding="br")
        answer = lambda **h: decider.decide(view(**h)).answer  # noqa: E731
        self.assertEqual(answer(accept_encoding="gzip, deflate"), n.Full("gzip"))
        self.assertEqual(answer(accept_encoding="gzip;q=0.2, deflate"), n.Full("deflate"))
        self.assertEqual(answer(accept_encoding="gzip, identity;q=0"), n.Full("gzip"))
        entry.alternates = {"deflate": StoredBody(3, b"abc")}
        self.assertEqual(answer(accept_encoding="gzip, deflate"), n.Full("deflate"))
        self.assertEqual(answer(accept_encoding="gzip, deflate;q=0.5"), n.Full("gzip"))
        self.store("GET:/i")
        self.assertEqual(decider.decide(view("/i", accept_encoding="gzip")).answer, n.Full("identity"))

    def test_stale(self) -> None:
        """
        Past its lifetime an entry with C{stale-while-revalidate} is a
        L{Stale} with one refresh; past that allowance, a revalidating
        L{Fill} of it.
        """
        decider = self.decider()
        entry = self.store(lifetime=10, stale_while_revalidate=30)
        self.clock.advance(20)
        stale = decider.decide(view())
        self.assertIsInstance(stale, d.Stale)
        self.assertTrue(stale.refresh)
        self.assertEqual(stale.status.result, "stale")
        self.clock.advance(30)
        self.assertEqual(decider.decide(view()).stale, entry)

    def test_bypasses(self) -> None:
        """
        Exclusions, credentials (prerender policy), strategy C{none} and a
        failing key function are L{Bypass}es with their reasons.
        """
        base = CreateProxyConfig("http://origin.test")
        cases = [
            (base.with_exclude_paths(["/p"]), view(), "excluded"),
            (base, view(authorization="Bearer x"), "authorization"),
            (base.with_cache_strategy("none"), view(), "strategy"),
            (base, view(method=b"POST"), "method"),
            (base.with_cache_key_fn(lambda info: 1 // 0), view(), "key-error"),
        ]
        for config, request, reason in cases:
            decision = self.decider(config).decide(request)
            self.assertIsInstance(decision, d.Bypass)
            self.assertEqual(decision.reason, reason)
        self.flushLoggedErrors(ZeroDivisionError)

    def test_admission(self) -> None:
        """
        C{forward_get_only} refuses other methods with 405; an upgrade is a
        L{Tunnel}, or 501 when tunnels are off.
        """
        base = CreateProxyConfig("http://origin.test")
        self.assertIs(self.decider(base.with_forward_get_only(True)).admit(view(method=b"POST"), False),
                      d.METHOD_NOT_ALLOWED)
        self.assertIs(self.decider(base).admit(view(), True), d.TUNNEL)
        self.assertIs(self.decider(base.with_websocket_enabled(False)).admit(view(), True), d.NO_UPGRADES)
        self.assertIsNone(self.decider(base).admit(view(), False))

    def test_pure_ssg(self) -> None:
        """
        A pure pre-generated server waits for a snapshot being fetched, and
        answers 404 for anything else without going to the origin.
        """
        config = CreateProxyConfig("http://origin.test").with_proxy_mode("pre_generate")
        decider = self.decider(config)
        self.assertIs(decider.decide(view()), d.NOT_PRE_GENERATED)
        self.cache.fill("GET:/p", Deferred)
        self.assertEqual(decider.decide(view()), d.Await("GET:/p"))
        self.assertIs(decider.decide(view(method=b"POST")), d.METHOD_NOT_ALLOWED)

    def test_request_directives(self) -> None:
        """
        Under the http policy, C{no-cache} revalidates a fresh entry,
        C{only-if-cached} is 504 on a miss, C{no-store} bypasses.
        """
        config = CreateProxyConfig("http://origin.test")._with(cache_policy="http")
        decider = self.decider(config)
        self.assertIs(decider.decide(view(cache_control="only-if-cached")), d.ONLY_IF_CACHED)
        self.assertEqual(decider.decide(view(cache_control="no-store")).reason, "no-store")
        entry = self.store(lifetime=100)
        self.assertEqual(decider.decide(view(cache_control="no-cache")).stale, entry)
        self.assertIsInstance(decider.decide(view(cache_control="max-age=50")), d.Hit)

    def test_vary(self) -> None:
        """
        A variant is found by the request's normalised header values.
        """
        decider = self.decider()
        self.store(vary=("accept-language",), variant=("fr,en",))
        self.assertIsInstance(decider.decide(view(accept_language="fr, en")), d.Hit)
        self.assertIsInstance(decider.decide(view(accept_language="de")), d.Fill)


class DecidedAgainTests(SynchronousTestCase):
    """
    A view decided again (as the HTTP/1.1 channel's kept views are) is
    decided as a new view of the same request would be: what the decision
    keeps on it follows the cache.
    """

    setUp = DeciderTests.setUp
    decider = DeciderTests.decider
    store = DeciderTests.store

    def test_entry_changes(self) -> None:
        """
        The answer follows the entry: a new ETag (headers replaced, as a
        revalidation does), a coding made beside it, a replaced entry.
        """
        decider = self.decider()
        entry = self.store(etag=b'"a"', coding="br")
        kept = view(if_none_match='"a"', accept_encoding="gzip")
        self.assertEqual(decider.decide(kept).answer, n.NotModified("gzip"))
        self.assertIsNotNone(kept.prepared)
        entry.etag = b'"b"'
        self.cache.update(entry, entry.headers + ((b"ETag", b'"b"'),))
        self.assertEqual(decider.decide(kept).answer, n.Full("gzip"))
        fresh = view(if_none_match='"a"', accept_encoding="gzip")
        self.assertEqual(decider.decide(kept).answer, decider.decide(fresh).answer)
        other = view(accept_encoding="gzip, deflate")
        self.assertEqual(decider.decide(other).answer, n.Full("gzip"))
        self.cache._keep_coding(StoredBody(7, b"deflate"), entry, "deflate")
        self.assertEqual(decider.decide(other).answer, n.Full("deflate"))
        replaced = self.store(etag=b'"a"')
        hit = decider.decide(kept)
        self.assertIs(hit.entry, replaced)
        self.assertEqual(hit.answer, n.NotModified("identity"))

    def test_status_follows_age(self) -> None:
        """
        The C{ttl} of a kept view's hit counts down as the entry ages, and
        past its lifetime the view's decision is no longer a hit.
        """
        decider = self.decider()
        self.store(lifetime=100)
        kept = view()
        self.assertEqual(decider.decide(kept).status.header, b"phantom-frame; hit; ttl=100")
        self.clock.advance(30.5)
        self.assertEqual(decider.decide(kept).status.header, b"phantom-frame; hit; ttl=69")
        self.clock.advance(70)
        self.assertNotIsInstance(decider.decide(kept), d.Hit)

    def test_entry_held_weakly(self) -> None:
        """
        A kept view does not keep an entry the cache dropped alive.
        """
        import gc
        import weakref

        decider = self.decider()
        entry = self.store()
        kept = view()
        decider.decide(kept)
        alive = weakref.ref(entry)
        del entry
        self.cache.invalidate_all()
        gc.collect()
        self.assertIsNone(alive())
        self.assertIsInstance(decider.decide(kept), d.Fill)

    def test_another_decider(self) -> None:
        """
        A view kept by one server's decider is decided afresh by another's
        (a reload builds new servers), and a webhook's key is never kept.
        """
        first = self.decider()
        self.store()
        kept = view()
        self.assertIsInstance(first.decide(kept), d.Hit)
        second = self.decider()
        self.assertIsInstance(second.decide(kept), d.Fill)
        self.assertIs(kept.prepared.decider, second)
        self.store("custom")
        self.assertEqual(second.decide(kept, key="custom").key, "custom")
        self.assertIsInstance(second.decide(kept), d.Fill)
