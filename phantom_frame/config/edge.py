"""
The edge blocks and keys of a configuration file: C{[static.NAME]} and
C{[redirect.NAME]} blocks (checked by L{route_blocks}), and the per-server
C{rewrite}, C{headers}, C{purge_method} and C{purge_allow} keys.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Tuple

from phantom_frame.config.network import url_check
from phantom_frame.config.tables import Kind, TableChecker, quote_key
from phantom_frame.config.values import (
    Invalid,
    check_bind_to,
    check_bool,
    check_path,
    env_bool,
    env_int,
    env_list,
    env_text,
    has_control,
    show,
)
from phantom_frame.http.routes import REDIRECT_STATUSES, RedirectConfig, StaticConfig
from phantom_frame.proxy.rules import PROTECTED, HeaderRules, Rewrite, TemplateError, check_template

__all__ = [
    "check_headers",
    "ROUTE_BLOCKS",
    "SERVER_EDGE_KINDS",
    "check_cidrs",
    "check_index",
    "check_redirect_to",
    "purge_problems",
    "route_blocks",
]

_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")
_ABSOLUTE = url_check("an http:// or https:// URL with a host", True)


def check_index(value: object) -> str:
    """
    @return: C{value}, a file name (no C{/}, not C{.} or C{..}).
    @raise Invalid: otherwise.
    """
    if (
        isinstance(value, str)
        and value not in ("", ".", "..")
        and "/" not in value
        and "\\" not in value
        and not has_control(value)
    ):
        return value
    raise Invalid(f'expected a file name such as "index.html" (no "/"), got {show(value)}')


def check_redirect_to(value: object) -> str:
    """
    @return: C{value}: an absolute C{http(s)://} URL, or a path starting
        with one C{/}, without spaces or control characters.
    @raise Invalid: otherwise.
    """
    form = 'an http:// or https:// URL, or a path starting with "/"'
    if isinstance(value, str) and value.startswith("/"):
        if value.startswith("//"):
            raise Invalid(f"{form} (not a protocol-relative //host), got {show(value)}")
        if "#" in value or has_control(value) or any(c.isspace() for c in value):
            raise Invalid(f"{form}, without spaces, control characters or #, got {show(value)}")
        return value
    try:
        return _ABSOLUTE(value)
    except Invalid:
        raise Invalid(f"expected {form}, got {show(value)}") from None


def check_redirect_status(value: object) -> int:
    """
    @return: C{value}, one of L{REDIRECT_STATUSES}.
    @raise Invalid: otherwise.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value in REDIRECT_STATUSES:
        return value
    choices = ", ".join(str(s) for s in REDIRECT_STATUSES)
    raise Invalid(f"expected one of {choices}, got {show(value)}")


def check_cidrs(value: object) -> Tuple[str, ...]:
    """
    @return: C{value}, a list of IP addresses or networks in CIDR form
        (C{"10.0.0.0/8"}, C{"::1"}), as a tuple.
    @raise Invalid: otherwise, naming each bad item.
    """
    form = 'an IP address or a network such as "10.0.0.0/8" or "::1/128"'
    if not isinstance(value, list):
        raise Invalid(f"expected a list of strings, each {form}, got {show(value)}")
    problems = []
    for index, item in enumerate(value):
        try:
            if not isinstance(item, str):
                raise ValueError(item)
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            problems.append((f"[{index}]", f"expected {form}, got {show(item)}"))
    if problems:
        raise Invalid.several(problems)
    return tuple(value)


def check_rewrite(value: object) -> Tuple[Rewrite, ...]:
    """
    @return: C{value}, a list of C{{from = REGEX, to = TEMPLATE}} tables,
        compiled (see L{Rewrite}).
    @raise Invalid: naming each bad table or key (C{[1].from}).
    """
    form = 'a list of tables {from = REGEX, to = "/TEMPLATE"}'
    if not isinstance(value, list):
        raise Invalid(f"expected {form}, got {show(value)}")
    rules = []
    problems: List[Tuple[str, str]] = []
    for index, item in enumerate(value):
        where = f"[{index}]"
        if not isinstance(item, dict):
            problems.append((where, f"expected a table {{from, to}}, got {show(item)}"))
            continue
        extra = sorted(set(item) - {"from", "to"})
        for key in extra:
            problems.append((f"{where}.{quote_key(key)}", "unknown key; a rule has from and to"))
        for key in ("from", "to"):
            if not isinstance(item.get(key), str):
                problems.append((f"{where}.{key}", f"expected a string, got {show(item.get(key))}"))
        if extra or not all(isinstance(item.get(k), str) for k in ("from", "to")):
            continue
        try:
            rules.append(Rewrite.compile(item["from"], item["to"]))
        except re.error as e:
            problems.append((f"{where}.from", f"invalid regular expression {item['from']!r}: {e}"))
        except TemplateError as e:
            problems.append((f"{where}.to", str(e)))
    if problems:
        raise Invalid.several(problems)
    return tuple(rules)


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HEADER_KEYS = ("request_set", "request_remove", "response_set", "response_remove")


def _header_name(name: object, where: str, problems: List[Tuple[str, str]]) -> bytes:
    if not isinstance(name, str) or not _TOKEN.match(name):
        problems.append((where, f"expected a header name, got {show(name)}"))
        return b""
    if name.lower().encode("ascii") in PROTECTED:
        problems.append((where, f"{name} belongs to the proxy: it cannot be set or removed"))
        return b""
    return name.encode("ascii")


def check_headers(value: object) -> HeaderRules:
    """
    @return: C{value}, a table C{{request_set, request_remove, response_set,
        response_remove}} (sets are tables of header name to value, which
        may use C{$remote_addr}, C{$host} and C{$request_id}; removes are
        lists of names), as L{HeaderRules}.
    @raise Invalid: naming each bad key or value (C{.response_set.X-A}).
    """
    if not isinstance(value, dict):
        raise Invalid(f"expected a table with {', '.join(_HEADER_KEYS)}, got {show(value)}")
    problems: List[Tuple[str, str]] = []
    sets: Dict[str, Tuple[Tuple[bytes, str], ...]] = {}
    removes: Dict[str, frozenset] = {}
    for key in sorted(set(value) - set(_HEADER_KEYS)):
        problems.append((f".{quote_key(key)}", f"unknown key; expected one of {', '.join(_HEADER_KEYS)}"))
    for key in ("request_set", "response_set"):
        table = value.get(key, {})
        if not isinstance(table, dict):
            problems.append((f".{key}", f"expected a table of header name = value, got {show(table)}"))
            continue
        pairs = []
        for name, template in table.items():
            where = f".{key}.{quote_key(name)}"
            raw = _header_name(name, where, problems)
            if not isinstance(template, str):
                problems.append((where, f"expected a string, got {show(template)}"))
                continue
            try:
                check_template(template)
            except ValueError as e:
                problems.append((where, str(e)))
                continue
            if raw:
                pairs.append((raw, template))
        sets[key] = tuple(pairs)
    for key in ("request_remove", "response_remove"):
        names = value.get(key, [])
        if not isinstance(names, list):
            problems.append((f".{key}", f"expected a list of header names, got {show(names)}"))
            continue
        raws = [_header_name(n, f".{key}[{i}]", problems) for i, n in enumerate(names)]
        removes[key] = frozenset(r.lower() for r in raws if r)
    if problems:
        raise Invalid.several(problems)
    return HeaderRules(
        sets["request_set"], removes["request_remove"], sets["response_set"], removes["response_remove"]
    )


def _no_tables_from_env(text: str) -> Any:
    raise Invalid("tables, which cannot come from $env:")


#: The edge keys of a C{[server.NAME]} block.
SERVER_EDGE_KINDS: Dict[str, Kind] = {
    "rewrite": Kind(check_rewrite, _no_tables_from_env),
    "headers": Kind(check_headers, _no_tables_from_env),
    "purge_method": Kind(check_bool, env_bool),
    "purge_allow": Kind(check_cidrs, env_list),
}


def purge_problems(servers: Any, control_auth: Any) -> List[Tuple[str, str]]:
    """
    @param servers: C{(name, bind_to, proxy settings)} of each server.
    @param control_auth: the root C{control_auth}, or L{None}.
    @return: C{(key path, message)} for each server whose C{purge_method}
        nobody could use: no C{control_auth} and no C{purge_allow}.
    """
    return [
        (
            f"server.{quote_key(name)}.purge_method",
            "true, but there is no control_auth and no purge_allow: every PURGE"
            " would be refused",
        )
        for name, _, proxy in servers
        if proxy.purge_method and control_auth is None and not proxy.purge_allow
    ]


_STATIC_KINDS: Dict[str, Kind] = {
    "bind_to": Kind(check_bind_to, env_text),
    "root": Kind(check_path, env_text),
    "index": Kind(check_index, env_text),
}

_REDIRECT_KINDS: Dict[str, Kind] = {
    "bind_to": Kind(check_bind_to, env_text),
    "to": Kind(check_redirect_to, env_text),
    "status": Kind(check_redirect_status, env_int),
}

#: The root keys holding route blocks, with the keys each block accepts.
ROUTE_BLOCKS: Dict[str, Tuple[str, ...]] = {
    "static": tuple(_STATIC_KINDS),
    "redirect": tuple(_REDIRECT_KINDS),
}


def _static(checker: TableChecker, path: str, values: Dict[str, Any]) -> Any:
    values["root"] = root = checker.path(values["root"])
    if not os.path.isdir(root):
        what = "is not a directory" if os.path.exists(root) else "does not exist"
        checker.error(f"{path}.root", f"{root!r} {what}")
        return None
    return values


_BUILDERS: Dict[str, Tuple[Mapping[str, Kind], Tuple[str, ...], Callable[..., Any], Any]] = {
    "static": (_STATIC_KINDS, ("bind_to", "root"), _static, StaticConfig),
    "redirect": (_REDIRECT_KINDS, ("bind_to", "to"), lambda c, p, v: v, RedirectConfig),
}


def route_blocks(
    checker: TableChecker, data: Mapping[str, Any], kind: str, owners: Dict[str, str]
) -> List[Any]:
    """
    Check the C{[static.NAME]} or C{[redirect.NAME]} blocks of a file.

    @param checker: collects the errors.
    @param data: the whole file.
    @param kind: C{"static"} or C{"redirect"}.
    @param owners: the key path of the block holding each C{bind_to} so far
        (servers first), updated: a prefix may be bound once, whatever the
        kinds of the blocks.
    @return: the valid blocks, as L{StaticConfig} or L{RedirectConfig}, in
        file order.
    """
    kinds, required, finish, make = _BUILDERS[kind]
    blocks = data.get(kind)
    if blocks is None:
        return []
    if not isinstance(blocks, dict):
        checker.error(kind, f"expected [{kind}.NAME] tables, got {show(blocks)}")
        return []
    found: List[Any] = []
    for name, block in blocks.items():
        path = f"{kind}.{quote_key(name)}"
        if not isinstance(block, dict):
            checker.error(path, f"expected a [{kind}.NAME] table, got {show(block)}")
            continue
        if not _NAME.match(name):
            checker.error(path, f"a {kind} name is letters, digits, _ and -")
        result = checker.table(path + ".", block, kinds)
        missing = [key for key in required if not result.present(key)]
        for key in missing:
            checker.error(f"{path}.{key}", "required")
        bind_to = result.values.get("bind_to")
        if bind_to is not None:
            owner = owners.get(bind_to)
            if owner is None:
                owners[bind_to] = path
            elif bind_to == "*":
                checker.error(f"{path}.bind_to", f'only one block may use "*", and {owner} does')
            else:
                checker.error(f"{path}.bind_to", f"{bind_to!r} is already used by {owner}")
        if missing or result.failed:
            continue
        values = finish(checker, path, dict(result.values))
        if values is not None:
            found.append(make(name=name, **values))
    return found
