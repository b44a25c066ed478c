"""
Talking to a running proxy's control site from the command line
(C{phantom-frame purge}, C{stats}, C{top}, C{warm}): where it listens and
its token, read from the configuration, and a small blocking HTTP client
whose failures are one readable line (L{ControlError}).

The client is C{http.client}, not Twisted: each command makes a few
requests and exits, so it runs no reactor.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from typing import Any, Dict, List, Optional, Tuple

import attr

from phantom_frame.config import Config, ConfigError, load_config

__all__ = [
    "ControlAddress",
    "ControlClient",
    "ControlError",
    "client_for",
    "control_address",
    "parse_address",
]

#: Addresses a control site listening on every interface is reached at.
_ANY = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}

_SPLIT = re.compile(r"(?<!\\):")


class ControlError(Exception):
    """
    The control site could not be used; the message is one line saying
    why.
    """


@attr.s(frozen=True, auto_attribs=True)
class ControlAddress:
    """
    Where a control site listens.

    @ivar host: the TCP host, or L{None} for a UNIX socket.
    @ivar port: the TCP port (0 for a UNIX socket).
    @ivar path: the UNIX socket's path, or L{None}.
    """

    host: Optional[str] = None
    port: int = 0
    path: Optional[str] = None

    def __str__(self) -> str:
        """
        @return: C{HOST:PORT} (C{[HOST]:PORT} for IPv6), or C{unix:PATH}.
        """
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def _loopback(host: str) -> str:
    return _ANY.get(host, host)


def parse_address(text: str) -> ControlAddress:
    """
    Read a C{--control} value.

    @param text: C{HOST:PORT}, C{[IPV6]:PORT}, C{PORT}, C{http://HOST:PORT}
        or C{unix:PATH}.
    @return: the address.
    @raise ValueError: when it is none of those.
    """
    if text.startswith("unix:"):
        if not text[5:]:
            raise ValueError(f"expected unix:PATH, got {text!r}")
        return ControlAddress(path=text[5:])
    rest = text[len("http://") :] if text.startswith("http://") else text
    rest = rest.rstrip("/")
    if rest.isdigit():
        host, port = "127.0.0.1", rest
    elif rest.startswith("["):
        host, _, port = rest[1:].partition("]:")
    else:
        host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT or unix:PATH, got {text!r}")
    return ControlAddress(host=_loopback(host), port=int(port))


def _endpoint_address(description: str) -> ControlAddress:
    """
    @param description: a C{control_listen} endpoint description.
    @return: the address a client reaches it at.
    @raise ControlError: for an endpoint a client cannot be told how to
        reach (C{systemd:}, C{ssl:}, a port the system chooses).
    """
    parts = [re.sub(r"\\(.)", r"\1", part) for part in _SPLIT.split(description)]
    kind = parts[0].lower()
    positional: List[str] = []
    named: Dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            named[key] = value
        else:
            positional.append(part)
    hint = "; pass --control HOST:PORT"
    if kind == "unix":
        path = named.get("address") or (positional[0] if positional else "")
        if path:
            return ControlAddress(path=path)
    elif kind in ("tcp", "tcp6"):
        port = named.get("port") or (positional[0] if positional else "")
        if port.isdigit() and int(port) == 0:
            raise ControlError(f"control_listen {description!r} listens on a port the system chooses{hint}")
        if port.isdigit():
            default = "::" if kind == "tcp6" else "0.0.0.0"
            return ControlAddress(host=_loopback(named.get("interface", default)), port=int(port))
    raise ControlError(f"cannot tell where control_listen {description!r} is reached{hint}")


def control_address(config: Config) -> ControlAddress:
    """
    @param config: the proxy's configuration.
    @return: where its control site listens: C{control_listen} (its
        C{tcp:}, C{tcp6:} or C{unix:} form), else C{control_bind_address}
        and C{control_port}; an interface for every address is reached on
        loopback.
    @raise ControlError: when that cannot be told (see
        L{_endpoint_address}).
    """
    if config.control_listen is not None:
        return _endpoint_address(config.control_listen)
    return ControlAddress(host=_loopback(config.control_bind_address), port=config.control_port)


class _UnixConnection(http.client.HTTPConnection):
    """
    An HTTP connection over a UNIX socket.
    """

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        """
        Connect to the socket.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _reason(error: BaseException) -> str:
    """
    @return: an OS error's reason, in lower case (C{"connection refused"}).
    """
    if isinstance(error, socket.timeout):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


class ControlClient:
    """
    Makes requests to one control site, with its bearer token.

    @ivar address: where it listens.
    @ivar token: its C{control_auth}, or L{None}.
    """

    def __init__(self, address: ControlAddress, token: Optional[str] = None, timeout: float = 30.0) -> None:
        """
        @param address: where the control site listens.
        @param token: its C{control_auth}, or L{None} for none.
        @param timeout: seconds to wait for a connection or an answer.
        """
        self.address = address
        self.token = token
        self._timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Tuple[int, bytes]:
        """
        @param method: C{GET} or C{POST}.
        @param path: the route, with its query.
        @param body: what to send as JSON, or L{None}.
        @return: the answer's status and body, when it is a success.
        @raise ControlError: when the control site cannot be reached, or
            answers with an error (401: the token; any other: its reason).
        """
        if self.address.path is not None:
            connection: http.client.HTTPConnection = _UnixConnection(self.address.path, self._timeout)
        else:
            connection = http.client.HTTPConnection(self.address.host, self.address.port, timeout=self._timeout)
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = "Bearer " + self.token
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            try:
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                content = response.read()
            finally:
                connection.close()
        except (OSError, http.client.HTTPException) as e:
            raise ControlError(f"cannot reach the control site at {self.address}: {_reason(e)}") from None
        status = response.status
        if status < 400:
            return status, content
        if status == 401:
            if self.token is None:
                raise ControlError(
                    f"the control site at {self.address} requires a token (401): set control_auth"
                )
            raise ControlError(
                f"the control site at {self.address} refused the token (401): check control_auth"
            )
        try:
            reason = json.loads(content)["error"]
        except (ValueError, KeyError, TypeError):
            reason = response.reason
        raise ControlError(f"the control site at {self.address} answered {status} to {method} {path}: {reason}")

    def json(self, method: str, path: str, body: Any = None) -> Any:
        """
        Make a request and decode its JSON answer.

        @raise ControlError: as L{request}, or when the answer is not JSON.
        """
        _, content = self.request(method, path, body)
        try:
            return json.loads(content)
        except ValueError:
            raise ControlError(f"the control site at {self.address} answered {path} with no JSON") from None

    def text(self, path: str) -> str:
        """
        @return: the text of C{GET path} (C{/metrics}).
        @raise ControlError: as L{request}.
        """
        return self.request("GET", path)[1].decode("utf-8", "replace")


def client_for(path: str, address: Optional[str] = None, timeout: float = 30.0) -> ControlClient:
    """
    A client for the control site a configuration file names.

    @param path: the configuration file (read with
        L{phantom_frame.config.load_config}, C{$env:} references and the
        C{dotenv} file included), for the token, and the address unless
        C{address} is given.
    @param address: a C{--control} value (see L{parse_address}), or
        L{None}.
    @raise ControlError: when the file is invalid, or the address cannot
        be told or read.
    """
    try:
        config = load_config(path)
    except ConfigError as e:
        first = e.errors[0] if e.errors else "invalid"
        more = f" (and {len(e.errors) - 1} more: run phantom-frame check {path})" if len(e.errors) > 1 else ""
        raise ControlError(f"{first}{more}" if first.startswith(path) else f"{path}: {first}{more}") from None
    if address is not None:
        try:
            where = parse_address(address)
        except ValueError as e:
            raise ControlError(f"--control: {e}") from None
    else:
        where = control_address(config)
    return ControlClient(where, config.control_auth, timeout)
