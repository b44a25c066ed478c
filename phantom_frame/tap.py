"""
The twistd plugin's options and service: C{twistd -n phantom-frame --config FILE}.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from twisted.application.service import MultiService
from twisted.python import usage


class Options(usage.Options):
    """
    Command line of C{twistd phantom-frame}.
    """

    synopsis = "--config FILE"
    longdesc = "Run phantom-frame, a caching reverse proxy, from a TOML config file."
    optParameters = [["config", "c", None, "Path to the TOML configuration file."]]

    def postOptions(self) -> None:
        """
        Load and validate the configuration now, so that a bad one stops
        start-up with every error listed and a non-zero exit.

        @raise usage.UsageError: when C{--config} is missing or invalid (on
            its own; as twistd's subcommand, it exits with status 1).
        """
        try:
            self._load()
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            # Under twistd: refuse to start with status 1 ourselves, since
            # twistd before Twisted 26 prints a usage error and exits 0.
            sys.stderr.write(f"phantom-frame: {e}\n")
            sys.stderr.flush()
            raise SystemExit(1)

    def _load(self) -> None:
        """
        Load and validate the configuration now, so a bad one stops start-up
        with every error listed.

        @raise usage.UsageError: when C{--config} is missing or invalid.
        """
        from phantom_frame.config import ConfigError, load_config
        from phantom_frame.http.tls import ReloadableContext, TLSConfigError

        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            self["parsed"] = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"invalid configuration {self['config']}:\n{e}")
        except OSError as e:
            raise usage.UsageError(f"cannot read {self['config']}: {e.strerror}")
        config = self["parsed"]
        self["tls"] = None
        if config.https_port_endpoint() is not None and config.acme is None:
            try:
                self["tls"] = ReloadableContext(config.cert_path, config.key_path)
            except TLSConfigError as e:
                raise usage.UsageError(f"invalid configuration {self['config']}: {e}")


def worker_listen(setup: Any) -> Callable[[str, str, Any, Any], Any]:
    """
    @param setup: what a worker process inherited (a
        L{phantom_frame.ops.inherit.WorkerSetup}).
    @return: a L{phantom_frame.startup.listener} for the worker: each proxy
        listener on the socket inherited for its key, the control site on
        the private UNIX socket.
    """
    from twisted.application.internet import StreamServerEndpointService

    from phantom_frame.startup import KeyedEndpoint, StartupError, listener

    def listen(key: str, description: str, factory: Any, reactor: Any) -> Any:
        if key.startswith("control_"):
            return listener(key, f"unix:{setup.control}", factory, reactor)
        endpoint = setup.endpoint(key, reactor)
        if endpoint is None:
            raise StartupError(f"{key}: the supervisor passed no socket for it")
        service = StreamServerEndpointService(KeyedEndpoint(key, description, endpoint), factory)
        service._raiseSynchronously = True
        return service

    return listen


def makeService(options: Options, reactor=None) -> MultiService:
    """
    Build the proxy: with C{workers} above 1, the supervisor of the worker
    processes (see L{phantom_frame.ops.workers}); in a worker, or with one
    worker, the proxy itself. Under twistd, a failure to start (now, or when a
    listener cannot listen) is printed as one line naming the key and the
    cause, and twistd exits with status 1, without a traceback.

    @param options: parsed L{Options}.
    @param reactor: the reactor (the global one when omitted).
    @return: the proxy's L{MultiService}.
    @raise phantom_frame.startup.StartupError: when it cannot be built (a
        cache directory that cannot be made, a listener's endpoint that
        cannot be used).
    """
    if reactor is None:
        from twisted.internet import reactor
    from phantom_frame.ops.collector import tune_collector
    from phantom_frame.ops.inherit import WorkerSetup
    from phantom_frame.ops.loop import lean_poll
    from phantom_frame.ops.workers import build_supervisor
    from phantom_frame.service import InOrder, build_service
    from phantom_frame.startup import cannot_start, listener, startup_hook

    if getattr(options, "parent", None) is not None:
        sys.excepthook = startup_hook(sys.excepthook)
    config = options["parsed"]
    worker = WorkerSetup.from_environ()
    try:
        if worker is None and config.worker_count() > 1:
            return build_supervisor(config, reactor, listener, InOrder(), install_signals=True)
        service = build_service(
            config,
            reactor,
            tls=options.get("tls"),
            install_signals=True,
            worker=worker is not None,
            listen=listener if worker is None else worker_listen(worker),
        )
    except OSError as e:
        raise cannot_start(e) from None
    for extra in [] if worker is None else worker.services(reactor):
        extra.setServiceParent(service)
    lean_poll(reactor)
    tune_collector(reactor)
    return service
