"""
L{FillLock}: the part of L{phantom_frame.cache.bus.RedisNode} that makes a
fill single-flight across nodes -- a lock in Redis (C{SET NX PX}, released
only by its holder) and the C{filled} messages that tell the waiting nodes
(and the nodes holding a snapshot of the key) that the fill landed.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred

#: Deletes a lock only if this node still holds it.
_UNLOCK = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end"
)


class FillLock:
    """
    The fill lock and its C{filled} messages, mixed into
    L{phantom_frame.cache.bus.RedisNode} (which provides C{call},
    C{namespace}, C{node_id} and the registered caches).
    """

    node_id: str
    call: Callable[..., Deferred[Any]]
    namespace: Callable[[str], str]
    _caches: Dict[str, Any]
    _filled: Dict[Tuple[str, str], List[Deferred[Optional[bytes]]]]

    def acquire(self, lock: str, ttl: float) -> Deferred[Optional[str]]:
        """
        Take C{lock} for C{ttl} seconds unless another node holds it.

        @return: a L{Deferred} with this holder's token, or L{None} when
            another holds it.
        """
        token = os.urandom(8).hex()
        return self.call("set", lock, token, None, max(1, int(ttl * 1000)), True).addCallback(
            lambda reply: token if reply in (b"OK", "OK", True) else None
        )

    def release(self, lock: str, token: str) -> Deferred[Any]:
        """
        Let go of C{lock} if this holder (C{token}) still holds it.
        """
        return self.call("eval", _UNLOCK, [lock], [token]).addErrback(lambda _: None)

    def expect_filled(self, server: str, key: str) -> Deferred[Optional[bytes]]:
        """
        Wait for the next C{filled} message of C{key} (register before
        asking for the lock, so that none is missed).

        @return: a cancellable L{Deferred} with the variant line the filler
            stored, or L{None} when it stored nothing.
        """
        slot = (server, key)

        def cancel(d: Deferred[Optional[bytes]]) -> None:
            waiting = self._filled.get(slot, [])
            if d in waiting:
                waiting.remove(d)
                if not waiting:
                    del self._filled[slot]

        waiter: Deferred[Optional[bytes]] = Deferred(cancel)
        self._filled.setdefault(slot, []).append(waiter)
        return waiter

    def announce(self, server: str, key: str, variant: Optional[bytes]) -> None:
        """
        Tell every node that the fill of C{key} landed: stored as
        C{variant} (a JSON line), or nothing stored (L{None}).
        """
        stored = b"0" if variant is None else b"1" + variant
        message = self.node_id.encode("ascii") + b"\n" + key.encode("utf-8", "surrogatepass") + b"\n" + stored
        self.call("publish", self.namespace(server) + "filled", message).addErrback(lambda _: None)

    def _on_filled(self, server: str, message: bytes) -> None:
        """
        Take a C{filled} message: wake the waiters of its key, and let the
        server's cache on this node follow another node's new version.
        """
        sender, _, rest = message.partition(b"\n")
        raw, _, stored = rest.rpartition(b"\n")
        variant = stored[1:] if stored[:1] == b"1" else None
        key = raw.decode("utf-8", "surrogatepass")
        waiters = self._filled.pop((server, key), [])
        for waiter in waiters:
            waiter.callback(variant)
        cache = self._caches.get(server)
        if not waiters and cache is not None and variant is not None and sender != self.node_id.encode("ascii"):
            cache.filled_elsewhere(key, variant)
