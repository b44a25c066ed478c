"""
Tests for L{phantom_frame.config.loader}.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional

import attr
from twisted.internet.endpoints import _parseServer
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config.loader import (
    ROOT_KEYS,
    SERVER_KEYS,
    Config,
    ConfigError,
    ServerConfig,
    load_config,
    parse_config,
    parse_size,
)
from phantom_frame.config.dotenv import parse_dotenv
from phantom_frame.proxy.settings import (
    CachePolicy,
    CookiePolicy,
    CacheStorageMode,
    CacheStrategy,
    CompressStrategy,
    CreateProxyConfig,
    ProxyMode,
    Webhook,
    WebhookType,
)

from .certificates import write_pair

MiB = 1024 * 1024

EXAMPLE = os.path.abspath(
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "conf", "config.toml")
)


def _data(root: Optional[Dict[str, Any]] = None, **server: Any) -> Dict[str, Any]:
    """
    @param root: root keys.
    @param server: the keys of a single C{[server.api]} block.
    @return: parsed TOML data.
    """
    data = dict(root or {})
    data["server"] = {"api": server}
    return data


class _Helpers(SynchronousTestCase):
    """
    Shared helpers.
    """

    def parse(
        self,
        data: Mapping[str, Any],
        environ: Optional[Mapping[str, str]] = None,
        base_dir: str = ".",
    ) -> Config:
        """
        Parse with an empty environment unless one is given.
        """
        return parse_config(data, {} if environ is None else environ, base_dir)

    def errors(
        self,
        data: Mapping[str, Any],
        environ: Optional[Mapping[str, str]] = None,
        base_dir: str = ".",
    ) -> List[str]:
        """
        @return: the errors L{parse_config} reports for C{data}.
        """
        error = self.assertRaises(
            ConfigError,
            parse_config,
            data,
            {} if environ is None else environ,
            base_dir,
        )
        return error.errors

    def server(
        self, environ: Optional[Mapping[str, str]] = None, **keys: Any
    ) -> ServerConfig:
        """
        @return: the single server parsed from C{keys}.
        """
        config = self.parse(_data(**keys), environ)
        self.assertEqual(len(config.servers), 1)
        return config.servers[0]

    def write(self, content: str, name: Optional[str] = None) -> str:
        """
        @param content: text to write.
        @param name: the file name inside a fresh directory, or a fresh path.
        @return: the absolute path of the new file.
        """
        if name is None:
            path = self.mktemp()
        else:
            directory = self.mktemp()
            os.makedirs(directory)
            path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
        return os.path.abspath(path)

    def tls_files(self) -> Dict[str, str]:
        """
        @return: root keys naming a fresh certificate and its key.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        cert, key = write_pair(directory)
        return {"cert_path": cert, "key_path": key}


class DefaultsTests(_Helpers):
    """
    Keys left out take the documented defaults.
    """

    def test_rootDefaults(self) -> None:
        """
        A file with only a server block has every root default of the
        specification.
        """
        config = self.parse(_data())
        self.assertEqual(config.http_port, 3000)
        self.assertIsNone(config.https_port)
        self.assertIsNone(config.cert_path)
        self.assertIsNone(config.key_path)
        self.assertEqual(config.control_port, 17809)
        self.assertIsNone(config.control_auth)
        self.assertEqual(config.bind_address, "0.0.0.0")
        self.assertEqual(config.control_bind_address, "127.0.0.1")
        self.assertIs(config.dotenv, False)
        self.assertIsNone(config.http_listen)
        self.assertIsNone(config.https_listen)
        self.assertIsNone(config.control_listen)
        self.assertEqual(config.log_format, "text")
        self.assertIs(config.access_log, True)
        self.assertEqual(config.shutdown_grace, 10.0)
        self.assertIsNone(config.source)

    def test_serverDefaults(self) -> None:
        """
        An empty server block is mounted at C{"*"} with every default of
        L{CreateProxyConfig}, which are the specification's.
        """
        server = self.server()
        self.assertEqual(server, ServerConfig("api", "*", CreateProxyConfig()))
        proxy = server.proxy
        self.assertEqual(proxy.proxy_url, "http://localhost:8080")
        self.assertEqual(proxy.include_paths, ())
        self.assertEqual(proxy.exclude_paths, ())
        self.assertIs(proxy.enable_websocket, True)
        self.assertIs(proxy.forward_get_only, False)
        self.assertEqual(proxy.cache_strategy, CacheStrategy.ALL)
        self.assertEqual(proxy.compress_strategy, CompressStrategy.BROTLI)
        self.assertEqual(proxy.cache_storage_mode, CacheStorageMode.MEMORY)
        self.assertIsNone(proxy.cache_directory)
        self.assertEqual(proxy.cache_404_capacity, 100)
        self.assertIs(proxy.use_404_meta, False)
        self.assertEqual(proxy.proxy_mode, ProxyMode.DYNAMIC)
        self.assertEqual(proxy.pre_generate_paths, ())
        self.assertIs(proxy.pre_generate_fallthrough, False)
        self.assertEqual(proxy.cache_max_bytes, 256 * MiB)
        self.assertEqual(proxy.max_cacheable_bytes, 8 * MiB)
        self.assertEqual(proxy.upstream_timeout, 30.0)
        self.assertEqual(proxy.cache_policy, CachePolicy.PRERENDER)
        self.assertIsNone(proxy.cache_ttl)
        self.assertIsNone(proxy.stale_while_revalidate)
        self.assertIsNone(proxy.stale_if_error)
        self.assertIs(proxy.generate_etag, False)
        self.assertEqual(proxy.webhooks, ())
        self.assertIsNone(proxy.execute)
        self.assertIsNone(proxy.execute_dir)
        self.assertIsNone(proxy.cache_key_fn)

    def test_configDefaultsMatchParsed(self) -> None:
        """
        L{Config}'s own defaults are those a file gets.
        """
        config = self.parse(_data())
        self.assertEqual(attr.evolve(config, servers=()), Config())

    def test_keyLists(self) -> None:
        """
        L{ROOT_KEYS} and L{SERVER_KEYS} are the specification's tables; the
        server keys are L{CreateProxyConfig}'s fields, less the key function,
        plus C{bind_to}.
        """
        self.assertEqual(
            set(ROOT_KEYS),
            {
                "http_port", "https_port", "cert_path", "key_path", "acme",
                "control_port", "control_auth", "bind_address",
                "control_bind_address", "dotenv", "http_listen",
                "https_listen", "control_listen", "log_format", "access_log",
                "shutdown_grace", "max_request_body", "max_header_bytes",
                "client_header_timeout", "allowed_hosts", "redis_url",
                "redis_l1_bytes", "redis_prefix", "rate_limit_storage", "workers", "server",
                "static", "redirect",
            },
        )
        fields = {f.name for f in attr.fields(CreateProxyConfig)}
        self.assertEqual(set(SERVER_KEYS), fields - {"cache_key_fn"} | {"bind_to"})


