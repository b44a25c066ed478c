"""
The keys of the configuration file and the rules between them.

C{_ROOT_KINDS}, C{_SERVER_KINDS} and C{_WEBHOOK_KINDS} say which keys the
root, a C{[server.NAME]} block and a C{[[server.NAME.webhooks]]} table accept
and how each value is checked; L{Parser} walks a whole file with them,
loading the C{dotenv} file first and checking what no single key can (the
TLS files, clashing listeners, servers sharing a C{bind_to}, filesystem
cache directories). The C{[acme]} table is checked by
L{phantom_frame.config.acme}.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, List, Mapping, Tuple, Union

from phantom_frame.config.acme import acme_problems, parse_acme
from phantom_frame.config.dotenv import parse_dotenv
from phantom_frame.config.edge import ROUTE_BLOCKS, SERVER_EDGE_KINDS, route_blocks
from phantom_frame.config.files import directory_problem, tls_problem, unreadable
from phantom_frame.config.network import check_host, check_listen, url_check
from phantom_frame.config.ratelimits import check_rate_limits
from phantom_frame.config.sizes import check_size, env_size, size_check
from phantom_frame.config.tables import (
    BAD,
    Kind,
    Table,
    TableChecker,
    Unset,
    quote_key,
)
from phantom_frame.config.redis_tier import check_prefix, check_rate_limit_storage, check_redis_url
from phantom_frame.config.upstreams import UPSTREAMS_KIND, check_health_check, check_upstream_keys
from phantom_frame.config.values import (
    check_bind_to,
    check_bool,
    check_dotenv,
    check_path,
    check_port,
    check_string,
    check_token,
    check_workers,
    choice_check,
    env_bool,
    env_dotenv,
    env_float,
    env_int,
    env_list,
    env_text,
    env_workers,
    integer_check,
    is_path,
    is_pattern,
    list_check,
    seconds_check,
    show,
)
from phantom_frame.config.webhooks import check_webhooks
from phantom_frame.http.limits import is_host_glob
from phantom_frame.proxy.settings import (
    CachePolicy,
    CacheStorageMode,
    CacheStrategy,
    CompressStrategy,
    CookiePolicy,
    CreateProxyConfig,
    ProxyMode,
    WebhookType,
)
from phantom_frame.proxy.upstreams import Balancing

__all__ = ["Parser", "ROOT_KEYS", "SERVER_KEYS"]


def _kind(
    check: Callable[[Any], Any], from_env: Callable[[str], Any] = env_text
) -> Kind:
    """
    @param check: see L{Kind.check}.
    @param from_env: see L{Kind.from_env}; strings are taken as they are by
        default.
    @return: the kind.
    """
    return Kind(check=check, from_env=from_env)


_PORT = _kind(check_port, env_int)
_BOOL = _kind(check_bool, env_bool)
_STRING = _kind(check_string)
_PATH = _kind(check_path)
_HOST = _kind(check_host)
_LISTEN_KIND = _kind(check_listen)
_POSITIVE_SECONDS = _kind(seconds_check(0, inclusive=False), env_float)
_SECONDS = _kind(seconds_check(0, inclusive=True), env_float)
_SIZE_KIND = _kind(check_size, env_size)


def _enum(cls: Any) -> Kind:
    """
    @param cls: an enum with a C{choices()} class method.
    @return: a kind accepting its values and returning its members.
    """
    return _kind(choice_check(cls.choices(), cls))


_ROOT_KINDS: Dict[str, Kind] = {
    "http_port": _PORT,
    "https_port": _PORT,
    "cert_path": _PATH,
    "key_path": _PATH,
    "control_port": _PORT,
    "control_auth": _kind(check_token),
    "bind_address": _HOST,
    "control_bind_address": _HOST,
    "dotenv": _kind(check_dotenv, env_dotenv),
    "http_listen": _LISTEN_KIND,
    "https_listen": _LISTEN_KIND,
    "control_listen": _LISTEN_KIND,
    "log_format": _kind(choice_check(("text", "json"))),
    "access_log": _BOOL,
    "shutdown_grace": _POSITIVE_SECONDS,
    "workers": _kind(check_workers, env_workers),
    "max_request_body": _SIZE_KIND,
    "max_header_bytes": _kind(size_check(1024), env_size),
    "client_header_timeout": _POSITIVE_SECONDS,
    "allowed_hosts": _kind(
        list_check(
            is_host_glob,
            'a host glob such as "*.example.com" (a host name or [IPv6'
            ' address], "*" for any run of characters, no port)',
        ),
        env_list,
    ),
    "redis_url": _kind(check_redis_url),
    "redis_l1_bytes": _SIZE_KIND,
    "redis_prefix": _kind(check_prefix),
    "rate_limit_storage": _kind(check_rate_limit_storage),
}

_PATTERNS = _kind(
    list_check(
        is_pattern,
        'a pattern "PATH" or "METHOD PATH" (METHOD in upper case, PATH'
        ' starting with "/" or "*")',
    ),
    env_list,
)

def _is_name_glob(text: str) -> bool:
    """
    @return: whether C{text} is a glob of query parameter or cookie names:
        not empty, at most 256 characters, no spaces, controls, C{=}, C{&},
        C{;} or C{,}.
    """
    return 0 < len(text) <= 256 and not any(c.isspace() or c in "=&;," or ord(c) < 0x20 for c in text)


_NAME_GLOBS = _kind(
    list_check(_is_name_glob, 'a name or a glob of names ("utm_*"), without spaces, "=", "&", ";" or ","'),
    env_list,
)

_SERVER_KINDS: Dict[str, Kind] = {
    "bind_to": _kind(check_bind_to),
    "proxy_url": _kind(url_check("an http:// or https:// URL with a host", False)),
    "include_paths": _PATTERNS,
    "exclude_paths": _PATTERNS,
    "enable_websocket": _BOOL,
    "forward_get_only": _BOOL,
    "cache_strategy": _enum(CacheStrategy),
    "compress_strategy": _enum(CompressStrategy),
    "compress_on_fill": _BOOL,
    "cache_storage_mode": _enum(CacheStorageMode),
    "cache_directory": _PATH,
    "cache_404_capacity": _kind(integer_check(0), env_int),
    "use_404_meta": _BOOL,
    "proxy_mode": _enum(ProxyMode),
    "pre_generate_paths": _kind(
        list_check(is_path, 'a path starting with "/"'), env_list
    ),
    "pre_generate_fallthrough": _BOOL,
    "pre_generate_concurrency": _kind(integer_check(1), env_int),
    "cache_max_bytes": _SIZE_KIND,
    "max_cacheable_bytes": _SIZE_KIND,
    "upstream_timeout": _POSITIVE_SECONDS,
    "upstream_keepalive_timeout": _SECONDS,
    "cache_policy": _enum(CachePolicy),
    "cache_ttl": _SECONDS,
    "stale_while_revalidate": _SECONDS,
    "stale_if_error": _SECONDS,
    "generate_etag": _BOOL,
    "execute": _STRING,
    "execute_dir": _PATH,
    "ignore_query_params": _NAME_GLOBS,
    "cookie_policy": _enum(CookiePolicy),
    "ignore_cookies": _NAME_GLOBS,
    "upstreams": UPSTREAMS_KIND,
    "load_balancing": _enum(Balancing),
    **SERVER_EDGE_KINDS,
}

_WEBHOOK_KINDS: Dict[str, Kind] = {
    "url": _kind(url_check("an http:// or https:// URL with a host", True)),
    "type": _enum(WebhookType),
    "timeout_ms": _kind(integer_check(1), env_int),
}

ROOT_KEYS: Tuple[str, ...] = tuple(_ROOT_KINDS) + ("acme", "server") + tuple(ROUTE_BLOCKS)
"""
Every key accepted at the root of the file (C{server}, C{static} and
C{redirect} hold the blocks, C{acme} is a table of
L{phantom_frame.config.acme.ACME_KEYS}).
"""

SERVER_KEYS: Tuple[str, ...] = tuple(_SERVER_KINDS) + ("webhooks", "rate_limits", "health_check")
"""
Every key accepted in a C{[server.NAME]} block.
"""

_SERVER_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")
_ROOT_PATH_KEYS = ("cert_path", "key_path")
_SERVER_PATH_KEYS = ("cache_directory", "execute_dir")
_WILDCARD_ADDRESSES = ("0.0.0.0", "::", "::0")


class Parser(TableChecker):
    """
    Checks a parsed configuration, collecting every error.
    """

    def __init__(
        self, environ: Dict[str, str], base_dir: str, defaults: Mapping[str, Any]
    ) -> None:
        """
        @param environ: the variables C{$env:} references see; updated with
            the C{.env} file's.
        @param base_dir: the directory relative paths are resolved against.
        @param defaults: the default of every root value, by
            L{phantom_frame.config.loader.Config} attribute name.
        """
        super().__init__(environ, base_dir)
        self.defaults = defaults
        #: The key path of the block holding each C{bind_to}.
        self.owners: Dict[str, str] = {}

    def dotenv(self, raw: object) -> Union[bool, str, None]:
        """
        Check the C{dotenv} key and load the file it names into the
        environment, without overriding variables already set.

        @param raw: the key's value.
        @return: the value to keep in
            L{phantom_frame.config.loader.Config.dotenv}, or L{None} to keep the
            default.
        """
        value = self.resolve("dotenv", raw, _ROOT_KINDS["dotenv"])
        if isinstance(value, Unset) or value is BAD or value is False:
            return None
        if value is True:
            filename = os.path.abspath(".env")
            if not os.path.exists(filename):
                return True
        else:
            filename = self.path(value)
            if not os.path.exists(filename):
                self.error("dotenv", f"file {filename!r} does not exist")
                return None
        try:
            with open(filename, "rb") as f:
                text = f.read().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8"
            self.error("dotenv", f"cannot read {filename!r}: {reason}")
            return None
        values, errors = parse_dotenv(text, filename)
        for message in errors:
            self.error("dotenv", message)
        for name, text in values.items():
            self.environ.setdefault(name, text)
        return True if value is True else filename

    def root(self, data: Mapping[str, Any]) -> Dict[str, Any]:
        """
        Check the root keys (not C{server}).

        @param data: the whole file.
        @return: the valid root values, by L{phantom_frame.config.loader.Config}
            attribute name.
        """
        values: Dict[str, Any] = {}
        if "dotenv" in data:
            loaded = self.dotenv(data["dotenv"])
            if loaded is not None:
                values["dotenv"] = loaded
        result = self.table(
            "",
            data,
            _ROOT_KINDS,
            handled=("server", "dotenv", "acme") + tuple(ROUTE_BLOCKS),
            elsewhere=SERVER_KEYS,
            elsewhere_hint="belongs in a [server.NAME] block",
        )
        if "control_auth" in result.unset:
            self.error(
                "control_auth",
                f"$env:{result.unset['control_auth']} is not set; refusing to"
                " run the control site without authentication",
            )
        values.update(result.values)
        if "acme" in data:
            acme = parse_acme(self, data["acme"])
            if acme is not None:
                values["acme"] = acme
            for path, message in acme_problems(data):
                self.error(path, message)
        self.tls(result, values, acme="acme" in data)
        self.listeners(result, values)
        return values

    def tls(self, result: Table, values: Dict[str, Any], acme: bool = False) -> None:
        """
        Check that C{cert_path} and C{key_path} are given exactly when there
        is an HTTPS listener without C{[acme]}, and that the files load as
        the HTTPS listener loads them (a PEM chain, a PEM key that matches
        it); make their paths absolute in C{values}.

        @param result: the root table's outcome.
        @param values: the valid root values, updated.
        @param acme: whether the file has an C{[acme]} table, which
            provides the certificate (its own checks say when C{cert_path}
            is given as well).
        """
        if acme:
            return
        https = [k for k in ("https_port", "https_listen") if result.present(k)]
        readable = True
        for key in _ROOT_PATH_KEYS:
            if https and not result.present(key):
                self.error(key, f"required when {https[0]} is set")
            elif not https and key in values:
                self.error(
                    key, "given, but there is no https_port or https_listen to use it"
                )
            if key in values:
                values[key] = self.path(values[key])
                reason = unreadable(values[key])
                if reason is not None:
                    self.error(key, f"cannot read {values[key]!r}: {reason}")
                    readable = False
        if https and readable and all(key in values for key in _ROOT_PATH_KEYS):
            problem = tls_problem(values["cert_path"], values["key_path"])
            if problem is not None:
                self.error(*problem)

    def listeners(self, result: Table, values: Dict[str, Any]) -> None:
        """
        Check that no listener is described twice (C{X_port} and C{X_listen})
        and that no two TCP listeners share a port on overlapping addresses.

        @param result: the root table's outcome.
        @param values: the valid root values.
        """
        tcp: List[Tuple[str, int, str]] = []
        for name, address in (
            ("http", "bind_address"),
            ("https", "bind_address"),
            ("control", "control_bind_address"),
        ):
            port_key, listen_key = f"{name}_port", f"{name}_listen"
            if result.present(listen_key):
                if result.present(port_key):
                    self.error(
                        port_key, f"{listen_key} replaces it; give only one of the two"
                    )
                continue
            port = values.get(port_key, self.defaults[port_key])
            if port is None or port_key in result.failed:
                continue
            interface = values.get(address, self.defaults[address])
            for other_key, other_port, other_interface in tcp:
                overlap = (
                    interface == other_interface
                    or interface in _WILDCARD_ADDRESSES
                    or other_interface in _WILDCARD_ADDRESSES
                )
                if port and port == other_port and overlap:
                    self.error(port_key, f"port {port} is already used by {other_key}")
            tcp.append((port_key, port, interface))

    def servers(
        self, data: Mapping[str, Any]
    ) -> List[Tuple[str, str, CreateProxyConfig]]:
        """
        Check the C{[server.NAME]} blocks.

        @param data: the whole file.
        @return: each server's NAME, C{bind_to} and proxy settings, in file
            order.
        """
        blocks = data.get("server")
        if blocks is None:
            self.error("server", "at least one [server.NAME] block is required")
            return []
        if not isinstance(blocks, dict):
            self.error(
                "server", f"expected [server.NAME] tables, got {show(blocks)}"
            )
            return []
        servers: List[Tuple[str, str, CreateProxyConfig]] = []
        owners = self.owners
        for name, block in blocks.items():
            path = f"server.{quote_key(name)}"
            if not isinstance(block, dict):
                self.error(
                    path,
                    f"expected a [server.NAME] table, got {show(block)}; server"
                    " keys go inside a [server.NAME] block",
                )
                continue
            if not _SERVER_NAME.match(name):
                self.error(path, "a server name is letters, digits, _ and -")
            bind_to, proxy, bind_ok = self.server(path, block)
            if bind_ok:
                owner = owners.get(bind_to)
                if owner is None:
                    owners[bind_to] = path
                elif bind_to == "*":
                    self.error(
                        f"{path}.bind_to",
                        f'only one server may use "*", and {owner} does',
                    )
                else:
                    self.error(
                        f"{path}.bind_to",
                        f"{bind_to!r} is already used by {owner}",
                    )
            servers.append((name, bind_to, proxy))
        if not blocks:
            self.error("server", "at least one [server.NAME] block is required")
        return servers

    def routes(self, data: Mapping[str, Any], kind: str) -> List[Any]:
        """
        Check the C{[static.NAME]} or C{[redirect.NAME]} blocks, after the
        servers (a C{bind_to} is bound once, whatever the kinds of blocks).

        @param kind: C{"static"} or C{"redirect"}.
        @return: see L{route_blocks}.
        """
        return route_blocks(self, data, kind, self.owners)

    def server(
        self, path: str, block: Mapping[str, Any]
    ) -> Tuple[str, CreateProxyConfig, bool]:
        """
        Check one C{[server.NAME]} block.

        @param path: its key path, C{server.NAME}.
        @param block: its table.
        @return: its C{bind_to}, its proxy settings (built from its valid
            keys) and whether its C{bind_to} is valid.
        """
        result = self.table(
            path + ".",
            block,
            _SERVER_KINDS,
            handled=("webhooks", "rate_limits", "health_check"),
            elsewhere=ROOT_KEYS,
            elsewhere_hint=(
                "is a root key; move it above the first [server.NAME] block"
            ),
        )
        values = result.values
        if "webhooks" in block:
            webhooks = check_webhooks(self, path + ".webhooks", block["webhooks"], _WEBHOOK_KINDS)
            if webhooks is not None:
                values["webhooks"] = webhooks
        if "rate_limits" in block:
            limits = check_rate_limits(self, path + ".rate_limits", block["rate_limits"])
            if limits is not None:
                values["rate_limits"] = limits
        if "health_check" in block:
            check = check_health_check(self, path + ".health_check", block["health_check"])
            if check is not None:
                values["health_check"] = check
        check_upstream_keys(self, path, result)
        for key in _SERVER_PATH_KEYS:
            if key in values:
                values[key] = self.path(values[key])
        filesystem = values.get("cache_storage_mode") == CacheStorageMode.FILESYSTEM
        if filesystem and "cache_directory" in values:
            problem = directory_problem(values["cache_directory"])
            if problem is not None:
                self.error(f"{path}.cache_directory", problem)
        bind_to = values.pop("bind_to", "*")
        proxy = CreateProxyConfig(**values)
        return bind_to, proxy, "bind_to" not in result.failed
