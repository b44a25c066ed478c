"""
Tests for the control site's C{GET /top_keys} and C{GET /progress}, over a
whole proxy in memory.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import parse_config

from tests.memory import Proxy
from tests.origin import Origin

TOKEN = "top-token"
AUTH = {"Authorization": "Bearer " + TOKEN}


def config(**site: Any) -> Any:
    """
    @return: a C{"*"} server and an C{/api} server, with C{control_auth},
        the C{"*"} server taking C{site}'s keys too.
    """
    return parse_config(
        {
            "control_auth": TOKEN,
            "server": {
                "site": {"proxy_url": "http://origin.example", **site},
                "api": {"bind_to": "/api", "proxy_url": "http://origin.example/v1"},
            },
        }
    )


class ControlTopTests(SynchronousTestCase):
    """
    The busiest keys and the progress of snapshot runs.
    """

    def call(self, proxy: Proxy, path: str, headers: Optional[Dict[str, str]] = AUTH) -> Tuple[int, Any]:
        """
        @return: the status and JSON answer of C{GET path} on the control
            site.
        """
        d = proxy.control_client.get("http://control" + path, headers=headers)
        proxy.settle()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        return response.code, json.loads(body)

    def test_topKeys(self) -> None:
        """
        Hits (on the channel's fast path and on the stock path alike) are
        counted per key; C{/top_keys?n=N} gives the busiest first, per
        server; misses are not hits.
        """
        proxy = Proxy(self, config(), Origin())
        for path, times in (("/a", 4), ("/b", 2), ("/c", 1), ("/api/x", 3)):
            for _ in range(times):
                proxy.get(self, path)
        # A conditional request is a hit too.
        proxy.get(self, "/b", headers={"If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"})
        self.assertGreater(proxy.site.fastHit.answered, 0)
        code, answer = self.call(proxy, "/top_keys?n=2")
        self.assertEqual(code, 200)
        site = answer["servers"]["site"]
        self.assertEqual(site["hits"], 3 + 2)
        self.assertEqual(
            [(k["key"].rsplit("proxy.example", 1)[-1], k["hits"]) for k in site["keys"]], [("/a", 3), ("/b", 2)]
        )
        self.assertEqual([k["hits"] for k in answer["servers"]["api"]["keys"]], [2])
        code, answer = self.call(proxy, "/top_keys?server=api")
        self.assertEqual((code, list(answer["servers"])), (200, ["api"]))

    def test_topKeysRefused(self) -> None:
        """
        C{/top_keys} needs the token like every route; a bad C{n} is 400;
        an unknown server 404.
        """
        proxy = Proxy(self, config(), Origin())
        self.assertEqual(self.call(proxy, "/top_keys", headers=None)[0], 401)
        for bad in ("0", "x", "1001", "-1"):
            self.assertEqual(self.call(proxy, "/top_keys?n=" + bad)[0], 400, bad)
        self.assertEqual(self.call(proxy, "/top_keys?server=nope")[0], 404)

    def test_progress(self) -> None:
        """
        C{/progress} shows, per pre_generate server, the last snapshot run
        (L{None} before the first), while it runs and once it is over.
        """
        origin = Origin()
        proxy = Proxy(
            self,
            config(proxy_mode="pre_generate", pre_generate_paths=["/one", "/gated", "/status/500"]),
            origin,
        )
        self.assertEqual(self.call(proxy, "/progress"), (200, {"servers": {"site": None}}))
        from twisted.internet.defer import Deferred

        origin.gate = Deferred()
        snapshots = proxy.handle.server("site").snapshots
        snapshots.fetch_all(what="refreshed")
        proxy.settle()
        code, answer = self.call(proxy, "/progress")
        self.assertEqual(code, 200)
        running = answer["servers"]["site"]
        self.assertEqual(
            {k: running[k] for k in ("what", "total", "done", "failed", "running")},
            {"what": "refreshed", "total": 3, "done": 2, "failed": 1, "running": True},
        )
        origin.gate.callback(None)
        proxy.settle()
        code, answer = self.call(proxy, "/progress?server=site")
        self.assertEqual((answer["servers"]["site"]["done"], answer["servers"]["site"]["running"]), (3, False))
        self.assertEqual(self.call(proxy, "/progress", headers=None)[0], 401)

    def test_progressDynamic(self) -> None:
        """
        Without a pre_generate server, C{/progress} is 400, as every
        snapshot route.
        """
        proxy = Proxy(self, config(), Origin())
        self.assertEqual(self.call(proxy, "/progress")[0], 400)
