"""
Checking the configuration values that name places on the network: the
interfaces listeners bind to (L{check_host}), endpoint descriptions
(L{check_listen}) and origin and webhook URLs (L{url_check}).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable
from urllib.parse import urlsplit

from phantom_frame.config.values import Invalid, show

__all__ = ["check_host", "check_listen", "url_check"]


_HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?\Z"
)


def check_host(value: object) -> str:
    """
    @return: C{value}, an IP address (without brackets) or a host name.
    @raise Invalid: otherwise.
    """
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if _HOSTNAME.match(value):
                return value
        else:
            return value
    raise Invalid(
        'expected an IP address or host name such as "0.0.0.0", "127.0.0.1"'
        f' or "::", without brackets, got {show(value)}'
    )


_LISTEN = re.compile(r"[A-Za-z][A-Za-z0-9_+.-]*:.")


def check_listen(value: object) -> str:
    """
    @return: C{value}, a Twisted endpoint description (C{TYPE:ARGS}).
    @raise Invalid: otherwise.
    """
    if isinstance(value, str) and _LISTEN.match(value) and value == value.strip():
        return value
    raise Invalid(
        'expected a Twisted endpoint description such as "tcp:3000",'
        ' "unix:/run/phantom-frame.sock" or "systemd:domain=INET:index=0",'
        f" got {show(value)}"
    )


def url_check(what: str, allow_query: bool) -> Callable[[object], str]:
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
                raise Invalid(f"{expected}, got {show(value)} ({e})") from None
            if parts.scheme in ("http", "https") and parts.hostname:
                if parts.username is not None or parts.password is not None:
                    raise Invalid(
                        f"{expected}, without user:password@, got {show(value)}"
                    )
                if allow_query or ("?" not in value and "#" not in value):
                    return value
                raise Invalid(
                    f"{expected}, without a query or fragment, got {show(value)}"
                )
        raise Invalid(f"{expected}, got {show(value)}")

    return check
