"""
Origins started by the proxy: each server's C{execute} command runs under
L{twisted.runner.procmon.ProcessMonitor}, restarted with back-off when it
dies, its output logged with the server's name, its environment the
proxy's plus the variables of the configuration's C{dotenv} file. A
C{pre_generate} server whose origin is supervised fetches its snapshots
once the origin accepts TCP connections.
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.runner.procmon import ProcessMonitor

from phantom_frame.config.dotenv import parse_dotenv

log = Logger()


def command_args(command: str) -> List[str]:
    """
    Split an C{execute} value into the program and its arguments.

    The value is split as a POSIX shell would split it (quotes and
    backslashes work) but no shell runs it: no pipes, C{&&}, redirections
    or variable expansion. For those, write C{sh -c '...'} explicitly.

    @param command: the C{execute} value.
    @return: the argument vector.
    @raise ValueError: when the value is empty or its quoting unbalanced.
    """
    args = shlex.split(command)
    if not args:
        raise ValueError("execute: empty command")
    return args


def origin_environment(
    dotenv: Union[bool, str], environ: Optional[Mapping[str, str]] = None
) -> Dict[str, str]:
    """
    The environment origin commands run with: the proxy's, plus each
    variable of the C{dotenv} file that the proxy's does not set (as the
    configuration's C{$env:} references see them).

    @param dotenv: L{phantom_frame.config.Config.dotenv}: L{False}, L{True}
        (C{./.env}) or the file's path.
    @param environ: the proxy's environment; C{os.environ} by default.
    @return: the variables, a new dictionary.
    """
    env = dict(os.environ if environ is None else environ)
    if dotenv is False:
        return env
    filename = os.path.abspath(".env") if dotenv is True else dotenv
    try:
        with open(filename, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except FileNotFoundError:
        return env
    except (OSError, UnicodeDecodeError) as e:
        log.error("dotenv: cannot read {file!r} for the origin commands: {error}", file=filename, error=str(e))
        return env
    values, _ = parse_dotenv(text, filename)
    for name, value in values.items():
        env.setdefault(name, value)
    return env


def origin_address(proxy_url: str) -> Tuple[str, int]:
    """
    @param proxy_url: an C{http} or C{https} URL.
    @return: the host and TCP port it names (80 or 443 by default).
    """
    parts = urlsplit(proxy_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "localhost", port


class OriginSupervisor(ProcessMonitor):
    """
    Runs the C{execute} command of each server that has one, in its
    C{execute_dir}, with the proxy's environment and the variables of its
    C{dotenv} file (see L{origin_environment}, read when a command is
    supervised).

    A command that exits is started again: at once if it ran for at least
    L{threshold} seconds, otherwise after a delay that starts at
    L{minRestartDelay} and doubles with each quick death, up to
    L{maxRestartDelay}. Each line it writes is logged as C{[NAME] line}
    (namespace C{phantom_frame.origin}). On stop, each gets C{SIGTERM}, then
    C{SIGKILL} after L{killTime} seconds, and the stop waits for them.
    """

    threshold = 1.0
    minRestartDelay = 1.0
    maxRestartDelay = 60.0
    killTime = 5.0

    def __init__(self, reactor: Any, metrics: Any = None, dotenv: Union[bool, str] = False) -> None:
        """
        @param reactor: spawns the processes and schedules restarts.
        @param metrics: a L{phantom_frame.ops.metrics.Metrics} counting starts,
            or L{None}.
        @param dotenv: the configuration's C{dotenv}: L{False}, L{True}
            (C{./.env}) or the file's path.
        """
        super().__init__(reactor=reactor)
        self.log = Logger(namespace="phantom_frame.origin")
        self._timer = reactor
        self._metrics = metrics
        self.commands: Dict[str, Tuple[str, Optional[str]]] = {}
        self.dotenv = dotenv

    def supervise(self, name: str, command: str, directory: Optional[str] = None) -> None:
        """
        Run C{command} for server C{name} (started at once when the
        supervisor is running). When the server already runs the same
        command in the same directory, nothing changes; a different one
        replaces it (the old process is stopped first).

        @param name: the server's name.
        @param command: its C{execute} value (see L{command_args}).
        @param directory: its C{execute_dir}, or L{None} for the current
            directory.
        @raise ValueError: on an empty or badly quoted command.
        """
        if self.commands.get(name) == (command, directory):
            return
        args = command_args(command)
        if name in self.commands:
            self.release(name)
        self.commands[name] = (command, directory)
        self.addProcess(name, args, env=origin_environment(self.dotenv), cwd=directory)

    def release(self, name: str) -> None:
        """
        Stop supervising server C{name}'s command, stopping its process.
        Nothing happens when it has none.
        """
        if self.commands.pop(name, None) is not None:
            log.info("server {server}: stopping its origin command", server=name)
            pending = self.restart.pop(name, None)
            if pending is not None and pending.active():
                pending.cancel()
            self.removeProcess(name)

    def startProcess(self, name: str) -> None:
        """
        Start (or restart) server C{name}'s command, and log it.
        """
        if name not in self.commands:
            return
        if name not in self.protocols:
            command, directory = self.commands[name]
            log.info(
                "server {server}: starting origin command {command!r}{where}",
                server=name,
                command=command,
                where=f" in {directory}" if directory else "",
            )
            if self._metrics is not None:
                self._metrics.origin_starts.labels(name).inc()
        super().startProcess(name)

    def stopService(self) -> Deferred[None]:
        """
        Stop every process (C{SIGTERM}, then C{SIGKILL} after L{killTime}).

        @return: a L{Deferred} firing once they have all exited (or a second
            after L{killTime}, whatever happens).
        """
        super().stopService()
        return Deferred.fromCoroutine(self._stopped())

    async def _stopped(self) -> None:
        await exited(self)


async def _wait_for_port(reactor: Any, host: str, port: int, timeout: float, interval: float) -> bool:
    deadline = reactor.seconds() + timeout
    while True:
        remaining = deadline - reactor.seconds()
        endpoint = HostnameEndpoint(reactor, host, port, timeout=max(0.1, min(2.0, remaining)))
        try:
            protocol = await connectProtocol(endpoint, Protocol())
        except CancelledError:
            raise
        except Exception:
            if reactor.seconds() + interval > deadline:
                return False
            await deferLater(reactor, interval, lambda: None)
            continue
        protocol.transport.loseConnection()
        return True


def wait_for_port(
    reactor: Any, host: str, port: int, timeout: float, interval: float = 0.25
) -> Deferred[bool]:
    """
    Try to connect to C{host:port} until it accepts a TCP connection (which
    is closed at once) or C{timeout} seconds have passed.

    @param reactor: connects and waits.
    @param interval: seconds between two attempts.
    @return: a L{Deferred} firing with whether the port accepted; cancel it
        to stop trying.
    """
    return Deferred.fromCoroutine(_wait_for_port(reactor, host, port, timeout, interval))


class WarmUps(Service):
    """
    Starts the snapshot warm-up of C{pre_generate} servers when the service
    starts (or at once, for servers added while it runs): immediately for
    an origin the proxy does not start, or once a supervised origin accepts
    TCP connections, waiting at most L{timeout} seconds (then a warning is
    logged and the warm-up runs anyway, its failures reported as usual).
    """

    def __init__(
        self,
        reactor: Any,
        timeout: float = 60.0,
        interval: float = 0.25,
        wait: Callable[..., Deferred[bool]] = wait_for_port,
    ) -> None:
        """
        @param reactor: connects and waits.
        @param timeout: seconds a supervised origin has to come up.
        @param interval: seconds between two connection attempts.
        @param wait: waits for a port, as L{wait_for_port}.
        """
        self._reactor = reactor
        self.timeout = timeout
        self.interval = interval
        self._wait = wait
        self._queued: List[Any] = []
        self._waiting: Dict[Any, Deferred] = {}

    def add(self, server: Any) -> None:
        """
        Warm C{server} up now if the service runs, else when it starts.
        Servers without snapshots are ignored.

        @param server: a L{phantom_frame.proxy.server.ProxyServer}.
        """
        if server.snapshots is None:
            return
        if self.running:
            self._start(server)
        else:
            self._queued.append(server)

    def discard(self, server: Any) -> None:
        """
        Forget C{server}: a warm-up still waiting for its origin will not
        run (the server is being closed).
        """
        if server in self._queued:
            self._queued.remove(server)
        waiting = self._waiting.pop(server, None)
        if waiting is not None:
            waiting.cancel()

    def startService(self) -> None:
        """
        Start the queued warm-ups.
        """
        super().startService()
        queued, self._queued = self._queued, []
        for server in queued:
            self._start(server)

    def stopService(self) -> Deferred[None]:
        """
        Stop waiting for origins.
        """
        super().stopService()
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.cancel()
        return succeed(None)

    def _start(self, server: Any) -> None:
        config = server.config
        if not config.execute:
            server.snapshots.warm_up()
            return
        host, port = origin_address(config.proxy_url)
        log.info(
            "server {server}: waiting for its origin at {host}:{port} before pre-generating",
            server=server.name,
            host=host,
            port=port,
        )
        d = self._wait(self._reactor, host, port, self.timeout, self.interval)
        self._waiting[server] = d

        def ready(up: bool) -> None:
            self._waiting.pop(server, None)
            if up:
                log.info("server {server}: origin is up, pre-generating", server=server.name)
            else:
                log.error(
                    "server {server}: origin at {host}:{port} did not accept connections"
                    " within {timeout:g}s; pre-generating anyway (failures follow)",
                    server=server.name,
                    host=host,
                    port=port,
                    timeout=self.timeout,
                )
            server.snapshots.warm_up()

        d.addCallbacks(ready, lambda f: f.trap(CancelledError) and None)


async def exited(monitor: Any) -> None:
    """
    Wait until the processes of a stopped L{ProcessMonitor} have exited, or
    a second after its C{killTime}, on its clock.
    """
    deadline = monitor._timer.seconds() + monitor.killTime + 1
    while monitor.protocols and monitor._timer.seconds() < deadline:
        await deferLater(monitor._timer, 0.05, lambda: None)
