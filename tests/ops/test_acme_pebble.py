"""
L{phantom_frame.ops.acme} end to end against a real Pebble on loopback: a
certificate obtained through real HTTP-01 validation against the proxy's
HTTP listener, served on its HTTPS listener, kept across restarts, and
renewed 30 days before it expires without a restart.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from typing import Any, Dict, Optional, Tuple

from cryptography import x509
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource

from phantom_frame.config.acme import CHALLENGE_PATH, AcmeConfig
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from phantom_frame.http.tls import tls_factory
from phantom_frame.ops.acme import AcmeService, ChallengeResource
from phantom_frame.ops.acme_client import RENEW_BEFORE, not_after

from .pebble import Pebble, start_pebble


class Hello(Resource):
    """
    Stands for the servers behind C{"*"}.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        """
        @return: a greeting.
        """
        return b"hello\n"


def handshake(port: int, root: bytes) -> Tuple[x509.Certificate, bytes]:
    """
    Connect to C{127.0.0.1:port} over TLS as C{localhost}, trusting only
    C{root}, and ask for C{/} (blocking).

    @return: the certificate served and the answer's first bytes.
    """
    context = ssl.create_default_context(cadata=root.decode("ascii"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = tls.recv(4096)
    return x509.load_der_x509_certificate(der), answer


def refused(port: int) -> str:
    """
    Try a TLS handshake with C{127.0.0.1:port} (blocking).

    @return: the error's class name.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost"):
                return "handshake completed"
    except (OSError, ssl.SSLError) as e:
        return type(e).__name__


class PebbleTests(TestCase):
    """
    Certificates from Pebble, validated against the proxy's HTTP listener.
    """

    async def setUp(self) -> None:
        """
        The proxy's site (a plain origin behind C{"*"} and the challenge
        route) on an HTTP listener, then Pebble validating against it.
        """
        self.challenges = ChallengeResource()
        origin = Hello()
        self.site = ProxySite(
            Router([("*", origin, "site"), (CHALLENGE_PATH, self.challenges, None)]),
            reactor=reactor,
            access_log=False,
        )
        http = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(http.stopListening)
        self.pebble: Pebble = await start_pebble(self, http.getHost().port)
        self.root = await self.pebble.root()
        self.storage = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(time.time())

    def service(self, clock: Clock, challenges: Optional[ChallengeResource] = None) -> Tuple[AcmeService, int]:
        """
        @param challenges: where it publishes its challenges (by default
            the site's).
        @return: an ACME service for C{localhost} on C{clock}, and the port
            of an HTTPS listener serving the site with its certificate.
        """
        config = AcmeConfig(
            directory=self.pebble.directory,
            email="admin@example.com",
            domains=("localhost",),
            storage=self.storage,
            ca_bundle=self.pebble.ca_bundle,
        )
        if challenges is None:
            challenges = self.challenges
        acme = AcmeService(config, reactor, clock=clock, challenges=challenges)
        https = reactor.listenTCP(0, tls_factory(acme.context, self.site), interface="127.0.0.1")
        self.addCleanup(https.stopListening)
        return acme, https.getHost().port

    def start(self, acme: AcmeService) -> None:
        """
        Start C{acme}, stopped when the test ends.
        """
        acme.startService()
        self.addCleanup(lambda: acme.stopService() if acme.running else None)

    async def test_obtainAndRenew(self) -> None:
        """
        With nothing stored, the service registers an account and obtains a
        certificate for its domain through HTTP-01 validation against the
        HTTP listener; until then HTTPS connections are closed at once.
        The HTTPS listener then serves it, chained to Pebble's root. When
        the clock reaches 30 days before its expiry, the daily check gets a
        new one, served on the same listener, with the same account.
        """
        acme, port = self.service(self.clock)
        self.assertIn(await deferToThread(refused, port), ("SSLEOFError", "ConnectionResetError"))
        issued = acme.next_certificate()
        self.start(acme)
        first = await issued
        served, answer = await deferToThread(handshake, port, self.root)
        self.assertEqual(served.serial_number, first.serial_number)
        san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(san.value.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertEqual(self.challenges.tokens, ())
        with open(os.path.join(self.storage, "account.json"), "rb") as f:
            account = f.read()
        self.assertEqual(os.stat(self.storage).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(acme.storage.key_path).st_mode & 0o777, 0o600)

        # A day before the renewal point nothing happens; at it, a renewal.
        renewal = not_after(first) - RENEW_BEFORE
        self.clock.advance(renewal - 86400 - self.clock.seconds())
        self.assertIs(acme.certificate, first)
        renewed = acme.next_certificate()
        self.clock.advance(86400)
        second = await renewed
        self.assertNotEqual(second.serial_number, first.serial_number)
        served, _ = await deferToThread(handshake, port, self.root)
        self.assertEqual(served.serial_number, second.serial_number)
        with open(os.path.join(self.storage, "account.json"), "rb") as f:
            self.assertEqual(f.read(), account)
        self.assertEqual(acme.failures, 0)
        await acme.stopService()

    async def test_restart(self) -> None:
        """
        A service started again on the same storage serves the stored
        certificate at once, without asking the ACME server.
        """
        acme, _ = self.service(self.clock)
        issued = acme.next_certificate()
        self.start(acme)
        first = await issued
        await acme.stopService()

        later = Clock()
        later.advance(time.time())
        again, port = self.service(later)
        issued = again.next_certificate()
        self.start(again)
        self.assertEqual(self.successResultOf(issued).serial_number, first.serial_number)
        served, _ = await deferToThread(handshake, port, self.root)
        self.assertEqual(served.serial_number, first.serial_number)
        self.assertFalse(again._attempt_in_flight)

    async def test_validationFails(self) -> None:
        """
        When the HTTP listener does not answer the challenge, Pebble refuses
        the authorization: the attempt is logged once with Pebble's reason,
        and retried a minute later on the service's clock.
        """
        warned: Deferred[Dict[str, Any]] = Deferred()

        def observe(event: Dict[str, Any]) -> None:
            level = event.get("log_level")
            if level is not None and level.name == "warn" and not warned.called:
                warned.callback(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        acme, _ = self.service(self.clock, challenges=ChallengeResource())
        self.start(acme)
        message = formatEvent(await warned)
        self.assertIn("(attempt 1): localhost: ", message)
        self.assertIn("/.well-known/acme-challenge/", message)
        self.assertIn(" returned 404;", message)
        self.assertTrue(message.endswith("; next attempt in 60 s"), message)
        self.assertFalse(acme.context.ready)
        delays = sorted(call.getTime() - self.clock.seconds() for call in self.clock.getDelayedCalls())
        self.assertEqual(delays, [60.0, 86400.0])
        await acme.stopService()