class RootKeysTests(_Helpers):
    """
    Every root key is read.
    """

    def test_everyRootKey(self) -> None:
        """
        Each root key's value ends up on L{Config}, with the certificate and
        key paths made absolute.
        """
        tls = self.tls_files()
        root = dict(
            http_port=8000,
            https_port=8443,
            control_port=9000,
            control_auth="s3cret",
            bind_address="::",
            control_bind_address="10.0.0.1",
            log_format="json",
            access_log=False,
            shutdown_grace=2.5,
            **tls,
        )
        config = self.parse(_data(root))
        for key, value in root.items():
            self.assertEqual(getattr(config, key), value, key)

    def test_listenKeys(self) -> None:
        """
        C{http_listen}, C{https_listen} and C{control_listen} take endpoint
        descriptions.
        """
        root = dict(
            http_listen="systemd:domain=INET:index=0",
            https_listen="tcp6:443",
            control_listen="unix:/run/pf.sock",
            **self.tls_files(),
        )
        config = self.parse(_data(root))
        self.assertEqual(config.http_listen, "systemd:domain=INET:index=0")
        self.assertEqual(config.https_listen, "tcp6:443")
        self.assertEqual(config.control_listen, "unix:/run/pf.sock")

    def test_shutdownGraceInteger(self) -> None:
        """
        An integer is accepted where seconds are expected, as a float.
        """
        config = self.parse(_data({"shutdown_grace": 3}))
        self.assertEqual(config.shutdown_grace, 3.0)
        self.assertIsInstance(config.shutdown_grace, float)

    def test_portZero(self) -> None:
        """
        Port 0 (an ephemeral port) is accepted.
        """
        config = self.parse(_data({"http_port": 0, "control_port": 0}))
        self.assertEqual((config.http_port, config.control_port), (0, 0))

    def test_serverOrder(self) -> None:
        """
        Servers keep the order of the file.
        """
        config = self.parse(
            {
                "server": {
                    "b": {"bind_to": "/b"},
                    "a": {"bind_to": "/a"},
                    "c": {},
                }
            }
        )
        self.assertEqual([s.name for s in config.servers], ["b", "a", "c"])
        self.assertEqual([s.bind_to for s in config.servers], ["/b", "/a", "*"])


class ServerKeysTests(_Helpers):
    """
    Every server key is read.
    """

    def test_everyServerKey(self) -> None:
        """
        Each server key's value ends up on the server's L{CreateProxyConfig}.
        """
        base = os.path.abspath(self.mktemp())
        config = self.parse(
            _data(
                bind_to="/api/v1",
                proxy_url="https://origin.example:8443/base",
                include_paths=["/x/*", "POST /search"],
                exclude_paths=["*/private/*"],
                enable_websocket=False,
                forward_get_only=True,
                cache_strategy="only_html",
                compress_strategy="gzip",
                cache_storage_mode="filesystem",
                cache_directory="cache",
                cache_404_capacity=0,
                use_404_meta=True,
                proxy_mode="pre_generate",
                pre_generate_paths=["/", "/about?x=1"],
                pre_generate_fallthrough=True,
                cache_max_bytes=1000,
                max_cacheable_bytes="1k",
                upstream_timeout=1.5,
                cache_policy="http",
                cache_ttl=60,
                stale_while_revalidate=0,
                stale_if_error=3.5,
                generate_etag=True,
                webhooks=[{"url": "http://hooks/a"}],
                execute="npm start",
                execute_dir="/srv/site",
                ignore_query_params=["utm_*", "fbclid"],
                cookie_policy="ignore",
                ignore_cookies=["_ga*"],
            ),
            base_dir=base,
        )
        server = config.servers[0]
        self.assertEqual(server.name, "api")
        self.assertEqual(server.bind_to, "/api/v1")
        self.assertEqual(
            server.proxy,
            CreateProxyConfig(
                proxy_url="https://origin.example:8443/base",
                include_paths=("/x/*", "POST /search"),
                exclude_paths=("*/private/*",),
                enable_websocket=False,
                forward_get_only=True,
                cache_strategy=CacheStrategy.ONLY_HTML,
                compress_strategy=CompressStrategy.GZIP,
                cache_storage_mode=CacheStorageMode.FILESYSTEM,
                cache_directory=os.path.join(base, "cache"),
                cache_404_capacity=0,
                use_404_meta=True,
                proxy_mode=ProxyMode.PRE_GENERATE,
                pre_generate_paths=("/", "/about?x=1"),
                pre_generate_fallthrough=True,
                cache_max_bytes=1000,
                max_cacheable_bytes=1024,
                upstream_timeout=1.5,
                cache_policy=CachePolicy.HTTP,
                cache_ttl=60.0,
                stale_while_revalidate=0.0,
                stale_if_error=3.5,
                generate_etag=True,
                webhooks=(Webhook("http://hooks/a"),),
                execute="npm start",
                execute_dir="/srv/site",
                ignore_query_params=("utm_*", "fbclid"),
                cookie_policy=CookiePolicy.IGNORE,
                ignore_cookies=("_ga*",),
            ),
        )

    def test_enumValues(self) -> None:
        """
        Every spelling of every enum is accepted and becomes its member.
        """
        for key, cls in [
            ("cache_strategy", CacheStrategy),
            ("compress_strategy", CompressStrategy),
            ("cache_storage_mode", CacheStorageMode),
            ("proxy_mode", ProxyMode),
            ("cache_policy", CachePolicy),
            ("cookie_policy", CookiePolicy),
        ]:
            for value in cls.choices():
                data = _data({"redis_url": "redis://localhost"}, **{key: value})
                proxy = self.parse(data).servers[0].proxy
                self.assertIs(getattr(proxy, key), cls(value))

    def test_webhooks(self) -> None:
        """
        Webhook tables take C{url}, C{type} and C{timeout_ms}; C{type}
        defaults to notify and C{timeout_ms} to 5000.
        """
        proxy = self.server(
            webhooks=[
                {
                    "url": "https://h.example/a?token=x",
                    "type": "blocking",
                    "timeout_ms": 250,
                },
                {"url": "http://h.example/b", "type": "cache_key"},
                {"url": "http://h.example/c"},
            ]
        ).proxy
        self.assertEqual(
            proxy.webhooks,
            (
                Webhook("https://h.example/a?token=x", WebhookType.BLOCKING, 250),
                Webhook("http://h.example/b", WebhookType.CACHE_KEY, 5000),
                Webhook("http://h.example/c", WebhookType.NOTIFY, 5000),
            ),
        )

    def test_bindToForms(self) -> None:
        """
        C{bind_to} is C{"*"} or a prefix of one or more segments.
        """
        for value in ["*", "/a", "/api/v1", "/a-b_c.d/~x"]:
            self.assertEqual(self.server(bind_to=value).bind_to, value)

    def test_proxyUrlForms(self) -> None:
        """
        C{proxy_url} is an http or https URL with a host, an optional port and
        an optional path.
        """
        for value in [
            "http://localhost",
            "https://example.com:8443",
            "http://127.0.0.1:8080/base/",
            "http://[::1]:8080",
        ]:
            self.assertEqual(self.server(proxy_url=value).proxy.proxy_url, value)

    def test_patterns(self) -> None:
        """
        Include and exclude patterns are C{PATH} or C{METHOD PATH}, PATH
        starting with C{/} or C{*}.
        """
        patterns = ["/a", "*", "*.css", "GET /a/*", "POST *", "M-SEARCH /x"]
        proxy = self.server(include_paths=patterns, exclude_paths=patterns).proxy
        self.assertEqual(proxy.include_paths, tuple(patterns))
        self.assertEqual(proxy.exclude_paths, tuple(patterns))

    def test_relativeExecuteDir(self) -> None:
        """
        A relative C{execute_dir} is taken from the configuration file's
        directory.
        """
        base = os.path.abspath(self.mktemp())
        config = self.parse(_data(execute_dir="site"), base_dir=base)
        self.assertEqual(
            config.servers[0].proxy.execute_dir, os.path.join(base, "site")
        )


