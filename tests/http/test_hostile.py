"""
A property test of the proxy listener against random request heads: random
methods, targets, versions, header names and values (control characters
included), lengths, chunk sizes and LF/CRLF/CR mixes, sent in random pieces,
from a seeded generator of our own.

Whatever arrives, the channel never raises, writes only whole HTTP answers,
answers or closes (at once when the bad part is there to be seen), and the
origin only ever gets requests the generator meant to be forwarded, with
exactly the body it sent.
"""

from __future__ import annotations

import random
from typing import List, Optional, Tuple

import attr
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.http.limits import ClientLimits
from tests.http.rig import Rig, answers

LIMITS = ClientLimits(max_request_body=2000, max_header_bytes=1024, client_header_timeout=10)


@attr.s(auto_attribs=True)
class Generated:
    """
    One random request.

    @ivar data: its bytes.
    @ivar permitted: whether it may reach the origin; L{False} when
        anything in it is malformed, ambiguous or over a limit.
    @ivar visible: whether, when not permitted, the channel has all it
        needs to see so once C{data} is sent (every line ends in a LF).
    @ivar method: its method, when permitted.
    @ivar target: its request target, when permitted.
    @ivar body: its decoded body, when permitted.
    @ivar closes: whether it asks for the connection to be closed.
    """

    data: bytes
    permitted: bool
    visible: bool
    method: bytes = b""
    target: bytes = b""
    body: bytes = b""
    closes: bool = False


class Generator:
    """
    Makes random requests; C{bad} is the odds of each part being broken.
    """

    def __init__(self, seed: int, bad: float) -> None:
        self.random = random.Random(seed)
        self.bad = bad
        self.permitted = True
        self.visible = True

    def broken(self) -> bool:
        """
        @return: whether the next part is to be broken (which forbids the
            request).
        """
        if self.random.random() < self.bad:
            self.permitted = False
            return True
        return False

    def junk(self, low: int = 0, high: int = 12) -> bytes:
        """
        @return: random bytes, control characters and non-ASCII included.
        """
        alphabet = b"abc/ :;\x00\x01\t\x0b\r\n\x7f\xff%\"<>"
        return bytes(self.random.choice(alphabet) for _ in range(self.random.randint(low, high)))

    def ending(self) -> bytes:
        """
        @return: a line ending: CRLF or LF, or a broken one.
        """
        if self.random.random() < self.bad / 3:
            self.permitted = False
            self.visible = False
            return self.random.choice([b"\r", b"\r\r\n", b"\r\r"])
        return self.random.choice([b"\r\n", b"\r\n", b"\n"])

    def request(self) -> Generated:
        """
        @return: a new random request.
        """
        self.permitted = True
        self.visible = True
        pick = self.random.choice
        method = pick([b"GET", b"POST", b"PUT", b"DELETE", b"get"])
        if self.broken():
            method = pick([b"G\x00T", b"", b"GE T", b"G\xffT", b"(GET)"])
        target = pick([b"/", b"/page", b"/a/b?x=1&y=2", b"/hit", b"/p.css"])
        if self.broken():
            target = pick([b"/a b", b"/\x00", b"", b"/\x7f", b"/" + b"a" * 1100, b"/a\x0bb"])
        version = b"HTTP/1.1"
        if self.broken():
            version = pick([b"HTTP/2.0", b"HTTP/1.1 ", b"", b"HTTP/1.10", b"http/1.1", b"HTTP/1"])
        groups: List[List[bytes]] = []
        hosts = [pick([b"proxy.test", b"www.example.com:8080", b"[::1]", b"192.0.2.1"])]
        if self.broken():
            hosts = pick([[], [b"a", b"b"], [b"bad host"], [b"evil.example/x"], [b""], [b"h:99999"], [b"h\x00"]])
        groups += [[pick([b"Host: ", b"host:", b"HOST:  "]) + host] for host in hosts]
        body, framing = self.body()
        groups += [[line] for line in framing]
        closes = False
        for _ in range(self.random.randint(0, 4)):
            kind = self.random.random()
            if kind < 0.2:
                groups.append([b"Connection: close"])
                closes = True
            elif kind < 0.3:
                groups.append([b"X-Fold: a", pick([b" b", b"\tc"])])
            elif self.broken():
                groups.append([pick([b"X\x00Y: z", b"X Y: z", b"No colon", b": empty", b"X-A : b", b"X-A: b\x00c"])])
            else:
                value = pick([b"v", b"a\x0bb", b"\xff"])
                groups.append([b"X-" + str(self.random.randint(0, 9)).encode() + b": " + value])
        if self.broken():
            groups.append([b"X-Pad: " + b"p" * self.random.randint(1000, 1500)])
        self.random.shuffle(groups)
        lines = [method + b" " + target + b" " + version] + [line for group in groups for line in group]
        head = b"".join(line + self.ending() for line in lines) + self.ending()
        data = head + body[0]
        if not self.permitted:
            return Generated(data, False, self.visible)
        return Generated(data, True, True, method, target, body[1], closes)

    def body(self) -> Tuple[Tuple[bytes, bytes], List[bytes]]:
        """
        @return: C{((the bytes sent, the body they give), the header lines
            framing them)}.
        """
        pick = self.random.choice
        kind = self.random.random()
        if kind < 0.5:
            return (b"", b""), []
        if kind < 0.75:
            payload = bytes(self.random.getrandbits(8) for _ in range(self.random.randint(0, 40)))
            value = b"%d" % len(payload)
            lines = [b"Content-Length: " + value]
            if self.broken():
                lines = [pick([
                    b"Content-Length: 18446744073709551621", b"Content-Length: -1", b"Content-Length: +3",
                    b"Content-Length: 0x10", b"Content-Length: 2001",
                ])]
                lines += pick([[], [b"Content-Length: " + value], [b"Transfer-Encoding: chunked"]])
            return (payload, payload), lines
        chunks = [bytes(self.random.getrandbits(8) for _ in range(self.random.randint(1, 30)))
                  for _ in range(self.random.randint(0, 3))]
        sent = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        lines = [b"Transfer-Encoding: chunked"]
        if self.broken():
            sent = pick([b"ffffffffffffffffffffff\r\nab", b"3\nabc\r\n0\r\n\r\n", b"zz\r\n", b"7d1\r\n",
                         b"3\r\nabcX", b"3\r\nabc\r\n0\r\n\n"])
        elif self.broken():
            lines += pick([[b"Content-Length: 5"], [b"Transfer-Encoding: chunked"]])
        elif self.broken():
            lines = [pick([b"Transfer-Encoding: gzip", b"Transfer-Encoding: identity", b"Transfer-Encoding: chunked, gzip"])]
        return (sent, b"".join(chunks)), lines


