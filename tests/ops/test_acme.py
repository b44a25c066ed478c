"""
Tests for L{phantom_frame.ops.acme} on a fake clock: the challenge
resource behind the router, the service's start, daily checks, renewals,
retries with back-off and stop, and the issuer's steps.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import parse_config
from phantom_frame.config.acme import CHALLENGE_PATH, AcmeConfig
from phantom_frame.http.routing import Router
from phantom_frame.ops.acme import AcmeService, ChallengeResource, Issuer, backoff
from phantom_frame.ops.acme_client import AcmeError, Pending, Stopped, connect, finish, new_order

from ..memory import Proxy
from ..origin import Origin
from .support_acme import DAY, NOW, FakeIssuer, certificate, serial


class BackoffTests(SynchronousTestCase):
    """
    L{backoff}: from a minute, doubling, at most a day.
    """

    def test_delays(self) -> None:
        """
        60 s after the first failure, then 120, 240... up to 86400.
        """
        self.assertEqual(
            [backoff(n) for n in range(1, 13)],
            [60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 30720, 61440, 86400],
        )
        self.assertEqual(backoff(1000), 86400)


class ChallengeTests(SynchronousTestCase):
    """
    L{ChallengeResource} mounted in front of a proxy server.
    """

    def setUp(self) -> None:
        self.origin = Origin()
        config = parse_config({"server": {"site": {"proxy_url": "http://origin.example"}}})
        self.proxy = Proxy(self, config, self.origin)
        self.challenges = ChallengeResource()
        router = self.proxy.site.resource
        self.proxy.site.resource = Router(list(router.routes) + [(CHALLENGE_PATH, self.challenges, None)])

    def test_answered(self) -> None:
        """
        A published token is answered with its key authorization, as text,
        never cached; it is 404 once withdrawn. The origin sees none of it.
        """
        self.challenges.publish("tok_EN-1", "tok_EN-1.thumbprint")
        response, body = self.proxy.get(self, CHALLENGE_PATH + "/tok_EN-1")
        self.assertEqual((response.code, body), (200, b"tok_EN-1.thumbprint"))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain"])
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
        response, body = self.proxy.get(self, CHALLENGE_PATH + "/tok_EN-1", method="HEAD")
        self.assertEqual((response.code, body), (200, b""))
        self.assertEqual(self.challenges.tokens, ("tok_EN-1",))
        self.challenges.withdraw("tok_EN-1")
        response, _ = self.proxy.get(self, CHALLENGE_PATH + "/tok_EN-1")
        self.assertEqual(response.code, 404)
        self.assertEqual(self.origin.hits, {})

    def test_others(self) -> None:
        """
        Unknown tokens, deeper paths and the prefix alone are 404; other
        methods 405.
        """
        self.challenges.publish("t", "t.x")
        for path in ("/u", "/t/x", "", "/"):
            response, _ = self.proxy.get(self, CHALLENGE_PATH + path)
            self.assertEqual(response.code, 404, path)
        response, _ = self.proxy.get(self, CHALLENGE_PATH + "/t", method="POST")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD"])
        self.assertEqual(self.origin.hits, {})

    def test_notTheFastPath(self) -> None:
        """
        The channel's fast path answers cached hits of the proxy server,
        but leaves the challenge path to the stock path even when the
        server has that very path cached.
        """
        path = CHALLENGE_PATH + "/tok"
        self.proxy.site.resource = Router([(b, r, n) for b, r, n in self.proxy.site.resource.routes if n])
        self.proxy.get(self, path)
        self.proxy.get(self, path)
        self.assertEqual(self.proxy.site.fastHit.answered, 1)
        self.proxy.site.resource = Router(
            list(self.proxy.site.resource.routes) + [(CHALLENGE_PATH, self.challenges, None)]
        )
        self.challenges.publish("tok", "tok.x")
        response, body = self.proxy.get(self, path)
        self.assertEqual((response.code, body), (200, b"tok.x"))
        self.assertEqual(self.proxy.site.fastHit.answered, 1)
        self.assertEqual(self.origin.hits[path], 1)


class ServiceTests(SynchronousTestCase):
    """
    L{AcmeService} with an issuer the test answers, on a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.storage = os.path.abspath(self.mktemp())
        self.config = AcmeConfig(
            directory="https://acme.example/dir",
            email="admin@example.com",
            domains=("example.com", "www.example.com"),
            storage=self.storage,
        )
        self.issuer = FakeIssuer()

    def service(self) -> AcmeService:
        """
        @return: a started service, stopped when the test ends.
        """
        acme = AcmeService(self.config, None, clock=self.clock, issuer=self.issuer)
        acme.startService()
        self.addCleanup(lambda: acme.running and acme.stopService())
        return acme

    def store(self, pems: Tuple[bytes, bytes]) -> None:
        """
        Put a certificate in the storage directory.
        """
        os.makedirs(self.storage, exist_ok=True)
        for name, data in zip(("fullchain.pem", "privkey.pem"), pems):
            with open(os.path.join(self.storage, name), "wb") as f:
                f.write(data)

    def messages(self) -> List[str]:
        """
        @return: the text of the service's log events so far.
        """
        return [formatEvent(e) for e in self.events if e.get("log_namespace") == "phantom_frame.ops.acme"]

    def test_storageMade(self) -> None:
        """
        The storage directory is made C{0700} when the service is built.
        """
        AcmeService(self.config, None, clock=self.clock, issuer=self.issuer)
        self.assertEqual(os.stat(self.storage).st_mode & 0o777, 0o700)

    def test_nothingStored(self) -> None:
        """
        With nothing stored, a certificate is obtained at start; HTTPS has
        none until it arrives, then serves it.
        """
        acme = self.service()
        self.assertEqual(len(self.issuer.attempts), 1)
        self.assertFalse(acme.context.ready)
        waiting = acme.next_certificate()
        pems = certificate(self.config.domains)
        self.issuer.attempts[0].callback(pems)
        self.assertTrue(acme.context.ready)
        self.assertEqual(self.successResultOf(waiting).serial_number, serial(pems[0]))
        self.assertEqual(acme.certificate.serial_number, serial(pems[0]))
        self.assertIn(
            "ACME: obtaining a certificate for example.com, www.example.com from"
            " https://acme.example/dir: none is stored",
            self.messages(),
        )

    def test_storedUsed(self) -> None:
        """
        A stored certificate that covers the domains with more than 30 days
        left is served at once, without an attempt; the daily check renews
        it once 30 days or less are left.
        """
        pems = certificate(self.config.domains, end=NOW + 60 * DAY)
        self.store(pems)
        acme = self.service()
        self.assertTrue(acme.context.ready)
        self.assertEqual(acme.certificate.serial_number, serial(pems[0]))
        self.assertEqual(self.issuer.attempts, [])
        self.clock.advance(29 * DAY)
        self.assertEqual(self.issuer.attempts, [])
        self.clock.advance(DAY)
        self.assertEqual(len(self.issuer.attempts), 1)
        self.assertIn(
            "ACME: the certificate for example.com, www.example.com expires in 30 day(s): renewing",
            self.messages(),
        )
        self.clock.advance(DAY)
        self.assertEqual(len(self.issuer.attempts), 1)
        renewed = certificate(self.config.domains, end=NOW + 150 * DAY)
        self.issuer.attempts[0].callback(renewed)
        self.assertEqual(acme.certificate.serial_number, serial(renewed[0]))
        self.clock.advance(10 * DAY)
        self.assertEqual(len(self.issuer.attempts), 1)

    def test_storedNotUsed(self) -> None:
        """
        A stored certificate that misses a domain or has expired is not
        served; one with 30 days or less left is served while a new one is
        obtained.
        """
        cases = [
            (certificate(["example.com"]), False, "it does not cover www.example.com"),
            (
                certificate(self.config.domains, NOW - 90 * DAY, NOW - DAY),
                False,
                "it expired on 2029-12-31 00:00 UTC",
            ),
            (
                certificate(self.config.domains, end=NOW + 10 * DAY),
                True,
                "it expires on 2030-01-11 00:00 UTC, within 30 days",
            ),
        ]
        for pems, served, reason in cases:
            self.store(pems)
            self.issuer = FakeIssuer()
            acme = self.service()
            self.assertEqual(acme.context.ready, served, reason)
            self.assertEqual(len(self.issuer.attempts), 1, reason)
            self.assertIn(
                "ACME: obtaining a certificate for example.com, www.example.com from"
                f" https://acme.example/dir: the stored one is not used: {reason}",
                self.messages(),
            )
            self.successResultOf(acme.stopService())

    def test_backoff(self) -> None:
        """
        A failed attempt is logged once with its reason and retried after
        a minute, then two, four... up to a day; the daily check adds no
        attempt meanwhile. A success ends the retries.
        """
        acme = self.service()
        for attempt in range(1, 13):
            self.assertEqual(len(self.issuer.attempts), attempt)
            self.issuer.attempts[-1].errback(AcmeError(f"example.com: refused {attempt}"))
            warnings = [e for e in self.events if e.get("log_level") and e["log_level"].name == "warn"]
            self.assertEqual(len(warnings), attempt)
            delay = backoff(attempt)
            self.assertEqual(
                formatEvent(warnings[-1]),
                f"ACME: no certificate for example.com, www.example.com from https://acme.example/dir"
                f" (attempt {attempt}): example.com: refused {attempt}; next attempt in {delay:g} s",
            )
            self.clock.advance(delay - 1)
            self.assertEqual(len(self.issuer.attempts), attempt)
            self.clock.advance(1)
        self.assertEqual(acme.failures, 12)
        self.issuer.attempts[-1].callback(certificate(self.config.domains))
        self.assertEqual(acme.failures, 0)
        self.assertTrue(acme.context.ready)
        self.clock.advance(7 * DAY)
        self.assertEqual(len(self.issuer.attempts), 13)

    def test_failedRenewalKeepsServing(self) -> None:
        """
        While renewals fail, the certificate in use is still served.
        """
        pems = certificate(self.config.domains, end=NOW + 31 * DAY)
        self.store(pems)
        acme = self.service()
        self.clock.advance(DAY)
        self.issuer.attempts[0].errback(Failure(ConnectionRefusedError(111, "Connection refused")))
        self.assertEqual(acme.certificate.serial_number, serial(pems[0]))
        self.assertTrue(acme.context.ready)
        self.assertIn("(attempt 1): ConnectionRefusedError: [Errno 111] Connection refused;", self.messages()[-1])

    def test_unusableIssued(self) -> None:
        """
        An issued certificate that cannot be served counts as a failure.
        """
        acme = self.service()
        chain, _ = certificate(self.config.domains)
        _, other = certificate(self.config.domains)
        self.issuer.attempts[0].callback((chain, other))
        self.assertFalse(acme.context.ready)
        self.assertEqual(acme.failures, 1)
        self.assertIn("does not match the certificate in", self.messages()[-1])

    def test_stop(self) -> None:
        """
        Stopping ends the checks and the retries and stops the issuer.
        """
        acme = self.service()
        self.issuer.attempts[0].errback(AcmeError("no"))
        self.successResultOf(acme.stopService())
        self.assertTrue(self.issuer.stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(2 * DAY)
        self.assertEqual(len(self.issuer.attempts), 1)

    def test_lateResults(self) -> None:
        """
        What an attempt in flight brings after the stop is not used, and
        its L{Stopped} failure is not logged.
        """
        acme = self.service()
        self.successResultOf(acme.stopService())
        self.issuer.attempts[0].callback(certificate(self.config.domains))
        self.assertFalse(acme.context.ready)
        self.issuer = FakeIssuer()
        acme = self.service()
        self.successResultOf(acme.stopService())
        self.issuer.attempts[0].errback(Stopped())
        self.assertEqual(acme.failures, 0)
        self.assertFalse([e for e in self.events if e.get("log_level") and e["log_level"].name != "info"])


class Steps:
    """
    A runner that runs nothing: it keeps each call for the test to answer.

    @ivar calls: C{(f, args, Deferred)} of each call, in order.
    @ivar stopped: whether the pool was stopped.
    """

    def __init__(self) -> None:
        self.calls: List[Tuple[Any, Tuple[Any, ...], Deferred]] = []
        self.stopped = False

    def __call__(self, f: Any, *args: Any) -> Deferred:
        """
        @return: a L{Deferred} the test fires for C{f(*args)}.
        """
        d: Deferred = Deferred()
        self.calls.append((f, args, d))
        return d

    def stop(self) -> None:
        """
        Note that the pool was stopped.
        """
        self.stopped = True


class IssuerTests(SynchronousTestCase):
    """
    L{Issuer} runs each blocking step through its runner, and publishes
    the challenges on the reactor thread while the server validates them.
    """

    def setUp(self) -> None:
        self.config = AcmeConfig(
            directory="https://acme.example/dir",
            email="admin@example.com",
            domains=("example.com",),
            storage=os.path.abspath(self.mktemp()),
        )
        self.steps = Steps()
        self.challenges = ChallengeResource()
        self.acme = AcmeService(self.config, None, clock=Clock(), issuer=FakeIssuer())
        self.issuer = Issuer(self.config, self.acme.storage, self.challenges, self.steps, self.steps.stop)
        self.pending = Pending(order=object(), key_pem=b"KEY", challenges=(("tok", "tok.x", None),))

    def test_steps(self) -> None:
        """
        Connect, order, finish (with the challenge published meanwhile),
        store: each in the runner; the result is the chain and its key.
        """
        result = self.issuer.obtain()
        f, args, d = self.steps.calls[0]
        self.assertEqual((f, args), (connect, (self.config, self.acme.storage)))
        client = object()
        d.callback(client)
        f, args, d = self.steps.calls[1]
        self.assertEqual((f, args), (new_order, (client, ("example.com",))))
        self.assertEqual(self.challenges.tokens, ())
        d.callback(self.pending)
        f, args, d = self.steps.calls[2]
        self.assertEqual((f, args[:2]), (finish, (client, self.pending)))
        self.assertEqual(self.challenges.tokens, ("tok",))
        d.callback(b"CHAIN")
        self.assertEqual(self.challenges.tokens, ())
        f, args, d = self.steps.calls[3]
        self.assertEqual((f, args), (self.acme.storage.save_certificate, (b"CHAIN", b"KEY")))
        self.assertNoResult(result)
        d.callback(None)
        self.assertEqual(self.successResultOf(result), (b"CHAIN", b"KEY"))
        self.assertEqual(len(self.steps.calls), 4)

    def test_refused(self) -> None:
        """
        When validation fails the challenge is withdrawn and the failure is
        the result.
        """
        result = self.issuer.obtain()
        self.steps.calls[0][2].callback(object())
        self.steps.calls[1][2].callback(self.pending)
        self.steps.calls[2][2].errback(AcmeError("example.com: refused"))
        self.assertEqual(self.challenges.tokens, ())
        self.assertEqual(str(self.failureResultOf(result, AcmeError).value), "example.com: refused")
        self.assertEqual(len(self.steps.calls), 3)

    def test_stop(self) -> None:
        """
        Stopping sets the event the waits of C{finish} watch, waits for the
        step in flight, then stops the pool; the attempt fails with
        L{Stopped}.
        """
        result = self.issuer.obtain()
        self.steps.calls[0][2].callback(object())
        self.steps.calls[1][2].callback(self.pending)
        stopping = self.steps.calls[2][1][2]
        self.assertFalse(stopping.is_set())
        done = self.issuer.stop()
        self.assertTrue(stopping.is_set())
        self.assertNoResult(done)
        self.assertFalse(self.steps.stopped)
        self.steps.calls[2][2].errback(Stopped())
        self.successResultOf(done)
        self.assertTrue(self.steps.stopped)
        self.failureResultOf(result, Stopped)
        self.assertEqual(len(self.steps.calls), 3)

    def test_startedAgain(self) -> None:
        """
        After a stop, a new attempt (the service started again) runs with
        its own event; the old attempt's steps go no further.
        """
        old = self.issuer.obtain()
        stopped = self.issuer.stop()
        self.steps.calls[0][2].callback(object())
        self.successResultOf(stopped)
        self.failureResultOf(old, Stopped)
        self.assertEqual(len(self.steps.calls), 1)
        new = self.issuer.obtain()
        self.steps.calls[1][2].callback(object())
        self.steps.calls[2][2].callback(self.pending)
        self.assertFalse(self.steps.calls[3][1][2].is_set())
        self.assertNoResult(new)