class SizeTests(_Helpers):
    """
    Sizes are integers or strings with units.
    """

    def test_parseSize(self) -> None:
        """
        L{parse_size} knows decimal and binary units, in any case; the bare
        K, M and G are binary.
        """
        cases = {
            "0": 0,
            "1024": 1024,
            "10B": 10,
            "512k": 512 * 1024,
            "512K": 512 * 1024,
            "2KiB": 2048,
            "2kb": 2000,
            "8 MB": 8_000_000,
            "8M": 8 * MiB,
            "256MiB": 256 * MiB,
            "256mib": 256 * MiB,
            "1G": 1024**3,
            "1GB": 10**9,
            "1gib": 1024**3,
            "1.5k": 1536,
            " 3 KiB ": 3072,
        }
        for text, expected in cases.items():
            self.assertEqual(parse_size(text), expected, text)

    def test_parseSizeInvalid(self) -> None:
        """
        L{parse_size} rejects other forms.
        """
        for text in ["", "k", "-1", "1TB", "1 2", "1e3", "MiB1", "1,000"]:
            self.assertRaises(ValueError, parse_size, text)

    def test_sizeKeys(self) -> None:
        """
        C{cache_max_bytes} and C{max_cacheable_bytes} take integers or size
        strings.
        """
        proxy = self.server(cache_max_bytes="64 MiB", max_cacheable_bytes=0).proxy
        self.assertEqual(proxy.cache_max_bytes, 64 * MiB)
        self.assertEqual(proxy.max_cacheable_bytes, 0)

    def test_badSizes(self) -> None:
        """
        Negative numbers, floats, booleans and unknown units are errors.
        """
        errors = self.errors(
            {
                "server": {
                    "a": {"bind_to": "/a", "cache_max_bytes": -1},
                    "b": {"bind_to": "/b", "cache_max_bytes": 1.5},
                    "c": {"bind_to": "/c", "cache_max_bytes": True},
                    "d": {"bind_to": "/d", "max_cacheable_bytes": "8 parsecs"},
                }
            }
        )
        self.assertEqual(
            [e.split(":")[0] for e in errors],
            [
                "server.a.cache_max_bytes",
                "server.b.cache_max_bytes",
                "server.c.cache_max_bytes",
                "server.d.max_cacheable_bytes",
            ],
        )
        self.assertIn('"256MiB"', errors[0])
        self.assertIn("got '8 parsecs'", errors[3])


