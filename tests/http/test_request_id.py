"""
Tests for request ids (L{phantom_frame.http.request_id}): kept from the
client or made, sent to the origin, on every answer (fast-path hits
included) and in every access-log line.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import parse_config
from phantom_frame.http.request_id import MAX_LENGTH, acceptable, new_request_id, request_id

from tests.memory import Proxy, logged
from tests.origin import Origin

CLIENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class RequestIdTests(SynchronousTestCase):
    """
    Which ids are kept, and what new ones look like.
    """

    def test_acceptable(self) -> None:
        """
        1 to 128 visible ASCII characters are kept; empty, longer, spaces,
        control or non-ASCII characters are not.
        """
        for good in ("a", "x" * MAX_LENGTH, "req-1:2/3+4=~!", CLIENT_ID):
            self.assertTrue(acceptable(good), good)
        for bad in ("", "x" * (MAX_LENGTH + 1), "a b", "a\tb", "caf\xe9", "a\x7fb", "a\x00"):
            self.assertFalse(acceptable(bad), repr(bad))

    def test_new(self) -> None:
        """
        New ids are short, acceptable and all different.
        """
        ids = [new_request_id() for _ in range(1000)]
        self.assertEqual(len(set(ids)), 1000)
        self.assertTrue(all(acceptable(i) and len(i) <= 24 for i in ids))
        self.assertEqual(len({i.rsplit("-", 1)[0] for i in ids}), 1)

    def test_choice(self) -> None:
        """
        One acceptable client value is kept; none, two or a bad one give a
        new id.
        """
        self.assertEqual(request_id([b"abc"]), b"abc")
        for given in (None, [], [b"a", b"b"], [b"bad id"], [b"x" * 129]):
            chosen = request_id(given)
            self.assertNotIn(chosen, (b"a", b"b", b"bad id", b"x" * 129))
            self.assertTrue(acceptable(chosen.decode()))


class EndToEndTests(SynchronousTestCase):
    """
    Request ids through a whole proxy in memory.
    """

    def setUp(self) -> None:
        """
        Keep every log event, and make an origin.
        """
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.origin = Origin()

    def proxy(self, **root: Any) -> Proxy:
        """
        @return: a proxy with one C{"*"} server in front of L{Origin}.
        """
        return Proxy(self, parse_config({**root, "server": {"site": {"proxy_url": "http://origin.example"}}}), self.origin)

    def answer_id(self, proxy: Proxy, path: str, given: Optional[str] = None) -> str:
        """
        @return: the C{X-Request-Id} of the answer to C{GET path} (sent with
            C{given} as its id, when given); there is exactly one.
        """
        headers = None if given is None else {"X-Request-Id": given}
        response, _ = proxy.get(self, path, headers=headers)
        [value] = response.headers.getRawHeaders(b"x-request-id")
        return value.decode()

    def test_everyAnswer(self) -> None:
        """
        A miss, a fast-path hit, a stock-path hit, a pass-through and a
        request no server takes each answer with their own new id; the
        origin gets the id of the requests it sees.
        """
        proxy = self.proxy()
        fast = proxy.site.fastHit
        miss = self.answer_id(proxy, "/a")
        self.assertEqual(self.origin.requests[-1]["headers"]["x-request-id"], [miss])
        before = fast.answered
        hit = self.answer_id(proxy, "/a")
        self.assertEqual(fast.answered, before + 1)
        # A precondition the fast path leaves to the stock path.
        response, _ = proxy.get(self, "/a", headers={"If-Match": '"nothing"'})
        [stock] = response.headers.getRawHeaders(b"x-request-id")
        self.assertEqual(fast.answered, before + 1)
        bypass = self.answer_id(proxy, "/cookie")
        self.assertEqual(self.origin.requests[-1]["headers"]["x-request-id"], [bypass])
        ids = [miss, hit, stock.decode(), bypass]
        self.assertEqual(len(set(ids)), 4)
        self.assertTrue(all(acceptable(i) for i in ids))

    def test_clientIdKept(self) -> None:
        """
        An acceptable client id is answered, forwarded and logged as it is,
        on the stock path and on the fast path.
        """
        proxy = self.proxy()
        self.assertEqual(self.answer_id(proxy, "/a", CLIENT_ID), CLIENT_ID)
        self.assertEqual(self.origin.requests[-1]["headers"]["x-request-id"], [CLIENT_ID])
        before = proxy.site.fastHit.answered
        self.assertEqual(self.answer_id(proxy, "/a", "hit-42"), "hit-42")
        self.assertEqual(proxy.site.fastHit.answered, before + 1)
        lines = [formatEvent(e) for e in logged(self.events)]
        self.assertIn(f" request_id={CLIENT_ID} cache=miss ", lines[0])
        self.assertIn(" request_id=hit-42 cache=hit ", lines[1])

    def test_badClientIdReplaced(self) -> None:
        """
        A client id that is too long or has a space is replaced, on the
        stock path and on the fast path; the origin gets the replacement.
        """
        proxy = self.proxy()
        long = "x" * 129
        replaced = self.answer_id(proxy, "/a", long)
        self.assertNotEqual(replaced, long)
        self.assertEqual(self.origin.requests[-1]["headers"]["x-request-id"], [replaced])
        before = proxy.site.fastHit.answered
        self.assertNotIn(self.answer_id(proxy, "/a", "has space"), ("has space", replaced))
        self.assertEqual(proxy.site.fastHit.answered, before + 1)

    def test_json(self) -> None:
        """
        JSON access-log lines carry the id, fast-path hits included.
        """
        proxy = self.proxy(log_format="json")
        miss = self.answer_id(proxy, "/a")
        hit = self.answer_id(proxy, "/a")
        records = [json.loads(formatEvent(e)) for e in logged(self.events)]
        self.assertEqual([(r["cache"], r["request_id"]) for r in records], [("miss", miss), ("hit", hit)])


class Echoing(Origin):
    """
    An origin that answers every request with the request id it got.
    """

    def render(self, request: Any) -> Any:
        """
        Answer as L{Origin} does, with the request's C{X-Request-Id}.
        """
        request.setHeader(b"x-request-id", request.getHeader(b"x-request-id") or b"origin-made")
        return super().render(request)


class StoredIdTests(SynchronousTestCase):
    """
    The origin's C{X-Request-Id} on a stored answer is not stored.
    """

    def test_notReplayed(self) -> None:
        """
        Hits answer with their own id only, not the id of the request
        whose answer was stored, on both paths.
        """
        proxy = Proxy(self, parse_config({"server": {"site": {"proxy_url": "http://origin.example"}}}), Echoing())
        proxy.get(self, "/a", headers={"X-Request-Id": "first"})
        for headers in ({"X-Request-Id": "second"}, {"X-Request-Id": "third", "If-Match": '"x"'}):
            response, _ = proxy.get(self, "/a", headers=headers)
            self.assertEqual(response.headers.getRawHeaders(b"x-request-id"), [headers["X-Request-Id"].encode()])
        self.assertEqual(proxy.site.fastHit.answered, 1)
