"""
The C{[[server.NAME.rate_limits]]} tables: C{by}, C{rate}, C{burst} and
C{paths}, each error named by its key path
(C{server.api.rate_limits[0].rate: expected a rate such as "100/s" ...}).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from phantom_frame.config.tables import ENV_PREFIX, Kind, TableChecker
from phantom_frame.config.values import (
    env_int,
    env_list,
    env_text,
    integer_check,
    list_check,
    show,
    string_check,
)
from phantom_frame.proxy.ratelimit import (
    BY_FORM,
    RATE_FORM,
    RateLimit,
    check_by,
    is_path_glob,
    parse_rate,
)

__all__ = ["RATE_LIMIT_KINDS", "check_rate_limits"]


_rate = string_check(parse_rate, RATE_FORM)
_by = string_check(check_by, BY_FORM)


#: The keys of one C{[[server.NAME.rate_limits]]} table.
RATE_LIMIT_KINDS: Dict[str, Kind] = {
    "by": Kind(check=_by, from_env=env_text),
    "rate": Kind(check=_rate, from_env=env_text),
    "burst": Kind(check=integer_check(1), from_env=env_int),
    "paths": Kind(
        check=list_check(is_path_glob, 'a path glob starting with "/" or "*" ("/api/*")'),
        from_env=env_list,
    ),
}


def check_rate_limits(checker: TableChecker, path: str, raw: object) -> Optional[Tuple[RateLimit, ...]]:
    """
    Check a C{rate_limits} array of tables.

    @param checker: collects the errors.
    @param path: its key path (C{server.NAME.rate_limits}).
    @param raw: its value.
    @return: the limits, or L{None} to keep the default (after an error).
    """
    if isinstance(raw, str) and raw.startswith(ENV_PREFIX):
        checker.error(path, "rate limits are [[server.NAME.rate_limits]] tables and cannot come from $env:")
        return None
    if not isinstance(raw, list):
        checker.error(path, f"expected [[server.NAME.rate_limits]] tables, got {show(raw)}")
        return None
    limits: List[RateLimit] = []
    for index, entry in enumerate(raw):
        entry_path = f"{path}[{index}]"
        if not isinstance(entry, dict):
            checker.error(entry_path, f"expected a table with by, rate, burst and paths, got {show(entry)}")
            continue
        result = checker.table(entry_path + ".", entry, RATE_LIMIT_KINDS)
        values: Dict[str, Any] = result.values
        if "rate" in result.unset:
            checker.error(entry_path + ".rate", f"required, but $env:{result.unset['rate']} is not set")
        elif not result.present("rate"):
            checker.error(entry_path + ".rate", f"required: {RATE_FORM}")
        if "rate" in values and not result.failed:
            limits.append(RateLimit(**values))
    return tuple(limits)