class ErrorTests(_Helpers):
    """
    Invalid configurations are reported key by key.
    """

    def test_unknownRootKey(self) -> None:
        """
        An unknown root key is an error suggesting the closest known key.
        """
        self.assertEqual(
            self.errors(_data({"htp_port": 80})),
            ["htp_port: unknown key; did you mean http_port?"],
        )

    def test_unknownKeyNoSuggestion(self) -> None:
        """
        Without a close known key, there is no suggestion.
        """
        self.assertEqual(
            self.errors(_data({"zzzzzz": 1})), ["zzzzzz: unknown key"]
        )

    def test_serverKeyAtRoot(self) -> None:
        """
        A server key at the root is reported as belonging in a server block.
        """
        self.assertEqual(
            self.errors(_data({"proxy_url": "http://x"})),
            ["proxy_url: unknown key; proxy_url belongs in a [server.NAME] block"],
        )

    def test_unknownServerKey(self) -> None:
        """
        An unknown server key names its path and suggests the closest key.
        """
        self.assertEqual(
            self.errors(_data(cache_stratgy="all")),
            ["server.api.cache_stratgy: unknown key; did you mean cache_strategy?"],
        )

    def test_rootKeyInServer(self) -> None:
        """
        A root key inside a server block (written after a header) is
        reported as a root key to move up.
        """
        errors = self.errors(_data(log_format="json"))
        self.assertEqual(len(errors), 1)
        self.assertTrue(
            errors[0].startswith(
                "server.api.log_format: unknown key; log_format is a root key"
            ),
            errors[0],
        )

    def test_badEnum(self) -> None:
        """
        A bad enum value lists the accepted values, with a suggestion when one
        is close.
        """
        self.assertEqual(
            self.errors(_data(cache_strategy="only-html")),
            [
                "server.api.cache_strategy: expected one of all, none, only_html,"
                " no_images, only_images, only_assets, got 'only-html'; did you"
                " mean only_html?"
            ],
        )
        self.assertEqual(
            self.errors(_data({"log_format": 3})),
            ["log_format: expected one of text, json, got 3"],
        )

    def test_proxyUrl(self) -> None:
        """
        C{proxy_url} must be http or https with a host, without a query,
        fragment or credentials.
        """
        self.assertEqual(
            self.errors(_data(proxy_url="ftp://x")),
            [
                "server.api.proxy_url: expected an http:// or https:// URL with"
                " a host, got 'ftp://x'"
            ],
        )
        for value in [
            "localhost:8080",
            "http://",
            "http:///path",
            "http://x/?q=1",
            "http://x/#f",
            "http://u:p@x/",
            "http://x:99999",
            "http://x:port",
            "http://x y",
            "http://[::1",
            8080,
        ]:
            errors = self.errors(_data(proxy_url=value))
            self.assertEqual(len(errors), 1, value)
            self.assertTrue(
                errors[0].startswith("server.api.proxy_url: expected"), errors
            )

    def test_bindToForms(self) -> None:
        """
        C{bind_to} must be C{"*"} or C{/seg[/seg...]}: no trailing slash, no
        empty segment, no C{?}, C{#}, spaces or stars.
        """
        for value in [
            "",
            "api",
            "/",
            "/api/",
            "/a//b",
            "/a?b",
            "/a#b",
            "/a b",
            "/api/*",
            "/a/../b",
            "**",
            1,
        ]:
            errors = self.errors(_data(bind_to=value))
            self.assertEqual(len(errors), 1, value)
            self.assertTrue(
                errors[0].startswith(
                    'server.api.bind_to: expected "*" or a path prefix'
                ),
                errors[0],
            )

    def test_duplicatePrefix(self) -> None:
        """
        Two servers may not share a prefix.
        """
        errors = self.errors(
            {"server": {"a": {"bind_to": "/api"}, "b": {"bind_to": "/api"}}}
        )
        self.assertEqual(
            errors, ["server.b.bind_to: '/api' is already used by server.a"]
        )

    def test_twoCatchAll(self) -> None:
        """
        At most one server takes C{"*"}, explicitly or by default.
        """
        errors = self.errors({"server": {"a": {}, "b": {"bind_to": "*"}}})
        self.assertEqual(
            errors, ['server.b.bind_to: only one server may use "*", and server.a does']
        )

    def test_noServers(self) -> None:
        """
        At least one server block is required.
        """
        expected = ["server: at least one [server.NAME] block is required"]
        self.assertEqual(self.errors({}), expected)
        self.assertEqual(self.errors({"server": {}}), expected)

    def test_serverNotTable(self) -> None:
        """
        C{server} holds tables; a key directly under C{[server]} is an error.
        """
        errors = self.errors({"server": {"bind_to": "*", "a": {}}})
        self.assertEqual(len(errors), 1)
        self.assertTrue(
            errors[0].startswith("server.bind_to: expected a [server.NAME] table")
        )
        self.assertEqual(
            self.errors({"server": "x"}),
            ["server: expected [server.NAME] tables, got 'x'"],
        )

    def test_serverName(self) -> None:
        """
        A server name is letters, digits, C{_} and C{-}.
        """
        self.parse({"server": {"A-b_9": {}}})
        self.assertEqual(
            self.errors({"server": {"a b": {}}}),
            ['server."a b": a server name is letters, digits, _ and -'],
        )

    def test_types(self) -> None:
        """
        Each key checks its type: a boolean is not an integer, a string is
        not a number, a list is not a string.
        """
        errors = self.errors(
            _data(
                {"http_port": "abc", "control_port": True, "access_log": "yes"},
                enable_websocket=1,
                cache_404_capacity=1.0,
                upstream_timeout="30",
                execute=["a"],
                include_paths="/x",
            )
        )
        self.assertEqual(
            errors,
            [
                "http_port: expected an integer port 0-65535, got 'abc'",
                "control_port: expected an integer port 0-65535, got True",
                "access_log: expected true or false, got 'yes'",
                "server.api.enable_websocket: expected true or false, got 1",
                "server.api.cache_404_capacity: expected an integer >= 0, got 1.0",
                "server.api.upstream_timeout: expected a number of seconds > 0,"
                " got '30'",
                "server.api.execute: expected a non-empty string, got ['a']",
                'server.api.include_paths: expected a list of strings, each a pattern'
                ' "PATH" or "METHOD PATH" (METHOD in upper case, PATH starting with'
                " \"/\" or \"*\"), got '/x'",
            ],
        )

    def test_ranges(self) -> None:
        """
        Ports are 0-65535, counts at least 0, timeouts above 0, TTLs at least
        0, and numbers finite.
        """
        errors = self.errors(
            _data(
                {"http_port": 65536, "shutdown_grace": 0},
                cache_404_capacity=-1,
                upstream_timeout=float("inf"),
                cache_ttl=-1,
                stale_if_error=float("nan"),
            )
        )
        self.assertEqual(
            [e.split(":")[0] for e in errors],
            [
                "http_port",
                "shutdown_grace",
                "server.api.cache_404_capacity",
                "server.api.upstream_timeout",
                "server.api.cache_ttl",
                "server.api.stale_if_error",
            ],
        )

    def test_badPatterns(self) -> None:
        """
        Each bad pattern is reported at its index.
        """
        errors = self.errors(
            _data(
                include_paths=["/ok", "get /x", "x", 3, "GET /a /b"],
                pre_generate_paths=["/ok", "about", "/a b"],
            )
        )
        self.assertEqual(
            [e.split(":")[0] for e in errors],
            [
                "server.api.include_paths[1]",
                "server.api.include_paths[2]",
                "server.api.include_paths[3]",
                "server.api.include_paths[4]",
                "server.api.pre_generate_paths[1]",
                "server.api.pre_generate_paths[2]",
            ],
        )
        self.assertIn("got 'get /x'", errors[0])
        self.assertIn('a path starting with "/"', errors[4])

    def test_badNameGlobs(self) -> None:
        """
        C{ignore_query_params} and C{ignore_cookies} are lists of names or
        globs; each bad item is reported at its index. C{$env:} gives a
        comma-separated list.
        """
        errors = self.errors(
            _data(ignore_query_params=["utm_*", "a=b", "", 3], ignore_cookies="_ga", cookie_policy="lax")
        )
        self.assertEqual(
            [e.split(":")[0] for e in errors],
            [
                "server.api.ignore_query_params[1]",
                "server.api.ignore_query_params[2]",
                "server.api.ignore_query_params[3]",
                "server.api.ignore_cookies",
                "server.api.cookie_policy",
            ],
        )
        self.assertIn('a name or a glob of names ("utm_*")', errors[0])
        self.assertIn("strict", errors[4])
        for bad in ("a b", "a;b", "a,b", "a&b", "x" * 257, "a\x01"):
            self.assertEqual(len(self.errors(_data(ignore_cookies=[bad]))), 1, bad)
        proxy = self.server({"NAMES": "utm_*, fbclid"}, ignore_query_params="$env:NAMES").proxy
        self.assertEqual(proxy.ignore_query_params, ("utm_*", "fbclid"))

    def test_webhookErrors(self) -> None:
        """
        Webhook tables reject unknown keys and bad values, and require a
        URL.
        """
        errors = self.errors(
            _data(
                webhooks=[
                    {"url": "http://h/", "tyep": "notify"},
                    {"type": "sometimes", "timeout_ms": 0},
                    "http://h/",
                ]
            )
        )
        self.assertEqual(
            errors,
            [
                "server.api.webhooks[0].tyep: unknown key; did you mean type?",
                "server.api.webhooks[1].type: expected one of blocking, notify,"
                " cache_key, got 'sometimes'",
                "server.api.webhooks[1].timeout_ms: expected an integer > 0, got 0",
                "server.api.webhooks[1].url: required: an http:// or https:// URL",
                "server.api.webhooks[2]: expected a table with url, type and"
                " timeout_ms, got 'http://h/'",
            ],
        )
        self.assertEqual(
            self.errors(_data(webhooks={"url": "http://h/"})),
            [
                "server.api.webhooks: expected [[server.NAME.webhooks]] tables,"
                " got a table"
            ],
        )

    def test_emptyControlAuth(self) -> None:
        """
        An empty C{control_auth} is an error, as is one with spaces.
        """
        errors = self.errors(_data({"control_auth": ""}))
        self.assertEqual(len(errors), 1)
        self.assertTrue(errors[0].startswith("control_auth: must not be empty"))
        errors = self.errors(_data({"control_auth": "two words"}))
        self.assertTrue(errors[0].startswith("control_auth: expected a bearer token"))

    def test_bindAddress(self) -> None:
        """
        Bind addresses are IP addresses or host names, without brackets.
        """
        for value in ["127.0.0.1", "::1", "::", "localhost", "host.example"]:
            self.assertEqual(
                self.parse(_data({"control_bind_address": value})).control_bind_address,
                value,
            )
        for value in ["[::1]", "", "a b", 1]:
            errors = self.errors(_data({"bind_address": value}))
            self.assertTrue(
                errors[0].startswith("bind_address: expected an IP address")
            )

    def test_listenForm(self) -> None:
        """
        A C{*_listen} key must look like C{TYPE:ARGUMENTS}.
        """
        for value in ["3000", "", "tcp:", ":3000", " tcp:80", 3000]:
            errors = self.errors(_data({"http_listen": value}))
            self.assertEqual(len(errors), 1, value)
            self.assertTrue(
                errors[0].startswith(
                    "http_listen: expected a Twisted endpoint description"
                ),
                errors[0],
            )

    def test_portAndListen(self) -> None:
        """
        Giving both a port key and the C{*_listen} key replacing it is an
        error.
        """
        errors = self.errors(_data({"http_port": 80, "http_listen": "tcp:80"}))
        self.assertEqual(
            errors, ["http_port: http_listen replaces it; give only one of the two"]
        )

    def test_portClash(self) -> None:
        """
        Two TCP listeners on one port and overlapping addresses are an error;
        distinct addresses, or port 0, are fine.
        """
        errors = self.errors(_data({"control_port": 3000}))
        self.assertEqual(
            errors, ["control_port: port 3000 is already used by http_port"]
        )
        self.parse(
            _data(
                {
                    "control_port": 3000,
                    "bind_address": "10.0.0.1",
                    "control_bind_address": "127.0.0.1",
                }
            )
        )
        self.parse(_data({"http_port": 0, "control_port": 0}))

    def test_severalErrors(self) -> None:
        """
        Every error is reported, not only the first, and the string form
        numbers them.
        """
        error = self.assertRaises(
            ConfigError,
            self.parse,
            {
                "http_port": -1,
                "bogus": 1,
                "server": {
                    "a": {"proxy_url": "x", "cache_strategy": "some"},
                    "b": {"bind_to": "/b/"},
                },
            },
        )
        self.assertEqual(len(error.errors), 5)
        lines = str(error).splitlines()
        self.assertEqual(lines[0], "Found 5 error(s):")
        self.assertTrue(lines[1].startswith("  1. http_port: "))
        self.assertTrue(lines[2].startswith("  2. bogus: unknown key"))
        self.assertTrue(lines[3].startswith("  3. server.a.proxy_url: "))
        self.assertTrue(lines[4].startswith("  4. server.a.cache_strategy: "))
        self.assertTrue(lines[5].startswith("  5. server.b.bind_to: "))


