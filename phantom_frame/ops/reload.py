"""
Hot reload: C{SIGHUP} or C{POST /reload} reads the configuration file again
and applies it without dropping a connection.

The new file is validated first; an invalid one changes nothing. Servers
whose C{[server.NAME]} block is unchanged keep their cache; changed and new
servers are built fresh; removed ones are closed; then the routing table is
swapped in one step. Root keys that only a restart can apply (listeners,
certificate paths) are reported and keep their running values.
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import attr
from twisted.application.service import Service
from twisted.logger import Logger

from phantom_frame.config import Config, ConfigError, ServerConfig, load_config
from phantom_frame.proxy.handle import CacheHandle
from phantom_frame.proxy.settings import CacheStorageMode
from phantom_frame.http.routing import Router

log = Logger()

#: Root keys a running proxy cannot change: a reload reports them and keeps
#: the values it started with.
RESTART_KEYS = (
    "http_port",
    "https_port",
    "cert_path",
    "key_path",
    "control_port",
    "bind_address",
    "control_bind_address",
    "http_listen",
    "https_listen",
    "control_listen",
    "workers",
    "acme",
)

#: Root keys a reload applies at once.
LIVE_KEYS = (
    "control_auth",
    "log_format",
    "access_log",
    "shutdown_grace",
    "dotenv",
    "max_request_body",
    "max_header_bytes",
    "client_header_timeout",
    "allowed_hosts",
)


@attr.s(auto_attribs=True, frozen=True)
class ReloadResult:
    """
    What a reload did.

    @ivar ok: whether the new configuration was valid and is in use.
    @ivar errors: why it was rejected (C{key.path: message}), when not ok.
    @ivar unchanged: servers kept as they were, cache included.
    @ivar changed: servers rebuilt with an empty cache.
    @ivar added: new servers.
    @ivar removed: servers closed.
    @ivar applied: changed root keys now in effect.
    @ivar restart_required: changed root keys that need a restart; the old
        values stay in effect until then.
    @ivar certificate: whether the HTTPS certificate was reloaded (L{None}
        without HTTPS listener; L{False} when the new files are unusable and
        the old certificate stays).
    """

    ok: bool
    errors: Tuple[str, ...] = ()
    unchanged: Tuple[str, ...] = ()
    changed: Tuple[str, ...] = ()
    added: Tuple[str, ...] = ()
    removed: Tuple[str, ...] = ()
    applied: Tuple[str, ...] = ()
    restart_required: Tuple[str, ...] = ()
    certificate: Optional[bool] = None

    def as_json(self) -> Dict[str, Any]:
        """
        @return: the answer of C{POST /reload}.
        """
        if not self.ok:
            answer: Dict[str, Any] = {"ok": False, "errors": list(self.errors)}
        else:
            answer = {
                "ok": True,
                "servers": {
                    "unchanged": list(self.unchanged),
                    "changed": list(self.changed),
                    "added": list(self.added),
                    "removed": list(self.removed),
                },
                "applied": list(self.applied),
                "restart_required": list(self.restart_required),
            }
        if self.certificate is not None:
            answer["certificate_reloaded"] = self.certificate
        return answer


class Reloader:
    """
    Applies a new version of the configuration file to a running proxy.

    @ivar config: the configuration in effect: the last valid file, with the
        running values of the keys in L{RESTART_KEYS}.
    """

    def __init__(
        self,
        path: Optional[str],
        config: Config,
        handle: CacheHandle,
        site: Any,
        build: Callable[[ServerConfig, CacheHandle], Any],
        *,
        tls: Any = None,
        control: Any = None,
        graceful: Any = None,
        supervisor: Any = None,
        warmups: Any = None,
        metrics: Any = None,
        load: Callable[[str], Config] = load_config,
        routes: Sequence[Any] = (),
    ) -> None:
        """
        @param path: the configuration file, or L{None} when there is none
            (a reload then only reloads the certificate).
        @param config: the configuration the proxy runs with.
        @param handle: its servers.
        @param site: the proxy site, whose C{resource} is the router, with
            C{access_log} and C{log_format} attributes.
        @param build: makes the server of a block, C{build(block, handle)},
            adding it to C{handle}, opened, its warm-up not started.
        @param tls: the HTTPS certificate (a
            L{phantom_frame.http.tls.ReloadableContext}), reloaded every time.
        @param control: the L{phantom_frame.ops.control.ControlResource}, which
            gets a new C{control_auth}.
        @param graceful: the L{phantom_frame.service.GracefulStop}, which
            gets a new C{shutdown_grace}.
        @param supervisor: the L{phantom_frame.ops.supervise.OriginSupervisor}
            running the C{execute} commands.
        @param warmups: the L{phantom_frame.ops.supervise.WarmUps} that warms new
            pre_generate servers up.
        @param metrics: counts reloads (L{phantom_frame.ops.metrics.Metrics}).
        @param load: reads and validates the file (L{load_config}).
        @param routes: the router's routes that are no server's (the ACME
            challenges), kept in every new router.
        """
        self.path = path
        self.config = config
        self._handle = handle
        self._site = site
        self._build = build
        self._tls = tls
        self._control = control
        self._graceful = graceful
        self._supervisor = supervisor
        self._warmups = warmups
        self._metrics = metrics
        self._load = load
        self._routes = tuple(routes)

    def reload(self) -> ReloadResult:
        """
        Read the file again and apply it, then reload the certificate (even
        when the file is invalid). Never raises: problems are logged and in
        the result.

        @return: what was done.
        """
        result = self._reload_config()
        if self._tls is not None:
            result = attr.evolve(result, certificate=self._tls.reload())
        if self._metrics is not None:
            self._metrics.reloads.labels("ok" if result.ok else "error").inc()
        return result

    def _rejected(self, errors: List[str]) -> ReloadResult:
        log.error(
            "configuration {path} not reloaded, still running the previous one:"
            " {count} error(s):\n{errors}",
            path=self.path,
            count=len(errors),
            errors="\n".join(f"  {n}. {e}" for n, e in enumerate(errors, 1)),
        )
        return ReloadResult(ok=False, errors=tuple(errors))

    def _reload_config(self) -> ReloadResult:
        if self.path is None:
            return ReloadResult(ok=False, errors=("no configuration file to reload",))
        try:
            new = self._load(self.path)
        except ConfigError as e:
            return self._rejected(e.errors)
        except Exception as e:  # pragma: no cover - load_config raises ConfigError
            log.failure("configuration {path} could not be read", path=self.path)
            return self._rejected([f"{self.path}: {e}"])
        old = self.config
        restart = tuple(k for k in RESTART_KEYS if getattr(old, k) != getattr(new, k))
        applied = tuple(k for k in LIVE_KEYS if getattr(old, k) != getattr(new, k))
        before = {block.name: block for block in old.servers}
        after = {block.name: block for block in new.servers}
        unchanged = tuple(n for n in after if n in before and before[n] == after[n])
        changed = tuple(n for n in after if n in before and before[n] != after[n])
        added = tuple(n for n in after if n not in before)
        removed = tuple(n for n in before if n not in after)

        staging = CacheHandle()
        built: Dict[str, Any] = {}
        try:
            for name in changed + added:
                built[name] = self._build(after[name], staging)
            resources = {name: self._handle.server(name).resource for name in unchanged}
            resources.update((name, server.resource) for name, server in built.items())
            router = Router(new.routes(resources) + list(self._routes))
        except Exception as e:
            log.failure("configuration {path}: cannot build the new servers", path=self.path)
            for name, server in built.items():
                server.close()
                self._forget_bucket(name, server)
            return self._rejected([f"cannot apply the configuration: {e}"])

        retired = []
        for name in changed:
            retired.append(self._handle._replace(built[name]))
        for name in added:
            self._handle._add(built[name])
        for name in removed:
            retired.append(self._handle._remove(name))
        self._site.resource = router
        for server in retired:
            if self._warmups is not None:
                self._warmups.discard(server)
            server.close()
        self._apply_supervision(removed, after)
        if self._warmups is not None:
            for name in changed + added:
                self._warmups.add(built[name])
        self._apply_root(new, applied)
        self.config = attr.evolve(new, **{k: getattr(old, k) for k in restart})
        log.info(
            "configuration {path} reloaded: unchanged {unchanged}, changed {changed},"
            " added {added}, removed {removed}",
            path=self.path,
            unchanged=_names(unchanged),
            changed=_names(changed),
            added=_names(added),
            removed=_names(removed),
        )
        if restart:
            log.warn(
                "configuration {path}: {keys} changed; restart phantom-frame to apply"
                " (the running values stay in effect)",
                path=self.path,
                keys=", ".join(restart),
            )
        return ReloadResult(
            ok=True,
            unchanged=unchanged,
            changed=changed,
            added=added,
            removed=removed,
            applied=applied,
            restart_required=restart,
        )

    def _forget_bucket(self, name: str, server: Any) -> None:
        """
        A filesystem server built and dropped again emptied the bucket of
        the running server of the same name: forget that one's entries too,
        so they are fetched again rather than read from missing files.
        """
        if server.config.cache_storage_mode != CacheStorageMode.FILESYSTEM:
            return
        try:
            running = self._handle.server(name)
        except KeyError:
            return
        if running.config.cache_storage_mode == CacheStorageMode.FILESYSTEM:
            running.invalidate_all()

    def _apply_supervision(self, removed: Tuple[str, ...], after: Dict[str, ServerConfig]) -> None:
        supervisor = self._supervisor
        if supervisor is None:
            return
        for name in removed:
            supervisor.release(name)
        for name, block in after.items():
            if block.proxy.execute:
                try:
                    supervisor.supervise(name, block.proxy.execute, block.proxy.execute_dir)
                except ValueError as e:
                    log.error("server {server}: cannot run its origin: {error}", server=name, error=str(e))
            else:
                supervisor.release(name)

    def _apply_root(self, new: Config, applied: Tuple[str, ...]) -> None:
        site = self._site
        site.access_log = new.access_log
        site.log_format = new.log_format
        site.limits = new.client_limits()
        if self._graceful is not None:
            self._graceful.grace = new.shutdown_grace
        if "control_auth" in applied and self._control is not None:
            self._control.set_token(new.control_auth)
            if new.control_auth is None:
                log.warn("control_auth removed: the control site no longer requires a token")
            else:
                log.info("control_auth changed: the control site requires the new token")


def _names(names: Tuple[str, ...]) -> str:
    return ", ".join(names) if names else "none"


class HangupReloader(Service):
    """
    Calls a reload function on C{SIGHUP}, in the reactor thread.
    """

    def __init__(self, reload: Callable[[], Any], reactor: Any, install_signal: bool = True) -> None:
        """
        @param reload: what C{SIGHUP} does (L{Reloader.reload}).
        @param reactor: runs it.
        @param install_signal: install the handler when started (only for the
            process's real reactor); the previous handler comes back on stop.
        """
        self._reload = reload
        self._reactor = reactor
        self._install = install_signal
        self._previous: Optional[Any] = None

    def startService(self) -> None:
        """
        Install the C{SIGHUP} handler.
        """
        super().startService()
        if self._install and hasattr(signal, "SIGHUP"):
            self._previous = signal.signal(signal.SIGHUP, self._onSignal)

    def stopService(self) -> None:
        """
        Put the previous C{SIGHUP} handler back.
        """
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _onSignal(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self._reload)
