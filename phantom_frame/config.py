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
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from fractions import Fraction
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)
from urllib.parse import urlsplit

import attr

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from phantom_frame.cache.patterns import PathPattern, PatternError
from phantom_frame.proxyconfig import (
    CachePolicy,
    CacheStorageMode,
    CacheStrategy,
    CompressStrategy,
    CreateProxyConfig,
    ProxyMode,
    Webhook,
    WebhookType,
)

__all__ = [
    "Config",
    "ConfigError",
    "ROOT_KEYS",
    "SERVER_KEYS",
    "ServerConfig",
    "load_config",
    "parse_config",
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
    @ivar servers: the C{[server.NAME]} blocks, in file order.
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
    servers: Tuple[ServerConfig, ...] = attr.ib(default=(), converter=tuple)
    source: Optional[str] = attr.ib(default=None, eq=False)

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
        listens on it layers TLS with C{cert_path} and C{key_path} on top.

        @return: C{https_listen}, or C{tcp:PORT:interface=ADDRESS} for
            C{https_port}, or L{None} when there is no HTTPS listener.
        """
        if self.https_listen is not None:
            return self.https_listen
        if self.https_port is None:
            return None
        return _tcp(self.https_port, self.bind_address)

    def control_endpoint(self) -> str:
        """
        @return: the server endpoint description of the control site:
            C{control_listen}, or C{tcp:PORT:interface=ADDRESS}.
        """
        if self.control_listen is not None:
            return self.control_listen
        return _tcp(self.control_port, self.control_bind_address)


# Checking single values.


class _Invalid(Exception):
    """
    A value is not of the expected form.

    @ivar problems: C{(where, message)} pairs; C{where} is appended to the
        key path (C{"[2]"} for the third item of a list), C{message} says what
        was expected.
    """

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.problems: List[Tuple[str, str]] = [(where, message)]

    @classmethod
    def several(cls, problems: Sequence[Tuple[str, str]]) -> _Invalid:
        """
        @param problems: C{(where, message)} pairs, at least one.
        @return: an error carrying them all.
        """
        error = cls(problems[0][1], problems[0][0])
        error.problems = list(problems)
        return error


@attr.s(auto_attribs=True, frozen=True)
class _Kind:
    """
    How a key's value is checked.

    @ivar check: takes a TOML value and returns the converted value, or
        raises L{_Invalid}.
    @ivar from_env: turns an environment variable's text into a TOML-like
        value for C{check}, or raises L{_Invalid} whose message names the
        expected form (C{"an integer"}).
    """

    check: Callable[[Any], Any]
    from_env: Callable[[str], Any]


def _show(value: object) -> str:
    """
    @param value: a value from the configuration.
    @return: a short description of it for an error message.
    """
    if isinstance(value, dict):
        return "a table"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def _is_int(value: object) -> bool:
    """
    @return: whether C{value} is an integer (a boolean is not).
    """
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """
    @return: whether C{value} is a finite integer or float (not a boolean).
    """
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _suggest(word: str, known: Iterable[str]) -> Optional[str]:
    """
    @param word: a misspelt key or value.
    @param known: the accepted spellings.
    @return: the closest accepted spelling, or L{None} when none is close.
    """
    known = list(known)
    matches = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    if not matches:
        matches = difflib.get_close_matches(word.lower(), known, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _env_text(text: str) -> str:
    """
    @return: an environment variable's text, unchanged, for string keys.
    """
    return text


def _env_int(text: str) -> int:
    """
    @return: the integer an environment variable holds.
    @raise _Invalid: when it holds none.
    """
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise _Invalid("an integer") from None


def _env_float(text: str) -> float:
    """
    @return: the number an environment variable holds (C{"2.5"}, C{"3"}).
    @raise _Invalid: when it holds none.
    """
    try:
        return float(text.strip())
    except ValueError:
        raise _Invalid("a number") from None


_BOOL_WORDS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def _env_bool(text: str) -> bool:
    """
    @return: the boolean an environment variable holds (C{true/false},
        C{1/0}, C{yes/no}, C{on/off}, in any case).
    @raise _Invalid: when it holds none.
    """
    try:
        return _BOOL_WORDS[text.strip().lower()]
    except KeyError:
        raise _Invalid("a boolean (true/false, yes/no, on/off, 1/0)") from None


def _env_list(text: str) -> List[str]:
    """
    @return: the comma-separated items of an environment variable, trimmed,
        empty items left out.
    """
    return [item.strip() for item in text.split(",") if item.strip()]


def _check_port(value: object) -> int:
    if _is_int(value) and 0 <= value <= 65535:  # type: ignore[operator]
        return value  # type: ignore[return-value]
    raise _Invalid(f"expected an integer port 0-65535, got {_show(value)}")


def _check_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _Invalid(f"expected true or false, got {_show(value)}")


def _check_string(value: object) -> str:
    if isinstance(value, str) and value:
        return value
    raise _Invalid(f"expected a non-empty string, got {_show(value)}")


def _check_token(value: object) -> str:
    if value == "":
        raise _Invalid(
            "must not be empty; leave the key out for a control site without"
            " authentication"
        )
    if isinstance(value, str) and value.isprintable() and value.split() == [value]:
        return value
    raise _Invalid(
        f"expected a bearer token without spaces or control characters,"
        f" got {_show(value)}"
    )


_HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?\Z"
)


def _check_host(value: object) -> str:
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if _HOSTNAME.match(value):
                return value
        else:
            return value
    raise _Invalid(
        'expected an IP address or host name such as "0.0.0.0", "127.0.0.1"'
        f' or "::", without brackets, got {_show(value)}'
    )


_LISTEN = re.compile(r"[A-Za-z][A-Za-z0-9_+.-]*:.")


def _check_listen(value: object) -> str:
    if isinstance(value, str) and _LISTEN.match(value) and value == value.strip():
        return value
    raise _Invalid(
        'expected a Twisted endpoint description such as "tcp:3000",'
        ' "unix:/run/phantom-frame.sock" or "systemd:domain=INET:index=0",'
        f" got {_show(value)}"
    )


def _check_dotenv(value: object) -> Union[bool, str]:
    if isinstance(value, bool) or (isinstance(value, str) and value):
        return value  # type: ignore[return-value]
    raise _Invalid(
        f"expected true, false or the path of a .env file, got {_show(value)}"
    )


def _env_dotenv(text: str) -> Union[bool, str]:
    """
    @return: a boolean when the variable holds a boolean word, else its text.
    """
    return _BOOL_WORDS.get(text.strip().lower(), text)


def _seconds(minimum: float, inclusive: bool) -> Callable[[object], float]:
    """
    @param minimum: the bound.
    @param inclusive: whether the bound itself is allowed.
    @return: a check accepting finite numbers above (or at) C{minimum}.
    """
    relation = ">=" if inclusive else ">"

    def check(value: object) -> float:
        if _is_number(value) and (
            value >= minimum if inclusive else value > minimum  # type: ignore[operator]
        ):
            return float(value)  # type: ignore[arg-type]
        raise _Invalid(
            f"expected a number of seconds {relation} {minimum:g}, got {_show(value)}"
        )

    return check


def _integer(minimum: int) -> Callable[[object], int]:
    """
    @param minimum: the smallest accepted value.
    @return: a check accepting integers at or above C{minimum}.
    """

    def check(value: object) -> int:
        if _is_int(value) and value >= minimum:  # type: ignore[operator]
            return value  # type: ignore[return-value]
        bound = ">= 0" if minimum == 0 else f"> {minimum - 1}"
        raise _Invalid(f"expected an integer {bound}, got {_show(value)}")

    return check


def _choice(
    choices: Sequence[str], convert: Callable[[str], Any] = str
) -> Callable[[object], Any]:
    """
    @param choices: the accepted strings.
    @param convert: applied to an accepted string (an enum class).
    @return: a check accepting exactly one of C{choices}.
    """

    def check(value: object) -> Any:
        if isinstance(value, str) and value in choices:
            return convert(value)
        message = f"expected one of {', '.join(choices)}, got {_show(value)}"
        if isinstance(value, str):
            close = _suggest(value, choices)
            if close is not None:
                message += f"; did you mean {close}?"
        raise _Invalid(message)

    return check


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*\Z")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
}
_SIZE_FORM = (
    'a size in bytes: an integer >= 0 or a string such as "256MiB", "8 MB"'
    ' or "512k"'
)


def parse_size(text: str) -> int:
    """
    Parse a size such as C{"256MiB"}, C{"8 MB"}, C{"512k"} or C{"1024"}.

    Units, in any case: C{B}; C{KB}, C{MB}, C{GB} (powers of 1000); C{KiB},
    C{MiB}, C{GiB} and the bare C{K}, C{M}, C{G} (powers of 1024). A
    fractional number is allowed and rounded down to whole bytes.

    @param text: the size.
    @return: the number of bytes.
    @raise ValueError: when C{text} is not a size.
    """
    match = _SIZE.match(text)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r}")
    return int(Fraction(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def _check_size(value: object) -> int:
    if _is_int(value) and value >= 0:  # type: ignore[operator]
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        try:
            return parse_size(value)
        except ValueError:
            pass
    raise _Invalid(f"expected {_SIZE_FORM}, got {_show(value)}")


def _env_size(text: str) -> int:
    """
    @return: the size an environment variable holds.
    @raise _Invalid: when it holds none.
    """
    try:
        return parse_size(text)
    except ValueError:
        raise _Invalid(_SIZE_FORM) from None


def _url_check(what: str, allow_query: bool) -> Callable[[object], str]:
    """
    @param what: the expected form, for error messages.
    @param allow_query: whether a query string and fragment are allowed.
    @return: a check accepting C{http://} and C{https://} URLs with a host.
    """

    def check(value: object) -> str:
        expected = f"expected {what}"
        if isinstance(value, str) and not any(c.isspace() for c in value):
            try:
                parts = urlsplit(value)
                parts.port  # noqa: B018 (raises ValueError for a bad port)
            except ValueError as e:
                raise _Invalid(f"{expected}, got {_show(value)} ({e})") from None
            if parts.scheme in ("http", "https") and parts.hostname:
                if parts.username is not None or parts.password is not None:
                    raise _Invalid(
                        f"{expected}, without user:password@, got {_show(value)}"
                    )
                if allow_query or ("?" not in value and "#" not in value):
                    return value
                raise _Invalid(
                    f"{expected}, without a query or fragment, got {_show(value)}"
                )
        raise _Invalid(f"{expected}, got {_show(value)}")

    return check


_BIND_TO_FORM = 'expected "*" or a path prefix such as "/api"'


def _check_bind_to(value: object) -> str:
    if value == "*":
        return "*"
    if not isinstance(value, str):
        raise _Invalid(f"{_BIND_TO_FORM}, got {_show(value)}")
    problem = None
    if not value.startswith("/"):
        problem = 'a prefix starts with "/"'
    elif value == "/":
        problem = 'use "*" for everything'
    elif value.endswith("/"):
        problem = 'no trailing "/"'
    elif "//" in value:
        problem = "no empty segments"
    elif re.search(r"[?#\s]", value):
        problem = 'no "?", "#" or spaces'
    elif "*" in value:
        problem = 'a prefix is not a pattern; no "*"'
    elif any(segment in (".", "..") for segment in value.split("/")):
        problem = 'no "." or ".." segments'
    if problem is None:
        return value
    raise _Invalid(f"{_BIND_TO_FORM} ({problem}), got {_show(value)}")


def _list_check(
    item_ok: Callable[[str], bool], item_form: str
) -> Callable[[object], Tuple[str, ...]]:
    """
    @param item_ok: whether a string item is acceptable.
    @param item_form: what an item should look like, for error messages.
    @return: a check accepting lists of acceptable strings, returning a
        tuple; each bad item is reported at its index.
    """

    def check(value: object) -> Tuple[str, ...]:
        if not isinstance(value, list):
            raise _Invalid(
                f"expected a list of strings, each {item_form}, got {_show(value)}"
            )
        problems = [
            (f"[{index}]", f"expected {item_form}, got {_show(item)}")
            for index, item in enumerate(value)
            if not (isinstance(item, str) and item_ok(item))
        ]
        if problems:
            raise _Invalid.several(problems)
        return tuple(value)

    return check


def _is_pattern(text: str) -> bool:
    """
    @return: whether C{text} is an C{include_paths}/C{exclude_paths} pattern.
    """
    try:
        PathPattern.parse(text)
    except PatternError:
        return False
    return True


def _is_path(text: str) -> bool:
    """
    @return: whether C{text} is a request path (with an optional query).
    """
    return text.startswith("/") and not any(c.isspace() for c in text)


def _kind(
    check: Callable[[Any], Any], from_env: Callable[[str], Any] = _env_text
) -> _Kind:
    """
    @param check: see L{_Kind.check}.
    @param from_env: see L{_Kind.from_env}; strings are taken as they are by
        default.
    @return: the kind.
    """
    return _Kind(check=check, from_env=from_env)


_PORT = _kind(_check_port, _env_int)
_BOOL = _kind(_check_bool, _env_bool)
_STRING = _kind(_check_string)
_HOST = _kind(_check_host)
_LISTEN_KIND = _kind(_check_listen)
_POSITIVE_SECONDS = _kind(_seconds(0, inclusive=False), _env_float)
_SECONDS = _kind(_seconds(0, inclusive=True), _env_float)
_SIZE_KIND = _kind(_check_size, _env_size)


def _enum(cls: Any) -> _Kind:
    """
    @param cls: an enum with a C{choices()} class method.
    @return: a kind accepting its values and returning its members.
    """
    return _kind(_choice(cls.choices(), cls))


_ROOT_KINDS: Dict[str, _Kind] = {
    "http_port": _PORT,
    "https_port": _PORT,
    "cert_path": _STRING,
    "key_path": _STRING,
    "control_port": _PORT,
    "control_auth": _kind(_check_token),
    "bind_address": _HOST,
    "control_bind_address": _HOST,
    "dotenv": _kind(_check_dotenv, _env_dotenv),
    "http_listen": _LISTEN_KIND,
    "https_listen": _LISTEN_KIND,
    "control_listen": _LISTEN_KIND,
    "log_format": _kind(_choice(("text", "json"))),
    "access_log": _BOOL,
    "shutdown_grace": _POSITIVE_SECONDS,
}

_PATTERNS = _kind(
    _list_check(
        _is_pattern,
        'a pattern "PATH" or "METHOD PATH" (METHOD in upper case, PATH'
        ' starting with "/" or "*")',
    ),
    _env_list,
)

_SERVER_KINDS: Dict[str, _Kind] = {
    "bind_to": _kind(_check_bind_to),
    "proxy_url": _kind(_url_check("an http:// or https:// URL with a host", False)),
    "include_paths": _PATTERNS,
    "exclude_paths": _PATTERNS,
    "enable_websocket": _BOOL,
    "forward_get_only": _BOOL,
    "cache_strategy": _enum(CacheStrategy),
    "compress_strategy": _enum(CompressStrategy),
    "cache_storage_mode": _enum(CacheStorageMode),
    "cache_directory": _STRING,
    "cache_404_capacity": _kind(_integer(0), _env_int),
    "use_404_meta": _BOOL,
    "proxy_mode": _enum(ProxyMode),
    "pre_generate_paths": _kind(
        _list_check(_is_path, 'a path starting with "/"'), _env_list
    ),
    "pre_generate_fallthrough": _BOOL,
    "pre_generate_concurrency": _kind(_integer(1), _env_int),
    "cache_max_bytes": _SIZE_KIND,
    "max_cacheable_bytes": _SIZE_KIND,
    "upstream_timeout": _POSITIVE_SECONDS,
    "cache_policy": _enum(CachePolicy),
    "cache_ttl": _SECONDS,
    "stale_while_revalidate": _SECONDS,
    "stale_if_error": _SECONDS,
    "generate_etag": _BOOL,
    "execute": _STRING,
    "execute_dir": _STRING,
}

_WEBHOOK_KINDS: Dict[str, _Kind] = {
    "url": _kind(_url_check("an http:// or https:// URL with a host", True)),
    "type": _enum(WebhookType),
    "timeout_ms": _kind(_integer(1), _env_int),
}

ROOT_KEYS: Tuple[str, ...] = tuple(_ROOT_KINDS) + ("server",)
"""
Every key accepted at the root of the file (C{server} holds the blocks).
"""

SERVER_KEYS: Tuple[str, ...] = tuple(_SERVER_KINDS) + ("webhooks",)
"""
Every key accepted in a C{[server.NAME]} block.
"""

_SERVER_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_ENV_PREFIX = "$env:"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ROOT_PATH_KEYS = ("cert_path", "key_path")
_SERVER_PATH_KEYS = ("cache_directory", "execute_dir")
_WILDCARD_ADDRESSES = ("0.0.0.0", "::", "::0")


def _key(name: str) -> str:
    """
    @return: C{name} as it appears in a key path: bare, or quoted.
    """
    if _BARE_KEY.match(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# .env files.

_DOTENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)\Z")
_DOTENV_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _after_quote(rest: str) -> None:
    """
    @param rest: what follows a quoted value's closing quote.
    @raise ValueError: unless it is blank or a comment.
    """
    if rest.strip() and not rest.strip().startswith("#"):
        raise ValueError("unexpected text after the closing quote")


def _dotenv_value(raw: str) -> str:
    """
    @param raw: everything after the C{=} of a C{.env} line.
    @return: the value: unquoted and trimmed up to a C{" #"} comment,
        single-quoted (literal) or double-quoted (with C{\\n}, C{\\"}, C{\\\\}
        escapes).
    @raise ValueError: when a quote is not closed, or text follows it.
    """
    value = raw.lstrip()
    if value.startswith('"'):
        out: List[str] = []
        index = 1
        while index < len(value):
            char = value[index]
            if char == "\\" and index + 1 < len(value):
                following = value[index + 1]
                out.append(_DOTENV_ESCAPES.get(following, "\\" + following))
                index += 2
                continue
            if char == '"':
                _after_quote(value[index + 1 :])
                return "".join(out)
            out.append(char)
            index += 1
        raise ValueError("unterminated double-quoted value")
    if value.startswith("'"):
        end = value.find("'", 1)
        if end < 0:
            raise ValueError("unterminated single-quoted value")
        _after_quote(value[end + 1 :])
        return value[1:end]
    comment = re.search(r"\s#", raw)
    if comment is not None:
        raw = raw[: comment.start()]
    return raw.strip()


def _parse_dotenv(text: str, filename: str) -> Tuple[Dict[str, str], List[str]]:
    """
    Parse the contents of a C{.env} file.

    Lines are C{KEY=VALUE}, optionally prefixed by C{export }; blank lines
    and lines starting with C{#} are skipped. A later line overrides an
    earlier one for the same key.

    @param text: the file's contents.
    @param filename: the file's name, for error messages.
    @return: the variables, and one error message (C{"FILE:LINE: ..."}) per
        malformed line.
    """
    values: Dict[str, str] = {}
    errors: List[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _DOTENV_LINE.match(stripped)
        if match is None:
            errors.append(
                f"{filename}:{number}: expected KEY=VALUE, got {_show(stripped)}"
            )
            continue
        try:
            values[match.group(1)] = _dotenv_value(match.group(2))
        except ValueError as e:
            errors.append(f"{filename}:{number}: {e}")
    return values, errors


# The parser.


@attr.s(auto_attribs=True, frozen=True)
class _Unset:
    """
    A C{$env:NAME} reference to a variable that is not set.

    @ivar name: the variable's name.
    """

    name: str


_BAD = object()


@attr.s(auto_attribs=True)
class _Table:
    """
    The outcome of checking one table.

    @ivar values: the keys whose values are valid, converted.
    @ivar unset: the keys whose C{$env:} variable is not set, with its name.
    @ivar failed: the keys whose values are invalid (already reported).
    """

    values: Dict[str, Any] = attr.ib(factory=dict)
    unset: Dict[str, str] = attr.ib(factory=dict)
    failed: Set[str] = attr.ib(factory=set)

    def present(self, key: str) -> bool:
        """
        @return: whether C{key} was given a value, valid or not.
        """
        return key in self.values or key in self.failed


class _Parser:
    """
    Checks a parsed configuration, collecting every error.
    """

    def __init__(self, environ: Dict[str, str], base_dir: str) -> None:
        """
        @param environ: the variables C{$env:} references see; updated with
            the C{.env} file's.
        @param base_dir: the directory relative paths are resolved against.
        """
        self.environ = environ
        self.base_dir = base_dir
        self.errors: List[str] = []

    def error(self, path: str, message: str) -> None:
        """
        Record an error.

        @param path: the key path.
        @param message: what is wrong and what was expected.
        """
        self.errors.append(f"{path}: {message}")

    def path(self, value: str) -> str:
        """
        @param value: a path from the file, possibly relative or with C{~}.
        @return: it as an absolute path, relative paths taken from the
            configuration file's directory.
        """
        return os.path.abspath(
            os.path.join(self.base_dir, os.path.expanduser(value))
        )

    def env_reference(self, path: str, raw: str) -> Union[str, _Unset, object]:
        """
        @param path: the key path.
        @param raw: a string starting with C{$env:}.
        @return: the variable's text, an L{_Unset}, or L{_BAD} (reported)
            when the reference is malformed.
        """
        name = raw[len(_ENV_PREFIX) :]
        if not _ENV_NAME.match(name):
            self.error(
                path,
                f"{raw!r} is not a valid $env:NAME reference (NAME is letters,"
                " digits and _)",
            )
            return _BAD
        if name not in self.environ:
            return _Unset(name)
        return self.environ[name]

    def resolve(self, path: str, raw: object, kind: _Kind) -> Any:
        """
        Check one value, substituting C{$env:} references.

        @param path: the key path.
        @param raw: the value from the file.
        @param kind: how to check it.
        @return: the converted value, an L{_Unset}, or L{_BAD} after
            reporting an error.
        """
        variable = None
        if isinstance(raw, str) and raw.startswith(_ENV_PREFIX):
            text = self.env_reference(path, raw)
            if not isinstance(text, str):
                return text
            variable = raw[len(_ENV_PREFIX) :]
            try:
                raw = kind.from_env(text)
            except _Invalid as e:
                self.error(path, f"$env:{variable} is {text!r}, expected {e}")
                return _BAD
        elif isinstance(raw, list):
            raw = self.resolve_items(path, raw)
            if raw is _BAD:
                return _BAD
        try:
            return kind.check(raw)
        except _Invalid as e:
            suffix = f" (from $env:{variable})" if variable else ""
            for where, message in e.problems:
                self.error(path + where, message + suffix)
            return _BAD

    def resolve_items(self, path: str, items: List[Any]) -> Any:
        """
        @param path: the key path of the list.
        @param items: a list from the file.
        @return: the list with C{$env:} items replaced by the variables'
            text, or L{_BAD} after reporting an unset or malformed one.
        """
        result = []
        bad = False
        for index, item in enumerate(items):
            if isinstance(item, str) and item.startswith(_ENV_PREFIX):
                item_path = f"{path}[{index}]"
                text = self.env_reference(item_path, item)
                if isinstance(text, _Unset):
                    self.error(item_path, f"$env:{text.name} is not set")
                    bad = True
                elif text is _BAD:
                    bad = True
                else:
                    result.append(text)
            else:
                result.append(item)
        return _BAD if bad else result

    def unknown(
        self,
        path: str,
        key: str,
        known: Iterable[str],
        elsewhere: Iterable[str] = (),
        elsewhere_hint: str = "",
    ) -> None:
        """
        Report an unknown key.

        @param path: its key path.
        @param key: the key.
        @param known: the keys accepted here.
        @param elsewhere: keys accepted in another table.
        @param elsewhere_hint: the advice when C{key} is one of those.
        """
        if key in elsewhere:
            self.error(path, f"unknown key; {key} {elsewhere_hint}")
            return
        close = _suggest(key, known)
        if close is None:
            self.error(path, "unknown key")
        else:
            self.error(path, f"unknown key; did you mean {close}?")

    def table(
        self,
        prefix: str,
        table: Mapping[str, Any],
        kinds: Mapping[str, _Kind],
        handled: Sequence[str] = (),
        elsewhere: Iterable[str] = (),
        elsewhere_hint: str = "",
    ) -> _Table:
        """
        Check every key of a table.

        @param prefix: the key path of the table, with a trailing dot, or
            C{""} for the root.
        @param table: the table.
        @param kinds: the accepted keys and how to check them.
        @param handled: keys accepted here but checked by the caller.
        @param elsewhere: see L{unknown}.
        @param elsewhere_hint: see L{unknown}.
        @return: the outcome.
        """
        result = _Table()
        known = list(kinds) + list(handled)
        for key, raw in table.items():
            path = prefix + _key(key)
            if key in handled:
                continue
            kind = kinds.get(key)
            if kind is None:
                self.unknown(path, key, known, elsewhere, elsewhere_hint)
                continue
            value = self.resolve(path, raw, kind)
            if isinstance(value, _Unset):
                result.unset[key] = value.name
            elif value is _BAD:
                result.failed.add(key)
            else:
                result.values[key] = value
        return result

    def dotenv(self, raw: object) -> Union[bool, str, None]:
        """
        Check the C{dotenv} key and load the file it names into the
        environment, without overriding variables already set.

        @param raw: the key's value.
        @return: the value to keep in L{Config.dotenv}, or L{None} to keep
            the default.
        """
        value = self.resolve("dotenv", raw, _ROOT_KINDS["dotenv"])
        if isinstance(value, _Unset) or value is _BAD or value is False:
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
        values, errors = _parse_dotenv(text, filename)
        for message in errors:
            self.error("dotenv", message)
        for name, text in values.items():
            self.environ.setdefault(name, text)
        return True if value is True else filename

    def root(self, data: Mapping[str, Any]) -> Dict[str, Any]:
        """
        Check the root keys (not C{server}).

        @param data: the whole file.
        @return: the valid root values, by L{Config} attribute name.
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
            handled=("server", "dotenv"),
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
        self.tls(result, values)
        self.listeners(result, values)
        return values

    def tls(self, result: _Table, values: Dict[str, Any]) -> None:
        """
        Check that C{cert_path} and C{key_path} are given exactly when there
        is an HTTPS listener, and that the files are readable; make their
        paths absolute in C{values}.

        @param result: the root table's outcome.
        @param values: the valid root values, updated.
        """
        https = [k for k in ("https_port", "https_listen") if result.present(k)]
        for key in _ROOT_PATH_KEYS:
            if https and not result.present(key):
                self.error(key, f"required when {https[0]} is set")
            elif not https and key in values:
                self.error(
                    key, "given, but there is no https_port or https_listen to use it"
                )
            if key in values:
                values[key] = self.path(values[key])
                try:
                    with open(values[key], "rb"):
                        pass
                except OSError as e:
                    self.error(key, f"cannot read {values[key]!r}: {e.strerror}")

    def listeners(self, result: _Table, values: Dict[str, Any]) -> None:
        """
        Check that no listener is described twice (C{X_port} and C{X_listen})
        and that no two TCP listeners share a port on overlapping addresses.

        @param result: the root table's outcome.
        @param values: the valid root values.
        """
        tcp: List[Tuple[str, int, str]] = []
        defaults = {"http_port": 3000, "control_port": 17809}
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
            port = values.get(port_key, defaults.get(port_key))
            if port is None or port_key in result.failed:
                continue
            interface = values.get(address, attr.fields_dict(Config)[address].default)
            for other_key, other_port, other_interface in tcp:
                overlap = (
                    interface == other_interface
                    or interface in _WILDCARD_ADDRESSES
                    or other_interface in _WILDCARD_ADDRESSES
                )
                if port and port == other_port and overlap:
                    self.error(port_key, f"port {port} is already used by {other_key}")
            tcp.append((port_key, port, interface))

    def servers(self, data: Mapping[str, Any]) -> List[ServerConfig]:
        """
        Check the C{[server.NAME]} blocks.

        @param data: the whole file.
        @return: the servers, in file order.
        """
        blocks = data.get("server")
        if blocks is None:
            self.error("server", "at least one [server.NAME] block is required")
            return []
        if not isinstance(blocks, dict):
            self.error(
                "server", f"expected [server.NAME] tables, got {_show(blocks)}"
            )
            return []
        servers: List[ServerConfig] = []
        owners: Dict[str, str] = {}
        for name, block in blocks.items():
            path = f"server.{_key(name)}"
            if not isinstance(block, dict):
                self.error(
                    path,
                    f"expected a [server.NAME] table, got {_show(block)}; server"
                    " keys go inside a [server.NAME] block",
                )
                continue
            if not _SERVER_NAME.match(name):
                self.error(path, "a server name is letters, digits, _ and -")
            server, bind_ok = self.server(path, name, block)
            if bind_ok:
                owner = owners.get(server.bind_to)
                if owner is None:
                    owners[server.bind_to] = path
                elif server.bind_to == "*":
                    self.error(
                        f"{path}.bind_to",
                        f'only one server may use "*", and {owner} does',
                    )
                else:
                    self.error(
                        f"{path}.bind_to",
                        f"{server.bind_to!r} is already used by {owner}",
                    )
            servers.append(server)
        if not blocks:
            self.error("server", "at least one [server.NAME] block is required")
        return servers

    def server(
        self, path: str, name: str, block: Mapping[str, Any]
    ) -> Tuple[ServerConfig, bool]:
        """
        Check one C{[server.NAME]} block.

        @param path: its key path, C{server.NAME}.
        @param name: its NAME.
        @param block: its table.
        @return: the server (built from its valid keys) and whether its
            C{bind_to} is valid.
        """
        result = self.table(
            path + ".",
            block,
            _SERVER_KINDS,
            handled=("webhooks",),
            elsewhere=ROOT_KEYS,
            elsewhere_hint=(
                "is a root key; move it above the first [server.NAME] block"
            ),
        )
        values = result.values
        if "webhooks" in block:
            webhooks = self.webhooks(path + ".webhooks", block["webhooks"])
            if webhooks is not None:
                values["webhooks"] = webhooks
        for key in _SERVER_PATH_KEYS:
            if key in values:
                values[key] = self.path(values[key])
        bind_to = values.pop("bind_to", "*")
        server = ServerConfig(
            name=name, bind_to=bind_to, proxy=CreateProxyConfig(**values)
        )
        return server, "bind_to" not in result.failed

    def webhooks(self, path: str, raw: object) -> Optional[Tuple[Webhook, ...]]:
        """
        Check a C{webhooks} array of tables.

        @param path: its key path.
        @param raw: its value.
        @return: the webhooks, or L{None} to keep the default.
        """
        if isinstance(raw, str) and raw.startswith(_ENV_PREFIX):
            text = self.env_reference(path, raw)
            if isinstance(text, str):
                self.error(
                    path,
                    "webhooks are [[server.NAME.webhooks]] tables and cannot come"
                    " from $env:",
                )
            return None
        if not isinstance(raw, list):
            self.error(
                path,
                f"expected [[server.NAME.webhooks]] tables, got {_show(raw)}",
            )
            return None
        webhooks: List[Webhook] = []
        for index, entry in enumerate(raw):
            entry_path = f"{path}[{index}]"
            if not isinstance(entry, dict):
                self.error(
                    entry_path,
                    "expected a table with url, type and timeout_ms,"
                    f" got {_show(entry)}",
                )
                continue
            result = self.table(entry_path + ".", entry, _WEBHOOK_KINDS)
            if "url" in result.unset:
                self.error(
                    entry_path + ".url",
                    f"required, but $env:{result.unset['url']} is not set",
                )
            elif not result.present("url"):
                self.error(
                    entry_path + ".url", "required: an http:// or https:// URL"
                )
            if "url" in result.values:
                webhooks.append(Webhook(**result.values))
        return tuple(webhooks)


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
        C{key_path}, C{dotenv}, C{cache_directory}, C{execute_dir}) are
        resolved against; a C{dotenv = true} file is C{./.env} in the current
        directory whatever C{base_dir} is.
    @param source: the file the data came from, kept in L{Config.source}.
    @return: the configuration.
    @raise ConfigError: listing every problem found.
    """
    env = dict(os.environ if environ is None else environ)
    parser = _Parser(env, base_dir)
    if not isinstance(data, Mapping):
        raise ConfigError([f"(root): expected a table, got {_show(data)}"])
    values = parser.root(data)
    servers = parser.servers(data)
    if parser.errors:
        raise ConfigError(parser.errors)
    return Config(servers=tuple(servers), source=source, **values)


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
