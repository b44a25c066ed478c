"""
Tests for the C{[[server.NAME.rate_limits]]} tables
(L{phantom_frame.config.ratelimits}): each error names its key path, in
L{parse_config} and in C{phantom-frame check}.
"""

from __future__ import annotations

import io
import os
from typing import Any, Dict, List, Optional

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import ConfigError, load_config, parse_config
from phantom_frame.cli import main
from phantom_frame.proxy.ratelimit import RateLimit

EXAMPLE = os.path.abspath(
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "conf", "config.toml")
)

_FILE = """\
http_port = 3000

[server.api]
proxy_url = "http://127.0.0.1:8080"

[[server.api.rate_limits]]
by = "ip"
rate = "100/s"
burst = 200

[[server.api.rate_limits]]
by = "header:X-Api-Key"
rate = "600/m"
paths = ["/api/*", "*.json"]
"""


def _data(limits: Any) -> Dict[str, Any]:
    """
    @return: parsed TOML with one server whose C{rate_limits} is C{limits}.
    """
    return {"server": {"api": {"proxy_url": "http://127.0.0.1:8080", "rate_limits": limits}}}


class RateLimitConfigTests(SynchronousTestCase):
    """
    C{rate_limits} becomes the server's L{RateLimit}s, or errors naming
    their keys.
    """

    def errors(self, limits: Any, environ: Optional[Dict[str, str]] = None) -> List[str]:
        """
        @return: the errors for a server with C{limits}.
        """
        error = self.assertRaises(ConfigError, parse_config, _data(limits), environ or {}, ".")
        return error.errors

    def test_file(self) -> None:
        """
        Tables in a file give the limits, in order, with their defaults.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(_FILE)
        limits = load_config(path, {}).servers[0].proxy.rate_limits
        self.assertEqual(
            limits,
            (
                RateLimit(100.0, by="ip", burst=200),
                RateLimit(10.0, by="header:x-api-key", burst=10, paths=("/api/*", "*.json")),
            ),
        )

    def test_defaults(self) -> None:
        """
        Only C{rate} is required: C{by} is C{ip}, the burst the rate per
        second (at least 1), no paths; no tables, no limits.
        """
        config = parse_config(_data([{"rate": "30/m"}]), {}, ".")
        self.assertEqual(config.servers[0].proxy.rate_limits, (RateLimit(0.5, by="ip", burst=1),))
        config = parse_config({"server": {"api": {"proxy_url": "http://127.0.0.1:8080"}}}, {}, ".")
        self.assertEqual(config.servers[0].proxy.rate_limits, ())

    def test_fromEnvironment(self) -> None:
        """
        Values may come from C{$env:} variables.
        """
        config = parse_config(
            _data([{"rate": "$env:RATE", "burst": "$env:BURST", "by": "$env:BY"}]),
            {"RATE": "5/s", "BURST": "7", "BY": "route"},
            ".",
        )
        self.assertEqual(config.servers[0].proxy.rate_limits, (RateLimit(5.0, by="route", burst=7),))

    def test_badValues(self) -> None:
        """
        Each bad value is reported under its key path, with what was
        expected.
        """
        errors = self.errors(
            [
                {"rate": "5 per second"},
                {"rate": "1/s", "by": "client", "burst": 0, "paths": ["api/*"]},
                {"rate": 5},
                {"by": "ip"},
                {"rate": "1/s", "burts": 3},
                "ip",
            ]
        )
        base = "server.api.rate_limits"
        self.assertEqual(
            errors,
            [
                f'{base}[0].rate: expected a rate such as "100/s", "600/m" or "3600/h" (a number > 0'
                " of requests per second, minute or hour), got '5 per second'",
                f'{base}[1].by: expected "ip", "route" or "header:NAME" (NAME a header name), got'
                " 'client'",
                f"{base}[1].burst: expected an integer > 0, got 0",
                f'{base}[1].paths[0]: expected a path glob starting with "/" or "*" ("/api/*"), got'
                " 'api/*'",
                f'{base}[2].rate: expected a rate such as "100/s", "600/m" or "3600/h" (a number > 0'
                " of requests per second, minute or hour), got 5",
                f'{base}[3].rate: required: a rate such as "100/s", "600/m" or "3600/h" (a number > 0'
                " of requests per second, minute or hour)",
                f"{base}[4].burts: unknown key; did you mean burst?",
                f"{base}[5]: expected a table with by, rate, burst and paths, got 'ip'",
            ],
        )

    def test_notTables(self) -> None:
        """
        C{rate_limits} is an array of tables, never a string or C{$env:}.
        """
        self.assertEqual(
            self.errors("100/s"),
            ["server.api.rate_limits: expected [[server.NAME.rate_limits]] tables, got '100/s'"],
        )
        self.assertEqual(
            self.errors("$env:LIMITS", {"LIMITS": "x"}),
            [
                "server.api.rate_limits: rate limits are [[server.NAME.rate_limits]] tables and"
                " cannot come from $env:"
            ],
        )

    def test_unsetRate(self) -> None:
        """
        A C{rate} from an unset variable is an error: the limit would
        otherwise vanish.
        """
        self.assertEqual(
            self.errors([{"rate": "$env:RATE"}]),
            ["server.api.rate_limits[0].rate: required, but $env:RATE is not set"],
        )

    def test_check(self) -> None:
        """
        C{phantom-frame check} reports a bad rate by its key path and exits
        1.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(_FILE.replace('"600/m"', '"5 per second"'))
        out, err = io.StringIO(), io.StringIO()
        status = main(["check", path], stdout=out, stderr=err)
        self.assertEqual((status, out.getvalue()), (1, ""))
        self.assertIn(
            "1. server.api.rate_limits[1].rate: expected a rate such as \"100/s\"", err.getvalue()
        )

    def test_example(self) -> None:
        """
        The example file shows a C{[[server.NAME.rate_limits]]} table and
        every one of its keys, commented out.
        """
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("# [[server.site.rate_limits]]\n", text)
        for key in ("by", "rate", "burst", "paths"):
            self.assertRegex(text, rf"(?m)^# {key} = ", key)