class HostileClientTests(SynchronousTestCase):
    """
    Random request heads on fresh connections.
    """

    def connection(self, seed: int, fast: bool, bad: float) -> None:
        """
        Send one connection's worth of random requests and check every
        property.
        """
        generator = Generator(seed, bad)
        requests = [generator.request() for _ in range(generator.random.randint(1, 3))]
        rig = Rig(self, limits=LIMITS, fast=fast)
        rig.exchange(b"GET /hit HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        del rig.origin.received[:]
        connection = rig.connect()
        data = b"".join(r.data for r in requests)
        pieces = generator.random.choice([1, 1, 2, 7, len(data) or 1])
        written = connection.send(data, pieces)

        meant: List[Generated] = []
        forbidden: Optional[Generated] = None
        for generated in requests:
            if not generated.permitted:
                forbidden = generated
                break
            meant.append(generated)
            if generated.closes:
                break
        context = f"seed={seed} fast={fast} data={data[:400]!r}"

        got = [(m, t, b) for m, t, _, b in rig.origin.received]
        expected = [(g.method, g.target, g.body) for g in meant]
        # Only POST and PUT bodies are forwarded.
        got = [(m, t, b"") if m not in (b"POST", b"PUT") else (m, t, b) for m, t, b in got]
        expected = [(m, t, b"") if m not in (b"POST", b"PUT") else (m, t, b) for m, t, b in expected]
        self.assertTrue(_subsequence(got, expected), f"{context}: origin got {got!r}")
        if forbidden is not None and forbidden.visible and len(meant) == len(got):
            self.assertTrue(connection.closing, f"{context}: not refused at once: {written[-300:]!r}")
        rig.clock.advance(LIMITS.client_header_timeout)
        rig.clock.advance(61)
        written += connection.take()
        self.assertTrue(connection.closing, f"{context}: left open")
        try:
            found = answers(written)
        except Exception as e:
            self.fail(f"{context}: not whole answers ({e!r}): {written[-300:]!r}")
        for code, headers, _ in found[:-1]:
            self.assertNotIn(b"close", headers.get(b"connection", []), context)

    def test_mostlyBroken(self) -> None:
        """
        Requests broken in many parts at once.
        """
        for seed in range(300):
            self.connection(seed, seed % 2 == 0, 0.3)

    def test_slightlyBroken(self) -> None:
        """
        Requests that are mostly valid, with now and then one broken part.
        """
        for seed in range(1000, 1300):
            self.connection(seed, seed % 2 == 0, 0.05)


def _subsequence(got: list, expected: list) -> bool:
    """
    @return: whether C{got} is C{expected} with some items left out, in
        order.
    """
    items = iter(expected)
    return all(any(item == candidate for candidate in items) for item in got)