class TLSTests(_Helpers):
    """
    The certificate and key come with an HTTPS listener, and only with one.
    """

    def test_complete(self) -> None:
        """
        C{https_port} with both files is accepted; relative paths are taken
        from C{base_dir} and stored absolute.
        """
        base = os.path.dirname(self.tls_files()["cert_path"])
        config = self.parse(
            _data({"https_port": 443, "cert_path": "cert.pem", "key_path": "key.pem"}),
            base_dir=base,
        )
        self.assertEqual(config.cert_path, os.path.join(base, "cert.pem"))
        self.assertEqual(config.key_path, os.path.join(base, "key.pem"))

    def test_httpsWithoutFiles(self) -> None:
        """
        C{https_port} or C{https_listen} without the certificate and key is
        an error for each missing file.
        """
        self.assertEqual(
            self.errors(_data({"https_port": 443})),
            [
                "cert_path: required when https_port is set",
                "key_path: required when https_port is set",
            ],
        )
        self.assertEqual(
            self.errors(
                _data({"https_listen": "tcp:443", "cert_path": self.write("C")})
            ),
            ["key_path: required when https_listen is set"],
        )

    def test_filesWithoutHTTPS(self) -> None:
        """
        A certificate and key without an HTTPS listener are an error.
        """
        self.assertEqual(
            self.errors(_data(self.tls_files())),
            [
                "cert_path: given, but there is no https_port or https_listen to"
                " use it",
                "key_path: given, but there is no https_port or https_listen to"
                " use it",
            ],
        )

    def test_missingFile(self) -> None:
        """
        A certificate or key that cannot be read is an error naming the file.
        """
        missing = os.path.abspath(self.mktemp())
        errors = self.errors(
            _data(
                {"https_port": 443, "cert_path": missing, "key_path": self.write("K")}
            )
        )
        self.assertEqual(
            errors, [f"cert_path: cannot read {missing!r}: No such file or directory"]
        )


