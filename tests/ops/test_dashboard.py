"""
Tests for C{conf/grafana/phantom-frame.json} and C{conf/prometheus.yml}:
every PromQL expression of the dashboard names metrics (and labels) that
C{GET /metrics} exposes, and Prometheus scrapes the example configuration's
control site with the bearer token.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Iterator, List, Set

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import load_config, parse_config
from phantom_frame.ops.control_client import control_address

from tests.memory import Proxy
from tests.origin import Origin

CONF = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "conf")
README = os.path.join(CONF, os.pardir, "README.rst")
TOKEN = "dashboard-token"

#: The sample names each metric type exposes, after the family's name.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}

_METRIC = re.compile(r"\bphantom_frame_\w+")
_SELECTOR = re.compile(r"\b(phantom_frame_\w+)\{([^}]*)\}")
_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")


def dashboard() -> Dict[str, Any]:
    """
    @return: the dashboard, parsed.
    """
    with open(os.path.join(CONF, "grafana", "phantom-frame.json")) as f:
        return json.load(f)


def panels(board: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """
    @return: every panel, those inside rows included (rows excluded).
    """
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def expressions(board: Dict[str, Any]) -> List[str]:
    """
    @return: every PromQL expression: the panels' targets and the
        template variables' queries.
    """
    found = [target["expr"] for panel in panels(board) for target in panel["targets"]]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


class DashboardTests(SynchronousTestCase):
    """
    The dashboard reads what the proxy exposes.
    """

    def exposed(self) -> Dict[str, Set[str]]:
        """
        Scrape a proxy in memory after a miss, hits (fast path included), a
        5xx from the origin and a bypass.

        @return: every sample name C{/metrics} exposes (or would, for a
            family without samples yet), with the labels seen on it.
        """
        config = parse_config(
            {
                "control_auth": TOKEN,
                "server": {
                    "site": {"proxy_url": "http://origin.example"},
                    "api": {"bind_to": "/api", "proxy_url": "http://origin.example/v1"},
                },
            }
        )
        proxy = Proxy(self, config, Origin())
        for path in ("/a", "/a", "/a", "/status/503", "/cookie", "/api/x"):
            proxy.get(self, path)
        response, text = proxy.scrape(self, {"Authorization": "Bearer " + TOKEN})
        self.assertEqual(response.code, 200)
        names: Dict[str, Set[str]] = {}
        for family in text_string_to_metric_families(text):
            for suffix in SUFFIXES.get(family.type, ("",)):
                names.setdefault(family.name + suffix, set())
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(sample.labels)
        return names

    def test_metricNames(self) -> None:
        """
        Every metric an expression names is exposed by C{/metrics}, with
        the labels its selectors and C{by} clauses use; every expression
        uses at least one.
        """
        exposed = self.exposed()
        board = dashboard()
        exprs = expressions(board)
        self.assertGreaterEqual(len(exprs), 10)
        unknown, bad_labels = [], []
        for expr in exprs:
            used = _METRIC.findall(expr)
            self.assertTrue(used, expr)
            unknown.extend(name for name in used if name not in exposed)
            for name, selector in _SELECTOR.findall(expr):
                for label in _LABEL.findall(selector):
                    if name in exposed and label not in exposed[name]:
                        bad_labels.append(f"{name}{{{label}}}")
            known = set().union(*(exposed.get(name, set()) for name in used))
            for clause in _BY.findall(expr):
                for label in (l.strip() for l in clause.split(",")):
                    if label not in known:
                        bad_labels.append(f"by ({label}) in {expr}")
        self.assertEqual(unknown, [])
        self.assertEqual(bad_labels, [])

    def test_panels(self) -> None:
        """
        The dashboard shows hit ratio, requests by cache result, the
        upstream latency histogram, bytes stored, evictions and errors;
        every panel has its own id, a description and targets on the
        chosen data source; the README describes each panel by its title.
        """
        board = dashboard()
        shown = list(panels(board))
        titles = [panel["title"] for panel in shown]
        for wanted in (
            "Hit ratio",
            "Requests per second by cache result",
            "Upstream latency histogram",
            "Bytes stored",
            "Evictions per second",
            "Errors per second",
        ):
            self.assertIn(wanted, titles)
        ids = [panel["id"] for panel in board["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        with open(README, encoding="utf-8") as f:
            readme = f.read()
        for panel in shown:
            self.assertTrue(panel["description"], panel["title"])
            self.assertIn(f"**{panel['title']}**", readme)
            for target in panel["targets"]:
                self.assertEqual(target["datasource"]["uid"], "${datasource}")
        heatmap = [p for p in shown if p["title"] == "Upstream latency histogram"][0]
        self.assertEqual(heatmap["type"], "heatmap")
        self.assertIn("phantom_frame_upstream_request_duration_seconds_bucket", heatmap["targets"][0]["expr"])


class PrometheusTests(SynchronousTestCase):
    """
    C{conf/prometheus.yml}.
    """

    def test_scrape(self) -> None:
        """
        It scrapes C{/metrics} at the example configuration's control site
        with the bearer token from a file.
        """
        with open(os.path.join(CONF, "prometheus.yml")) as f:
            text = f.read()
        where = str(control_address(load_config(os.path.join(CONF, "config.toml"))))
        for line in (
            "metrics_path: /metrics",
            "type: Bearer",
            "credentials_file: /etc/prometheus/phantom-frame.token",
            f"- {where}",
        ):
            self.assertIn(line, [l.strip() for l in text.splitlines()])
        self.assertNotIn("\t", text)
