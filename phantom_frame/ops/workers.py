"""
C{workers = N}: one supervising process opens every listener and runs N
worker processes that accept on the same sockets.

The supervisor (L{build_supervisor}) opens the proxy listeners (C{tcp:},
C{unix:} and C{systemd:} endpoints alike) before anything else, stops
reading from them, and hands their descriptors to each worker at spawn time
(C{childFDs}); a worker (L{WorkerSetup}) adopts them with
C{adoptStreamPort}, so the kernel gives each new connection to whichever
worker accepts it first. Each worker is C{twistd -n phantom-frame} on the
same configuration file and builds its own caches; it finds what it was
handed in the C{PHANTOM_FRAME_WORKER} environment variable, and gets a
private control site on a UNIX socket in a directory only the supervisor
made, which the supervisor's control site calls (see
L{phantom_frame.ops.fanout}).

A worker that exits is started again (L{WorkerMonitor}, a
L{ProcessMonitor}, with its back-off). C{SIGHUP} on the supervisor checks
the file and forwards the signal to every worker, or refuses with one log
line; C{SIGTERM} and C{SIGINT} close the supervisor's copy of the listeners,
forward C{SIGTERM} to every worker (each drains as a single process does)
and end the supervisor with status 0 once all have exited. A worker whose
supervisor is gone (its stdin pipe closes) stops too.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.runner.procmon import LoggingProtocol, ProcessMonitor

from phantom_frame.config import Config, ConfigError, load_config
from phantom_frame.ops.reload import HangupReloader
from phantom_frame.ops.supervise import exited
from phantom_frame.ops.inherit import WORKER_ENV, WorkerSetup

log = Logger()

#: Makes a listening service: C{(key, description, factory, reactor)}, as
#: L{phantom_frame.startup.listener}.
Listen = Callable[[str, str, Any, Any], Service]

#: The signals a stop with status 0 answers (see
#: L{phantom_frame.service.GracefulStop}).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: The first descriptor number the listeners get in a worker.
_FIRST_FD = 3


class HeldFactory(Factory):
    """
    The factory of a listener the supervisor holds for its workers; it never
    accepts, as the supervisor stops reading its socket at once. Its log
    prefix is the proxy site's, as the socket is the proxy site's.
    """

    noisy = False

    def logPrefix(self) -> str:
        """
        @return: C{"ProxySite"}.
        """
        return "ProxySite"


class SharedListeners(Service):
    """
    Opens the proxy listeners for the workers, in C{privilegedStartService}
    (before any worker starts, and before twistd gives up privileges),
    without accepting on them; closes them when it stops.

    @ivar ports: the listening ports, by key, once open.
    """

    def __init__(self, listeners: List[Tuple[str, str]], reactor: Any, listen: Listen) -> None:
        """
        @param listeners: each listener's key and endpoint description.
        @param reactor: the reactor to listen with.
        @param listen: makes a listening service that listens (or raises)
            in C{privilegedStartService}.
        """
        self._listeners = listeners
        self._reactor = reactor
        self._listen = listen
        self.ports: Dict[str, Any] = {}

    def privilegedStartService(self) -> None:
        """
        Listen on every endpoint.

        @raise phantom_frame.startup.StartupError: when one cannot be used.
        """
        super().privilegedStartService()
        for key, description in self._listeners:
            service = self._listen(key, description, HeldFactory(), self._reactor)
            service.privilegedStartService()
            service._waitingForPort.addCallback(self._hold, key)

    def _hold(self, port: Any, key: str) -> Any:
        port.stopReading()
        self.ports[key] = port
        return port

    def descriptors(self) -> Dict[str, Tuple[int, int]]:
        """
        @return: by key, each listener's descriptor in the supervisor and its
            address family.
        """
        return {key: (port.fileno(), port.addressFamily) for key, port in self.ports.items()}

    def stopService(self) -> Deferred[None]:
        """
        Close the supervisor's copy of every listener: once the workers have
        closed theirs, nothing accepts any more.
        """
        super().stopService()
        ports, self.ports = self.ports, {}
        for port in ports.values():
            port.stopListening()
        return deferLater(self._reactor, 0, lambda: None)


def worker_command(config_path: str) -> List[str]:
    """
    @param config_path: the configuration file.
    @return: the command of a worker: C{twistd -n phantom-frame} on it.
    """
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "phantom-frame",
        "--config",
        config_path,
    ]


class WorkerMonitor(ProcessMonitor):
    """
    Runs the workers, each with the shared listeners as descriptors 3, 4...
    and its L{WorkerSetup} in its environment, and starts again one that
    exits (at once after a run of L{threshold} seconds, otherwise after a
    delay doubling up to L{maxRestartDelay}). On stop, each gets C{SIGTERM},
    then C{SIGKILL} after L{killTime} seconds; the stop waits for them and
    ends a process stopped by C{SIGTERM} or C{SIGINT} with status 0.

    @ivar pids: the running workers' process ids, by name.
    """

    threshold = 1.0
    minRestartDelay = 0.5
    maxRestartDelay = 30.0

    def __init__(
        self,
        reactor: Any,
        command: List[str],
        count: int,
        listeners: SharedListeners,
        directory: str,
        grace: float,
    ) -> None:
        """
        @param reactor: spawns the workers.
        @param command: a worker's command line.
        @param count: how many workers to run.
        @param listeners: the shared listeners, open before this starts.
        @param directory: where the private control sockets go.
        @param grace: the C{shutdown_grace}: a worker gets that much more
            than it to drain before it is killed.
        """
        super().__init__(reactor=reactor)
        self.log = Logger(namespace="phantom_frame.worker")
        self._timer = reactor
        self._listeners = listeners
        self.directory = directory
        self.killTime = grace + 5.0
        self.names = [f"worker-{index}" for index in range(count)]
        self.pids: Dict[str, int] = {}
        for name in self.names:
            self.addProcess(name, command, env=dict(os.environ))

    def control_socket(self, name: str) -> str:
        """
        @param name: a worker's name.
        @return: the path of its private control socket.
        """
        return os.path.join(self.directory, f"{name}.sock")

    def setup(self, name: str) -> Tuple[WorkerSetup, Dict[int, Any]]:
        """
        @param name: a worker's name.
        @return: its setup and its C{childFDs}.
        """
        child_fds: Dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        listeners: Dict[str, Tuple[int, int]] = {}
        for number, (key, (fd, family)) in enumerate(
            sorted(self._listeners.descriptors().items()), _FIRST_FD
        ):
            child_fds[number] = fd
            listeners[key] = (number, family)
        index = self.names.index(name)
        return WorkerSetup(index, listeners, self.control_socket(name)), child_fds

    def startProcess(self, name: str) -> None:
        """
        Start (or restart) worker C{name}, and log its pid.
        """
        if name in self.protocols or name not in self._processes:
            return
        process = self._processes[name]
        setup, child_fds = self.setup(name)
        proto = LoggingProtocol()
        proto.service = self
        proto.name = name
        self.protocols[name] = proto
        self.timeStarted[name] = self._timer.seconds()
        env = dict(process.env, **{WORKER_ENV: setup.encode()})
        try:
            transport = self._reactor.spawnProcess(
                proto, process.args[0], process.args, env=env, path=process.cwd, childFDs=child_fds
            )
        except OSError:
            self._monitoredProcessExited(name, Failure())
            return
        self.pids[name] = transport.pid
        log.info("workers: {name} started (pid {pid})", name=name, pid=transport.pid)

    def _monitoredProcessExited(self, name: str, reason: Optional[Failure] = None) -> None:
        pid = self.pids.pop(name, None)
        if self.running:
            code = getattr(getattr(reason, "value", None), "exitCode", None)
            log.warn("workers: {name} (pid {pid}) exited ({code}); starting it again",
                     name=name, pid=pid, code=code)
        super()._monitoredProcessExited(name, reason)

    def signal_all(self, signame: str) -> int:
        """
        Send a signal to every running worker.

        @param signame: C{"HUP"}, C{"TERM"}, ...
        @return: how many workers got it.
        """
        sent = 0
        for proto in list(self.protocols.values()):
            try:
                proto.transport.signalProcess(signame)
            except Exception:
                continue
            sent += 1
        return sent

    def stopService(self) -> Deferred[None]:
        """
        Stop every worker (C{SIGTERM}, then C{SIGKILL} after L{killTime}).

        @return: a L{Deferred} firing once they have all exited.
        """
        if self.protocols:
            log.info("workers: stopping {count} worker(s)", count=len(self.protocols))
        super().stopService()
        return Deferred.fromCoroutine(self._stopped())

    async def _stopped(self) -> None:
        await exited(self)
        if getattr(self._reactor, "_exitSignal", None) in _STOP_SIGNALS:
            self._reactor._exitSignal = None
        shutil.rmtree(self.directory, ignore_errors=True)


class HangupForwarder(HangupReloader):
    """
    On C{SIGHUP}: check the configuration file, then forward the signal to
    every worker; a file that does not load changes nothing and is refused
    with one log line.
    """

    def __init__(
        self,
        path: Optional[str],
        forward: Callable[[str], int],
        reactor: Any,
        install_signal: bool,
        loaded: Callable[[Config], None] = lambda config: None,
    ) -> None:
        """
        @param path: the configuration file.
        @param forward: sends a signal to every worker (L{WorkerMonitor.signal_all}).
        @param reactor: runs the check in its thread.
        @param install_signal: install the handler (only for the real reactor).
        @param loaded: called with the new configuration once it is valid.
        """
        super().__init__(self.check_and_forward, reactor, install_signal)
        self._path = path
        self._forward = forward
        self._loaded = loaded

    def check(self) -> Optional[List[str]]:
        """
        @return: L{None} when the file loads, else its errors.
        """
        if self._path is None:
            return ["no configuration file to reload"]
        try:
            config = load_config(self._path)
        except ConfigError as e:
            return e.errors
        self._loaded(config)
        return None

    def check_and_forward(self) -> bool:
        """
        Check the file; when valid, forward C{SIGHUP} to every worker.

        @return: whether it was forwarded.
        """
        errors = self.check()
        if errors is not None:
            log.error(
                "reload refused: {path}: {errors}; the workers keep running as they are",
                path=self._path,
                errors="; ".join(errors),
            )
            return False
        count = self._forward("HUP")
        log.info("reload: {path} is valid; SIGHUP sent to {count} worker(s)", path=self._path, count=count)
        return True


def build_supervisor(
    config: Config, reactor: Any, listen: Listen, top: MultiService, install_signals: bool = False
) -> MultiService:
    """
    @param config: a validated configuration with C{workers} above 1, read
        from a file (L{Config.source}).
    @param reactor: the reactor everything runs on.
    @param listen: makes the listening services
        (L{phantom_frame.startup.listener}).
    @param top: gets the supervisor's services, and stops them one after
        the other (an L{phantom_frame.service.InOrder}).
    @param install_signals: handle C{SIGHUP} (only for the real reactor).
    @return: C{top}. Its
        children start in this order (and stop in reverse, one after the
        other): origin commands, workers, shared listeners (opened before
        anything starts), C{SIGHUP} forwarder, control site. It has
        C{workers} (the L{WorkerMonitor}), C{listeners} and C{control} (the
        fan-out resource) attributes.
    @raise phantom_frame.startup.StartupError: when a listener's endpoint
        description cannot be used.
    """
    from phantom_frame.ops.control_site import ControlSite
    from phantom_frame.ops.fanout import FanOutResource
    from phantom_frame.ops.supervise import OriginSupervisor

    if config.source is None:
        raise ValueError("workers need a configuration file to start")
    path = os.path.abspath(config.source)
    origins = OriginSupervisor(reactor)
    for block in config.servers:
        if block.proxy.execute:
            origins.supervise(block.name, block.proxy.execute, block.proxy.execute_dir)
    origins.setServiceParent(top)
    keys = [(config.listener_key("http"), config.http_endpoint())]
    https = config.https_port_endpoint()
    if https is not None:
        keys.append((config.listener_key("https"), https))
    shared = SharedListeners(keys, reactor, listen)
    directory = tempfile.mkdtemp(prefix="phantom-frame-")
    monitor = WorkerMonitor(
        reactor, worker_command(path), config.worker_count(), shared, directory, config.shutdown_grace
    )
    monitor.setServiceParent(top)
    shared.setServiceParent(top)
    control = FanOutResource(
        [monitor.control_socket(name) for name in monitor.names],
        config.control_auth,
        reactor,
    )
    forwarder = HangupForwarder(path, monitor.signal_all, reactor, install_signals, control.configure)
    forwarder.setServiceParent(top)
    control.reloader = forwarder
    site = ControlSite(control, reactor=reactor)
    site.noisy = False
    listen(config.listener_key("control"), config.control_endpoint(), site, reactor).setServiceParent(top)
    top.workers = monitor  # type: ignore[attr-defined]
    top.listeners = shared  # type: ignore[attr-defined]
    top.control = control  # type: ignore[attr-defined]
    return top

