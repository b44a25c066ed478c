"""
Tests for L{phantom_frame.proxy.target} (and the spelling of
L{phantom_frame.cache.paths}): one normal path per request, and no prefix,
exclusion or origin path dodged by another spelling, on the stock path and
the channel's fast path alike.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.paths import PercentError, spell_path, spell_pattern
from phantom_frame.cache.threads import runInline
from phantom_frame.config.loader import parse_config
from phantom_frame.proxy.target import TargetError, normalise_path, path_segments, remove_dots

from tests.memory import MemoryOrigin, Proxy
from tests.origin import Origin


class SpellingTests(SynchronousTestCase):
    """
    L{spell_path} and L{spell_pattern}: RFC 3986 §6.2.2.1-2.
    """

    def test_unreservedDecoded(self) -> None:
        """
        Encoded unreserved characters are decoded, in either case of hex.
        """
        self.assertEqual(spell_path(b"/%7euser/%41%2D%5f%2e%7E"), b"/~user/A-_.~")

    def test_reservedStayEncoded(self) -> None:
        """
        Other encoded bytes stay encoded, their hex in upper case.
        """
        self.assertEqual(spell_path(b"/a%2fb%3f%c3%a9%20"), b"/a%2Fb%3F%C3%A9%20")

    def test_rawEncoded(self) -> None:
        """
        Bytes a path may not hold raw are encoded; sub-delimiters, C{:}
        and C{@} are kept.
        """
        self.assertEqual(spell_path(b'/caf\xc3\xa9/"<>{}|^`'), b"/caf%C3%A9/%22%3C%3E%7B%7D%7C%5E%60")
        self.assertEqual(spell_path(b"/!$&'()*+,;=:@"), b"/!$&'()*+,;=:@")

    def test_malformedPercent(self) -> None:
        """
        A C{%} not followed by two hex digits is refused in a path, and
        stands for itself in a pattern.
        """
        for path in (b"/100%", b"/%g0", b"/%2"):
            self.assertRaises(PercentError, spell_path, path)
        self.assertEqual(spell_pattern("/100%"), "/100%25")

    def test_pattern(self) -> None:
        """
        Patterns are spelled from their UTF-8 bytes; C{*} is kept and a
        C{\\} is a C{/}.
        """
        self.assertEqual(spell_pattern("/café/*"), "/caf%C3%A9/*")
        self.assertEqual(spell_pattern("/%7e*"), "/~*")
        self.assertEqual(spell_pattern("/a\\b"), "/a/b")


class NormalisePathTests(SynchronousTestCase):
    """
    L{normalise_path}.
    """

    def test_rfc3986Examples(self) -> None:
        """
        The examples of RFC 3986 §5.4, against the base path C{/b/c/}: dot
        segments removed, and the abnormal ones that climb above the root
        refused rather than kept at the root.
        """
        base = b"/b/c/"
        for reference, expected in [
            (b"g", b"/b/c/g"),
            (b"./g", b"/b/c/g"),
            (b"g/", b"/b/c/g/"),
            (b".", b"/b/c/"),
            (b"./", b"/b/c/"),
            (b"..", b"/b/"),
            (b"../", b"/b/"),
            (b"../g", b"/b/g"),
            (b"../..", b"/"),
            (b"../../", b"/"),
            (b"../../g", b"/g"),
            (b"g.", b"/b/c/g."),
            (b".g", b"/b/c/.g"),
            (b"g..", b"/b/c/g.."),
            (b"..g", b"/b/c/..g"),
            (b"./../g", b"/b/g"),
            (b"./g/.", b"/b/c/g/"),
            (b"g/./h", b"/b/c/g/h"),
            (b"g/../h", b"/b/c/h"),
            (b"g;x=1/./y", b"/b/c/g;x=1/y"),
            (b"g;x=1/../y", b"/b/c/y"),
        ]:
            self.assertEqual(normalise_path(base + reference), expected, reference)
        for reference in (b"../../../g", b"../../../../g"):
            self.assertRaises(TargetError, normalise_path, base + reference)
        for absolute in (b"/../g", b"/./../g", b"/a/../../g"):
            self.assertRaises(TargetError, normalise_path, absolute)

    def test_normalUnchanged(self) -> None:
        """
        A normal path is returned as it is (the very object).
        """
        for path in (b"/", b"/a", b"/a/b/", b"/.well-known/x", b"/a.b/..c/...", b"/x-y_z~1!$&'()*+,=:@"):
            self.assertIs(normalise_path(path), path)

    def test_slashesMerged(self) -> None:
        """
        Repeated slashes are one; a trailing slash is kept, and C{\\} is a
        slash.
        """
        self.assertEqual(normalise_path(b"//a///b//"), b"/a/b/")
        self.assertEqual(normalise_path(b"//"), b"/")
        self.assertEqual(normalise_path(b"/a\\b\\\\c"), b"/a/b/c")
        self.assertEqual(normalise_path(b"/a//.."), b"/")

    def test_encodedDots(self) -> None:
        """
        Encoded dots are dots: C{%2e%2e} is a C{..} segment.
        """
        self.assertEqual(normalise_path(b"/a/%2e%2E/b"), b"/b")
        self.assertEqual(normalise_path(b"/a/.%2e/b/%2E"), b"/b/")
        self.assertRaises(TargetError, normalise_path, b"/%2e%2e/etc")

    def test_hiddenDots(self) -> None:
        """
        A segment that an origin decoding C{%2F} or C{%5C}, or stripping
        C{;parameters}, would read as a dot segment is refused; C{%2F}
        elsewhere stays encoded.
        """
        for path in (
            b"/..%2f",
            b"/..%2Finternal",
            b"/a/.%2fb",
            b"/x%2F..%2Fy",
            b"/%2e%2e%2fetc",
            b"/..%5Cx",
            b"/..;x/secret",
            b"/.;/secret",
            b"/..%252F%2F..;",
        ):
            self.assertRaises(TargetError, normalise_path, path)
        self.assertEqual(normalise_path(b"/a%2fb/c"), b"/a%2Fb/c")
        self.assertEqual(normalise_path(b"/x;../y"), b"/x;../y")
        self.assertEqual(normalise_path(b"/..%252F"), b"/..%252F")

    def test_refused(self) -> None:
        """
        Malformed C{%}, spaces and control characters, and paths not
        starting with C{/} are refused.
        """
        for path in (b"/a%", b"/a%zz", b"/a b", b"/a\tb", b"/a\x7f", b"a/b", b""):
            self.assertRaises(TargetError, normalise_path, path)

    def test_prefix(self) -> None:
        """
        A C{..} may not remove a segment of the prefix the path is
        addressed to, even if it climbs back in; within the prefix's
        server it may.
        """
        depths: List[Tuple[bytes, ...]] = []

        def depth(segments) -> int:
            depths.append(tuple(segments))
            return 1 if segments[0] == b"api" else 0

        self.assertEqual(normalise_path(b"/api/x/../y", depth), b"/api/y")
        self.assertEqual(depths, [(b"api", b"x", b"..", b"y")])
        for path in (b"/api/..", b"/api/../internal-admin/", b"/api/x/../../internal-admin", b"/api/../api/x"):
            self.assertRaises(TargetError, normalise_path, path, depth)
        self.assertEqual(normalise_path(b"/x/../api/y", depth), b"/api/y")

    def test_steps(self) -> None:
        """
        L{path_segments} spells, merges and checks; L{remove_dots} removes
        dot segments, keeping a prefix.
        """
        self.assertEqual(path_segments(b"//%61//./b/"), [b"a", b".", b"b", b""])
        self.assertEqual(remove_dots([b"a", b".", b"b", b""]), b"/a/b/")
        self.assertEqual(remove_dots([b"a", b"b", b".."], keep=1), b"/a/")
        self.assertRaises(TargetError, remove_dots, [b"a", b".."], 1)


def _config() -> object:
    """
    @return: an C{/api} server whose origin path is C{/base}, and a C{"*"}
        server that excludes C{/private-area}.
    """
    return parse_config(
        {
            "server": {
                "api": {"bind_to": "/api", "proxy_url": "http://origin.example/base"},
                "site": {
                    "proxy_url": "http://origin.example",
                    "exclude_paths": ["/private-area", "/private-area/*"],
                },
            }
        }
    )


class Raw:
    """
    Raw request heads sent to a proxy in memory, and what it answered.
    """

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.origin = Origin()
        self.proxy = Proxy(testcase, _config(), self.origin)

    def send(self, target: bytes, **headers: str) -> Tuple[int, Dict[bytes, bytes], bytes]:
        """
        @return: the status, headers and body of the answer to C{GET
            target} with C{headers}.
        """
        lines = [b"GET " + target + b" HTTP/1.1", b"Host: proxy.example"]
        lines += [f"{k.replace('_', '-')}: {v}".encode() for k, v in headers.items()]
        protocol = self.proxy.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n")
        self.proxy.settle()
        protocol.connectionLost(None)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        status, *fields = head.split(b"\r\n")
        parsed = {}
        for field in fields:
            name, _, value = field.partition(b": ")
            parsed[name.lower()] = value
        return int(status.split(b" ")[1]), parsed, body

    def seen(self) -> List[str]:
        """
        @return: the URIs the origin received, and forget them.
        """
        uris = [r["uri"] for r in self.origin.requests]
        del self.origin.requests[:]
        return uris

    @property
    def fast(self) -> int:
        """
        @return: how many hits the channel's fast path answered.
        """
        return self.proxy.site.fastHit.answered


class NormalisedRequestTests(SynchronousTestCase):
    """
    Requests are routed, matched, keyed and forwarded by their normal path.
    """

    def test_climbingOutOfPrefix(self) -> None:
        """
        A path addressed to the C{/api} server that climbs out of its prefix
        (in any spelling) is 400 and reaches no origin; one that stays
        within it reaches the origin normalised, under the origin's path.
        """
        raw = Raw(self)
        for target in (
            b"/api/../internal-admin/",
            b"/api/%2e%2e/internal-admin/",
            b"/api/..%2f/internal-admin/",
            b"/api/x/../../internal-admin/",
            b"/api/..;/internal-admin/",
            b"/../api/x",
        ):
            status, _, _ = raw.send(target)
            self.assertEqual(status, 400, target)
        self.assertEqual(raw.seen(), [])
        for target, uri in (
            (b"/api/x/../y?q=1", "/base/y?q=1"),
            (b"//api//users/./", "/base/users/"),
            (b"/x/../api/%7Ea", "/base/~a"),
        ):
            status, _, _ = raw.send(target)
            self.assertEqual(status, 200, target)
            self.assertEqual(raw.seen(), [uri], target)

    def test_noExclusionDodged(self) -> None:
        """
        Every other spelling of an excluded path is excluded too, and the
        origin receives exactly the path that was matched: a victim's page
        requested so is never stored, and never served to anyone else.
        """
        raw = Raw(self)
        for target, uri in (
            (b"/private-area/x.css", "/private-area/x.css"),
            (b"//private-area/x.css", "/private-area/x.css"),
            (b"/%70rivate-area/x.css", "/private-area/x.css"),
            (b"/./private-area/x.css", "/private-area/x.css"),
            (b"/x/../private-area/x.css", "/private-area/x.css"),
            (b"/private-area/./x.css", "/private-area/x.css"),
            (b"/PRIVATE-AREA/../private-area", "/private-area"),
            (b"/private-area;x/x.css", "/private-area;x/x.css"),
            (b"/private-area\\x.css", "/private-area/x.css"),
        ):
            for _ in range(2):
                status, headers, _ = raw.send(target, cookie="session=victim")
                self.assertEqual(status, 200, target)
                self.assertEqual(headers[b"cache-status"], b"phantom-frame; fwd=bypass; detail=excluded", target)
            self.assertEqual(raw.seen(), [uri, uri], target)
        self.assertEqual(raw.proxy.handle.stats()["site"]["entries"], 0)

    def test_oneKeyPerPath(self) -> None:
        """
        Spellings of one path share one entry, on the stock path and the
        fast path: after one fill, every other spelling is a hit.
        """
        raw = Raw(self)
        status, headers, _ = raw.send(b"/page/caf%c3%a9")
        self.assertEqual(headers[b"cache-status"], b"phantom-frame; fwd=uri-miss; stored")
        before = raw.fast
        for target in (b"/page/caf%C3%A9", b"/page/caf\xc3\xa9", b"//page/./caf%c3%a9", b"/x/../%70age/caf%C3%a9"):
            status, headers, _ = raw.send(target)
            self.assertEqual((status, headers[b"cache-status"]), (200, b"phantom-frame; hit"), target)
        # All but the raw UTF-8 spelling, which the stock path encodes.
        self.assertEqual(raw.fast - before, 3)
        self.assertEqual(raw.seen(), ["/page/caf%C3%A9"])

    def test_fastPathRefusesTheSame(self) -> None:
        """
        A path the stock path refuses is not answered by the fast path
        either, even when the path it would normalise to is stored.
        """
        raw = Raw(self)
        raw.send(b"/internal-admin/")
        before = raw.fast
        for target in (b"/api/../internal-admin/", b"/a%zz", b"/..%2finternal-admin/"):
            status, _, _ = raw.send(target)
            self.assertEqual(status, 400, target)
        self.assertEqual(raw.fast, before)


class LibraryMountTests(SynchronousTestCase):
    """
    The proxy resource mounted under a child of a plain L{Site} (library
    mode) normalises what twisted.web did not traverse, and no C{..} may
    climb out of where it is mounted.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.origin = Origin()
        self.agent = MemoryOrigin(self.origin, self.clock)
        config = CreateProxyConfig("http://origin.example/base")
        resource, handle = create_proxy(
            config, self.clock, agent=object(), client=self.agent.client_for(config), runner=runInline
        )
        self.addCleanup(handle.close)
        root = Resource()
        root.putChild(b"shop", resource)
        self.site = Site(root, reactor=self.clock)

    def send(self, target: bytes) -> int:
        """
        @return: the status of the answer to C{GET target}.
        """
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        for _ in range(5):
            self.agent.flush()
            self.clock.advance(0)
        protocol.connectionLost(None)
        return int(transport.value().split(b" ", 2)[1])

    def test_mounted(self) -> None:
        """
        Below its mount point the path is normalised; a C{..} into the
        mount point's own segment is 400.
        """
        self.assertEqual(self.send(b"/shop/a//./b/../c"), 200)
        self.assertEqual(self.send(b"/shop/%7Ex"), 200)
        self.assertEqual([r["uri"] for r in self.origin.requests], ["/base/a/c", "/base/~x"])
        for target in (b"/shop/../admin", b"/shop/a/../../admin", b"/shop/..%2Fadmin"):
            self.assertEqual(self.send(target), 400, target)
        self.assertEqual(len(self.origin.requests), 2)
