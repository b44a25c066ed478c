"""
What a worker process inherits from its supervisor (see
L{phantom_frame.ops.workers}): the listening sockets, as descriptors, and
the path of its private control socket, in the C{PHANTOM_FRAME_WORKER}
environment variable (L{WorkerSetup}); and a pipe on its stdin whose end
tells it that the supervisor is gone (L{ParentWatch}). A worker accepts
few connections from an inherited listener each time it wakes up
(L{limit_accepts}), so that a burst of connections is shared between the
workers rather than taken by the first one awake.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import attr
from twisted.application.service import Service
from twisted.internet import abstract, fdesc, tcp, unix
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

#: The environment variable that makes C{twistd phantom-frame} a worker.
WORKER_ENV = "PHANTOM_FRAME_WORKER"

#: How many connections a worker accepts from a shared listener each time
#: it wakes up. Every worker waits on the same socket, and a Twisted port
#: accepts up to 100 waiting connections per wake-up (more under load): the
#: first worker awake would take a whole burst. A few at a time, yielding
#: the CPU in between, the workers take turns; fewer costs CPU when every
#: request is a new connection. Measured with C{bench/workers.py} (README,
#: "Scale-out").
ACCEPTS_PER_WAKEUP = 8


def limit_accepts(port: Any, most: int) -> Any:
    """
    Make a listening port accept at most C{most} connections each time the
    reactor finds it readable. Twisted's L{tcp.Port} (and L{unix.Port})
    size their accept loop by themselves, C{numberAccepts}, raising it by
    20 whenever it was reached: it is brought back under C{most} before
    every read. A read that reached C{most} (more connections may wait)
    gives the CPU to the processes waiting for it (C{sched_yield}): another
    worker woken on the same CPU takes its turn at once rather than after
    this one's time slice. A port of another kind is left as it is.

    @param port: a listening port.
    @param most: the most connections accepted per wake-up, at least 1.
    @return: C{port}.
    @raise ValueError: when C{most} is below 1.
    """
    if most < 1:
        raise ValueError(f"accepts per wake-up must be at least 1, not {most!r}")
    if not isinstance(port, tcp.Port):
        return port
    read = port.doRead

    def doRead() -> Any:
        port.numberAccepts = min(port.numberAccepts, most)
        before = port.sessionno
        result = read()
        if port.sessionno - before >= most:
            os.sched_yield()
        return result

    port.numberAccepts = min(port.numberAccepts, most)
    port.doRead = doRead  # type: ignore[method-assign]
    return port


@attr.s(auto_attribs=True, frozen=True)
class WorkerSetup:
    """
    What a worker process was handed by its supervisor.

    @ivar index: the worker's number, from 0.
    @ivar listeners: by listener key (C{http_port}, C{https_listen}, ...),
        the inherited descriptor and its address family.
    @ivar control: the path of the worker's private control socket.
    """

    index: int
    listeners: Dict[str, Tuple[int, int]]
    control: str

    def encode(self) -> str:
        """
        @return: the value of L{WORKER_ENV} that L{from_environ} reads back.
        """
        return json.dumps(
            {"index": self.index, "listeners": self.listeners, "control": self.control}
        )

    @classmethod
    def from_environ(cls, environ: Optional[Dict[str, str]] = None) -> Optional[WorkerSetup]:
        """
        Read and remove L{WORKER_ENV} (so that the processes a worker runs
        are not workers).

        @param environ: the environment; C{os.environ} by default.
        @return: the setup, or L{None} outside a worker.
        @raise ValueError: when the variable is malformed.
        """
        environ = os.environ if environ is None else environ  # type: ignore[assignment]
        text = environ.pop(WORKER_ENV, None)  # type: ignore[union-attr]
        if text is None:
            return None
        data = json.loads(text)
        listeners = {str(k): (int(v[0]), int(v[1])) for k, v in data["listeners"].items()}
        return cls(index=int(data["index"]), listeners=listeners, control=str(data["control"]))

    def endpoint(self, key: str, reactor: Any) -> Optional[IStreamServerEndpoint]:
        """
        @param key: a listener's configuration key (C{http_port},
            C{https_listen}, ...).
        @param reactor: the reactor to listen on.
        @return: the endpoint adopting the socket inherited for C{key}
            (listening on it closes the inherited descriptor), or L{None}
            when none was (the control site listens on C{unix:}L{control}
            instead).
        """
        if key not in self.listeners:
            return None
        fd, family = self.listeners[key]
        return _Adopted(AdoptedStreamServerEndpoint(reactor, fd, family))

    def services(self, reactor: Any) -> List[Service]:
        """
        @param reactor: the worker's reactor.
        @return: what a worker runs besides the proxy: a watch that stops
            it when its supervisor is gone.
        """
        return [ParentWatch(reactor)]


@implementer(IStreamServerEndpoint)
class _Adopted:
    """
    Listens on an inherited socket, accepting L{ACCEPTS_PER_WAKEUP}
    connections per wake-up. A UNIX socket's path belongs to the
    supervisor, which removes it when it stops: a worker that stops (or is
    restarted) must leave it to the others.
    """

    def __init__(self, endpoint: AdoptedStreamServerEndpoint) -> None:
        self._endpoint = endpoint

    def listen(self, factory: Any) -> Any:
        """
        @return: a L{Deferred} firing with the adopted port.
        """

        def keep_path(port: Any) -> Any:
            if isinstance(port, unix.Port):
                # unix.Port.connectionLost unlinks the path; skip to the
                # TCP port's (tests/ops/test_workers.py pins it).
                port.connectionLost = lambda reason: tcp.Port.connectionLost(port, reason)
            return limit_accepts(port, ACCEPTS_PER_WAKEUP)

        return self._endpoint.listen(factory).addCallback(keep_path)


class _StdinPipe(abstract.FileDescriptor):
    """
    The read end of the pipe from the supervisor: EOF means it is gone.
    """

    def __init__(self, reactor: Any, gone: Callable[[], None]) -> None:
        super().__init__(reactor)
        self._gone = gone
        fdesc.setNonBlocking(0)

    def fileno(self) -> int:
        return 0

    def doRead(self) -> Any:
        return fdesc.readFromFD(0, lambda data: None)

    def connectionLost(self, reason: Failure) -> None:
        abstract.FileDescriptor.connectionLost(self, reason)
        self._gone()


class ParentWatch(Service):
    """
    Stops a worker whose supervisor has exited (its stdin closed), as
    C{SIGTERM} would: the worker drains and exits.
    """

    def __init__(self, reactor: Any) -> None:
        """
        @param reactor: the worker's reactor, stopped when the pipe closes.
        """
        self._reactor = reactor
        self._pipe: Optional[_StdinPipe] = None

    def startService(self) -> None:
        """
        Watch stdin.
        """
        super().startService()
        self._pipe = _StdinPipe(self._reactor, self._gone)
        self._pipe.startReading()

    def stopService(self) -> None:
        """
        Stop watching.
        """
        super().stopService()
        if self._pipe is not None:
            self._pipe.stopReading()

    def _gone(self) -> None:
        if self.running:
            log.warn("worker: the supervisor is gone; stopping")
            self._reactor.stop()
