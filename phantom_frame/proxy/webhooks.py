"""
Per-server webhooks, called for each request before it is answered.

Every webhook receives a C{POST} with a JSON description of the request::

    {"server": "site", "method": "GET", "path": "/docs/x", "query": "a=1",
     "headers": {"user-agent": "..."}, "client": "203.0.113.9"}

- C{blocking}: the request waits for the answer. 2xx lets it through; a 3xx
  is relayed to the client with its C{Location}; any other status is relayed
  (with the webhook's short body); an error or a timeout gives 503.
- C{notify}: fire and forget; the request does not wait, failures are logged.
- C{cache_key}: a 2xx answer's body sets the request's cache key, either as
  JSON C{{"cache_key": "..."}} or as plain text; anything else keeps the
  default key.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import attr
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

from phantom_frame.proxy.settings import Webhook, WebhookType
from phantom_frame.proxy.view import RequestView
from phantom_frame.proxy.origin import BodyRelay, _BytesProducer

log = Logger()

#: Largest webhook answer body read (relayed statuses, cache keys).
MAX_ANSWER = 64 * 1024
#: Notify webhooks in flight at once per server; more are dropped (logged).
MAX_NOTIFY_IN_FLIGHT = 256


@attr.s(frozen=True, auto_attribs=True)
class Verdict:
    """
    What the blocking webhooks decided.

    @ivar status: C{None} to go on, else the status to answer with.
    @ivar headers: headers to answer with (C{Location}).
    @ivar body: the body to answer with.
    """

    status: Optional[int] = None
    headers: Sequence[Any] = ()
    body: bytes = b""


PROCEED = Verdict()


class Webhooks:
    """
    The webhooks of one server.
    """

    def __init__(
        self, server: str, hooks: Sequence[Webhook], agent: IAgent, clock: IReactorTime
    ) -> None:
        self._server = server
        self._agent = agent
        self._clock = clock
        self.blocking = [h for h in hooks if h.type == WebhookType.BLOCKING]
        self.notify = [h for h in hooks if h.type == WebhookType.NOTIFY]
        self.cache_key = [h for h in hooks if h.type == WebhookType.CACHE_KEY]
        self._notifying = 0
        self.dropped = 0

    @property
    def notifying(self) -> int:
        """
        @return: how many notify webhook calls are in flight.
        """
        return self._notifying

    def __bool__(self) -> bool:
        return bool(self.blocking or self.notify or self.cache_key)

    def payload(self, view: RequestView) -> bytes:
        """
        @param view: the request (its path prefix-stripped).
        @return: the JSON body sent to every webhook for it.
        """
        return json.dumps(
            {
                "server": self._server,
                "method": view.method.decode("latin-1"),
                "path": view.path.decode("latin-1"),
                "query": view.query.decode("latin-1"),
                "headers": view.headers,
                "client": view.client,
            }
        ).encode("utf-8")

    async def _call(self, hook: Webhook, payload: bytes):
        """
        POST C{payload} to C{hook} and read at most L{MAX_ANSWER} of its body.

        @return: the status, headers and body.
        @raise Exception: on a connection error or timeout.
        """
        d = self._agent.request(
            b"POST",
            hook.url.encode("utf-8"),
            Headers({b"content-type": [b"application/json"]}),
            _BytesProducer(payload),
        )
        timeout = hook.timeout_ms / 1000.0
        delayed = self._clock.callLater(timeout, d.cancel)
        try:
            response = await d
        finally:
            if delayed.active():
                delayed.cancel()
        relay = BodyRelay(self._clock, timeout, MAX_ANSWER)
        response.deliverBody(relay)
        complete = await relay.ready()
        if not complete:
            relay.abort()
        return response.code, response.headers, relay.collected()[:MAX_ANSWER]

    async def _try(self, hook: Webhook, payload: bytes, kind: str, consequence: str = ""):
        """
        L{_call}, logging a failure (with what it means for the request).

        @return: what L{_call} returns, or C{None} when the call failed.
        """
        try:
            return await self._call(hook, payload)
        except CancelledError:
            raise  # the client went away: not the webhook's failure
        except Exception as e:
            log.warn(
                "server {server}: {kind} webhook {url} failed: {error}{consequence}",
                server=self._server,
                kind=kind,
                url=hook.url,
                error=str(e) or type(e).__name__,
                consequence=consequence,
            )
            return None

    async def gate(self, payload: bytes) -> Verdict:
        """
        Ask the blocking webhooks, in order, whether the request may go on.
        """
        for hook in self.blocking:
            answer = await self._try(hook, payload, "blocking", "; answering 503")
            if answer is None:
                return Verdict(503, (), b"Service Unavailable\n")
            code, headers, body = answer
            if 200 <= code < 300:
                continue
            relayed = []
            for name in (b"location", b"content-type", b"retry-after", b"www-authenticate"):
                for value in headers.getRawHeaders(name, ()):
                    relayed.append((name, value))
            return Verdict(code, tuple(relayed), body)
        return PROCEED

    def fire(self, payload: bytes) -> None:
        """
        Call the notify webhooks without waiting for them.
        """
        for hook in self.notify:
            if self._notifying >= MAX_NOTIFY_IN_FLIGHT:
                self.dropped += 1
                log.warn(
                    "server {server}: notify webhook {url} skipped, {n} already in flight",
                    server=self._server,
                    url=hook.url,
                    n=self._notifying,
                )
                continue
            self._notifying += 1
            d = Deferred.fromCoroutine(self._call(hook, payload))

            def done(result: Any, hook: Webhook = hook) -> None:
                self._notifying -= 1
                if isinstance(result, Failure):
                    log.warn(
                        "server {server}: notify webhook {url} failed: {error}",
                        server=self._server,
                        url=hook.url,
                        error=result.getErrorMessage(),
                    )

            d.addBoth(done)

    async def key(self, payload: bytes) -> Optional[str]:
        """
        @return: the cache key the first answering C{cache_key} webhook
            gives, or C{None} for the default key.
        """
        for hook in self.cache_key:
            answer = await self._try(hook, payload, "cache_key")
            if answer is None:
                continue
            code, _, body = answer
            if not 200 <= code < 300:
                continue
            text = body.decode("utf-8", "replace").strip()
            if text.startswith("{"):
                try:
                    value = json.loads(text).get("cache_key")
                except (ValueError, AttributeError):
                    value = None
                text = value if isinstance(value, str) else ""
            if text:
                return text
        return None
