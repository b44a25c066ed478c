"""
Start-up failures as one readable line naming the configuration key and
the cause (C{http_port: cannot listen on 0.0.0.0:3000: address already in
use}), never a Python traceback.

L{listener} makes the proxy's listening services: like
C{twisted.application.strports.service} (a port that cannot be listened on
stops twistd), but on a L{KeyedEndpoint}, whose failure is a
L{StartupError} naming the key.
L{startup_hook} is the C{sys.excepthook} the twistd plugin installs: it
prints a L{StartupError} as its one line.
"""

from __future__ import annotations

import re
import sys
from types import TracebackType
from typing import Any, Callable, Optional, TextIO, Type

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["KeyedEndpoint", "StartupError", "cannot_start", "listener", "startup_hook"]

ExceptHook = Callable[[Type[BaseException], BaseException, Optional[TracebackType]], Any]


class StartupError(Exception):
    """
    The proxy cannot start. C{str()} of the error is the one line that says
    why, starting with the configuration key at fault.
    """


def _reason(error: object) -> str:
    """
    @param error: an C{OSError}, or a message.
    @return: what went wrong, in lower case as it continues a sentence
        (C{"address already in use"}).
    """
    text = getattr(error, "strerror", None) or str(error)
    if re.match(r"[A-Z][a-z]", text):
        text = text[0].lower() + text[1:]
    return text.rstrip(".")


@implementer(IStreamServerEndpoint)
class KeyedEndpoint:
    """
    A server endpoint whose failures to listen say which configuration key
    describes it.

    @ivar key: the key that describes the listener (C{http_port},
        C{control_listen}, ...).
    @ivar description: its endpoint description.
    """

    def __init__(self, key: str, description: str, endpoint: IStreamServerEndpoint) -> None:
        """
        @param key: see L{key}.
        @param description: see L{description}.
        @param endpoint: where to listen.
        """
        self.key = key
        self.description = description
        self._endpoint = endpoint

    def _where(self, error: CannotListenError) -> str:
        """
        @return: C{host:port} for a TCP port, else the description.
        """
        if isinstance(error.port, int) and error.interface is not None:
            host = error.interface or "0.0.0.0"
            return f"[{host}]:{error.port}" if ":" in host else f"{host}:{error.port}"
        return self.description

    def _explain(self, failure: Failure) -> Failure:
        """
        @param failure: why the wrapped endpoint could not listen.
        @return: a L{StartupError} naming L{key}, the address and the cause,
            for a L{CannotListenError} or an C{OSError} (a UNIX socket's
            lock file, for one); other failures as they are.
        """
        error = failure.value
        if isinstance(error, CannotListenError):
            where, reason = self._where(error), _reason(error.socketError)
        elif isinstance(error, OSError):
            where, reason = self.description, _reason(error)
        else:
            return failure
        return Failure(StartupError(f"{self.key}: cannot listen on {where}: {reason}"))

    def listen(self, protocolFactory: Any) -> Deferred[IListeningPort]:
        """
        Listen on the wrapped endpoint.

        @param protocolFactory: the factory to listen with.
        @return: a L{Deferred} firing with the listening port, or failing
            with a L{StartupError}.
        """
        return self._endpoint.listen(protocolFactory).addErrback(self._explain)


def listener(key: str, description: str, factory: Any, reactor: Any) -> StreamServerEndpointService:
    """
    Make a listening service, as C{twisted.application.strports.service}
    does: when it cannot listen, C{privilegedStartService} raises (and
    twistd exits), here a L{StartupError} naming the key and the cause.

    @param key: the configuration key that describes the listener.
    @param description: a server endpoint description (C{tcp:3000},
        C{unix:/run/pf.sock}, C{systemd:domain=INET:index=0}).
    @param factory: the protocol factory to listen with.
    @param reactor: the reactor to listen on.
    @return: a service listening on C{description} when it starts.
    @raise StartupError: when no endpoint can be made from C{description}
        (a C{systemd:} socket that was not passed, for one).
    """
    try:
        endpoint = serverFromString(reactor, description)
    except LookupError:
        raise StartupError(
            f"{key}: cannot listen on {description}: no such socket was passed"
            " (systemd socket activation)"
        ) from None
    except Exception as e:
        raise StartupError(f"{key}: cannot listen on {description}: {_reason(e)}") from None
    service = StreamServerEndpointService(KeyedEndpoint(key, description, endpoint), factory)
    service._raiseSynchronously = True
    return service


def cannot_start(error: OSError) -> StartupError:
    """
    @param error: why building the proxy failed (a cache directory that
        cannot be made, for one).
    @return: the L{StartupError} that says so, naming the file.
    """
    where = f"{error.filename}: " if error.filename else ""
    return StartupError(f"cannot start: {where}{_reason(error)}")


def startup_hook(previous: ExceptHook, stderr: Optional[TextIO] = None) -> ExceptHook:
    """
    @param previous: the C{sys.excepthook} to call for anything else.
    @param stderr: where the line goes; C{sys.stderr} at the time (which
        twistd may have redirected to its log) by default.
    @return: a C{sys.excepthook} that prints a L{StartupError} as
        C{phantom-frame: MESSAGE}, one line, without a traceback.
    """

    def hook(
        kind: Type[BaseException], value: BaseException, tb: Optional[TracebackType]
    ) -> Any:
        if not isinstance(value, StartupError):
            return previous(kind, value, tb)
        out = sys.stderr if stderr is None else stderr
        out.write(f"phantom-frame: {value}\n")
        out.flush()
        return None

    return hook
