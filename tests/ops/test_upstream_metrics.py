"""
Tests for the per-upstream families of L{phantom_frame.ops.metrics}: one
sample per server and upstream URL, read at scrape time.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import parse_config
from tests.memory import Proxy, samples, value
from tests.origin import Origin

A, B = "http://a.example", "http://b.example"


class UpstreamMetricsTests(SynchronousTestCase):
    """
    C{/metrics} shows each upstream's requests, failures, latency and
    health, with an C{upstream} label.
    """

    def test_families(self) -> None:
        """
        Requests spread over two upstreams are counted for each; an
        unhealthy one shows 0 in the health gauge; a server with one
        C{proxy_url} has no samples.
        """
        config = parse_config(
            {
                "server": {
                    "site": {"bind_to": "*", "upstreams": [A, B], "cache_strategy": "none"},
                    "api": {"bind_to": "/api", "proxy_url": "http://c.example"},
                }
            }
        )
        proxy = Proxy(self, config, Origin())
        for n in range(3):
            response, _ = proxy.get(self, f"/plain?{n}")
            self.assertEqual(response.code, 200)
        proxy.handle.server("site").origin.upstreams[1].healthy = False
        _, text = proxy.scrape(self)
        parsed = samples(text)
        labels = {"server": "site"}
        self.assertEqual(value(parsed, "phantom_frame_upstream_requests_total", upstream=A, **labels), 2)
        self.assertEqual(value(parsed, "phantom_frame_upstream_requests_total", upstream=B, **labels), 1)
        self.assertEqual(value(parsed, "phantom_frame_upstream_failures_total", upstream=A, **labels), 0)
        self.assertEqual(value(parsed, "phantom_frame_upstream_latency_seconds_count", upstream=A, **labels), 2)
        self.assertEqual(
            value(parsed, "phantom_frame_upstream_latency_seconds_bucket", upstream=B, le="+Inf", **labels), 1
        )
        self.assertEqual(value(parsed, "phantom_frame_upstream_healthy", upstream=A, **labels), 1)
        self.assertEqual(value(parsed, "phantom_frame_upstream_healthy", upstream=B, **labels), 0)
        self.assertIsNone(value(parsed, "phantom_frame_upstream_requests_total", server="api"))
