"""
Tests for L{phantom_frame.ops.control_limits}: what the control site accepts.
"""

from __future__ import annotations

import json
import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.ops.control_limits import (
    MAX_BODY,
    MAX_DEPTH,
    BadRequest,
    json_body,
    route_path,
    too_deep,
)


def nested(depth: int, rng: random.Random) -> Any:
    """
    @return: a JSON value nesting arrays and objects exactly C{depth} levels,
        with strings full of brackets, quotes and backslashes on the way.
    """
    if depth == 0:
        return rng.choice([1, "x", '["{\\"', "\\", None, "]]}}"])
    inner = nested(depth - 1, rng)
    noise = rng.choice(["[[", '"', "\\", "{", "\\\""])
    # An empty array or object beside the inner value is one level deep.
    empty = [] if depth > 1 else noise
    if rng.random() < 0.5:
        return [noise, inner, empty] if rng.random() < 0.5 else [inner]
    return {noise: inner, "k": empty}


def reference_depth(value: Any) -> int:
    """
    @return: how deep C{value} nests arrays and objects.
    """
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    return 0


class TooDeepTests(SynchronousTestCase):
    """
    Tests for L{too_deep}.
    """

    def test_limit(self) -> None:
        """
        Thirty-two levels are accepted, thirty-three are not, arrays and
        objects alike.
        """
        self.assertEqual(MAX_DEPTH, 32)
        self.assertFalse(too_deep(b"[" * 32 + b"]" * 32))
        self.assertTrue(too_deep(b"[" * 33 + b"]" * 33))
        self.assertFalse(too_deep(b'{"a":' * 32 + b"1" + b"}" * 32))
        self.assertTrue(too_deep(b'{"a":' * 33 + b"1" + b"}" * 33))
        self.assertTrue(too_deep(b"[{" * 17 + b"}]" * 17))
        self.assertFalse(too_deep(b"[{" * 16 + b"}]" * 16))

    def test_wideIsNotDeep(self) -> None:
        """
        Many shallow arrays side by side are not deep.
        """
        self.assertFalse(too_deep(b"[" + b"[[]]," * 100000 + b"[]]"))
        self.assertFalse(too_deep(b"[" + (b"[" * 31 + b"]" * 31 + b",") * 1000 + b"1]"))
        self.assertTrue(too_deep(b"[" + (b"[" * 31 + b"]" * 31 + b",") * 1000 + b"[" * 32 + b"]" * 32 + b"]"))

    def test_stringsDoNotCount(self) -> None:
        """
        Brackets inside strings do not count, escaped quotes included; an
        escaped backslash before a quote ends the string.
        """
        self.assertFalse(too_deep(b'{"pattern": "/' + b"[" * 100 + b'"}'))
        self.assertFalse(too_deep(b'["\\"' + b"[" * 100 + b'"]'))
        self.assertTrue(too_deep(b'["\\\\", ' + b"[" * 33 + b"]" * 33 + b"]"))
        self.assertFalse(too_deep(b'["\\\\\\"' + b"[" * 100 + b'"]'))

    def test_unbalanced(self) -> None:
        """
        Text that opens more than C{MAX_DEPTH} brackets without closing
        them is too deep; a few unclosed ones are left to the decoder.
        """
        self.assertTrue(too_deep(b"[" * 100000))
        self.assertTrue(too_deep(b"[" * 33))
        self.assertFalse(too_deep(b"[" * 32))
        self.assertFalse(too_deep(b"]" * 100 + b"[" * 10))
        self.assertTrue(too_deep(b'"' + b"]" * 40 + b'"' + b"[" * 40))

    def test_agreesWithDecoder(self) -> None:
        """
        On random JSON of every depth around the limit, with brackets,
        quotes and backslashes in its strings, the answer is exact.
        """
        rng = random.Random(11)
        for _ in range(400):
            depth = rng.randint(MAX_DEPTH - 4, MAX_DEPTH + 4)
            value = nested(depth, rng)
            self.assertEqual(reference_depth(value), depth)
            raw = json.dumps(value).encode()
            self.assertEqual(too_deep(raw), depth > MAX_DEPTH, raw)


def decoded_depth(raw: str) -> int:
    """
    @return: the deepest nesting a JSON decoder reaches in C{raw} before it
        meets what it must fail on, read one character at a time: the
        brackets outside strings, up to the first unbalanced close or
        backslash outside a string.
    """
    depth = deepest = 0
    inside = escaped = False
    for c in raw:
        if inside:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                inside = False
        elif c == '"':
            inside = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
            if depth < 0:
                break
        elif c == "\\":
            break
    return deepest


class TooDeepBoundTests(SynchronousTestCase):
    """
    L{too_deep} on text that is not JSON.
    """

    def test_neverUnderReports(self) -> None:
        """
        On random text of brackets, quotes and backslashes, whenever a
        decoder would nest deeper than the limit before failing, the text
        is too deep.
        """
        rng = random.Random(5)
        for _ in range(20000):
            raw = "".join(rng.choice('[]{}"\\a') for _ in range(rng.randint(0, 40)))
            if decoded_depth(raw) > 3:
                self.assertTrue(too_deep(raw.encode(), limit=3), raw)

    def test_balancedExact(self) -> None:
        """
        On random balanced brackets around strings, the answer is exact.
        """
        rng = random.Random(6)
        for _ in range(3000):
            parts = []
            depth = 0
            for _ in range(rng.randint(0, 60)):
                if depth and rng.random() < 0.45:
                    parts.append(rng.choice("]}"))
                    depth -= 1
                elif rng.random() < 0.2:
                    parts.append(rng.choice(['"a"', '"[\\"["', '"\\\\"', '"]}"']))
                else:
                    parts.append(rng.choice("[{"))
                    depth += 1
            raw = "".join(parts) + "]" * depth
            self.assertEqual(too_deep(raw.encode(), limit=4), decoded_depth(raw) > 4, raw)


class JsonBodyTests(SynchronousTestCase):
    """
    Tests for L{json_body}.
    """

    def test_decodes(self) -> None:
        """
        UTF-8 JSON within the limits is decoded.
        """
        self.assertEqual(json_body('{"pattern": "/é"}'.encode()), {"pattern": "/é"})
        self.assertEqual(json_body(b"[" * 32 + b"]" * 32), json.loads(b"[" * 32 + b"]" * 32))

    def test_tooDeep(self) -> None:
        """
        100,000 open brackets (which the decoder would recurse into until
        it failed with L{RecursionError}) are a L{BadRequest}, and so is
        valid JSON thirty-three levels deep.
        """
        for raw in (b"[" * 100000, b"[" * 33 + b"]" * 33):
            error = self.assertRaises(BadRequest, json_body, raw)
            self.assertIn("nested deeper than 32 levels", str(error))

    def test_invalid(self) -> None:
        """
        Bytes that are not UTF-8, or not JSON, are a L{BadRequest}.
        """
        for raw in (b"\xff{}", b"{bad", b"[" * 20):
            self.assertRaises(BadRequest, json_body, raw)

    def test_maxBody(self) -> None:
        """
        The largest body accepted is 1 MiB.
        """
        self.assertEqual(MAX_BODY, 1024 * 1024)


class RoutePathTests(SynchronousTestCase):
    """
    Tests for L{route_path}.
    """

    def test_routePath(self) -> None:
        """
        The query and a trailing slash are dropped.
        """
        self.assertEqual(route_path(b"/health/?x=1"), b"/health")
        self.assertEqual(route_path(b"/"), b"/")
        self.assertEqual(route_path(b"/stats"), b"/stats")
