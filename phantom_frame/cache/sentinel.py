"""
Redis behind Sentinel: L{SentinelEndpoint}, an L{IStreamClientEndpoint}
that connects to whichever server the Sentinels name as the master.

Before every connection attempt it asks the Sentinels in turn
(C{SENTINEL get-master-addr-by-name SERVICE}, each bounded by the timeout)
and connects to the first answer; once connected it checks the server's
C{ROLE} (authenticating first when a password is set) and only then hands
the connection to the caller's protocol, so a demoted master (a replica
now) is never used. A watch connection to a Sentinel follows
C{+switch-master} on its pub/sub channel: when the master changes, every
connection made through the endpoint to another server is dropped, and the
reconnection (the caller's: txredisapi's back-off) finds the new master.
L{SentinelEndpoint.reset} drops them all (a C{READONLY} answer).

The Redis exchanges here are a few commands each, spoken with the small
RESP reader and writer of this module (L{encode}, L{parse_reply}), also
used by the blocking C{phantom-frame check}.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Set, Tuple, Union

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

#: Seconds between two attempts of the watch connection.
WATCH_RETRY = 1.0


class ReplyError(Exception):
    """
    A Redis error reply (C{-ERR ...}), as a value among the replies.
    """


class NoMaster(Exception):
    """
    No Sentinel named a master.
    """


class WrongRole(Exception):
    """
    The server named as the master is not (or no longer) one.
    """


def encode(*args: Union[str, bytes]) -> bytes:
    """
    @return: C{args} as one RESP command.
    """
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode("utf-8") if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def parse_reply(data: bytes, start: int = 0) -> Optional[Tuple[Any, int]]:
    """
    Read one RESP reply from C{data} at C{start}.

    @return: the reply (C{str} for a status, L{ReplyError} for an error,
        C{int}, C{bytes} or L{None} for a bulk string, a C{list} or
        L{None} for an array) and where it ends; L{None} when C{data}
        does not hold all of it yet.
    @raise ValueError: when C{data} is not RESP.
    """
    end = data.find(b"\r\n", start)
    if end < 0:
        return None
    kind, line = data[start : start + 1], data[start + 1 : end]
    after = end + 2
    if kind == b"+":
        return line.decode("utf-8", "replace"), after
    if kind == b"-":
        return ReplyError(line.decode("utf-8", "replace")), after
    if kind == b":":
        return int(line), after
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, after
        if len(data) < after + size + 2:
            return None
        return data[after : after + size], after + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items: List[Any] = []
        for _ in range(count):
            parsed = parse_reply(data, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return items, after
    raise ValueError(f"not a RESP reply: {data[start:start + 20]!r}")


class _Replies(Protocol):
    """
    Reads replies from a buffer as they arrive.
    """

    _buffer = b""

    def _replies(self, data: bytes, limit: Optional[int] = None) -> List[Any]:
        self._buffer += data
        out: List[Any] = []
        while limit is None or len(out) < limit:
            parsed = parse_reply(self._buffer)
            if parsed is None:
                return out
            value, end = parsed
            self._buffer = self._buffer[end:]
            out.append(value)
        return out


class _Exchange(_Replies):
    """
    Sends commands, fires L{done} with their replies, and hangs up.
    """

    def __init__(self, commands: Sequence[bytes]) -> None:
        self._commands = commands
        self._got: List[Any] = []
        self.done: Deferred[List[Any]] = Deferred(lambda _: self._abort())

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionMade(self) -> None:
        self.transport.write(b"".join(self._commands))

    def dataReceived(self, data: bytes) -> None:
        try:
            self._got.extend(self._replies(data))
        except ValueError:
            self.transport.abortConnection()
            return
        if len(self._got) >= len(self._commands) and not self.done.called:
            self.transport.loseConnection()
            self.done.callback(self._got)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            self.done.errback(reason)


def ask(endpoint: IStreamClientEndpoint, commands: Sequence[bytes], timeout: float, clock: Any) -> Deferred[List[Any]]:
    """
    Connect through C{endpoint}, send C{commands}, read their replies and
    hang up, all within C{timeout}.

    @param clock: an L{IReactorTime} that times it.
    @return: a L{Deferred} with the replies (one per command), failing
        with the connection's error or L{TimeoutError}.
    """

    async def run() -> List[Any]:
        exchange = _Exchange(commands)
        await endpoint.connect(Factory.forProtocol(lambda: exchange))
        return await exchange.done

    return Deferred.fromCoroutine(run()).addTimeout(timeout, clock)


def _describe(reply: Any) -> str:
    """
    @return: a reply, for a log line.
    """
    if isinstance(reply, ReplyError):
        return str(reply)
    return "no such master" if reply is None else repr(reply)


class _Checked(_Replies):
    """
    A connection to the named master: checks its role, then hands the
    connection over to the caller's protocol (L{wrapped}) and relays to it.
    """

    wrapped: Optional[IProtocol] = None

    def __init__(self, owner: "SentinelEndpoint", factory: IProtocolFactory, address: Tuple[str, int]) -> None:
        self._owner = owner
        self._factory = factory
        self.address = address
        self.ready: Deferred[IProtocol] = Deferred(lambda _: self.transport and self.transport.abortConnection())

    def connectionMade(self) -> None:
        password = self._owner.password
        self._expected = 2 if password is not None else 1
        self._got: List[Any] = []
        self.transport.write((encode("AUTH", password) if password is not None else b"") + encode("ROLE"))

    def dataReceived(self, data: bytes) -> None:
        if self.wrapped is not None:
            self.wrapped.dataReceived(data)
            return
        try:
            self._got.extend(self._replies(data, self._expected - len(self._got)))
        except ValueError:
            return self._refuse("an answer that is not RESP")
        if len(self._got) < self._expected:
            return None
        role = self._got[self._expected - 1]
        if not isinstance(role, list) or not role or role[0] != b"master":
            return self._refuse(_describe(role if not isinstance(role, list) or not role else role[0]))
        wrapped = self._factory.buildProtocol(self.transport.getPeer())
        if wrapped is None:
            return self._refuse("the connection was declined")
        self.wrapped = wrapped
        self._owner._live.add(self)
        wrapped.makeConnection(self.transport)
        self.ready.callback(wrapped)
        rest, self._buffer = self._buffer, b""
        if rest:
            wrapped.dataReceived(rest)
        return None

    def _refuse(self, why: str) -> None:
        host, port = self.address
        self.transport.abortConnection()
        if not self.ready.called:
            self.ready.errback(WrongRole(f"{host}:{port} is not the master: {why}"))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._owner._live.discard(self)
        if self.wrapped is not None:
            self.wrapped.connectionLost(reason)
        elif not self.ready.called:
            self.ready.errback(reason)


class _Watch(_Replies):
    """
    The watch connection to a Sentinel: the master's address, then every
    C{+switch-master}.
    """

    def __init__(self, owner: "SentinelEndpoint") -> None:
        self._owner = owner
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        owner = self._owner
        self._owner._watchProtocol = self
        auth = encode("AUTH", owner.sentinel_password) if owner.sentinel_password is not None else b""
        self.transport.write(
            auth
            + encode("SENTINEL", "get-master-addr-by-name", owner.service)
            + encode("SUBSCRIBE", "+switch-master")
        )

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self._replies(data)
        except ValueError:
            self.transport.abortConnection()
            return
        for reply in replies:
            if isinstance(reply, list) and len(reply) == 2 and all(isinstance(r, bytes) for r in reply):
                self._owner.named((reply[0].decode("utf-8"), int(reply[1])))
            elif isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                words = reply[2].decode("utf-8", "replace").split()
                if len(words) == 5 and words[0] == self._owner.service:
                    log.info("Sentinel: {service} moved to {host}:{port}", service=words[0], host=words[3], port=words[4])
                    self._owner.named((words[3], int(words[4])))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._owner._watchProtocol is self:
            self._owner._watchProtocol = None
        self.lost.callback(None)


@implementer(IStreamClientEndpoint)
class SentinelEndpoint:
    """
    Connects to the master that the Sentinels name (see the module
    docstring).

    @ivar service: the master's name known to the Sentinels.
    @ivar password: the master's password, or L{None}.
    @ivar sentinel_password: the Sentinels' password, or L{None}.
    @ivar master: the master's C{(host, port)} last named, or L{None}.
    """

    def __init__(
        self,
        reactor: Any,
        sentinels: Sequence[Tuple[str, int]],
        service: str,
        password: Optional[str] = None,
        sentinel_password: Optional[str] = None,
        timeout: float = 1.0,
        connect_to: Optional[Callable[[str, int], IStreamClientEndpoint]] = None,
    ) -> None:
        """
        @param reactor: connects and times each exchange.
        @param sentinels: the C{(host, port)} of each Sentinel, asked in
            this order.
        @param service: see L{service}.
        @param password: see L{password}.
        @param sentinel_password: see L{sentinel_password}.
        @param timeout: seconds each Sentinel, and each connection to the
            master with its role check, may take.
        @param connect_to: makes the endpoint of a host and port (by
            default a L{HostnameEndpoint} on C{reactor}).
        @raise ValueError: without a Sentinel.
        """
        if not sentinels:
            raise ValueError("expected at least one Sentinel")
        self._reactor = reactor
        self._sentinels = tuple(sentinels)
        self.service = service
        self.password = password
        self.sentinel_password = sentinel_password
        self._timeout = timeout
        self._connectTo = connect_to or (lambda host, port: HostnameEndpoint(reactor, host, port, timeout=timeout))
        self.master: Optional[Tuple[str, int]] = None
        self._live: Set[_Checked] = set()
        self._watching: Optional[Deferred[None]] = None
        self._watchProtocol: Optional[_Watch] = None
        self._stopped = False

    def locate(self) -> Deferred[Tuple[str, int]]:
        """
        Ask the Sentinels in turn for the master's address.

        @return: a L{Deferred} with the first C{(host, port)} named, or
            failing with L{NoMaster} saying what each Sentinel answered.
        """
        return Deferred.fromCoroutine(self._locate())

    async def _locate(self) -> Tuple[str, int]:
        auth = [encode("AUTH", self.sentinel_password)] if self.sentinel_password is not None else []
        question = encode("SENTINEL", "get-master-addr-by-name", self.service)
        heard = []
        for host, port in self._sentinels:
            try:
                replies = await ask(self._connectTo(host, port), auth + [question], self._timeout, self._reactor)
            except CancelledError:
                raise
            except Exception as e:
                heard.append(f"{host}:{port}: {e.__class__.__name__}: {e}")
                continue
            reply = replies[-1]
            if isinstance(reply, list) and len(reply) == 2 and all(isinstance(r, bytes) for r in reply):
                self.master = (reply[0].decode("utf-8"), int(reply[1]))
                return self.master
            heard.append(f"{host}:{port}: {_describe(reply)}")
        raise NoMaster(f"no Sentinel named the master {self.service!r} ({'; '.join(heard)})")

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect C{protocolFactory}'s protocol to the master (see the module
        docstring); starts the watch connection on first use.

        @return: a L{Deferred} with the protocol, connected to a server
            whose role is C{master}; failing with L{NoMaster},
            L{WrongRole} or the connection's error.
        """
        if not self._stopped:
            self._watch()
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        address = await self._locate()
        checked = _Checked(self, factory, address)
        await self._connectTo(*address).connect(Factory.forProtocol(lambda: checked))
        return await checked.ready.addTimeout(self._timeout, self._reactor)

    def named(self, address: Tuple[str, int]) -> None:
        """
        A Sentinel named C{address} as the master: drop the connections
        made to another server.
        """
        self.master = address
        for checked in list(self._live):
            if checked.address != address:
                checked.transport.abortConnection()

    def reset(self) -> None:
        """
        Drop every connection made through this endpoint (their callers
        reconnect, to the master named then).
        """
        for checked in list(self._live):
            checked.transport.abortConnection()

    def _watch(self) -> None:
        if self._watching is None:
            self._watching = Deferred.fromCoroutine(self._watchLoop())

    async def _watchLoop(self) -> None:
        turn = 0
        while not self._stopped:
            host, port = self._sentinels[turn % len(self._sentinels)]
            turn += 1
            watch = _Watch(self)
            try:
                await self._connectTo(host, port).connect(Factory.forProtocol(lambda: watch))
                await watch.lost
            except CancelledError:
                return
            except Exception:
                pass
            if not self._stopped:
                try:
                    await deferLater(self._reactor, WATCH_RETRY, lambda: None)
                except CancelledError:
                    return

    def stop(self) -> Deferred[None]:
        """
        Stop watching the Sentinels (the connections made through the
        endpoint are their callers' to close).

        @return: a L{Deferred} firing once the watch connection is closed.
        """
        self._stopped = True
        watching, self._watching = self._watching, None
        if watching is None:
            return succeed(None)
        if self._watchProtocol is not None:
            self._watchProtocol.transport.loseConnection()
        else:
            watching.cancel()
        return watching.addErrback(lambda f: f.trap(CancelledError))


__all__ = ["NoMaster", "ReplyError", "SentinelEndpoint", "WrongRole", "ask", "encode", "parse_reply"]
