"""
Certificates for the HTTPS listener from an ACME server (C{[acme]}).

L{AcmeService} keeps the HTTPS listener's L{ReloadableContext} supplied:
at start it serves the certificate kept in C{storage} when it covers the
domains and has more than 30 days left, or obtains one; then, once a day
on its clock, it renews the certificate 30 days before it expires and
swaps it in without a restart. Failures are retried with exponential
back-off, from a minute up to a day, each attempt logged once with its
reason.

Certificates are obtained with HTTP-01: L{ChallengeResource}, mounted at
C{/.well-known/acme-challenge} in front of the servers' routes, answers
the ACME server's requests on the HTTP listener. L{Issuer} runs the
protocol's blocking steps (L{phantom_frame.ops.acme_client}) in a thread
pool of its own and publishes the challenges on the reactor thread.

Until the first certificate is in use the HTTPS listener listens, but
closes each connection as soon as it is accepted (see
L{phantom_frame.http.tls.tls_factory}): clients fail at once rather than
wait, and the port is bound at start like every listener.
"""

from __future__ import annotations

import datetime
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from phantom_frame.cache.threads import ThreadRunner
from phantom_frame.config.acme import CHALLENGE_PATH, AcmeConfig
from phantom_frame.http.tls import ReloadableContext, TLSConfigError
from phantom_frame.ops.acme_client import (
    AcmeError,
    RENEW_BEFORE,
    Stopped,
    Storage,
    certificate_problem,
    connect,
    finish,
    leaf,
    new_order,
    not_after,
)
from phantom_frame.proxy.answers import error_response

__all__ = ["AcmeService", "ChallengeResource", "Issuer", "backoff"]

log = Logger()

#: Seconds between two checks of the certificate's expiry.
DAY = 86400.0

#: The first retry's delay, in seconds; each failure doubles it.
FIRST_RETRY = 60.0


def backoff(failures: int) -> float:
    """
    @param failures: failed attempts in a row, at least 1.
    @return: seconds until the next attempt: a minute after the first
        failure, doubling after each one, at most a day.
    """
    return min(FIRST_RETRY * 2 ** min(failures - 1, 16), DAY)


