"""
Tests for how L{phantom_frame.cache.policy} and L{phantom_frame.cache.cookies}
read a response's headers: through one index per tuple of headers
(L{phantom_frame.cache.policy.header_index}), and without parsing caching
directives a response does not carry.
"""

from __future__ import annotations

from typing import Any, List

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache import cookies, policy
from phantom_frame.cache.cookies import marked_shareable
from phantom_frame.cache.policy import header_index, header_values, response_bypass_reason
from phantom_frame.cache.strategy import CacheStrategy

PLAIN = ((b"Content-Type", b"text/html"), (b"ETag", b'"a"'), (b"Vary", b"Cookie"), (b"vary", b"Accept"))


class HeaderIndexTests(SynchronousTestCase):
    """
    Tests for L{header_index}.
    """

    def test_byName(self) -> None:
        """
        The index has the values of each name, lower-cased, in order.
        """
        self.assertEqual(
            header_index(PLAIN),
            {b"content-type": [b"text/html"], b"etag": [b'"a"'], b"vary": [b"Cookie", b"Accept"]},
        )

    def test_madeOnce(self) -> None:
        """
        The same tuple is indexed once, for every name asked of it; another
        tuple has its own index.
        """
        index = header_index(PLAIN)
        self.assertIs(header_index(PLAIN), index)
        self.assertEqual(header_values(PLAIN, b"VARY"), [b"Cookie", b"Accept"])
        self.assertIs(header_index(PLAIN), index)
        other = PLAIN[:1] + PLAIN[1:]
        self.assertIsNot(header_index(other), index)
        self.assertEqual(header_index(other), index)


class UnparsedTests(SynchronousTestCase):
    """
    A response without caching directives has none parsed: the checks every
    fill makes find the names absent from the index, and stop there.
    """

    def setUp(self) -> None:
        self.parsed: List[Any] = []
        parse = policy.parse_cache_control

        def counting(values: Any) -> Any:
            self.parsed.append(list(values))
            return parse(values)

        self.patch(policy, "parse_cache_control", counting)
        self.patch(cookies, "parse_cache_control", counting)

    def test_bypassWithout(self) -> None:
        """
        A storable response without C{Cache-Control} (or
        C{CDN-Cache-Control}) is found storable without parsing anything.
        """
        self.assertIsNone(response_bypass_reason(200, PLAIN, CacheStrategy.ALL))
        self.assertEqual(self.parsed, [])

    def test_bypassWith(self) -> None:
        """
        A response's C{Cache-Control} is parsed and obeyed.
        """
        headers = PLAIN + ((b"Cache-Control", b"no-store"),)
        self.assertEqual(response_bypass_reason(200, headers, CacheStrategy.ALL), "no-store")
        self.assertEqual(self.parsed, [[b"no-store"]])

    def test_varyStar(self) -> None:
        """
        C{Vary: *} is still found, from the index.
        """
        headers = PLAIN + ((b"Vary", b"*"),)
        self.assertEqual(response_bypass_reason(200, headers, CacheStrategy.ALL), "vary-star")

    def test_shareableWithout(self) -> None:
        """
        A response without caching directives is not marked shareable, and
        nothing is parsed to find that out.
        """
        self.assertFalse(marked_shareable(PLAIN))
        self.assertEqual(self.parsed, [])

    def test_shareableWith(self) -> None:
        """
        C{Cache-Control: public} and a C{Surrogate-Control} lifetime are
        parsed and mark a response shareable.
        """
        self.assertTrue(marked_shareable(PLAIN + ((b"Cache-Control", b"public"),)))
        self.assertTrue(marked_shareable(PLAIN + ((b"Surrogate-Control", b"max-age=60"),)))
        self.assertEqual(self.parsed, [[b"public"], [b"max-age=60"]])
