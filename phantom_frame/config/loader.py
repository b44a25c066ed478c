"""
Reading and validating the configuration file.

L{load_config} reads a TOML file and L{parse_config} validates its tables: the
result is a L{Config} holding one L{ServerConfig} per C{[server.NAME]} block,
or a L{ConfigError} listing every problem found, each named by its key path
(C{server.api.cache_strategy: expected one of ...}).

Any string value that is exactly C{$env:NAME} is replaced by that environment
variable, converted to the key's type; a variable that is not set leaves the
key at its default, except for C{control_auth}, where it is an error. The
C{dotenv} key loads a C{.env} file first; variables already in the
environment win over the file.

The keys and the rules between them are in L{phantom_frame.config.schema},
the checks of single values in L{phantom_frame.config.values} and
L{phantom_frame.config.network} (addresses, endpoints, URLs), the checks of
the files a configuration names in L{phantom_frame.config.files}, the
walking of tables and C{$env:} references in L{phantom_frame.config.tables}
and the C{.env} reader in L{phantom_frame.config.dotenv}.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, List, Mapping, Optional, Tuple, Union

import attr

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from phantom_frame.config.acme import AcmeConfig
from phantom_frame.config.edge import purge_problems
from phantom_frame.config.schema import ROOT_KEYS, SERVER_KEYS, Parser
from phantom_frame.config.tables import quote_key
from phantom_frame.config.values import show
from phantom_frame.config.sizes import parse_size as parse_size
from phantom_frame.http.limits import ClientLimits
from phantom_frame.http.routes import RedirectConfig, StaticConfig
from phantom_frame.proxy.settings import CacheStorageMode, CreateProxyConfig

__all__ = [
    "Config",
    "ConfigError",
    "ROOT_KEYS",
    "SERVER_KEYS",
    "ServerConfig",
    "load_config",
    "parse_config",
    "parse_size",
]


class ConfigError(Exception):
    """
    The configuration is invalid.

    C{str()} of the error is the whole report: a C{Found N error(s):} line
    followed by the numbered errors, one a line.

    @ivar errors: every problem found, in file order, each
        C{"key.path: message"}.
    """

    def __init__(self, errors: Iterable[str]) -> None:
        """
        @param errors: the problems, each C{"key.path: message"}.
        """
        self.errors: List[str] = list(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        """
        @return: C{Found N error(s):} and the numbered errors.
        """
        lines = [f"Found {len(self.errors)} error(s):"]
        lines.extend(
            f"  {number}. {error}" for number, error in enumerate(self.errors, 1)
        )
        return "\n".join(lines)


@attr.s(auto_attribs=True, frozen=True)
class ServerConfig:
    """
    One C{[server.NAME]} block.

    @ivar name: the block's NAME.
    @ivar bind_to: C{"*"} or the path prefix the server is mounted at.
    @ivar proxy: the origin and caching settings.
    """

    name: str
    bind_to: str
    proxy: CreateProxyConfig


def _quote_endpoint(value: str) -> str:
    """
    Quote a value for a Twisted endpoint description string.

    @param value: an argument such as an IPv6 address.
    @return: C{value} with C{\\} and C{:} escaped by a backslash, as
        C{twisted.internet.endpoints.quoteStringArgument} does.
    """
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _tcp(port: int, interface: str) -> str:
    """
    @param port: a TCP port.
    @param interface: the address to listen on.
    @return: a C{tcp:} server endpoint description.
    """
    return f"tcp:{port}:interface={_quote_endpoint(interface)}"


@attr.s(auto_attribs=True, frozen=True)
class Config:
    """
    A whole, valid configuration file.

    @ivar http_port: the port of the plain HTTP proxy listener.
    @ivar https_port: the port of the HTTPS proxy listener, if any.
    @ivar cert_path: the absolute path of the PEM certificate chain.
    @ivar key_path: the absolute path of the PEM private key.
    @ivar control_port: the port of the control site.
    @ivar control_auth: the bearer token every control route requires, or
        L{None} for an open control site.
    @ivar bind_address: the interface of the proxy listeners.
    @ivar control_bind_address: the interface of the control site.
    @ivar dotenv: L{False}, L{True} (C{./.env} was loaded) or the absolute
        path of the loaded C{.env} file.
    @ivar http_listen: an endpoint description replacing C{http_port}.
    @ivar https_listen: an endpoint description replacing C{https_port}.
    @ivar control_listen: an endpoint description replacing C{control_port}.
    @ivar log_format: C{"text"} or C{"json"}.
    @ivar access_log: whether a line is logged per request.
    @ivar shutdown_grace: seconds SIGTERM waits for in-flight requests.
    @ivar workers: how many worker processes share the listeners: a
        positive integer, or C{"auto"} for one per CPU (see
        L{worker_count}); 1 runs the proxy in this one process.
    @ivar max_request_body: the biggest request body, in bytes (C{"64MB"}).
    @ivar max_header_bytes: the biggest request head, in bytes (C{"16KB"}).
    @ivar client_header_timeout: seconds a request head has to arrive.
    @ivar allowed_hosts: host globs; when given, the only hosts answered.
    @ivar redis_url: the Redis of the shared cache tier and purge bus, or
        L{None}.
    @ivar redis_l1_bytes: each process's memory in front of Redis.
    @ivar redis_prefix: what every Redis key and channel starts with.
    @ivar rate_limit_storage: where rate-limit buckets live with a
        C{redis_url}: C{"redis"} (shared) or C{"memory"} (per process).
    @ivar servers: the C{[server.NAME]} blocks, in file order.
    @ivar acme: the C{[acme]} table, when the HTTPS listener's certificate
        comes from an ACME server (then C{cert_path} and C{key_path} are
        L{None}).
    @ivar statics: the C{[static.NAME]} blocks, in file order.
    @ivar redirects: the C{[redirect.NAME]} blocks, in file order.
    @ivar source: the file the configuration came from, if any; not compared.
    """

    http_port: int = 3000
    https_port: Optional[int] = None
    cert_path: Optional[str] = None
    key_path: Optional[str] = None
    control_port: int = 17809
    control_auth: Optional[str] = attr.ib(default=None, repr=False)
    bind_address: str = "0.0.0.0"
    control_bind_address: str = "127.0.0.1"
    dotenv: Union[bool, str] = False
    http_listen: Optional[str] = None
    https_listen: Optional[str] = None
    control_listen: Optional[str] = None
    log_format: str = "text"
    access_log: bool = True
    shutdown_grace: float = 10.0
    workers: Union[int, str] = 1
    max_request_body: int = 64_000_000
    max_header_bytes: int = 16_000
    client_header_timeout: float = 30.0
    allowed_hosts: Tuple[str, ...] = attr.ib(default=(), converter=tuple)
    redis_url: Optional[str] = attr.ib(default=None, repr=False)
    redis_l1_bytes: int = 32 * 1024 * 1024
    redis_prefix: str = "phantom-frame"
    rate_limit_storage: str = "redis"
    servers: Tuple[ServerConfig, ...] = attr.ib(default=(), converter=tuple)
    acme: Optional[AcmeConfig] = None
    statics: Tuple[StaticConfig, ...] = attr.ib(default=(), converter=tuple)
    redirects: Tuple[RedirectConfig, ...] = attr.ib(default=(), converter=tuple)
    source: Optional[str] = attr.ib(default=None, eq=False)

    def routes(self, resources: Mapping[str, Any]) -> List[Tuple[str, Any, str]]:
        """
        @param resources: the resource of each server, by name.
        @return: the L{phantom_frame.http.routing.Router} routes of every
            block: servers (with C{resources}), static files and redirects
            (named C{static.NAME} and C{redirect.NAME} in logs and metrics).
        """
        routes: List[Tuple[str, Any, str]] = [
            (b.bind_to, resources[b.name], b.name) for b in self.servers
        ]
        for kind, blocks in (("static", self.statics), ("redirect", self.redirects)):
            for block in blocks:
                routes.append((block.bind_to, block.resource(), f"{kind}.{block.name}"))
        return routes

    def client_limits(self) -> ClientLimits:
        """
        @return: what clients of the proxy listeners may send:
            C{max_request_body}, C{max_header_bytes},
            C{client_header_timeout} and C{allowed_hosts}.
        """
        return ClientLimits(
            max_request_body=self.max_request_body,
            max_header_bytes=self.max_header_bytes,
            client_header_timeout=self.client_header_timeout,
            allowed_hosts=self.allowed_hosts,
        )

    def worker_count(self, cpus: Optional[int] = None) -> int:
        """
        @param cpus: how many CPUs there are; C{os.cpu_count()} by default.
        @return: how many worker processes to run: L{workers}, with
            C{"auto"} as one per CPU (at least one).
        """
        if self.workers != "auto":
            return int(self.workers)
        if cpus is None:
            cpus = os.cpu_count()
        return max(1, cpus or 1)

    def http_endpoint(self) -> str:
        """
        @return: the server endpoint description of the HTTP proxy listener:
            C{http_listen}, or C{tcp:PORT:interface=ADDRESS}.
        """
        if self.http_listen is not None:
            return self.http_listen
        return _tcp(self.http_port, self.bind_address)

    def https_port_endpoint(self) -> Optional[str]:
        """
        The endpoint of the HTTPS proxy listener, without TLS: whoever
        listens on it layers TLS with C{cert_path} and C{key_path} (or the
        C{[acme]} certificate) on top.

        @return: C{https_listen}, or C{tcp:PORT:interface=ADDRESS} for
            C{https_port}, or L{None} when there is no HTTPS listener.
        """
        if self.https_listen is not None:
            return self.https_listen
        if self.https_port is None:
            return None
        return _tcp(self.https_port, self.bind_address)

    def listener_key(self, name: str) -> str:
        """
        @param name: C{"http"}, C{"https"} or C{"control"}.
        @return: the key that describes that listener, for messages:
            C{NAME_listen} when it is given, else C{NAME_port}.
        """
        if getattr(self, f"{name}_listen") is not None:
            return f"{name}_listen"
        return f"{name}_port"

    def control_endpoint(self) -> str:
        """
        @return: the server endpoint description of the control site:
            C{control_listen}, or C{tcp:PORT:interface=ADDRESS}.
        """
        if self.control_listen is not None:
            return self.control_listen
        return _tcp(self.control_port, self.control_bind_address)


def parse_config(
    data: Mapping[str, Any],
    environ: Optional[Mapping[str, str]] = None,
    base_dir: str = ".",
    source: Optional[str] = None,
) -> Config:
    """
    Validate a parsed configuration file.

    @param data: the file's tables, as C{tomllib} returns them.
    @param environ: the variables C{$env:NAME} references see; a copy of
        C{os.environ} by default. It is never modified: the C{.env} file's
        variables go into a copy.
    @param base_dir: the directory relative paths (C{cert_path},
        C{key_path}, C{dotenv}, C{cache_directory}, C{execute_dir}, the
        C{[acme]} C{storage} and C{ca_bundle}) are resolved against; a
        C{dotenv = true} file is C{./.env} in the current directory
        whatever C{base_dir} is.
    @param source: the file the data came from, kept in L{Config.source}.
    @return: the configuration.
    @raise ConfigError: listing every problem found.
    """
    env = dict(os.environ if environ is None else environ)
    defaults = {
        name: field.default for name, field in attr.fields_dict(Config).items()
    }
    parser = Parser(env, base_dir, defaults)
    if not isinstance(data, Mapping):
        raise ConfigError([f"(root): expected a table, got {show(data)}"])
    values = parser.root(data)
    blocks = parser.servers(data)
    for path, message in purge_problems(blocks, values.get("control_auth")):
        parser.error(path, message)
    servers = tuple(
        ServerConfig(name=name, bind_to=bind_to, proxy=proxy)
        for name, bind_to, proxy in blocks
    )
    for server in servers:
        if server.proxy.cache_storage_mode == CacheStorageMode.REDIS and not values.get("redis_url"):
            parser.error(
                f"server.{quote_key(server.name)}.cache_storage_mode",
                '"redis" needs redis_url (the root key) to be set',
            )
    statics = parser.routes(data, "static")
    redirects = parser.routes(data, "redirect")
    if parser.errors:
        raise ConfigError(parser.errors)
    return Config(
        servers=servers, statics=statics, redirects=redirects, source=source, **values
    )


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*\Z")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*\Z")


def _toml_error(error: Exception, text: str) -> str:
    """
    @param error: a C{TOMLDecodeError}.
    @param text: the document.
    @return: C{"line L, column C: invalid TOML: MESSAGE"}.
    """
    message = str(error)
    line = getattr(error, "lineno", None)
    column = getattr(error, "colno", None)
    position = _TOML_POSITION.search(message)
    if position is not None:
        message = message[: position.start()]
        line, column = int(position.group(1)), int(position.group(2))
    end = _TOML_END.search(message)
    if end is not None:
        message = message[: end.start()]
        line = text.count("\n") + 1
        column = None
    if line is None:
        return f"invalid TOML: {message}"
    where = f"line {line}" if column is None else f"line {line}, column {column}"
    return f"{where}: invalid TOML: {message}"


def load_config(path: str, environ: Optional[Mapping[str, str]] = None) -> Config:
    """
    Read and validate a configuration file.

    @param path: the TOML file.
    @param environ: see L{parse_config}.
    @return: the configuration, with L{Config.source} set to C{path}.
    @raise ConfigError: when the file cannot be read, is not valid TOML
        (the error names the line), or its contents are invalid.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the file: {e.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError([f"{path}: line {line}: not valid UTF-8"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: {_toml_error(e, text)}"]) from None
    base_dir = os.path.dirname(os.path.abspath(path))
    return parse_config(data, environ=environ, base_dir=base_dir, source=path)
