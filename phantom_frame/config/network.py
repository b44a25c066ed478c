"""
Checking the configuration values that name places on the network: the
interfaces listeners bind to (L{check_host}), endpoint descriptions
(L{check_listen}) and origin and webhook URLs (L{url_check}).

Each refuses what the running proxy could not use, so that a file the
validator accepts also starts: endpoint descriptions go through Twisted's
own endpoint parser, and URL hosts through the IDNA encoding the origin
client applies.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlsplit

from twisted.internet.endpoints import _parse, _parseServer

from phantom_frame.config.values import Invalid, has_control, show

__all__ = ["check_host", "check_listen", "url_check"]


_HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?\Z"
)
_NUMERIC_LABEL = re.compile(r"(?:^|\.)[0-9]+\.?\Z")
_HOST_FORM = (
    'expected an IP address or host name such as "0.0.0.0", "127.0.0.1"'
    ' or "::", without brackets'
)


def _address_problem(value: str) -> Optional[str]:
    """
    @param value: an interface to bind to.
    @return: why no socket can bind to it, or L{None} when it is an IP
        address or a host name (whose last label is not all digits, so
        C{"999.999.999.999"} is a bad IPv4 address, not a name).
    """
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.match(value):
            return "not an IP address or host name"
        if _NUMERIC_LABEL.search(value):
            return "not a valid IPv4 address"
    return None


def check_host(value: object) -> str:
    """
    @return: C{value}, an IP address (without brackets) or a host name.
    @raise Invalid: otherwise.
    """
    if isinstance(value, str):
        problem = _address_problem(value)
        if problem is None:
            return value
        raise Invalid(f"{_HOST_FORM}, got {show(value)} ({problem})")
    raise Invalid(f"{_HOST_FORM}, got {show(value)}")


_LISTEN = re.compile(r"[A-Za-z][A-Za-z0-9_+.-]*:.")
_LISTEN_FORM = (
    'expected a Twisted endpoint description such as "tcp:3000",'
    ' "unix:/run/phantom-frame.sock" or "systemd:domain=INET:index=0"'
)
_TCP_TYPES = ("tcp", "tcp6", "ssl")


def _port_problem(args: List[str], kw: Dict[str, str]) -> Optional[str]:
    """
    @param args: the positional arguments of a C{tcp}, C{tcp6} or C{ssl}
        description, after its type.
    @param kw: its keyword arguments.
    @return: what is wrong with its port and interface, or L{None}.
    """
    port = args[0] if args else kw.get("port")
    if port is None:
        return "the port is missing"
    if not (port.isdigit() and int(port) <= 65535):
        return f"port {port!r} is not a number 0-65535"
    interface = kw.get("interface", "")
    if interface:
        problem = _address_problem(interface)
        if problem is not None:
            return f"interface {interface!r}: {problem}"
    return None


def _systemd_problem(kw: Dict[str, str]) -> Optional[str]:
    """
    Check a C{systemd:} description without looking for the inherited
    sockets, which exist only when systemd starts the proxy.

    @param kw: its keyword arguments.
    @return: what is wrong with them, or L{None}.
    """
    domain = kw.get("domain", "")
    if not (domain.isalnum() and hasattr(socket, f"AF_{domain}")):
        return f"domain {domain!r} is not an address family such as INET or UNIX"
    if ("index" in kw) == ("name" in kw):
        return "give exactly one of index or name"
    if "index" in kw and not kw["index"].isdigit():
        return f"index {kw['index']!r} is not a number"
    unknown = sorted(set(kw) - {"domain", "index", "name"})
    if unknown:
        return f"unknown argument {unknown[0]!r}"
    return None


def _endpoint_problem(description: str) -> Optional[str]:
    """
    @param description: a server endpoint description.
    @return: why no listener can be made from it, or L{None}.
    """
    if has_control(description):
        return "it holds a control character"
    try:
        args, kw = _parse(description)
        kind = args[0].lower()
        if kind in _TCP_TYPES:
            problem = _port_problem(args[1:], kw)
            if problem is not None:
                return problem
        if kind == "systemd":
            return _systemd_problem(kw)
        # Converts and checks the arguments of the built-in types (reading
        # an ssl: certificate), finds the plugin of the others.
        _parseServer(description, None)
    except ValueError as e:
        message = str(e)
        if message.startswith("Unknown endpoint type: "):
            return f"unknown endpoint type {message.split(': ', 1)[1]}"
        return message
    except TypeError as e:
        # "_parseTCP() got an unexpected keyword argument 'colour'"
        return re.sub(r"^\w+\(\) ", "", str(e))
    except OSError as e:  # the files of an ssl: description
        return f"cannot read {e.filename!r}: {e.strerror}"
    except Exception as e:  # a plugin's own error
        return f"{type(e).__name__}: {e}"
    return None


def check_listen(value: object) -> str:
    """
    @return: C{value}, a Twisted endpoint description (C{TYPE:ARGS}) that
        Twisted's endpoint parser accepts: a known type, ports 0-65535,
        addresses a socket can bind to; C{systemd:} descriptions are checked
        without looking for inherited sockets.
    @raise Invalid: otherwise.
    """
    if isinstance(value, str) and _LISTEN.match(value) and value == value.strip():
        problem = _endpoint_problem(value)
        if problem is None:
            return value
        raise Invalid(f"{_LISTEN_FORM}, got {show(value)} ({problem})")
    raise Invalid(f"{_LISTEN_FORM}, got {show(value)}")


def _host_problem(netloc: str, hostname: str) -> Optional[str]:
    """
    @param netloc: a URL's C{host[:port]}.
    @param hostname: its host.
    @return: why the origin client could not encode it, or L{None}.
    """
    try:
        # As phantom_frame.proxy.origin.Origin encodes it for every request.
        netloc.encode("idna" if not netloc.isascii() else "ascii")
        hostname.encode("idna")
    except UnicodeError as e:
        reason: Any = e.__cause__ or e
        return f"host {show(hostname)} is not a valid international domain name: {reason}"
    return None


def url_check(what: str, allow_query: bool) -> Callable[[object], str]:
    """
    @param what: the expected form, for error messages.
    @param allow_query: whether a query string and fragment are allowed.
    @return: a check accepting C{http://} and C{https://} URLs with a host
        the origin client can encode (IDNA), without spaces or control
        characters.
    """

    def check(value: object) -> str:
        expected = f"expected {what}"
        if isinstance(value, str) and has_control(value):
            raise Invalid(
                f"{expected}, without control characters, got {show(value)}"
            )
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
                problem = _host_problem(parts.netloc, parts.hostname)
                if problem is not None:
                    raise Invalid(f"{expected}, got {show(value)} ({problem})")
                if allow_query or ("?" not in value and "#" not in value):
                    return value
                raise Invalid(
                    f"{expected}, without a query or fragment, got {show(value)}"
                )
        raise Invalid(f"{expected}, got {show(value)}")

    return check
