"""
Tests for the edge blocks and keys of a configuration file
(L{phantom_frame.config.edge}): C{[static.NAME]}, C{[redirect.NAME]}, and the
per-server C{rewrite}, C{purge_method} and C{purge_allow}.
"""

from __future__ import annotations

import io
import os
from typing import Any, Dict, List

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import ConfigError, parse_config
from phantom_frame.config.check import check
from phantom_frame.http.routes import RedirectConfig, StaticConfig

EXAMPLE = os.path.normpath(
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "conf", "config.toml")
)


def _data(**blocks: Any) -> Dict[str, Any]:
    """
    @return: a file with a C{"*"} server and C{blocks} at the root.
    """
    data: Dict[str, Any] = {"server": {"site": {"proxy_url": "http://origin.test"}}}
    data.update(blocks)
    return data


class _Helpers(SynchronousTestCase):
    def errors(self, data: Dict[str, Any], base_dir: str = ".") -> List[str]:
        """
        @return: the errors parsing C{data} reports.
        """
        return self.assertRaises(ConfigError, parse_config, data, {}, base_dir).errors


class StaticBlockTests(_Helpers):
    """
    C{[static.NAME]} blocks.
    """

    def test_valid(self) -> None:
        """
        A block becomes a L{StaticConfig} with its root made absolute from
        the file's directory and C{index} defaulting to C{index.html}.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(base, "www"))
        config = parse_config(
            _data(static={"www": {"bind_to": "/www", "root": "www"}}), {}, base
        )
        self.assertEqual(
            config.statics, (StaticConfig("www", "/www", os.path.join(base, "www"), "index.html"),)
        )

    def test_missingRoot(self) -> None:
        """
        A root that does not exist, or is a file, is an error naming the key.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        open(os.path.join(base, "file"), "w").close()
        errors = self.errors(
            _data(
                static={
                    "a": {"bind_to": "/a", "root": "nowhere"},
                    "b": {"bind_to": "/b", "root": "file"},
                }
            ),
            base,
        )
        self.assertEqual(
            errors,
            [
                f"static.a.root: {os.path.join(base, 'nowhere')!r} does not exist",
                f"static.b.root: {os.path.join(base, 'file')!r} is not a directory",
            ],
        )

    def test_required(self) -> None:
        """
        C{bind_to} and C{root} are required; unknown keys are errors with a
        suggestion.
        """
        errors = self.errors(_data(static={"a": {"roots": "/tmp"}}))
        self.assertEqual(
            errors,
            [
                "static.a.roots: unknown key; did you mean root?",
                "static.a.bind_to: required",
                "static.a.root: required",
            ],
        )

    def test_badIndex(self) -> None:
        """
        An C{index} with a slash is an error.
        """
        errors = self.errors(
            _data(static={"a": {"bind_to": "/a", "root": "/", "index": "../x.html"}})
        )
        self.assertEqual(len(errors), 1)
        self.assertTrue(errors[0].startswith("static.a.index: expected a file name"), errors)

    def test_bindToShared(self) -> None:
        """
        A C{bind_to} used by a server and a static block, or by two blocks
        of any kinds, is an error naming the later block.
        """
        errors = self.errors(
            {
                "server": {"api": {"bind_to": "/api", "proxy_url": "http://origin.test"}},
                "static": {"a": {"bind_to": "/api", "root": "/"}},
                "redirect": {"r": {"bind_to": "/api", "to": "/"}},
            }
        )
        self.assertEqual(
            errors,
            [
                "static.a.bind_to: '/api' is already used by server.api",
                "redirect.r.bind_to: '/api' is already used by server.api",
            ],
        )

    def test_twoStars(self) -> None:
        """
        Only one block of any kind may bind to C{"*"}.
        """
        errors = self.errors(_data(redirect={"r": {"bind_to": "*", "to": "/x"}}))
        self.assertEqual(errors, ['redirect.r.bind_to: only one block may use "*", and server.site does'])

    def test_notTables(self) -> None:
        """
        C{static} must hold tables.
        """
        self.assertEqual(self.errors(_data(static=3)), ["static: expected [static.NAME] tables, got 3"])


