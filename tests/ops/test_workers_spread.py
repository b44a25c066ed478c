"""
Tests for the spread of connections between workers
(L{phantom_frame.ops.inherit.limit_accepts}): how many connections an
adopted port accepts per wake-up, in memory, then a burst of connections
on real C{workers = 2} processes.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
from typing import Any, Dict, List

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame.ops.inherit import ACCEPTS_PER_WAKEUP, WorkerSetup, limit_accepts

from ..origin import Origin, until
from .test_workers import Supervised

#: How many connections the burst opens while the workers are stopped.
BURST = 40

#: How many bursts the spread is judged over.
BURSTS = 3


class _Socket:
    """
    A listening socket that has C{waiting} connections queued and counts
    the C{accept} calls made on it.
    """

    def __init__(self, waiting: int) -> None:
        self.waiting = waiting
        self.accepts = 0

    def accept(self) -> Any:
        """
        @return: a connected socket pair's one end while connections wait.
        @raise BlockingIOError: when none is left.
        """
        if not self.waiting:
            raise BlockingIOError(errno.EAGAIN, "no connection waits")
        self.waiting -= 1
        self.accepts += 1
        ours, theirs = socket.socketpair()
        theirs.close()
        return ours, ("127.0.0.1", 40000 + self.accepts)


class _Port(tcp.Port):
    """
    A L{tcp.Port} on a L{_Socket}, whose accepted connections are dropped
    at once.
    """

    def __init__(self, sock: _Socket) -> None:
        super().__init__(0, Factory.forProtocol(Protocol), reactor=_Reactor())
        self.socket = sock
        self.numberAccepts = 100
        self.transport = lambda skt, protocol, addr, port, session, reactor: skt.close()


class _Reactor:
    """
    Enough of a reactor for a port on a L{_Socket}: adopting a descriptor
    gives such a port (the endpoint closes the descriptor).
    """

    def __init__(self, sock: Any = None) -> None:
        self.sock = sock

    def adoptStreamPort(self, fd: int, family: int, factory: Any) -> tcp.Port:
        """
        @return: a L{_Port} on L{sock}, in place of the socket C{fd}.
        """
        return _Port(self.sock)


class AcceptsPerWakeupTests(SynchronousTestCase):
    """
    L{limit_accepts} on a port's accept loop.
    """

    def test_twistedAcceptsEveryWaitingConnection(self) -> None:
        """
        Left alone, one wake-up of a Twisted port accepts every waiting
        connection (up to 100): the behaviour the limit changes.
        """
        sock = _Socket(40)
        _Port(sock).doRead()
        self.assertEqual(sock.accepts, 40)

    def test_limited(self) -> None:
        """
        A limited port accepts at most L{ACCEPTS_PER_WAKEUP} connections per
        wake-up, however many wait and however often it found its limit
        reached (Twisted raises it by 20 each time).
        """
        sock = _Socket(40)
        port = _Port(sock)
        limit_accepts(port, ACCEPTS_PER_WAKEUP)
        for wakeup in range(1, 6):
            port.doRead()
            self.assertEqual(sock.accepts, wakeup * ACCEPTS_PER_WAKEUP)

    def test_adoptedPortsAreLimited(self) -> None:
        """
        The port a worker adopts from its supervisor accepts at most
        L{ACCEPTS_PER_WAKEUP} connections per wake-up.
        """
        with socket.socket() as held:
            fd = os.dup(held.fileno())
        sock = _Socket(40)
        setup = WorkerSetup(0, {"http_listen": (fd, socket.AF_INET)}, "unused")
        port = self.successResultOf(setup.endpoint("http_listen", _Reactor(sock)).listen(Factory()))
        port.doRead()
        port.doRead()
        self.assertEqual(sock.accepts, 2 * ACCEPTS_PER_WAKEUP)

    def test_atLeastOne(self) -> None:
        """
        A limit below one connection per wake-up is refused.
        """
        self.assertRaises(ValueError, limit_accepts, _Port(_Socket(1)), 0)


class _Client(Protocol):
    """
    Sends one request for C{path} when told to and keeps the answer.

    @ivar closed: fires with the answer once the server closed the
        connection.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.received: List[bytes] = []
        self.closed: Deferred[bytes] = Deferred()

    def ask(self) -> None:
        """
        Send the request, asking the server to close afterwards.
        """
        self.transport.write(
            b"GET %s HTTP/1.1\r\nHost: proxy.example\r\nConnection: close\r\n\r\n" % self.path.encode()
        )

    def dataReceived(self, data: bytes) -> None:
        """
        Keep C{data}.
        """
        self.received.append(data)

    def connectionLost(self, reason: Any) -> None:
        """
        Fire L{closed} with everything received.
        """
        self.closed.callback(b"".join(self.received))


class BurstSpreadTests(TestCase):
    """
    A burst of connections on real C{workers = 2} processes.
    """

    timeout = 60

    async def burst(self, run: Supervised, workers: List[int], number: int) -> Dict[str, int]:
        """
        Stop the workers, open L{BURST} connections and send a request on
        each, continue the workers and wait for every answer.

        @param number: this burst's number, in its paths.
        @return: by worker name, how many of the burst's requests it answered
            (read from its access log).
        """

        def resume() -> None:
            for pid in workers:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        self.addCleanup(resume)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", run.http)
        clients: List[_Client] = []
        for index in range(BURST):
            client = _Client(f"/burst/{number}/{index}")
            clients.append(client)
            await endpoint.connect(Factory.forProtocol(lambda client=client: client))
        for client in clients:
            self.addCleanup(lambda client=client: client.closed.called or client.transport.abortConnection())
            client.ask()
        resume()
        answers = await gatherResults([client.closed for client in clients])
        for answer in answers:
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:200])
        paths = {client.path for client in clients}
        await until(lambda: paths <= set(run.served()))
        counts = {"worker-0": 0, "worker-1": 0}
        for path, name in run.served().items():
            if path in paths:
                counts[name] += 1
        return counts

    async def test_burstIsShared(self) -> None:
        """
        Connections that all wait when the workers wake up (the workers are
        stopped with C{SIGSTOP} while they connect, then continued) are
        shared between both workers: over L{BURSTS} bursts, each worker
        answers at least an eighth of them, where one wake-up of one worker
        used to take each burst whole.
        """
        run = Supervised(self, Origin())
        await run.start()
        await run.spread()
        workers = [pids[-1] for pids in run.pids().values()]
        self.assertEqual(len(workers), 2)
        totals = {"worker-0": 0, "worker-1": 0}
        bursts = []
        for number in range(BURSTS):
            counts = await self.burst(run, workers, number)
            self.assertEqual(sum(counts.values()), BURST)
            bursts.append(counts)
            for name, count in counts.items():
                totals[name] += count
        self.assertGreaterEqual(min(totals.values()), BURSTS * BURST // 8, bursts)
