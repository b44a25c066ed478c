"""
L{RedisNode}: one process's link to the Redis that its C{redis} servers
share -- bounded commands, the fill lock and the pub/sub bus.

Every command is bounded by a timeout and fails fast with
L{RedisUnavailable} while no connection is up (nothing is queued for
later: a late write could bring back what an invalidation removed). A
failure is counted in L{RedisNode.errors} and logged once per outage;
txredisapi reconnects with back-off and the next command that succeeds ends
the outage.

The bus is one pattern subscription on C{PREFIX:*}:

  - C{PREFIX:SERVER:filled} carries the sending node, C{KEY} and the
    stored variant (a JSON line) when a node stored a fill, or nothing
    after it when it stored nothing: nodes waiting for that key read the
    entry from Redis, and the other nodes holding a snapshot of that key
    read its new version (L{TieredCache.filled_elsewhere});
  - C{PREFIX:SERVER:purge} carries an invalidation (its id, the sending
    node, the pattern or C{None} for all, the keys whose snapshots stay
    until replaced): every node drops its L1 copies and answers on
    C{PREFIX:reply:NODE};
  - C{PREFIX:SERVER:snapshots} carries a change of the tracked snapshots
    (its id, the sending node, C{"op"}: C{"add"} or C{"remove"}, the
    path and its key): every node follows it and answers as for a purge.

@see: L{phantom_frame.cache.redis.TieredCache}
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from phantom_frame.cache.redislock import FillLock
from phantom_frame.cache.redisurl import RedisAddress, parse_redis_url

log = Logger()

MiB = 1024 * 1024

class RedisUnavailable(Exception):
    """
    Redis could not be reached, or did not answer in time.
    """


def _subscriber() -> Any:
    """
    @return: the bus connection's protocol class (made on first use:
        txredisapi imports the global reactor, so it is imported only when
        a node connects).
    """
    import txredisapi

    class Subscriber(txredisapi.SubscriberProtocol):
        """
        The bus connection: subscribes to the node's pattern whenever it
        (re)connects and hands messages to the node.
        """

        def connectionMade(self) -> Any:
            """
            Subscribe once the connection is usable.
            """
            done = super().connectionMade()
            node = self.factory.node

            def listening(_: Any) -> None:
                node.listening = True

            self.whenConnected().addCallback(lambda p: p.psubscribe(node.pattern)).addCallback(listening)
            return done

        def connectionLost(self, why: Any) -> None:
            """
            Note that the bus is not heard until it reconnects.
            """
            self.factory.node.listening = False
            super().connectionLost(why)

        def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
            """
            Hand a published message to the node.
            """
            self.factory.node.received(channel, message)

    return Subscriber


class _Purge:
    """
    One broadcast this node sent (an invalidation, a snapshot change): who
    confirmed it.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.confirmed: Set[str] = set()
        self.done: Deferred[int] = Deferred()

    def confirm(self, node: str) -> None:
        self.confirmed.add(node)
        if len(self.confirmed) >= self.expected and not self.done.called:
            self.done.callback(len(self.confirmed))


