"""
Random configuration tables: whatever a file holds, validation either gives
a configuration or a L{ConfigError} naming its keys, never another
exception; and a configuration it accepts builds the running proxy.
"""

from __future__ import annotations

import math
import random
import tempfile
from typing import Any, Dict

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import ConfigError, parse_config
from phantom_frame.config.schema import ROOT_KEYS, SERVER_KEYS
from phantom_frame.service import build_service

#: Values that are sometimes right, sometimes of the wrong kind, sometimes
#: hostile (control characters, huge numbers, deep lists, odd strings).
_STRINGS = (
    "", "*", "/api", "/api/", "http://localhost:8080", "https://é..example/", "http://exa\x00mple/",
    "tcp:0:interface=127.0.0.1", "bogus:foo", "$env:NOPE", "brotli", "gzip", "none", "all", "http",
    "prerender", "memory", "filesystem", "redis", "64MB", "-1KB", "16KB", "0", "auto", "GET /x",
    "/x/*", "*" * 5000, "\ufffd", "strict", "ignore", "10s", "1e309",
)


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice(_STRINGS)
    if kind == 1:
        return rng.choice((0, 1, -1, 3000, 65536, 2 ** 63, 17809))
    if kind == 2:
        return rng.choice((0.5, -2.5, math.inf, 1e300))
    if kind == 3:
        return rng.choice((True, False))
    if kind == 4:
        return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(0, 12)))
    if kind == 5:
        return rng.choice(_STRINGS) + rng.choice(_STRINGS)
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {rng.choice(SERVER_KEYS + ("x", "")): _value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def _table(rng: random.Random) -> Dict[str, Any]:
    data: Dict[str, Any] = {}
    for _ in range(rng.randrange(0, 6)):
        data[rng.choice(ROOT_KEYS + ("nonsense",))] = _value(rng)
    servers = {}
    for n in range(rng.randrange(0, 3)):
        block = {"proxy_url": "http://127.0.0.1:8080"} if rng.random() < 0.7 else {}
        for _ in range(rng.randrange(0, 6)):
            block[rng.choice(SERVER_KEYS + ("cache_stratgy",))] = _value(rng)
        servers[f"s{n}"] = block if rng.random() < 0.95 else _value(rng)
    if servers or rng.random() < 0.5:
        data["server"] = servers
    return data


class RandomTableTests(SynchronousTestCase):
    """
    Validation never fails but with a L{ConfigError}.
    """

    def test_random_tables(self) -> None:
        """
        Two thousand random tables: each gives a configuration or a
        L{ConfigError} whose every line names something; an accepted one
        builds the whole service on a memory reactor.
        """
        rng = random.Random(20261201)
        accepted = 0
        with tempfile.TemporaryDirectory() as base:
            for _ in range(2000):
                data = _table(rng)
                try:
                    config = parse_config(data, environ={}, base_dir=base)
                except ConfigError as e:
                    self.assertTrue(e.errors, data)
                    for line in e.errors:
                        self.assertIsInstance(line, str)
                        self.assertTrue(line.strip(), data)
                    continue
                accepted += 1
                build_service(config, MemoryReactorClock())
        self.assertGreater(accepted, 10)
