"""
A real Redis master, its replica and one Sentinel watching them, on
loopback TCP in a temporary directory: started, waited for, stopped and
removed at the end.

Redis cannot listen on port 0, so each process is given a random port; when
it cannot bind it (it exits, or another server answers there), another port
is tried.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from typing import Any, Awaitable, Callable, List, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater

from phantom_frame.cache.sentinel import ask, encode
from tests.redis_server import NO_REDIS, REDIS_SERVER, _Ended

#: The master's name known to the Sentinel.
SERVICE = "pf-test"

__all__ = ["NO_REDIS", "SERVICE", "SentinelGroup", "command", "eventually"]


async def command(port: int, *args: str, timeout: float = 2.0) -> Any:
    """
    @return: the reply of the server on loopback C{port} to one command.
    """
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=timeout)
    return (await ask(endpoint, [encode(*args)], timeout, reactor))[0]


async def eventually(condition: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.05) -> None:
    """
    Poll C{condition} until it holds.

    @raise AssertionError: when it does not within C{within} seconds.
    """
    deadline = reactor.seconds() + within
    while True:
        try:
            if await condition():
                return
        except Exception:
            pass
        if reactor.seconds() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await deferLater(reactor, interval, lambda: None)


class _Process:
    """
    One redis-server process on a loopback port.
    """

    def __init__(self, name: str, port: int, transport: Any, ended: _Ended) -> None:
        self.name = name
        self.port = port
        self.transport = transport
        self.ended = ended
        self.running = True

    def kill(self) -> Deferred[None]:
        """
        Kill the process (SIGKILL: no goodbye to anyone) and wait for it to
        exit.
        """
        if self.running:
            self.running = False
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass
        return Deferred.fromCoroutine(self._gone())

    async def _gone(self) -> None:
        if not self.ended.ended.called:
            await _copy(self.ended.ended)


async def _copy(d: Deferred[None]) -> None:
    """
    Wait for C{d} without taking its result from other waiters.
    """
    done: Deferred[None] = Deferred()
    d.addBoth(lambda r: (done.callback(None), r)[1])
    await done


class SentinelGroup:
    """
    A master, a replica of it and a Sentinel (quorum 1, down after 500 ms).

    @ivar master: the master's process.
    @ivar replica: the replica's process.
    @ivar sentinel: the Sentinel's process.
    """

    def __init__(self, testcase: Any, policy: str = "allkeys-lru") -> None:
        self.directory = tempfile.mkdtemp(prefix="pf-sentinel-")
        self._policy = policy
        self._processes: List[_Process] = []
        self.master: Optional[_Process] = None
        self.replica: Optional[_Process] = None
        self.sentinel: Optional[_Process] = None
        testcase.addCleanup(shutil.rmtree, self.directory, True)
        testcase.addCleanup(self.stop)

    @property
    def url(self) -> str:
        """
        The C{redis_url} reaching the master through the Sentinel.
        """
        assert self.sentinel is not None
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}"

    async def start(self, within: float = 30.0) -> None:
        """
        Start the master, then the replica, wait until it is in sync, then
        the Sentinel, and wait until it knows the replica.
        """
        self.master = await self._spawn("master", lambda port, home: self._server(port, home))
        master_port = self.master.port
        self.replica = await self._spawn(
            "replica", lambda port, home: self._server(port, home) + ["--replicaof", "127.0.0.1", str(master_port)]
        )
        replica_port = self.replica.port

        async def synced() -> bool:
            info = await command(replica_port, "INFO", "replication")
            return b"master_link_status:up" in info

        await eventually(synced, within, "the replica is in sync")
        self.sentinel = await self._spawn("sentinel", self._sentinel)
        sentinel_port = self.sentinel.port

        async def known() -> bool:
            replicas = await command(sentinel_port, "SENTINEL", "replicas", SERVICE)
            return any(_fields(r).get(b"flags") == b"slave" for r in replicas)

        await eventually(known, within, "the Sentinel knows the replica")

    async def named(self) -> Tuple[str, int]:
        """
        @return: the master's address that the Sentinel gives now.
        """
        assert self.sentinel is not None
        host, port = await command(self.sentinel.port, "SENTINEL", "get-master-addr-by-name", SERVICE)
        return host.decode("utf-8"), int(port)

    def _server(self, port: int, home: str) -> List[str]:
        return [
            REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "no",
            "--save", "", "--appendonly", "no", "--dir", home, "--logfile", os.path.join(home, "log"),
            "--maxmemory-policy", self._policy, "--repl-diskless-sync-delay", "0",
        ]

    def _sentinel(self, port: int, home: str) -> List[str]:
        assert self.master is not None
        conf = os.path.join(home, "sentinel.conf")
        with open(conf, "w") as f:
            f.write(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {home}\n"
                f"logfile {os.path.join(home, 'log')}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1\n"
                f"sentinel down-after-milliseconds {SERVICE} 500\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
        return [REDIS_SERVER, conf, "--sentinel"]

    async def _spawn(self, name: str, args: Callable[[int, str], List[str]]) -> _Process:
        """
        Start one process on a random port, trying another port when it
        cannot listen on it.
        """
        for attempt in range(20):
            port = random.randint(20000, 59999)
            home = os.path.join(self.directory, f"{name}-{attempt}")
            os.mkdir(home)
            ended = _Ended()
            argv = args(port, home)
            transport = reactor.spawnProcess(ended, argv[0], argv, env=None)
            process = _Process(name, port, transport, ended)
            self._processes.append(process)
            if await self._ours(process):
                return process
            await process.kill()
        raise RuntimeError(f"redis-server ({name}) did not start")

    async def _ours(self, process: _Process, within: float = 10.0) -> bool:
        """
        @return: whether C{process} answers on its port (not another server
            already there); C{False} once it exits.
        """
        deadline = reactor.seconds() + within
        while not process.ended.ended.called and reactor.seconds() < deadline:
            try:
                info = await command(process.port, "INFO", "server", timeout=1.0)
                return b"process_id:%d\r\n" % process.transport.pid in info
            except Exception:
                await deferLater(reactor, 0.025, lambda: None)
        return False

    async def stop(self) -> None:
        """
        Kill every process and wait for them to exit.
        """
        for process in self._processes:
            await process.kill()


def _fields(flat: List[Any]) -> dict:
    """
    @return: a Sentinel's flat C{[name, value, ...]} reply as a dict.
    """
    return dict(zip(flat[::2], flat[1::2]))
