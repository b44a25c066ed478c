"""
Tests for L{phantom_frame.startup}: listeners that name their configuration
key when they cannot listen, and the one-line report of start-up failures.
"""

from __future__ import annotations

import errno
import io
import sys
from typing import Any, List

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor, RaisingMemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.startup import StartupError, listener, startup_hook


def in_use() -> CannotListenError:
    """
    @return: what C{listenTCP} raises for a port another socket holds.
    """
    busy = OSError(errno.EADDRINUSE, "Address already in use")
    return CannotListenError("0.0.0.0", 3000, busy)


class ListenerTests(SynchronousTestCase):
    """
    L{listener} makes services that listen when they start, and raise a
    L{StartupError} naming the key when they cannot.
    """

    def start(self, reactor: Any, key: str, description: str) -> StartupError:
        """
        Start a listener that is expected to fail.

        @return: the L{StartupError} its C{privilegedStartService} raised.
        """
        service = listener(key, description, Factory(), reactor)
        return self.assertRaises(StartupError, service.privilegedStartService)

    def test_listens(self) -> None:
        """
        The service listens on its endpoint description, with its factory,
        when it starts.
        """
        reactor = MemoryReactor()
        factory = Factory()
        service = listener("http_port", "tcp:3000:interface=127.0.0.1", factory, reactor)
        self.assertEqual(reactor.tcpServers, [])
        service.privilegedStartService()
        [(port, listening, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (3000, "127.0.0.1"))
        self.assertIs(listening, factory)

    def test_portInUse(self) -> None:
        """
        A TCP port that cannot be listened on is one line: the key, the
        address and the cause.
        """
        error = self.start(RaisingMemoryReactor(in_use()), "http_port", "tcp:3000:interface=0.0.0.0")
        self.assertEqual(str(error), "http_port: cannot listen on 0.0.0.0:3000: address already in use")

    def test_ipv6(self) -> None:
        """
        An IPv6 address is shown in brackets.
        """
        refused = CannotListenError("::", 443, OSError(errno.EACCES, "Permission denied"))
        error = self.start(RaisingMemoryReactor(refused), "https_port", "tcp:443:interface=\\:\\:")
        self.assertEqual(str(error), "https_port: cannot listen on [::]:443: permission denied")

    def test_unixSocket(self) -> None:
        """
        A UNIX socket that cannot be made (its directory is missing) names
        the key and the description.
        """
        missing = FileNotFoundError(errno.ENOENT, "No such file or directory")
        error = self.start(RaisingMemoryReactor(missing), "control_listen", "unix:/missing/pf.sock")
        self.assertEqual(
            str(error),
            "control_listen: cannot listen on unix:/missing/pf.sock: no such file or directory",
        )

    def test_otherFailures(self) -> None:
        """
        A failure that is not about listening is raised as it is.
        """
        service = listener("http_port", "tcp:3000", Factory(), RaisingMemoryReactor(RuntimeError("x")))
        self.assertRaises(RuntimeError, service.privilegedStartService)

    def test_unusableDescription(self) -> None:
        """
        A description no endpoint can be made from (a systemd socket that
        was not passed, an unknown type) is a L{StartupError} at once.
        """
        error = self.assertRaises(
            StartupError, listener, "http_listen", "systemd:domain=INET:index=7", Factory(), MemoryReactor()
        )
        self.assertIn("http_listen: cannot listen on systemd:domain=INET:index=7:", str(error))
        error = self.assertRaises(StartupError, listener, "control_listen", "bogus:foo", Factory(), MemoryReactor())
        self.assertTrue(str(error).startswith("control_listen: "), str(error))


class HookTests(SynchronousTestCase):
    """
    L{startup_hook} prints a L{StartupError} as one line, and leaves every
    other exception to the previous hook.
    """

    def test_startupError(self) -> None:
        """
        A L{StartupError} is printed as C{phantom-frame: MESSAGE}, without a
        traceback, and the previous hook is not called.
        """
        called: List[Any] = []
        out = io.StringIO()
        hook = startup_hook(lambda *args: called.append(args), out)
        error = StartupError("http_port: cannot listen on 0.0.0.0:3000: address already in use")
        hook(StartupError, error, None)
        self.assertEqual(out.getvalue(), f"phantom-frame: {error}\n")
        self.assertEqual(called, [])

    def test_others(self) -> None:
        """
        Any other exception goes to the previous hook, and nothing is
        printed.
        """
        called: List[Any] = []
        out = io.StringIO()
        hook = startup_hook(lambda *args: called.append(args), out)
        error = ValueError("x")
        hook(ValueError, error, None)
        self.assertEqual(called, [(ValueError, error, None)])
        self.assertEqual(out.getvalue(), "")

    def test_stderrAtTheTime(self) -> None:
        """
        Without a stream, the line goes to C{sys.stderr} as it is when the
        hook runs (twistd redirects it to its log after the hook is made).
        """
        hook = startup_hook(sys.excepthook)
        out = io.StringIO()
        self.patch(sys, "stderr", out)
        hook(StartupError, StartupError("control_listen: x"), None)
        self.assertEqual(out.getvalue(), "phantom-frame: control_listen: x\n")
