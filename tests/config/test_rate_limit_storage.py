"""
Tests for C{rate_limit_storage}: the root key, C{phantom-frame check}, and
the stores L{build_service} gives the rate limits.
"""

from __future__ import annotations

import io
from typing import Any, Dict

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.bus import RedisNode
from phantom_frame.config import ConfigError, parse_config
from phantom_frame.config.check import check
from phantom_frame.service import build_service


def _data(**root: Any) -> Dict[str, Any]:
    """
    @return: a configuration with C{root} keys and one rate-limited server.
    """
    server = {"proxy_url": "http://127.0.0.1:8080", "rate_limits": [{"rate": "5/m"}]}
    return dict(root, server={"api": server})


class KeyTests(SynchronousTestCase):
    """
    C{rate_limit_storage} is C{"redis"} (the default) or C{"memory"}.
    """

    def test_values(self) -> None:
        """
        Both values are read; the default is C{"redis"}.
        """
        self.assertEqual(parse_config(_data()).rate_limit_storage, "redis")
        self.assertEqual(parse_config(_data(rate_limit_storage="memory")).rate_limit_storage, "memory")
        self.assertEqual(parse_config(_data(rate_limit_storage="redis")).rate_limit_storage, "redis")

    def test_wrong(self) -> None:
        """
        Anything else is an error naming the key, with a suggestion.
        """
        error = self.assertRaises(ConfigError, parse_config, _data(rate_limit_storage="memroy"))
        self.assertIn("rate_limit_storage: expected one of redis, memory, got 'memroy'; did you mean memory?", str(error))

    def test_check(self) -> None:
        """
        C{phantom-frame check} refuses a wrong value, naming the key.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('rate_limit_storage = "disk"\n[server.api]\nproxy_url = "http://127.0.0.1:8080"\n')
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(check(path, out, err), 1)
        self.assertIn("rate_limit_storage: expected one of redis, memory", err.getvalue())


class ServiceTests(SynchronousTestCase):
    """
    L{build_service} shares the limits through the Redis node with
    C{redis_url}, unless C{rate_limit_storage = "memory"}.
    """

    def limiter(self, **root: Any) -> Any:
        """
        @return: the rate limiter of the server of a service built (not
            started) from C{root} keys.
        """
        top = build_service(parse_config(_data(**root)), MemoryReactorClock())
        return top.handle.server("api").decider.limiter

    def test_shared(self) -> None:
        """
        With C{redis_url}, the limits' stores use the process's Redis node.
        """
        self.assertIsInstance(self.limiter(redis_url="redis://127.0.0.1:1/0").node, RedisNode)

    def test_local(self) -> None:
        """
        Without C{redis_url}, or with C{rate_limit_storage = "memory"}, each
        process keeps its own buckets.
        """
        self.assertIsNone(self.limiter().node)
        self.assertIsNone(self.limiter(redis_url="redis://127.0.0.1:1/0", rate_limit_storage="memory").node)