class RedisNode(FillLock):
    """
    This process's link to Redis: shared by every C{redis} server it runs.

    @ivar prefix: what every key and channel starts with.
    @ivar l1_bytes: the bound of each server's memory L1.
    @ivar timeout: seconds any one command may take.
    @ivar node_id: this node's name on the bus.
    @ivar errors: Redis failures met (commands that failed or timed out).
    @ivar listening: whether the bus subscription is up.
    """

    def __init__(
        self,
        url: str,
        reactor: Any,
        prefix: str = "phantom-frame",
        l1_bytes: int = 32 * MiB,
        timeout: float = 1.0,
        confirm_within: float = 1.0,
    ) -> None:
        """
        @param url: the C{redis_url}.
        @param reactor: connects and times commands.
        @param prefix: see L{prefix}.
        @param l1_bytes: see L{l1_bytes}.
        @param timeout: see L{timeout}.
        @param confirm_within: how long an invalidation waits for the
            other nodes' confirmations.
        @raise ValueError: on a bad URL.
        """
        self.address = parse_redis_url(url)
        self._reactor = reactor
        self.prefix = prefix
        self.pattern = prefix + ":*"
        self.l1_bytes = l1_bytes
        self.timeout = timeout
        self._confirmWithin = confirm_within
        self.node_id = os.urandom(8).hex()
        self.errors = 0
        self.listening = False
        self._down = False
        self._caches: Dict[str, Any] = {}
        self._filled: Dict[Tuple[str, str], List[Deferred[Optional[bytes]]]] = {}
        self._purges: Dict[str, _Purge] = {}
        self._commands: Any = None
        self._bus: Any = None
        self._connector: Any = None

    # Connecting

    def _endpoint(self) -> Any:
        address = self.address
        if address.sentinels:
            from phantom_frame.cache.sentinel import SentinelEndpoint

            return SentinelEndpoint(
                self._reactor, address.sentinels, address.service or "", address.password,
                address.sentinel_password, timeout=self.timeout,
            )
        if address.path is not None:
            return UNIXClientEndpoint(self._reactor, address.path, timeout=self.timeout)
        return HostnameEndpoint(self._reactor, address.host, address.port, timeout=self.timeout)

    def start(self) -> None:
        """
        Connect (and keep reconnecting, with back-off) the command and bus
        connections.
        """
        import txredisapi

        address = self.address
        commands = txredisapi.RedisFactory(
            "phantom-frame", address.db, 2, True, txredisapi.ConnectionHandler,
            None, address.password, None, False,
        )
        commands.maxDelay = 5
        bus = txredisapi.SubscriberFactory(True)
        bus.protocol = _subscriber()
        bus.password = address.password
        bus.charset = None
        bus.convertNumbers = False
        bus.maxDelay = 5
        bus.node = self
        self._commands, self._bus = commands, bus
        self._connector = self._endpoint()
        commands.startConnecting(self._connector)
        bus.startConnecting(self._connector)

    def stop(self) -> Deferred[Any]:
        """
        Close both connections and stop reconnecting.
        """
        stopping = [f.disconnect() for f in (self._commands, self._bus) if f is not None]
        if hasattr(self._connector, "stop"):
            stopping.append(self._connector.stop())
        self._commands = self._bus = self._connector = None
        return gatherResults(stopping, consumeErrors=True)

    @property
    def connected(self) -> bool:
        """
        Whether a command connection is up.
        """
        return self._commands is not None and bool(self._commands.pool)

    def ready(self, within: float, interval: float = 0.05) -> Deferred[bool]:
        """
        Wait until the command connection and the bus are both up.

        @param within: seconds to wait at most.
        @param interval: seconds between two looks.
        @return: a L{Deferred} firing with whether they came up in time.
        """
        return Deferred.fromCoroutine(self._ready(within, interval))

    async def _ready(self, within: float, interval: float) -> bool:
        deadline = self._reactor.seconds() + within
        while not (self.connected and self.listening):
            left = deadline - self._reactor.seconds()
            if left <= 0:
                return False
            await deferLater(self._reactor, min(interval, left), lambda: None)
        return True

    def register(self, name: str, cache: Any) -> None:
        """
        Route the bus messages of server C{name} to C{cache} (the newest
        registered wins: a reload replaces a server).
        """
        self._caches[name] = cache

    def unregister(self, name: str, cache: Any) -> None:
        """
        Stop routing messages to C{cache}, unless another replaced it.
        """
        if self._caches.get(name) is cache:
            del self._caches[name]

    def namespace(self, server: str) -> str:
        """
        @return: what the Redis keys of server C{server} start with.
        """
        return f"{self.prefix}:{server}:"

    # Commands

    def call(self, command: str, *args: Any) -> Deferred[Any]:
        """
        Run one Redis command, bounded by L{timeout}.

        @param command: a txredisapi method name (C{"get"}, C{"set"}, ...).
        @return: a L{Deferred} with the reply, or failing with
            L{RedisUnavailable} (counted and logged once per outage).
        """
        if not self.connected:
            return self._failed(Failure(RedisUnavailable("not connected")))
        try:
            sent = getattr(self._commands.handler, command)(*args)
        except Exception:
            return self._failed(Failure())
        result: Deferred[Any] = Deferred()

        def expired() -> None:
            result.errback(Failure(RedisUnavailable(f"no answer to {command} in {self.timeout} s")))

        timer = self._reactor.callLater(self.timeout, expired)

        def answered(value: Any) -> None:
            if timer.active():
                timer.cancel()
                result.callback(value)

        sent.addBoth(answered)
        return result.addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, value: Any) -> Any:
        if isinstance(value, Failure) or isinstance(value, Exception):
            return self._failed(value if isinstance(value, Failure) else Failure(value))
        if self._down:
            self._down = False
            log.info("Redis is reachable again: sharing the cache resumes")
        return value

    def _failed(self, failure: Failure) -> Deferred[Any]:
        self.errors += 1
        if failure.getErrorMessage().startswith("READONLY") and hasattr(self._connector, "reset"):
            # A replica now (a failover): reconnect to the master named now.
            self._connector.reset()
        if not self._down:
            self._down = True
            log.warn(
                "Redis unreachable ({error}): serving from memory and the origin until it is back",
                error=failure.getErrorMessage(),
            )
        return fail(RedisUnavailable(failure.getErrorMessage()))

    # Invalidation

    def purge(
        self, server: str, pattern: Optional[str], matches: Callable[[str], bool], keep: Tuple[str, ...] = ()
    ) -> Deferred[Optional[int]]:
        """
        Invalidate C{pattern} (L{None}: everything) of server C{server} on
        every node: publish it, delete the matching Redis keys once, then
        wait (at most the confirmation window) for the nodes' answers.

        @param matches: whether a cache key matches C{pattern}.
        @param keep: the Redis keys (snapshot entries and their C{Vary}
            names) that stay until their new versions replace them; every
            node keeps its snapshots of their cache keys.
        @return: a L{Deferred} with how many nodes confirmed (this one
            included), or L{None} when Redis could not be reached.
        """
        kept = set(keep)
        keys = sorted({_cache_key_of(name, self.namespace(server).encode("utf-8")) for name in keep} - {None})
        body = {"pattern": pattern, "keep": keys}
        return self.broadcast(server, "purge", body, lambda: self._delete_matching(server, matches, kept))

    def broadcast(
        self, server: str, kind: str, body: Dict[str, Any], meanwhile: Optional[Callable[[], Any]] = None
    ) -> Deferred[Optional[int]]:
        """
        Publish C{body} on the C{kind} channel of server C{server}, run
        C{meanwhile} (a coroutine function: Redis work of the sender), then
        wait (at most the confirmation window) for the nodes' answers.

        @return: a L{Deferred} with how many nodes confirmed (this one
            included), or L{None} when Redis could not be reached.
        """
        return Deferred.fromCoroutine(self._broadcast(server, kind, body, meanwhile))

    async def _broadcast(
        self, server: str, kind: str, body: Dict[str, Any], meanwhile: Optional[Callable[[], Any]]
    ) -> Optional[int]:
        purge_id = os.urandom(8).hex()
        message = json.dumps({**body, "id": purge_id, "from": self.node_id})
        purge = _Purge(1 << 30)
        self._purges[purge_id] = purge
        timer = None
        try:
            try:
                receivers = await self.call("publish", self.namespace(server) + kind, message)
            except RedisUnavailable:
                return None
            purge.expected = int(receivers)
            if len(purge.confirmed) >= purge.expected:
                purge.done.callback(len(purge.confirmed))
            try:
                if meanwhile is not None:
                    await meanwhile()
            except RedisUnavailable:
                pass
            if not purge.done.called:
                timer = self._reactor.callLater(
                    self._confirmWithin, lambda: purge.done.called or purge.done.callback(len(purge.confirmed))
                )
            return await purge.done
        finally:
            del self._purges[purge_id]
            if timer is not None and timer.active():
                timer.cancel()

    async def _delete_matching(self, server: str, matches: Callable[[str], bool], keep: Set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """
        SCAN the server's namespace and delete the entries (and their
        C{Vary} names) whose cache key C{matches}, but for the Redis keys
        in C{keep}.
        """
        namespace = self.namespace(server).encode("utf-8")
        cursor: Any = 0
        while True:
            cursor, names = await self.call("scan", cursor, self.namespace(server).replace("*", "\\*") + "*", 500)
            doomed = [
                name for name in names
                if _cache_key(name, namespace, matches) and _text(name) not in keep
            ]
            if doomed:
                await self.call("delete", doomed)
            if int(cursor) == 0:
                return

    async def delete_entries(self, server: str, key: str) -> None:
        """
        Delete every entry of C{key} (each variant) of server C{server}
        from Redis, and its C{Vary} names.
        """
        ns = self.namespace(server)
        glob = "".join("\\" + c if c in "*?[]\\" else c for c in f"{ns}e:{key}\x1f") + "*"
        doomed = [f"{ns}v:{key}"]
        cursor: Any = 0
        while True:
            cursor, names = await self.call("scan", cursor, glob, 500)
            doomed.extend(names)
            if int(cursor) == 0:
                break
        await self.call("delete", doomed)

    async def recorded_snapshots(self, server: str) -> Dict[str, bool]:
        """
        @return: C{{path: whether it was added (else removed) last}} for
            the snapshot changes recorded for server C{server}; empty when
            Redis cannot be reached.
        """
        try:
            recorded = await self.call("hgetall", self.namespace(server) + "tracked")
        except RedisUnavailable:
            return {}
        return {_text(path): _text(added) == "1" for path, added in (recorded or {}).items()}

    # The bus

    def received(self, channel: Any, message: Any) -> None:
        """
        Take one bus message (see the module docstring).
        """
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        if isinstance(message, str):
            message = message.encode("utf-8", "surrogatepass")
        head, _, kind = channel.rpartition(":")
        try:
            if kind == "filled":
                self._on_filled(head[len(self.prefix) + 1 :], message)
            elif kind in ("purge", "snapshots"):
                self._on_broadcast(head[len(self.prefix) + 1 :], kind, json.loads(message))
            elif head == f"{self.prefix}:reply" and kind == self.node_id:
                answer = json.loads(message)
                purge = self._purges.get(answer["id"])
                if purge is not None:
                    purge.confirm(answer["node"])
        except Exception:
            log.failure("cannot handle the Redis bus message on {channel}", channel=channel)

    def _on_broadcast(self, server: str, kind: str, purge: Dict[str, Any]) -> None:
        cache = self._caches.get(server)
        if cache is not None and purge["from"] != self.node_id:
            if kind == "purge":
                cache.drop_local(purge["pattern"], tuple(purge.get("keep", ())))
            else:
                cache.snapshots_changed(purge["op"], purge["path"], purge["key"])
        reply = json.dumps({"id": purge["id"], "node": self.node_id})
        self.call("publish", f"{self.prefix}:reply:{purge['from']}", reply).addErrback(lambda _: None)


def _text(name: Any) -> str:
    """
    @return: a Redis key as text.
    """
    return name.decode("utf-8", "surrogatepass") if isinstance(name, bytes) else name


def _cache_key_of(name: Any, namespace: bytes) -> Optional[str]:
    """
    @param name: a Redis key of the namespace: C{NS e:KEY\\x1fVARIANT} or
        C{NS v:KEY}.
    @return: its cache key, or L{None} for another kind of key.
    """
    if isinstance(name, str):
        name = name.encode("utf-8", "surrogatepass")
    rest = name[len(namespace) :]
    kind, _, rest = rest.partition(b":")
    if kind == b"e":
        rest = rest.partition(b"\x1f")[0]
    elif kind != b"v":
        return None
    return rest.decode("utf-8", "surrogatepass")


def _cache_key(name: Any, namespace: bytes, matches: Callable[[str], bool]) -> bool:
    """
    @param name: a Redis key of the namespace (see L{_cache_key_of}).
    @return: whether its cache key C{matches}.
    """
    key = _cache_key_of(name, namespace)
    return key is not None and matches(key)


__all__ = ["RedisAddress", "RedisNode", "RedisUnavailable", "parse_redis_url"]
