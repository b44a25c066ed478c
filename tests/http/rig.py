"""
A whole proxy site (L{ProxySite} over a router and an in-memory origin, on a
fake clock) driven by raw bytes, for tests of what hostile clients send.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.threads import runInline
from phantom_frame.http.limits import DEFAULT_LIMITS, ClientLimits
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from tests.memory import MemoryOrigin

PAGE = b"<html>" + b"hostile " * 50 + b"</html>"


class RecordingOrigin(Resource):
    """
    An origin that records every request it gets: method, path, headers and
    body.

    @ivar received: C{(method, path, headers, body)} of each request.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: List[Tuple[bytes, bytes, Dict[bytes, List[bytes]], bytes]] = []

    def render(self, request: Any) -> bytes:
        headers = {k.lower(): v for k, v in request.requestHeaders.getAllRawHeaders()}
        self.received.append((request.method, request.uri, headers, request.content.read()))
        request.setHeader(b"content-type", b"text/html")
        return PAGE + request.uri


class Connection:
    """
    One client connection to a L{Rig}'s site over a L{StringTransport}.
    """

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.protocol = rig.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.lost = False

    def send(self, data: bytes, pieces: int = 1) -> bytes:
        """
        Send C{data} (in C{pieces}), let the origin answer, and return what
        the site wrote since the last call.
        """
        step = max(1, -(-len(data) // pieces))
        for at in range(0, len(data), step):
            if self.transport.disconnecting:
                break
            self.protocol.dataReceived(data[at : at + step])
            self.rig.agent.flush()
        self.rig.agent.flush()
        return self.take()

    def take(self) -> bytes:
        """
        @return: what the site wrote since the last call.
        """
        written = self.transport.value()
        self.transport.clear()
        return written

    @property
    def closing(self) -> bool:
        """
        Whether the site closed (or is closing) the connection.
        """
        return bool(self.transport.disconnecting)

    def close(self) -> None:
        """
        The client goes away.
        """
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(None)


class Rig:
    """
    A L{ProxySite} in front of a L{RecordingOrigin}.

    @ivar clock: the site's clock.
    @ivar origin: what the origin received.
    """

    def __init__(
        self,
        testcase: Any,
        limits: ClientLimits = DEFAULT_LIMITS,
        fast: bool = True,
        config: Optional[CreateProxyConfig] = None,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.origin = RecordingOrigin()
        self.agent = MemoryOrigin(self.origin, self.clock)
        config = config or CreateProxyConfig("http://origin.test")
        resource, self.handle = create_proxy(
            config, self.clock, agent=object(), client=self.agent.client_for(config), runner=runInline
        )
        testcase.addCleanup(self.handle.close)
        self.site = ProxySite(
            Router([("*", resource)]), reactor=self.clock, access_log=False, fast_path=fast, limits=limits
        )
        self._connections: List[Connection] = []
        testcase.addCleanup(self._closeAll)

    def connect(self) -> Connection:
        """
        @return: a new client connection.
        """
        connection = Connection(self)
        self._connections.append(connection)
        return connection

    def exchange(self, data: bytes, pieces: int = 1) -> Tuple[bytes, bool]:
        """
        Send C{data} on a new connection.

        @return: what the site wrote, and whether it closed the connection.
        """
        connection = self.connect()
        written = connection.send(data, pieces)
        return written, connection.closing

    def answered(self) -> int:
        """
        @return: how many requests the fast path answered.
        """
        fast = self.site.fastHit
        return 0 if fast is None else fast.answered

    def _closeAll(self) -> None:
        for connection in self._connections:
            connection.close()


Answer = Tuple[int, Dict[bytes, List[bytes]], bytes]


def answers(stream: bytes, heads: Optional[List[bool]] = None) -> List[Answer]:
    """
    Split C{stream} into HTTP/1.1 answers.

    @param heads: for each answer, whether it answers a HEAD (no body);
        all C{False} by default.
    @return: each answer's status, headers (lower-cased names) and body.
    """
    found: List[Answer] = []
    index = 0
    while stream:
        end = stream.index(b"\r\n\r\n")
        lines = stream[:end].split(b"\r\n")
        code = int(lines[0].split(b" ")[1])
        headers: Dict[bytes, List[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            headers.setdefault(name.lower(), []).append(value)
        head = heads[index] if heads is not None else False
        length = 0 if head or code == 304 else int(headers[b"content-length"][0])
        found.append((code, headers, stream[end + 4 : end + 4 + length]))
        stream = stream[end + 4 + length :]
        index += 1
    return found


def request(path: str = "/page", method: str = "GET", host: Optional[str] = "proxy.test", **headers: str) -> bytes:
    """
    @return: a CRLF request head (C{host=None}: without C{Host}); header
        names from keywords, C{_} for C{-}.
    """
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def assert_refused(testcase: Any, written: bytes, closing: bool, code: int) -> Answer:
    """
    Assert that C{written} is exactly one refusal: status C{code}, a short
    C{text/plain} body naming it, C{Connection: close}; and that the
    connection was closed.

    @return: the answer.
    """
    from phantom_frame.http.limits import REASONS

    found = answers(written)
    testcase.assertEqual([a[0] for a in found], [code], written[:300])
    status, headers, body = found[0]
    testcase.assertEqual(headers[b"connection"], [b"close"])
    testcase.assertEqual(headers[b"content-type"], [b"text/plain; charset=utf-8"])
    testcase.assertTrue(body.startswith(REASONS[code] + b": "), body)
    testcase.assertLess(len(body), 200)
    testcase.assertTrue(closing, "the connection was left open")
    return found[0]
