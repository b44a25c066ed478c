"""
Token buckets shared through Redis: L{RedisBuckets} makes, for each rate
limit, a L{RedisBucketStore} whose buckets every process and host pointed
at one Redis share.

Each bucket is a Redis hash (C{PREFIX:ratelimit:LIMIT:KEY}: its tokens and
when they were counted, by Redis's own clock, so that hosts whose clocks
differ agree) updated by one Lua script (L{TAKE}, sent with EVALSHA, EVAL
the first time on each connection): it refills the bucket, takes up to the
tokens asked for and says how many it gave and, when it gave fewer, how
long until the next one. The hash expires once it would be full again:
idle buckets vanish.

The decision is synchronous (L{IBucketStore.take}); the round trip happens
before it (L{RedisBucketStore.ready}): a request of a key waits for one
script call, and requests of that key arriving meanwhile wait together for
the next one, which asks for all their tokens at once (so a key makes at
most one round trip at a time, however busy). What the script gave is
spent at once by the requests waiting (a busy key's round trip also asks
for a few tokens ahead, L{LEASE_AHEAD}, which later requests spend
without waiting); when it said "none until T", the
key's requests are refused here until T without asking Redis again (other
processes can only take tokens, never add them).

When Redis cannot be reached or does not answer in time, the limits fall
back to this process's own buckets (a L{MemoryBucketStore} per limit):
logged once per outage, counted with the node's Redis errors, and tried
again every L{RedisBuckets.retry_after} seconds until Redis answers.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, List, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from phantom_frame.cache.buckets import MAX_KEYS, ISharedBucketStore, MemoryBucketStore

__all__ = ["LEASE_AHEAD", "LEASE_LIFE", "TAKE", "RedisBucketStore", "RedisBuckets"]

log = Logger()

#: KEYS[1]: the bucket; ARGV: rate a second, burst, tokens wanted.
#: Returns {tokens given, milliseconds until the next one (0 when all
#: were given)}.
TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 't', 'n')
local tokens = tonumber(state[2])
if tokens == nil then
  tokens = burst
else
  local counted = tonumber(state[1]) or now
  if now > counted then
    tokens = math.min(burst, tokens + (now - counted) * rate)
  end
end
local given = math.min(want, math.floor(tokens))
if given < 0 then given = 0 end
tokens = tokens - given
local wait = 0
if given < want then
  wait = math.max(1, math.ceil((1 - tokens) / rate * 1000))
end
redis.call('HSET', KEYS[1], 't', string.format('%.6f', now), 'n', string.format('%.9g', tokens))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {given, wait}
"""

#: Seconds a token given by Redis and not spent (asked for ahead, its
#: request's client left, or a later limit refused it) stays usable by
#: this process.
LEASE_LIFE = 1.0

#: Each round trip also asks for the tokens of this many seconds of
#: traffic at the limit's rate (none below 100 a second: low limits stay
#: exact), so that busy keys are answered at once from what is leased.
LEASE_AHEAD = 0.01


class _Key:
    """
    What a store knows of one key's shared bucket.

    @ivar lease: tokens Redis gave this process, not spent yet.
    @ivar leased_at: when they were given.
    @ivar empty_until: Redis said that the bucket is empty until then.
    @ivar waiting: requests waiting for the round trip out.
    @ivar queued: requests waiting for the next one.
    @ivar asking: whether a round trip is out.
    """

    __slots__ = ("lease", "leased_at", "empty_until", "waiting", "queued", "asking")

    def __init__(self) -> None:
        self.lease = 0
        self.leased_at = 0.0
        self.empty_until = 0.0
        self.waiting: List[Deferred[None]] = []
        self.queued: List[Deferred[None]] = []
        self.asking = False

    def spendable(self, now: float) -> int:
        """
        @return: the leased tokens still usable at C{now}.
        """
        if self.lease and now - self.leased_at >= LEASE_LIFE:
            self.lease = 0
        return self.lease


class RedisBuckets:
    """
    Makes the L{RedisBucketStore} of each limit (a
    L{phantom_frame.cache.buckets.BucketStoreFactory}), and knows, for all
    of them, whether Redis answers.

    @ivar node: the L{phantom_frame.cache.bus.RedisNode} used.
    @ivar retry_after: seconds between attempts while Redis is down.
    @ivar down: whether the limits use this process's buckets now.
    """

    def __init__(self, node: Any, clock: IReactorTime, retry_after: float = 1.0, capacity: int = MAX_KEYS) -> None:
        """
        @param node: the process's link to Redis (its C{call}, C{prefix}
            and error count are used).
        @param clock: the time local decisions are made by.
        @param retry_after: see L{retry_after}.
        @param capacity: the most keys each store remembers.
        """
        self.node = node
        self.clock = clock
        self.retry_after = retry_after
        self.capacity = capacity
        self.down = False
        self._retry_at = 0.0

    def __call__(self, name: str, rate: float, burst: int) -> RedisBucketStore:
        """
        @return: the store of limit C{name}.
        """
        return RedisBucketStore(self, name, rate, burst)

    def usable(self, now: float) -> bool:
        """
        @return: whether Redis should be asked now.
        """
        return not self.down or now >= self._retry_at

    def failed(self, failure: Failure) -> None:
        """
        Redis did not answer: use local buckets for L{retry_after} seconds
        (logged once per outage; the node counted the error).
        """
        self._retry_at = self.clock.seconds() + self.retry_after
        if not self.down:
            self.down = True
            log.warn(
                "Redis unreachable ({error}): rate limits use each process's own buckets until it is back",
                error=failure.getErrorMessage(),
            )

    def answered(self) -> None:
        """
        Redis answered: the limits are shared again.
        """
        if self.down:
            self.down = False
            log.info("Redis is reachable again: rate limits are shared again")