class EnvironmentTests(_Helpers):
    """
    C{$env:NAME} values are replaced by environment variables.
    """

    def test_conversions(self) -> None:
        """
        Variables are converted to the key's type: integers, floats,
        booleans, sizes, lists, enums and strings.
        """
        environ = {
            "PORT": "8080",
            "GRACE": "2.5",
            "LOG": "Off",
            "TOKEN": "t0ken",
            "CAP": " 7 ",
            "MAX": "16MiB",
            "INC": "/a/*, POST /b ,,",
            "WS": "no",
            "ETAG": "1",
            "STRAT": "only_html",
            "URL": "http://origin:9000",
            "TIMEOUT": "5",
        }
        config = self.parse(
            _data(
                {
                    "http_port": "$env:PORT",
                    "shutdown_grace": "$env:GRACE",
                    "access_log": "$env:LOG",
                    "control_auth": "$env:TOKEN",
                },
                cache_404_capacity="$env:CAP",
                cache_max_bytes="$env:MAX",
                include_paths="$env:INC",
                enable_websocket="$env:WS",
                generate_etag="$env:ETAG",
                cache_strategy="$env:STRAT",
                proxy_url="$env:URL",
                upstream_timeout="$env:TIMEOUT",
            ),
            environ,
        )
        self.assertEqual(config.http_port, 8080)
        self.assertEqual(config.shutdown_grace, 2.5)
        self.assertIs(config.access_log, False)
        self.assertEqual(config.control_auth, "t0ken")
        proxy = config.servers[0].proxy
        self.assertEqual(proxy.cache_404_capacity, 7)
        self.assertEqual(proxy.cache_max_bytes, 16 * MiB)
        self.assertEqual(proxy.include_paths, ("/a/*", "POST /b"))
        self.assertIs(proxy.enable_websocket, False)
        self.assertIs(proxy.generate_etag, True)
        self.assertIs(proxy.cache_strategy, CacheStrategy.ONLY_HTML)
        self.assertEqual(proxy.proxy_url, "http://origin:9000")
        self.assertEqual(proxy.upstream_timeout, 5.0)

    def test_booleanWords(self) -> None:
        """
        Booleans from the environment are true/false, 1/0, yes/no, on/off in
        any case.
        """
        for word, expected in [
            ("true", True), ("TRUE", True), ("1", True), ("Yes", True), ("on", True),
            ("false", False), ("0", False), ("NO", False), ("off", False),
        ]:
            config = self.parse(_data({"access_log": "$env:B"}), {"B": word})
            self.assertIs(config.access_log, expected, word)

    def test_webhookAndListItems(self) -> None:
        """
        References inside webhook tables and list items are replaced too.
        """
        proxy = self.server(
            {"HOOK": "http://h/x", "MS": "100", "P": "/p"},
            webhooks=[{"url": "$env:HOOK", "timeout_ms": "$env:MS"}],
            pre_generate_paths=["/", "$env:P"],
        ).proxy
        self.assertEqual(proxy.webhooks, (Webhook("http://h/x", timeout_ms=100),))
        self.assertEqual(proxy.pre_generate_paths, ("/", "/p"))

    def test_unsetTakesDefault(self) -> None:
        """
        A reference to an unset variable leaves the key at its default.
        """
        config = self.parse(
            _data(
                {"http_port": "$env:NOPE", "log_format": "$env:NOPE"},
                cache_max_bytes="$env:NOPE",
                bind_to="$env:NOPE",
                proxy_url="$env:NOPE",
            )
        )
        self.assertEqual(config.http_port, 3000)
        self.assertEqual(config.log_format, "text")
        self.assertEqual(
            config.servers[0], ServerConfig("api", "*", CreateProxyConfig())
        )

    def test_unsetControlAuth(self) -> None:
        """
        An unset C{control_auth} reference is an error: the control site is
        never silently left open.
        """
        errors = self.errors(_data({"control_auth": "$env:TOKEN"}))
        self.assertEqual(len(errors), 1)
        self.assertTrue(
            errors[0].startswith("control_auth: $env:TOKEN is not set"), errors[0]
        )

    def test_emptyControlAuthVariable(self) -> None:
        """
        A set but empty C{control_auth} variable is an error too.
        """
        errors = self.errors(_data({"control_auth": "$env:TOKEN"}), {"TOKEN": ""})
        self.assertEqual(len(errors), 1)
        self.assertTrue(errors[0].startswith("control_auth: must not be empty"))
        self.assertTrue(errors[0].endswith("(from $env:TOKEN)"))

    def test_conversionFailure(self) -> None:
        """
        A variable that does not convert is an error naming the key, the
        variable and its value.
        """
        errors = self.errors(
            _data(
                {"http_port": "$env:PORT", "access_log": "$env:LOG"},
                cache_404_capacity="$env:CAP",
                upstream_timeout="$env:T",
                cache_max_bytes="$env:MAX",
            ),
            {"PORT": "99999", "LOG": "maybe", "CAP": "lots", "T": "soon", "MAX": "big"},
        )
        self.assertEqual(
            errors,
            [
                "http_port: expected an integer port 0-65535, got 99999"
                " (from $env:PORT)",
                "access_log: $env:LOG is 'maybe', expected a boolean"
                " (true/false, yes/no, on/off, 1/0)",
                "server.api.cache_404_capacity: $env:CAP is 'lots', expected an"
                " integer",
                "server.api.upstream_timeout: $env:T is 'soon', expected a number",
                "server.api.cache_max_bytes: $env:MAX is 'big', expected a size in"
                ' bytes: an integer >= 0 or a string such as "256MiB", "8 MB" or'
                ' "512k"',
            ],
        )

    def test_badReference(self) -> None:
        """
        A C{$env:} reference with a malformed name is an error.
        """
        self.assertEqual(
            self.errors(_data({"log_format": "$env:1-x"})),
            [
                "log_format: '$env:1-x' is not a valid $env:NAME reference (NAME"
                " is letters, digits and _)"
            ],
        )

    def test_unsetListItem(self) -> None:
        """
        An unset reference as a list item is an error at its index.
        """
        self.assertEqual(
            self.errors(_data(exclude_paths=["/a", "$env:NOPE"])),
            ["server.api.exclude_paths[1]: $env:NOPE is not set"],
        )

    def test_unsetWebhookUrl(self) -> None:
        """
        An unset reference for a webhook's required URL is an error.
        """
        self.assertEqual(
            self.errors(_data(webhooks=[{"url": "$env:HOOK"}])),
            ["server.api.webhooks[0].url: required, but $env:HOOK is not set"],
        )

    def test_environNotModified(self) -> None:
        """
        The mapping given is left untouched, and so is C{os.environ} by
        default.
        """
        path = self.write("PHANTOM_FRAME_TEST_ONLY=1\n")
        environ = {"A": "1"}
        parse_config(_data({"dotenv": path}), environ)
        self.assertEqual(environ, {"A": "1"})
        parse_config(_data({"dotenv": path}))
        self.assertNotIn("PHANTOM_FRAME_TEST_ONLY", os.environ)

    def test_defaultEnviron(self) -> None:
        """
        Without an explicit mapping, C{os.environ} is used.
        """
        self.patch(os, "environ", {"PF_TEST_PORT": "4000"})
        config = parse_config(_data({"http_port": "$env:PF_TEST_PORT"}))
        self.assertEqual(config.http_port, 4000)


