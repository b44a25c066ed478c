"""
A real redis-server for the tests, on a UNIX socket in a temporary
directory: started, waited for (PING), stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Protocol, ProcessProtocol
from twisted.internet.task import deferLater

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

#: Why the Redis tests are skipped (.ci/run fails when they are).
NO_REDIS = "redis-server is not installed" if not os.access(REDIS_SERVER, os.X_OK) else None


class _Ended(ProcessProtocol):
    """
    Fires C{ended} when the process exits.
    """

    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


class _Ping(Protocol):
    """
    Sends PING; fires C{answered} with the reply's first bytes.
    """

    def __init__(self) -> None:
        self.answered: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"PING\r\n")

    def dataReceived(self, data: bytes) -> None:
        if not self.answered.called:
            self.answered.callback(data)
            self.transport.loseConnection()


class RedisServer:
    """
    One redis-server process on C{path}; L{stop} and L{start} again to
    simulate an outage.

    @ivar path: its UNIX socket.
    @ivar url: the C{redis_url} reaching it.
    """

    def __init__(self, testcase: Any, policy: str = "allkeys-lru") -> None:
        self.directory = tempfile.mkdtemp(prefix="pf-redis-")
        self.path = os.path.join(self.directory, "redis.sock")
        self.url = "unix://" + self.path
        self._policy = policy
        self._process: Optional[_Ended] = None
        self._transport: Any = None
        testcase.addCleanup(shutil.rmtree, self.directory, True)
        testcase.addCleanup(self.stop)

    async def start(self) -> None:
        """
        Start the server and wait until it answers PING.
        """
        ended = _Ended()
        args = [
            REDIS_SERVER, "--port", "0", "--unixsocket", self.path, "--save", "",
            "--appendonly", "no", "--dir", self.directory, "--maxmemory-policy", self._policy,
        ]
        self._transport = reactor.spawnProcess(ended, REDIS_SERVER, args, env=None)
        self._process = ended
        for _ in range(400):
            if os.path.exists(self.path):
                try:
                    ping = _Ping()
                    await UNIXClientEndpoint(reactor, self.path).connect(_factory(ping))
                    if (await ping.answered).startswith(b"+PONG"):
                        return
                except OSError:
                    pass
            await deferLater(reactor, 0.025, lambda: None)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> Deferred[None]:
        """
        Stop the server (if running) and wait for it to exit.
        """
        process, self._process = self._process, None
        if process is None:
            return Deferred.fromCoroutine(_nothing())
        try:
            self._transport.signalProcess("KILL")
        except Exception:
            pass

        def gone(_: Any) -> None:
            if os.path.exists(self.path):
                os.unlink(self.path)

        return process.ended.addCallback(gone)


async def _nothing() -> None:
    """
    Nothing to wait for.
    """


def _factory(protocol: Protocol) -> Any:
    """
    @return: a factory that builds C{protocol}.
    """
    from twisted.internet.protocol import Factory

    return Factory.forProtocol(lambda: protocol)
