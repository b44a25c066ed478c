"""
Tests for L{phantom_frame.proxy.fetch.Fetch} (a fill's request to its
origin, told through plain callbacks), L{phantom_frame.proxy.settle.Once}
and L{phantom_frame.proxy.origin.Origin.request_then}.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.proxy import fetch as fetch_module
from phantom_frame.proxy.body import UpstreamError
from phantom_frame.proxy.fetch import PENDING, Fetch
from phantom_frame.proxy.origin import Origin
from phantom_frame.proxy.settle import Once


class _Response:
    """
    What a fetch reads of the response its origin answered with.
    """

    stopped = 0

    def stopProducing(self) -> None:
        self.stopped += 1


class _Origin:
    """
    An origin whose requests are answered (or failed) by the test, through
    the functions L{request_then} was given.
    """

    def __init__(self) -> None:
        self.response = _Response()
        self.answered: Any = None
        self.failed: Any = None
        self.sent: List[Any] = []

    def request_then(self, method: bytes, path: bytes, headers: Any, body: Any, answered: Any, failed: Any) -> Any:
        self.sent.append((method, path, headers, body))
        self.answered, self.failed = answered, failed
        return self.response


class _Filler:
    """
    A filler whose decision on a head is C{outcome} (or raises it).
    """

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.heads: List[Any] = []

    def _answered(self, response: Any, fetch: Fetch) -> Any:
        self.heads.append((response, fetch))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        if self.outcome is PENDING:
            fetch.reading = ("what", "is", "kept")
        return self.outcome

    def _buffered(self, complete: bool, fetch: Fetch) -> Any:
        return ("kept", complete, fetch.reading)


def _fetch(outcome: Any) -> Any:
    """
    @return: a started L{Fetch} whose filler decides C{outcome}, its
        origin, its filler and its result.
    """
    origin, filler = _Origin(), _Filler(outcome)
    fetch = Fetch(filler, "k", lambda name: None, False, None, False, False, False)
    result = fetch.start(origin, b"GET", b"/p", [], None, 12.5).deferred()
    return fetch, origin, filler, result


class FetchTests(SynchronousTestCase):
    """
    A fetch sends its request, lets the filler decide on the head, and
    tells its one listener (here its L{Fetch.deferred}) what the fill
    gives.
    """

    def test_decided(self) -> None:
        """
        What the filler's decision returns is the outcome; the request was
        sent once, its time noted.
        """
        fetch, origin, filler, result = _fetch("stored")
        self.assertEqual(origin.sent, [(b"GET", b"/p", [], None)])
        self.assertEqual(fetch.request_time, 12.5)
        self.assertNoResult(result)
        origin.answered(origin.response)
        self.assertEqual(filler.heads, [(origin.response, fetch)])
        self.assertEqual(self.successResultOf(result), "stored")

    def test_pending(self) -> None:
        """
        A decision that reads the body first (L{PENDING}) fires nothing
        until the body's step (the filler's C{_buffered}, with what it kept
        on the fetch) gives the outcome, which lets go of what was kept; a
        later outcome is ignored.
        """
        fetch, origin, _, result = _fetch(PENDING)
        origin.answered(origin.response)
        self.assertNoResult(result)
        outcomes: List[Any] = []
        result.addBoth(outcomes.append)
        ready = fetch.ready()
        ready.callback(True)
        fetch.land("again")
        fetch.fail(UpstreamError("late"))
        self.assertEqual(outcomes, [("kept", True, ("what", "is", "kept"))])
        self.assertIsNone(fetch.reading)

    def test_bodyBroke(self) -> None:
        """
        A body that breaks off fails the fetch with its error.
        """
        fetch, origin, _, result = _fetch(PENDING)
        origin.answered(origin.response)
        fetch.ready().errback(UpstreamError("broke off"))
        self.assertEqual(self.failureResultOf(result, UpstreamError).getErrorMessage(), "broke off")

    def test_deferredOutcome(self) -> None:
        """
        A decision that gives a L{Deferred} (a part stored) gives what it
        fires with, or its failure.
        """
        later: Deferred[str] = Deferred()
        _, origin, _, result = _fetch(later)
        origin.answered(origin.response)
        self.assertNoResult(result)
        later.callback("part")
        self.assertEqual(self.successResultOf(result), "part")
        failing: Deferred[str] = Deferred()
        _, origin, _, result = _fetch(failing)
        origin.answered(origin.response)
        failing.errback(UpstreamError("no"))
        self.failureResultOf(result, UpstreamError)

    def test_decisionRaises(self) -> None:
        """
        A decision that raises (a snapshot that cannot be stored) fails the
        fetch.
        """
        _, origin, _, result = _fetch(ValueError("not storable"))
        origin.answered(origin.response)
        self.failureResultOf(result, ValueError)

    def test_failedBeforeHead(self) -> None:
        """
        An origin that fails before the head fails the fetch; the filler
        never decides.
        """
        _, origin, filler, result = _fetch("stored")
        origin.failed(UpstreamError("refused"))
        self.failureResultOf(result, UpstreamError)
        self.assertEqual(filler.heads, [])

    def test_cancelled(self) -> None:
        """
        Cancelling the outcome stops the response (the request, or its
        body); a head that comes after is not decided on.
        """
        _, origin, filler, result = _fetch("stored")
        result.cancel()
        self.assertEqual(origin.response.stopped, 1)
        self.failureResultOf(result, CancelledError)
        origin.failed(CancelledError())
        origin.answered(origin.response)
        self.assertEqual(filler.heads, [])

    def test_cancelledReadingBody(self) -> None:
        """
        Cancelling while the body is read abandons it.
        """
        _, origin, _, result = _fetch(PENDING)
        origin.answered(origin.response)
        result.cancel()
        self.assertEqual(origin.response.stopped, 1)
        self.failureResultOf(result, CancelledError)

    def test_letsGo(self) -> None:
        """
        Once its outcome is given, a fetch holds neither its response nor
        its L{Deferred} (which refer back to it).
        """
        fetch, origin, _, result = _fetch("stored")
        origin.answered(origin.response)
        self.assertIsNone(fetch._response)
        self.assertIsNone(fetch._listener)

    def test_listener(self) -> None:
        """
        L{Fetch.addBoth} tells its listener of the outcome as it comes,
        with no L{Deferred}: a result, or a L{Failure}; the outcome is told
        once.
        """
        origin, seen = _Origin(), []
        fetch = Fetch(_Filler("stored"), "k", lambda name: None, False, None, False, False, False)
        self.assertIs(fetch.start(origin, b"GET", b"/p", [], None, 1.0), fetch)
        self.assertIs(fetch.addBoth(seen.append), fetch)
        self.assertEqual(seen, [])
        origin.answered(origin.response)
        fetch.land("again")
        self.assertEqual(seen, ["stored"])
        failing = Fetch(_Filler("stored"), "k", lambda name: None, False, None, False, False, False)
        failing.start(origin, b"GET", b"/p", [], None, 1.0).addBoth(seen.append)
        origin.failed(UpstreamError("refused"))
        self.assertIsInstance(seen[-1], Failure)
        seen[-1].trap(UpstreamError)

    def test_listenerLate(self) -> None:
        """
        An outcome that came before anybody listened (a request that could
        not be sent) is told to the listener at once, then let go of.
        """
        fetch = Fetch(_Filler("stored"), "k", lambda name: None, False, None, False, False, False)
        fetch.fail(UpstreamError("cannot forward"))
        seen: List[Any] = []
        fetch.addBoth(seen.append)
        [failure] = seen
        failure.trap(UpstreamError)
        self.assertIs(fetch._outcome, fetch_module._NOTHING)

    def test_listenerRaises(self) -> None:
        """
        A listener that raises is logged; the one who told the outcome (the
        origin's connection) is not disturbed.
        """
        origin = _Origin()
        fetch = Fetch(_Filler("stored"), "k", lambda name: None, False, None, False, False, False)
        fetch.start(origin, b"GET", b"/p", [], None, 1.0).addBoth(lambda outcome: 1 / 0)
        origin.answered(origin.response)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_cancelListened(self) -> None:
        """
        L{Fetch.cancel} stops the response and tells the listener of a
        C{CancelledError}; cancelling again, or after the outcome, does
        nothing.
        """
        origin = _Origin()
        fetch = Fetch(_Filler("stored"), "k", lambda name: None, False, None, False, False, False)
        seen: List[Any] = []
        fetch.start(origin, b"GET", b"/p", [], None, 1.0).addBoth(seen.append)
        fetch.cancel()
        fetch.cancel()
        self.assertEqual(origin.response.stopped, 1)
        [failure] = seen
        failure.trap(CancelledError)

    def test_awaited(self) -> None:
        """
        Awaiting a fetch gives its outcome.
        """
        origin = _Origin()
        other = Fetch(_Filler("stored"), "k", lambda name: None, False, None, False, False, False)
        other.start(origin, b"GET", b"/p", [], None, 1.0)

        async def wait() -> Any:
            return await other

        result = Deferred.fromCoroutine(wait())
        self.assertNoResult(result)
        origin.answered(origin.response)
        self.assertEqual(self.successResultOf(result), "stored")


class OnceTests(SynchronousTestCase):
    """
    L{Once} calls its callback or its errback, the first time only, and
    lets go of both then.
    """

    def test_once(self) -> None:
        """
        The first call wins; what follows is ignored.
        """
        seen: List[Any] = []
        once = Once(lambda r: seen.append(("ok", r)), lambda e: seen.append(("error", e)))
        self.assertFalse(once.called)
        once.callback(1)
        once.callback(2)
        once.errback(ValueError())
        self.assertEqual(seen, [("ok", 1)])
        self.assertTrue(once.called)
        error = ValueError("x")
        failing = Once(seen.append, lambda e: seen.append(("error", e)))
        failing.errback(error)
        failing.callback(3)
        self.assertEqual(seen[-1], ("error", error))

    def test_letsGo(self) -> None:
        """
        Once fired, it refers to neither function (nor what they hold).
        """
        once = Once(lambda r: None, lambda e: None)
        callback, errback = once._callback, once._errback
        once.callback(None)
        self.assertIsNot(once._callback, callback)
        self.assertIsNot(once._errback, errback)


class _RefusingClient:
    """
    A relaying client that cannot send the request.
    """

    def relay(self, method: bytes, path: bytes, headers: Any, receiver: Any, body: Any) -> Any:
        raise ValueError("CR or LF where none may be")


class RequestThenTests(SynchronousTestCase):
    """
    L{Origin.request_then} tells its functions what L{Origin.request}'s
    L{Deferred} would fire with.
    """

    def test_cannotSend(self) -> None:
        """
        A request the client cannot send fails at once with an
        L{UpstreamError}, through C{failed}.
        """
        origin = Origin("http://origin.test", _RefusingClient(), Clock(), 5)
        seen: List[Any] = []
        origin.request_then(b"GET", b"/", [], None, lambda r: seen.append(("head", r)), seen.append)
        [error] = seen
        self.assertIsInstance(error, UpstreamError)
        self.assertIn("cannot forward the request", str(error))
