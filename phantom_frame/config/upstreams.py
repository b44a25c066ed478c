"""
The keys of several upstreams: C{upstreams} (a list of origin URLs, instead
of C{proxy_url}), C{load_balancing} and the C{[server.NAME.health_check]}
table, each error named by its key path
(C{server.api.health_check.interval: expected a number > 0 ...}).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from phantom_frame.config.network import url_check
from phantom_frame.config.tables import ENV_PREFIX, Kind, Table, TableChecker
from phantom_frame.config.values import (
    Invalid,
    env_float,
    env_int,
    env_list,
    env_text,
    integer_check,
    is_path,
    seconds_check,
    show,
    string_check,
)
from phantom_frame.proxy.health import HealthCheck

__all__ = ["HEALTH_CHECK_KINDS", "UPSTREAMS_KIND", "check_health_check", "check_upstream_keys"]

_URL = url_check("an http:// or https:// URL with a host", False)


def _check_upstreams(value: object) -> Tuple[str, ...]:
    """
    @return: C{value}, a non-empty list of distinct origin URLs, as a tuple.
    @raise Invalid: otherwise, each bad URL at its index.
    """
    if not isinstance(value, list) or not value:
        raise Invalid(f'expected a non-empty list of origin URLs ("http://10.0.0.1:8080"), got {show(value)}')
    problems: List[Tuple[str, str]] = []
    seen: Dict[str, int] = {}
    for index, item in enumerate(value):
        try:
            _URL(item)
        except Invalid as e:
            problems.append((f"[{index}]", str(e)))
            continue
        if item in seen:
            problems.append((f"[{index}]", f"{show(item)} is already upstreams[{seen[item]}]"))
        seen.setdefault(item, index)
    if problems:
        raise Invalid.several(problems)
    return tuple(value)


#: The C{upstreams} key.
UPSTREAMS_KIND = Kind(check=_check_upstreams, from_env=env_list)


def _path(text: str) -> str:
    if not is_path(text):
        raise ValueError(text)
    return text


#: The keys of a C{[server.NAME.health_check]} table.
HEALTH_CHECK_KINDS: Dict[str, Kind] = {
    "path": Kind(check=string_check(_path, 'a path starting with "/"'), from_env=env_text),
    "interval": Kind(check=seconds_check(0, inclusive=False), from_env=env_float),
    "timeout": Kind(check=seconds_check(0, inclusive=False), from_env=env_float),
    "unhealthy_after": Kind(check=integer_check(1), from_env=env_int),
    "healthy_after": Kind(check=integer_check(1), from_env=env_int),
}


def check_health_check(checker: TableChecker, path: str, raw: object) -> Optional[HealthCheck]:
    """
    Check a C{health_check} table.

    @param checker: collects the errors.
    @param path: its key path (C{server.NAME.health_check}).
    @param raw: its value.
    @return: the check, or L{None} after an error.
    """
    if isinstance(raw, str) and raw.startswith(ENV_PREFIX):
        checker.error(path, "a health check is a [server.NAME.health_check] table and cannot come from $env:")
        return None
    if not isinstance(raw, dict):
        checker.error(path, f"expected a [server.NAME.health_check] table, got {show(raw)}")
        return None
    result = checker.table(path + ".", raw, HEALTH_CHECK_KINDS)
    if result.failed:
        return None
    return HealthCheck(**result.values)


def check_upstream_keys(checker: TableChecker, path: str, result: Table) -> None:
    """
    Check what no single key of a server says: C{upstreams} replaces
    C{proxy_url}.

    @param path: the server's key path, C{server.NAME}.
    @param result: the outcome of its keys.
    """
    if result.present("upstreams") and result.present("proxy_url"):
        checker.error(f"{path}.upstreams", "replaces proxy_url; give only one of the two")
