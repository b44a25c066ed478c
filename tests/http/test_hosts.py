"""
Tests for the C{Host} checks of the proxy listener: a request must name one
valid host (400 otherwise), and one of C{allowed_hosts} when they are
given (421 otherwise), on the fast and the stock path alike.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

from phantom_frame.http.limits import REASONS, ClientLimits, is_host_glob, parse_host
from tests.http.rig import Rig, answers, assert_refused, request


class ParseHostTests(SynchronousTestCase):
    """
    L{parse_host} reads RFC 3986 C{host [":" port]}.
    """

    def test_valid(self) -> None:
        """
        Names, IPv4 and bracketed IPv6 addresses, with or without a decimal
        port, give the host lower-cased without its port.
        """
        for value, host in (
            (b"Example.COM", "example.com"),
            (b"example.com:8080", "example.com"),
            (b"a-b_c~d.example", "a-b_c~d.example"),
            (b"192.0.2.1:80", "192.0.2.1"),
            (b"[2001:DB8::1]", "[2001:db8::1]"),
            (b"[::1]:443", "[::1]"),
            (b"xn--bcher-kva.example", "xn--bcher-kva.example"),
            (b"localhost:65535", "localhost"),
        ):
            self.assertEqual(parse_host(value), host, value)

    def test_invalid(self) -> None:
        """
        Empty values, spaces, paths, user info, bad ports and bad IPv6
        literals are not hosts.
        """
        for value in (
            b"", b"evil sp.example", b"evil.example/x", b"user@evil.example",
            b"example.com:", b"example.com:http", b"example.com:65536", b"example.com:123456",
            b"example.com:80:80", b"[::1", b"[not-ipv6]", b"[::1]x", b"[::1]:", b"[fe80::1%25eth0]",
            b"ex\x00ample", b"ex\tample", b"caf\xc3\xa9.example", b"a,b c", b"%zz",
        ):
            self.assertIsNone(parse_host(value), value)


class HostGlobTests(SynchronousTestCase):
    """
    L{is_host_glob} and L{ClientLimits.host_allowed}.
    """

    def test_globs(self) -> None:
        """
        Host names and bracketed addresses with C{*} are globs; ports,
        paths and spaces are not.
        """
        for text in ("example.com", "*.Example.com", "*", "[::1]", "192.0.2.*"):
            self.assertTrue(is_host_glob(text), text)
        for text in ("", "example.com:80", "a b", "example.com/x", "[::1]:80"):
            self.assertFalse(is_host_glob(text), text)

    def test_allowed(self) -> None:
        """
        With no globs every host is allowed; with some, only those a glob
        matches whole, in any case, and never a request without a host.
        """
        self.assertTrue(ClientLimits().host_allowed(None))
        limits = ClientLimits(allowed_hosts=["*.Example.com", "example.com"])
        self.assertTrue(limits.host_allowed("www.example.com"))
        self.assertTrue(limits.host_allowed("example.com"))
        self.assertFalse(limits.host_allowed("example.com.evil"))
        self.assertFalse(limits.host_allowed("evilexample.com"))
        self.assertFalse(limits.host_allowed(None))
        self.assertRaises(ValueError, ClientLimits, allowed_hosts=["example.com:80"])


class HostHeaderTests(SynchronousTestCase):
    """
    A request with no, two or an invalid C{Host} gets 400.
    """

    def refuses(self, data: bytes, code: int, limits: ClientLimits = ClientLimits()) -> None:
        """
        On a route whose entry is cached, both paths refuse C{data} with
        C{code}; the origin sees only the warming request.
        """
        for fast in (True, False):
            rig = Rig(self, limits=limits, fast=fast)
            rig.exchange(request("/h", host="www.example.com"))
            written, closing = rig.exchange(data)
            assert_refused(self, written, closing, code)
            self.assertEqual(len(rig.origin.received), 1)
            self.assertEqual(rig.answered(), 0)

    def test_missing(self) -> None:
        """
        An HTTP/1.1 request without C{Host} gets 400; an HTTP/1.0 one is
        answered.
        """
        self.refuses(request("/h", host=None), 400)
        rig = Rig(self)
        written, _ = rig.exchange(b"GET /h HTTP/1.0\r\n\r\n")
        self.assertEqual(written[:12], b"HTTP/1.0 200")

    def test_two(self) -> None:
        """
        Two C{Host} headers, the same or not, get 400.
        """
        self.refuses(request("/h", host="www.example.com", Host="www.example.com"), 400)
        self.refuses(request("/h", host="www.example.com", HOST="other.example"), 400)

    def test_invalid(self) -> None:
        """
        A C{Host} that is not a valid host[:port] gets 400.
        """
        for host in ("evil sp.example", "evil.example/x", "", "www.example.com:x", "a@www.example.com"):
            self.refuses(request("/h", host=host), 400)
        self.refuses(b"GET /h HTTP/1.1\r\nHost: www.example.com\x0c\r\n\r\n", 400)
        self.refuses(b"GET /h HTTP/1.0\r\nHost: bad host\r\n\r\n", 400)

    def test_absoluteForm(self) -> None:
        """
        An absolute-form target's host must be valid too.
        """
        self.refuses(b"GET http://bad host/h HTTP/1.1\r\nHost: www.example.com\r\n\r\n", 400)

    def test_valid(self) -> None:
        """
        A valid C{Host}, with a port or in another case, is answered, from
        the fast path for a hit.
        """
        rig = Rig(self)
        for host in ("www.example.com", "WWW.Example.com:8080", "[::1]:3000", "192.0.2.7"):
            for _ in range(2):
                written, closing = rig.exchange(request("/h", host=host))
                self.assertEqual(answers(written)[0][0], 200)
                self.assertFalse(closing)
        # Keys are scoped by host: each host's second request is a hit.
        self.assertEqual(rig.answered(), 4)


class AllowedHostsTests(SynchronousTestCase):
    """
    With C{allowed_hosts}, any other host gets 421.
    """

    limits = ClientLimits(allowed_hosts=("*.example.com", "example.com"))

    def test_allowed(self) -> None:
        """
        An allowed host (in any case, with any port) is answered, from the
        fast path for a hit.
        """
        rig = Rig(self, limits=self.limits)
        for host in ("www.example.com", "EXAMPLE.com:3000", "a.b.example.com"):
            for _ in range(2):
                written, _ = rig.exchange(request("/a", host=host))
                self.assertEqual(answers(written)[0][0], 200)
        # Keys are scoped by host: each host's second request is a hit.
        self.assertEqual(rig.answered(), 3)
        self.assertEqual(len(rig.origin.received), 3)

    def test_misdirected(self) -> None:
        """
        Another host gets 421, on both paths; so does an HTTP/1.0 request
        without one, and an absolute-form target naming another host.
        """
        for fast in (True, False):
            rig = Rig(self, limits=self.limits, fast=fast)
            rig.exchange(request("/a", host="example.com"))
            for data in (
                request("/a", host="evil.com"),
                request("/a", host="example.com.evil.com"),
                request("/a", host="[::1]"),
                b"GET /a HTTP/1.0\r\n\r\n",
                b"GET http://evil.com/a HTTP/1.1\r\nHost: example.com\r\n\r\n",
            ):
                written, closing = rig.exchange(data)
                assert_refused(self, written, closing, 421)
            self.assertEqual(len(rig.origin.received), 1)
            self.assertEqual(rig.answered(), 0)

    def test_reloaded(self) -> None:
        """
        Replacing the site's limits applies to the next request.
        """
        rig = Rig(self)
        written, _ = rig.exchange(request("/a", host="evil.com"))
        self.assertEqual(answers(written)[0][0], 200)
        rig.site.limits = self.limits
        written, closing = rig.exchange(request("/a", host="evil.com"))
        assert_refused(self, written, closing, 421)
        self.assertEqual(len(rig.origin.received), 1)


class UnguardedChannelTests(SynchronousTestCase):
    """
    Requests that come through a channel that did not check their host
    (HTTP/2 streams) are checked by L{ProxyRequest} itself.
    """

    def test_checked(self) -> None:
        """
        Over twisted.web's own HTTP/1.1 channel standing in for an HTTP/2
        stream, a bad host gets 400 and another host 421, with short text
        bodies; an allowed one is answered; the origin sees only that one.
        """
        rig = Rig(self, limits=ClientLimits(allowed_hosts=["example.com"]), fast=False)
        rig.site.protocol = lambda *args: _GenericHTTPChannelProtocol(HTTPChannel())
        for host, code in (("bad host", 400), ("other.example", 421), ("example.com", 200)):
            written, _ = rig.exchange(request("/u", host=host))
            ((status, headers, body),) = answers(written)
            self.assertEqual(status, code)
            if code != 200:
                self.assertEqual(headers[b"content-type"], [b"text/plain; charset=utf-8"])
                self.assertTrue(body.startswith(REASONS[code] + b": "), body)
        self.assertEqual([r[1] for r in rig.origin.received], [b"/u"])
        self.assertEqual(rig.site.active, 0)