class ChallengeResource(Resource):
    """
    Answers C{GET /.well-known/acme-challenge/TOKEN} (the path below the
    prefix, which the router strips) with the key authorization of a
    published token; anything else is 404, other methods 405.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self._tokens: Dict[bytes, bytes] = {}

    @property
    def tokens(self) -> Tuple[str, ...]:
        """
        The tokens answered now.
        """
        return tuple(token.decode("ascii") for token in self._tokens)

    def publish(self, token: str, validation: str) -> None:
        """
        Answer C{token} with C{validation} until it is withdrawn.
        """
        self._tokens[token.encode("ascii")] = validation.encode("ascii")

    def withdraw(self, token: str) -> None:
        """
        Stop answering C{token}.
        """
        self._tokens.pop(token.encode("ascii"), None)

    def render(self, request: Any) -> bytes:
        """
        @return: the key authorization, as text, never cached.
        """
        if request.method not in (b"GET", b"HEAD"):
            return error_response(request, 405, "Method Not Allowed", [(b"allow", b"GET, HEAD")])
        found = self._tokens.get(request.postpath[0]) if len(request.postpath) == 1 else None
        if found is None:
            return error_response(request, 404, "Not Found")
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", b"%d" % len(found))
        return found


class Issuer:
    """
    Obtains certificates: the blocking protocol steps run in a thread pool
    of its own (one thread), the challenges are published on the reactor
    thread while the ACME server validates them, and the new certificate is
    kept in the storage directory.
    """

    def __init__(
        self,
        config: AcmeConfig,
        storage: Storage,
        challenges: ChallengeResource,
        runner: Callable[..., Deferred],
        stop_runner: Callable[[], None] = lambda: None,
    ) -> None:
        """
        @param config: the C{[acme]} table.
        @param storage: keeps the account and the certificate.
        @param challenges: publishes the HTTP-01 answers.
        @param runner: C{runner(f, *args)} runs C{f(*args)} in a thread and
            returns a L{Deferred} of its result (a
            L{phantom_frame.cache.threads.ThreadRunner}).
        @param stop_runner: stops C{runner}'s threads.
        """
        self._config = config
        self._storage = storage
        self._challenges = challenges
        self._runner = runner
        self._stop_runner = stop_runner
        self._stopping = threading.Event()
        self._step: Optional[Deferred] = None

    def _run(self, stopping: threading.Event, f: Callable[..., Any], *args: Any) -> Deferred:
        if stopping.is_set():
            raise Stopped()
        step = self._step = self._runner(f, *args)
        return step

    async def _obtain(self, stopping: threading.Event) -> Tuple[bytes, bytes]:
        client = await self._run(stopping, connect, self._config, self._storage)
        pending = await self._run(stopping, new_order, client, self._config.domains)
        for token, validation, _ in pending.challenges:
            self._challenges.publish(token, validation)
        try:
            chain = await self._run(stopping, finish, client, pending, stopping)
        finally:
            for token, _, _ in pending.challenges:
                self._challenges.withdraw(token)
        await self._run(stopping, self._storage.save_certificate, chain, pending.key_pem)
        return chain, pending.key_pem

    def obtain(self) -> Deferred[Tuple[bytes, bytes]]:
        """
        Obtain a certificate for the domains (registering the account the
        first time) and keep it in the storage directory.

        @return: a L{Deferred} firing with the PEM chain and key, or failing
            with the reason (L{Stopped} when L{stop} is called meanwhile).
        """
        if self._stopping.is_set():
            # Started again after a stop: the old steps keep the old event.
            self._stopping = threading.Event()
        return Deferred.fromCoroutine(self._obtain(self._stopping))

    def stop(self) -> Deferred[None]:
        """
        End the waits of the step in progress, let it return, then stop the
        thread pool.

        @return: a L{Deferred} firing once no thread is left.
        """
        self._stopping.set()
        step, self._step = self._step, None
        done: Deferred[None] = Deferred()

        def stopped(_: Any) -> None:
            self._stop_runner()
            done.callback(None)

        if step is None or step.called:
            stopped(None)
        else:
            step.addBoth(lambda result: (stopped(None), result)[1])
        return done


def _reason(failure: Failure) -> str:
    """
    @return: why an attempt failed, in one line.
    """
    error = failure.value
    if isinstance(error, (AcmeError, TLSConfigError)):
        return str(error)
    text = str(error) or type(error).__name__
    if type(error).__module__.startswith("acme"):
        return text
    return f"{type(error).__name__}: {text}"


class AcmeService(Service):
    """
    Supplies the HTTPS listener's certificate from an ACME server.

    @ivar config: the C{[acme]} table.
    @ivar storage: the storage directory.
    @ivar challenges: answers HTTP-01 challenges.
    @ivar routes: the router's routes to mount in front of the servers':
        C{(CHALLENGE_PATH, challenges, None)}.
    @ivar context: the HTTPS listener's certificate; it has none until the
        first one is in use.
    @ivar certificate: the leaf certificate in use, or L{None}.
    @ivar failures: failed attempts in a row.
    """

    def __init__(
        self,
        config: AcmeConfig,
        reactor: Any,
        clock: Any = None,
        issuer: Any = None,
        challenges: Optional[ChallengeResource] = None,
    ) -> None:
        """
        Make the storage directory (C{0700}) when it is missing.

        @param config: see L{config}.
        @param reactor: runs the threads' results.
        @param clock: times the daily checks and the retries (C{reactor}
            when omitted).
        @param issuer: obtains certificates: an C{obtain()} method returning
            a L{Deferred} of the PEM chain and key, kept in the storage
            directory, and a C{stop()} method returning a L{Deferred}; an
            L{Issuer} on a thread pool of its own when omitted.
        @param challenges: see L{challenges} (a new one when omitted).
        @raise OSError: when the storage directory cannot be made.
        """
        self.config = config
        self._clock = reactor if clock is None else clock
        self.storage = Storage(config.storage)
        self.storage.create()
        self.challenges = ChallengeResource() if challenges is None else challenges
        self.routes: Tuple[Tuple[str, Any, Optional[str]], ...] = (
            (CHALLENGE_PATH, self.challenges, None),
        )
        self.context = ReloadableContext(self.storage.cert_path, self.storage.key_path, load=False)
        if issuer is None:
            runner = ThreadRunner(reactor, 1, "phantom-frame-acme")
            issuer = Issuer(config, self.storage, self.challenges, runner, runner.stop)
        self._issuer = issuer
        self.certificate: Any = None
        self.failures = 0
        self._attempt_in_flight = False
        self._retry: Optional[IDelayedCall] = None
        self._loop = LoopingCall(self._check)
        self._loop.clock = self._clock
        self._waiting: List[Deferred] = []

    def _domains(self) -> str:
        return ", ".join(self.config.domains)

    def startService(self) -> None:
        """
        Serve the stored certificate when it can be served; obtain one when
        there is none, when it does not cover the domains, or when it has
        30 days or less left (serving it meanwhile if it is still valid).
        Then check once a day.
        """
        super().startService()
        now = self._clock.seconds()
        stored = self.storage.certificate()
        if stored is None:
            reason: Optional[str] = "none is stored"
        else:
            problem = certificate_problem(stored[0], stored[1], self.config.domains, now)
            if problem is None or problem.servable:
                self._use(stored[0], stored[1], "stored")
            reason = None if problem is None else f"the stored one is not used: {problem.reason}"
        if reason is not None:
            if not self.context.ready:
                log.info(
                    "ACME: HTTPS connections are closed until a certificate for {domains} is obtained",
                    domains=self._domains(),
                )
            log.info(
                "ACME: obtaining a certificate for {domains} from {directory}: {reason}",
                domains=self._domains(),
                directory=self.config.directory,
                reason=reason,
            )
            self._attempt()
        self._loop.start(DAY, now=False)

    def stopService(self) -> Deferred[None]:
        """
        Stop the checks and the retries; end the attempt in progress.

        @return: a L{Deferred} firing once no ACME work is left running.
        """
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        return self._issuer.stop()

    def next_certificate(self) -> Deferred[Any]:
        """
        @return: a L{Deferred} firing with the next leaf certificate put in
            use (for monitoring and tests).
        """
        d: Deferred[Any] = Deferred()
        self._waiting.append(d)
        return d

    def _check(self) -> None:
        """
        The daily check: renew when 30 days or less are left.
        """
        if self._attempt_in_flight or self._retry is not None:
            return
        if self.certificate is not None:
            left = not_after(self.certificate) - self._clock.seconds()
            if left > RENEW_BEFORE:
                return
            log.info(
                "ACME: the certificate for {domains} expires in {days} day(s): renewing",
                domains=self._domains(),
                days=max(0, int(left // 86400)),
            )
        self._attempt()

    def _attempt(self) -> None:
        self._retry = None
        self._attempt_in_flight = True
        d = maybeDeferred(self._issuer.obtain)
        d.addCallbacks(self._obtained, self._failed)
        d.addErrback(lambda f: log.failure("ACME: unexpected error", f))

    def _obtained(self, pems: Tuple[bytes, bytes]) -> None:
        self._attempt_in_flight = False
        if not self.running:
            return
        try:
            self._use(pems[0], pems[1], "newly issued")
        except TLSConfigError:
            self._failed(Failure())
            return
        self.failures = 0

    def _failed(self, failure: Failure) -> None:
        self._attempt_in_flight = False
        if not self.running or failure.check(Stopped):
            return
        self.failures += 1
        delay = backoff(self.failures)
        self._retry = self._clock.callLater(delay, self._attempt)
        log.warn(
            "ACME: no certificate for {domains} from {directory} (attempt {attempt}): {reason};"
            " next attempt in {delay:g} s",
            domains=self._domains(),
            directory=self.config.directory,
            attempt=self.failures,
            reason=_reason(failure),
            delay=delay,
        )

    def _use(self, chain_pem: bytes, key_pem: bytes, source: str) -> None:
        """
        Serve a certificate from now on.

        @raise TLSConfigError: when it cannot be served.
        """
        self.context.load_pem(
            chain_pem, key_pem, f"{self.storage.cert_path} ({source})", f"{self.storage.key_path} ({source})"
        )
        cert = self.certificate = leaf(chain_pem)
        log.info(
            "ACME: serving the certificate for {domains} ({source}, serial {serial:x},"
            " valid until {until})",
            domains=self._domains(),
            source=source,
            serial=cert.serial_number,
            until=_until(cert),
        )
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(cert)


def _until(cert: Any) -> str:
    """
    @return: when C{cert} expires, as C{YYYY-MM-DD HH:MM UTC}.
    """
    return datetime.datetime.fromtimestamp(not_after(cert), datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC"
    )