class DotenvTests(_Helpers):
    """
    The C{dotenv} key loads variables from a file before C{$env:} references
    are replaced.
    """

    def chdir(self) -> str:
        """
        Move to a fresh directory for the test.

        @return: its absolute path.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)
        return directory

    def test_trueLoadsDotenv(self) -> None:
        """
        C{dotenv = true} loads C{./.env} from the current directory.
        """
        directory = self.chdir()
        with open(os.path.join(directory, ".env"), "w") as f:
            f.write("PORT=4000\n")
        config = self.parse(_data({"dotenv": True, "http_port": "$env:PORT"}))
        self.assertEqual(config.http_port, 4000)
        self.assertIs(config.dotenv, True)

    def test_trueMissingIsFine(self) -> None:
        """
        C{dotenv = true} without a C{./.env} file is not an error.
        """
        self.chdir()
        config = self.parse(_data({"dotenv": True, "http_port": "$env:PORT"}))
        self.assertEqual(config.http_port, 3000)

    def test_falseIgnoresDotenv(self) -> None:
        """
        C{dotenv = false} does not read C{./.env}.
        """
        directory = self.chdir()
        with open(os.path.join(directory, ".env"), "w") as f:
            f.write("PORT=4000\n")
        config = self.parse(_data({"dotenv": False, "http_port": "$env:PORT"}))
        self.assertEqual(config.http_port, 3000)

    def test_stringRelativeToBaseDir(self) -> None:
        """
        A string names a file, relative to C{base_dir}; the absolute path is
        kept.
        """
        path = self.write("PORT=4001\n", "vars.env")
        base = os.path.dirname(path)
        config = self.parse(
            _data({"dotenv": "vars.env", "http_port": "$env:PORT"}), base_dir=base
        )
        self.assertEqual(config.http_port, 4001)
        self.assertEqual(config.dotenv, path)

    def test_stringMissing(self) -> None:
        """
        A named file that does not exist is an error.
        """
        missing = os.path.abspath(self.mktemp())
        self.assertEqual(
            self.errors(_data({"dotenv": missing})),
            [f"dotenv: file {missing!r} does not exist"],
        )

    def test_environmentWins(self) -> None:
        """
        Variables already in the environment win over the file's.
        """
        path = self.write("PORT=4000\nGRACE=3\n")
        config = self.parse(
            _data(
                {
                    "dotenv": path,
                    "http_port": "$env:PORT",
                    "shutdown_grace": "$env:GRACE",
                }
            ),
            {"PORT": "5000"},
        )
        self.assertEqual(config.http_port, 5000)
        self.assertEqual(config.shutdown_grace, 3.0)

    def test_values(self) -> None:
        """
        The file takes comments, blank lines, C{export}, C{KEY = VALUE}
        spacing, quotes (with escapes in double quotes only) and trailing
        comments on unquoted values; a later line wins.
        """
        values, errors = parse_dotenv(
            "# a comment\n"
            "\n"
            "export A=1\n"
            "B = plain value  # comment\n"
            'C="two\\nlines \\"quoted\\" # kept"  # comment\n'
            "D='single $ \\n kept'\n"
            "E=\n"
            "F=#not-a-comment\n"
            "G= # only a comment\n"
            "  H=indented\n"
            "A=2\n",
            "x.env",
        )
        self.assertEqual(errors, [])
        self.assertEqual(
            values,
            {
                "A": "2",
                "B": "plain value",
                "C": 'two\nlines "quoted" # kept',
                "D": "single $ \\n kept",
                "E": "",
                "F": "#not-a-comment",
                "G": "",
                "H": "indented",
            },
        )

    def test_malformed(self) -> None:
        """
        Malformed lines are errors naming the file and line; the others are
        still loaded.
        """
        path = self.write(
            "OK=1\n"
            "no equals sign\n"
            'Q="unterminated\n'
            "R='x' trailing\n"
            "1BAD=x\n"
        )
        errors = self.errors(_data({"dotenv": path, "http_port": "$env:OK"}))
        self.assertEqual(
            errors,
            [
                f"dotenv: {path}:2: expected KEY=VALUE, got 'no equals sign'",
                f"dotenv: {path}:3: unterminated double-quoted value",
                f"dotenv: {path}:4: unexpected text after the closing quote",
                f"dotenv: {path}:5: expected KEY=VALUE, got '1BAD=x'",
            ],
        )

    def test_dotenvBeforeSubstitution(self) -> None:
        """
        Variables from the file are seen by references in server blocks and
        webhooks.
        """
        path = self.write("HOOK=http://h/\nTOKEN=abc\n")
        config = self.parse(
            _data(
                {"dotenv": path, "control_auth": "$env:TOKEN"},
                webhooks=[{"url": "$env:HOOK"}],
            )
        )
        self.assertEqual(config.control_auth, "abc")
        self.assertEqual(config.servers[0].proxy.webhooks, (Webhook("http://h/"),))


class EndpointTests(_Helpers):
    """
    L{Config} describes its listeners as Twisted endpoint strings.
    """

    def test_defaults(self) -> None:
        """
        By default HTTP listens on all interfaces at 3000, the control site
        locally at 17809, and there is no HTTPS.
        """
        config = Config()
        self.assertEqual(config.http_endpoint(), "tcp:3000:interface=0.0.0.0")
        self.assertIsNone(config.https_port_endpoint())
        self.assertEqual(config.control_endpoint(), "tcp:17809:interface=127.0.0.1")

    def test_https(self) -> None:
        """
        The HTTPS listener is a plain TCP description on the bind address.
        """
        config = Config(https_port=8443, bind_address="10.1.2.3")
        self.assertEqual(config.https_port_endpoint(), "tcp:8443:interface=10.1.2.3")

    def test_ipv6(self) -> None:
        """
        Colons in IPv6 addresses are escaped, and Twisted reads them back.
        """
        config = Config(bind_address="::", https_port=443, control_bind_address="::1")
        self.assertEqual(config.http_endpoint(), "tcp:3000:interface=\\:\\:")
        self.assertEqual(config.https_port_endpoint(), "tcp:443:interface=\\:\\:")
        self.assertEqual(config.control_endpoint(), "tcp:17809:interface=\\:\\:1")
        self.assertEqual(
            _parseServer(config.control_endpoint(), None),
            ("TCP", (17809, None), {"interface": "::1", "backlog": 50}),
        )

    def test_listenOverrides(self) -> None:
        """
        C{*_listen} keys replace the port descriptions.
        """
        config = Config(
            http_listen="systemd:domain=INET:index=0",
            https_listen="systemd:domain=INET:index=1",
            control_listen="unix:/run/pf.sock",
        )
        self.assertEqual(config.http_endpoint(), "systemd:domain=INET:index=0")
        self.assertEqual(config.https_port_endpoint(), "systemd:domain=INET:index=1")
        self.assertEqual(config.control_endpoint(), "unix:/run/pf.sock")

    def test_sourceNotCompared(self) -> None:
        """
        Two configurations differing only in their source are equal.
        """
        self.assertEqual(Config(source="a.toml"), Config(source="b.toml"))

    def test_controlAuthNotInRepr(self) -> None:
        """
        The control token does not appear in the configuration's repr.
        """
        self.assertNotIn("s3cret", repr(Config(control_auth="s3cret")))


class LoadConfigTests(_Helpers):
    """
    L{load_config} reads TOML files.
    """

    def test_load(self) -> None:
        """
        A file is parsed, its directory is the base of relative paths, and
        its path is the source.
        """
        path = self.write(
            'http_port = 8000\n[server.site]\ncache_directory = "c"\n', "pf.toml"
        )
        config = load_config(path, environ={})
        self.assertEqual(config.http_port, 8000)
        self.assertEqual(config.source, path)
        self.assertEqual(
            config.servers[0].proxy.cache_directory,
            os.path.join(os.path.dirname(path), "c"),
        )

    def test_syntaxError(self) -> None:
        """
        A TOML syntax error is one error naming the file and the line.
        """
        path = self.write('http_port = 1\n\n[server.a]\nbind_to = \n')
        error = self.assertRaises(ConfigError, load_config, path, {})
        self.assertEqual(len(error.errors), 1)
        self.assertTrue(
            error.errors[0].startswith(f"{path}: line 4, column 11: invalid TOML: "),
            error.errors[0],
        )

    def test_syntaxErrorAtEnd(self) -> None:
        """
        An error at the end of the document names the last line.
        """
        path = self.write("a = [1,\n2,\n")
        error = self.assertRaises(ConfigError, load_config, path, {})
        self.assertTrue(error.errors[0].startswith(f"{path}: line 3: invalid TOML: "))

    def test_duplicateKey(self) -> None:
        """
        A key given twice is a TOML error.
        """
        path = self.write("http_port = 1\nhttp_port = 2\n[server.a]\n")
        error = self.assertRaises(ConfigError, load_config, path, {})
        self.assertIn("line 2", error.errors[0])

    def test_missingFile(self) -> None:
        """
        A file that cannot be read is an error naming it.
        """
        path = self.mktemp()
        error = self.assertRaises(ConfigError, load_config, path, {})
        self.assertEqual(
            error.errors, [f"{path}: cannot read the file: No such file or directory"]
        )

    def test_notUTF8(self) -> None:
        """
        A file that is not UTF-8 is an error naming the line.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"a = 1\nb = '\xff'\n")
        error = self.assertRaises(ConfigError, load_config, path, {})
        self.assertEqual(error.errors, [f"{path}: line 2: not valid UTF-8"])

    def test_example(self) -> None:
        """
        The example C{conf/config.toml} is valid: HTTP on 3000, the control
        site on 17809, and a C{"*"} server for an origin on port 8080.
        """
        config = load_config(EXAMPLE, environ={})
        self.assertEqual(config.http_port, 3000)
        self.assertEqual(config.control_port, 17809)
        site = config.servers[0]
        self.assertEqual((site.name, site.bind_to), ("site", "*"))
        self.assertEqual(site.proxy.proxy_url, "http://127.0.0.1:8080")
        self.assertEqual([s.bind_to for s in config.servers], ["*", "/api"])

    def test_exampleMentionsEveryKey(self) -> None:
        """
        The example shows every root key and every server key, commented out
        or not.
        """
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        for key in ROOT_KEYS + SERVER_KEYS:
            if key in ("server", "webhooks", "acme", "static", "redirect"):
                continue
            self.assertRegex(text, rf"(?m)^#? ?{key} = ", key)
        self.assertIn("[[server.site.webhooks]]", text)
