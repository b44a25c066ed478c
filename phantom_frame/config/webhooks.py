"""
The C{[[server.NAME.webhooks]]} arrays of tables.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from phantom_frame.config.tables import ENV_PREFIX, Kind, TableChecker
from phantom_frame.config.values import show
from phantom_frame.proxy.settings import Webhook

__all__ = ["check_webhooks"]


def check_webhooks(
    checker: TableChecker, path: str, raw: object, kinds: Dict[str, Kind]
) -> Optional[Tuple[Webhook, ...]]:
    """
    Check a C{webhooks} array of tables.

    @param checker: the checker walking the file.
    @param path: its key path.
    @param raw: its value.
    @param kinds: how each key of a webhook table is checked.
    @return: the webhooks, or L{None} to keep the default.
    """
    if isinstance(raw, str) and raw.startswith(ENV_PREFIX):
        text = checker.env_reference(path, raw)
        if isinstance(text, str):
            checker.error(
                path,
                "webhooks are [[server.NAME.webhooks]] tables and cannot come"
                " from $env:",
            )
        return None
    if not isinstance(raw, list):
        checker.error(
            path,
            f"expected [[server.NAME.webhooks]] tables, got {show(raw)}",
        )
        return None
    webhooks: List[Webhook] = []
    for index, entry in enumerate(raw):
        entry_path = f"{path}[{index}]"
        if not isinstance(entry, dict):
            checker.error(
                entry_path,
                "expected a table with url, type and timeout_ms,"
                f" got {show(entry)}",
            )
            continue
        result = checker.table(entry_path + ".", entry, kinds)
        if "url" in result.unset:
            checker.error(
                entry_path + ".url",
                f"required, but $env:{result.unset['url']} is not set",
            )
        elif not result.present("url"):
            checker.error(
                entry_path + ".url", "required: an http:// or https:// URL"
            )
        if "url" in result.values:
            webhooks.append(Webhook(**result.values))
    return tuple(webhooks)