@implementer(ISharedBucketStore)
class RedisBucketStore:
    """
    The shared buckets of one limit (see the module docstring).

    @ivar local: the buckets used while Redis is down (and for keys taken
        without L{ready}).
    """

    def __init__(self, link: RedisBuckets, name: str, rate: float, burst: int) -> None:
        """
        @param link: the factory: Redis, the clock and whether Redis is up.
        @param name: the limit's name (part of its keys).
        @param rate: tokens added a second.
        @param burst: the most tokens a bucket holds.
        @raise ValueError: on a rate or burst that is not above 0.
        """
        self.local = MemoryBucketStore(name, rate, burst, link.capacity)
        self._link = link
        self._rate = repr(float(rate))
        self._burst = burst
        self._ahead = min(burst - 1, int(rate * LEASE_AHEAD))
        self._prefix = f"{link.node.prefix}:ratelimit:{name}:"
        self._keys: "OrderedDict[str, _Key]" = OrderedDict()

    def _state(self, key: str) -> _Key:
        keys = self._keys
        state = keys.get(key)
        if state is None:
            if len(keys) >= self._link.capacity:
                keys.popitem(last=False)
            state = keys[key] = _Key()
        else:
            keys.move_to_end(key)
        return state

    def answers(self, key: str, now: float) -> bool:
        """
        @return: whether L{take} of C{key} can answer now without a round
            trip (Redis is down, a token is leased, or the bucket is known
            to be empty).
        """
        if not self._link.usable(now):
            return True
        state = self._keys.get(key)
        return state is not None and (state.spendable(now) > 0 or state.empty_until > now)

    def ready(self, key: str, now: float) -> Optional[Deferred[None]]:
        """
        See L{ISharedBucketStore.ready}.
        """
        if self.answers(key, now):
            return None
        state = self._state(key)
        waiter: Deferred[None] = Deferred()
        if state.asking:
            state.queued.append(waiter)
            return waiter
        state.waiting.append(waiter)
        self._ask(key, state)
        return waiter if not waiter.called else None

    def _ask(self, key: str, state: _Key) -> None:
        """
        Ask Redis for the tokens of the requests waiting.
        """
        state.asking = True
        want = max(1, len(state.waiting) - state.lease) + self._ahead
        asked = self._link.node.call("eval", TAKE, [self._prefix + key], [self._rate, self._burst, want])
        asked.addCallbacks(self._given, self._failed, (key, state, want), None, (key, state))

    def _given(self, reply: Any, key: str, state: _Key, want: int) -> None:
        link = self._link
        link.answered()
        now = link.clock.seconds()
        given, wait = int(reply[0]), int(reply[1])
        state.lease = state.spendable(now) + given
        state.leased_at = now
        if given < want - self._ahead:
            state.empty_until = now + wait / 1000.0
        self._done(key, state)

    def _failed(self, failure: Failure, key: str, state: _Key) -> None:
        self._link.failed(failure)
        self._done(key, state)

    def _done(self, key: str, state: _Key) -> None:
        """
        Let the requests that waited decide; ask for those queued since.
        """
        state.asking = False
        waiting, state.waiting = state.waiting, []
        for waiter in waiting:
            waiter.callback(None)
        queued, state.queued = state.queued, []
        if not queued:
            return
        now = self._link.clock.seconds()
        if not self._link.usable(now) or state.empty_until > now or state.spendable(now) >= len(queued):
            for waiter in queued:
                waiter.callback(None)
            return
        state.waiting = queued
        self._ask(key, state)

    def take(self, key: str, now: float) -> float:
        """
        See L{IBucketStore.take}: a leased token, or the wait Redis gave;
        this process's own bucket while Redis is down (or for a key not
        made ready).
        """
        if not self._link.down:
            state = self._keys.get(key)
            if state is not None:
                if state.spendable(now) > 0:
                    state.lease -= 1
                    return 0.0
                if state.empty_until > now:
                    return state.empty_until - now
        return self.local.take(key, now)

    def refund(self, key: str, now: float) -> None:
        """
        See L{IBucketStore.refund}: the token stays with this process, for
        its next request of C{key}.
        """
        state = self._keys.get(key)
        if not self._link.down and state is not None:
            state.lease += 1
            state.leased_at = now
        else:
            self.local.refund(key, now)