class RedirectBlockTests(_Helpers):
    """
    C{[redirect.NAME]} blocks.
    """

    def test_valid(self) -> None:
        """
        A block becomes a L{RedirectConfig}; C{status} defaults to 308.
        """
        config = parse_config(
            _data(
                redirect={
                    "a": {"bind_to": "/a", "to": "/b"},
                    "c": {"bind_to": "/c", "to": "https://example.com/x?y=1", "status": 301},
                }
            ),
            {},
        )
        self.assertEqual(
            config.redirects,
            (RedirectConfig("a", "/a", "/b", 308), RedirectConfig("c", "/c", "https://example.com/x?y=1", 301)),
        )

    def test_badStatus(self) -> None:
        """
        A status other than 301, 302, 307 or 308 is an error naming the key.
        """
        errors = self.errors(_data(redirect={"a": {"bind_to": "/a", "to": "/b", "status": 200}}))
        self.assertEqual(errors, ["redirect.a.status: expected one of 301, 302, 307, 308, got 200"])

    def test_badTo(self) -> None:
        """
        C{to} is an http(s) URL or a path; a protocol-relative C{//host} is
        refused.
        """
        errors = self.errors(
            _data(
                redirect={
                    "a": {"bind_to": "/a", "to": "ftp://x"},
                    "b": {"bind_to": "/b", "to": "//evil.test/"},
                    "c": {"bind_to": "/c", "to": "new"},
                }
            )
        )
        self.assertEqual([e.split(":")[0] for e in errors], ["redirect.a.to", "redirect.b.to", "redirect.c.to"])

    def test_statusFromEnv(self) -> None:
        """
        C{status} may come from C{$env:}, as a number.
        """
        config = parse_config(
            _data(redirect={"a": {"bind_to": "/a", "to": "/b", "status": "$env:CODE"}}),
            {"CODE": "302"},
        )
        self.assertEqual(config.redirects[0].status, 302)


class CheckCommandTests(_Helpers):
    """
    C{phantom-frame check} reports the edge blocks' errors by key path.
    """

    def test_check(self) -> None:
        """
        An invalid redirect status is printed with its key path.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                '[server.site]\nproxy_url = "http://o.test"\n'
                '[redirect.old]\nbind_to = "/old"\nto = "/new"\nstatus = 200\n'
            )
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(check(path, out, err), 1)
        self.assertIn("redirect.old.status: expected one of 301, 302, 307, 308", err.getvalue())

    def test_exampleShowsBlocks(self) -> None:
        """
        The example configuration shows every key of both block kinds.
        """
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("# [static.", text)
        self.assertIn("# [redirect.", text)
        for key in ("bind_to", "root", "index", "to", "status"):
            self.assertRegex(text, rf"(?m)^# {key} = ")


class PurgeKeyTests(_Helpers):
    """
    C{purge_method} and C{purge_allow}.
    """

    def test_valid(self) -> None:
        """
        Both keys reach the server's settings.
        """
        config = parse_config(
            {
                "control_auth": "t",
                "server": {"s": {"purge_method": True, "purge_allow": ["10.0.0.0/8", "::1"]}},
            },
            {},
        )
        proxy = config.servers[0].proxy
        self.assertEqual((proxy.purge_method, proxy.purge_allow), (True, ("10.0.0.0/8", "::1")))

    def test_badNetwork(self) -> None:
        """
        An item that is not an address or a network is named by its index.
        """
        errors = self.errors({"server": {"s": {"purge_allow": ["10.0.0.0/8", "10.0.0.0/33", 7]}}})
        self.assertEqual(
            [e.split(":")[0] for e in errors], ["server.s.purge_allow[1]", "server.s.purge_allow[2]"]
        )

    def test_nobodyCouldPurge(self) -> None:
        """
        C{purge_method = true} with neither C{control_auth} nor
        C{purge_allow} is an error.
        """
        errors = self.errors({"server": {"s": {"purge_method": True}}})
        self.assertEqual(len(errors), 1)
        self.assertTrue(errors[0].startswith("server.s.purge_method: true, but there is no control_auth"))


class RewriteKeyTests(_Helpers):
    """
    C{rewrite}: compiled at load, each error named by its rule and key.
    """

    def test_valid(self) -> None:
        """
        The rules reach the server's settings compiled, in order.
        """
        config = parse_config(
            {"server": {"s": {"rewrite": [{"from": "^/a/(.*)$", "to": r"/b/\1"}]}}}, {}
        )
        [rule] = config.servers[0].proxy.rewrite
        self.assertEqual((rule.pattern.pattern, rule.to), ("^/a/(.*)$", r"/b/\1"))

    def test_errors(self) -> None:
        """
        An invalid regex names C{rewrite[i].from}; a bad template
        C{rewrite[i].to}; unknown keys and non-tables are named too.
        """
        errors = self.errors(
            {
                "server": {
                    "s": {
                        "rewrite": [
                            {"from": "^/ok$", "to": "/fine"},
                            {"from": "^/(a$", "to": "/x"},
                            {"from": "^/(a)$", "to": r"/\2"},
                            {"from": "^/a$", "to": "/x", "flags": "i"},
                            "nope",
                        ]
                    }
                }
            }
        )
        self.assertEqual(
            [e.split(":")[0] for e in errors],
            [
                "server.s.rewrite[1].from",
                "server.s.rewrite[2].to",
                "server.s.rewrite[3].flags",
                "server.s.rewrite[4]",
            ],
        )
        self.assertIn("invalid regular expression", errors[0])

    def test_example(self) -> None:
        """
        The example's commented rule is valid TOML and a valid rule.
        """
        with open(EXAMPLE, encoding="utf-8") as f:
            line = next(l for l in f if l.startswith("# rewrite = "))
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            import tomli as tomllib  # type: ignore[no-redef]
        data = tomllib.loads(line[2:])
        config = parse_config({"server": {"s": data}}, {})
        self.assertEqual(config.servers[0].proxy.rewrite[0].to, r"/new/\1")
