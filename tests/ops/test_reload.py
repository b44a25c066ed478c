"""
Tests for L{phantom_frame.ops.reload}: applying a new configuration file to a
running proxy, rejecting an invalid one, reporting what needs a restart,
and C{SIGHUP}.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any, Dict, List, Optional

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.threads import runInline
from phantom_frame.config import load_config
from phantom_frame.proxy.handle import CacheHandle, UnknownServer
from phantom_frame.ops.reload import HangupReloader, ReloadResult, Reloader
from phantom_frame.service import build_service

from tests.memory import Proxy, samples, value
from tests.origin import Origin

ROOT = """
http_port = 3456
control_port = 3457
bind_address = "127.0.0.1"
control_auth = "one"
"""

SITE = """
[server.site]
proxy_url = "http://origin.example"
"""

API = """
[server.api]
bind_to = "/api"
proxy_url = "http://origin.example/v1"
"""

API_CHANGED = API + 'cache_strategy = "only_html"\n'

OLD = """
[server.old]
bind_to = "/old"
proxy_url = "http://origin.example/old"
"""

NEW = """
[server.new]
bind_to = "/new"
proxy_url = "http://origin.example/new"
"""


class FakeSupervisor:
    """
    Records what the reloader asks of the origin supervisor.
    """

    def __init__(self) -> None:
        self.calls: List[Any] = []

    def supervise(self, name: str, command: str, directory: Optional[str]) -> None:
        """
        Record a command to run.
        """
        self.calls.append(("supervise", name, command, directory))

    def release(self, name: str) -> None:
        """
        Record a command to stop.
        """
        self.calls.append(("release", name))


class FakeWarmUps:
    """
    Records the servers to warm up and those forgotten.
    """

    def __init__(self) -> None:
        self.added: List[Any] = []
        self.discarded: List[Any] = []

    def add(self, server: Any) -> None:
        """
        Record a server to warm up.
        """
        self.added.append(server)

    def discard(self, server: Any) -> None:
        """
        Record a server forgotten.
        """
        self.discarded.append(server)


class FakeCertificate:
    """
    Counts certificate reloads.
    """

    def __init__(self) -> None:
        self.reloads = 0

    def reload(self) -> bool:
        """
        Count a reload; it always succeeds.
        """
        self.reloads += 1
        return True


class ReloaderTests(SynchronousTestCase):
    """
    L{Reloader} over a proxy in memory.
    """

    def setUp(self) -> None:
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.path = os.path.abspath(self.mktemp())
        self.write(ROOT + SITE + API + OLD)
        self.origin = Origin()
        self.proxy = Proxy(self, load_config(self.path), self.origin)
        self.supervisor = FakeSupervisor()
        self.warmups = FakeWarmUps()
        self.certificate = FakeCertificate()
        self.reloader = Reloader(
            self.path,
            load_config(self.path),
            self.proxy.handle,
            self.proxy.site,
            self.proxy.build,
            tls=self.certificate,
            control=self.proxy.control,
            supervisor=self.supervisor,
            warmups=self.warmups,
            metrics=self.proxy.metrics,
        )

    def write(self, text: str) -> None:
        """
        Replace the configuration file's contents.
        """
        with open(self.path, "w") as f:
            f.write(text)

    def status(self, path: str) -> str:
        """
        @return: the C{Cache-Status} of a GET of C{path} through the proxy.
        """
        response, _ = self.proxy.get(self, path)
        return response.headers.getRawHeaders(b"cache-status")[0].decode()

    def messages(self) -> List[str]:
        """
        @return: the reload log messages, formatted.
        """
        return [formatEvent(e) for e in self.events if e.get("log_namespace") == "phantom_frame.ops.reload"]

    def test_servers(self) -> None:
        """
        An unchanged server keeps its server object and its cache; a changed
        one gets new ones; a removed one is closed and its prefix falls to
        C{"*"}; a new one takes its prefix.
        """
        handle = self.proxy.handle
        site, api, old = (handle.server(n) for n in ("site", "api", "old"))
        for path in ("/a", "/api/a", "/old/a"):
            self.status(path)
        self.assertEqual(old.cache.entry_count, 1)
        self.write(ROOT + SITE + API_CHANGED + NEW)
        result = self.reloader.reload()
        self.assertEqual(
            result,
            ReloadResult(
                ok=True, unchanged=("site",), changed=("api",), added=("new",), removed=("old",), certificate=True
            ),
        )
        self.assertIs(handle.server("site"), site)
        self.assertIs(handle.server("site").cache, site.cache)
        self.assertIsNot(handle.server("api"), api)
        self.assertIsNot(handle.server("api").cache, api.cache)
        self.assertEqual(handle.server("api").config.cache_strategy.value, "only_html")
        self.assertRaises(UnknownServer, handle.server, "old")
        self.assertEqual((api.cache.entry_count, old.cache.entry_count), (0, 0))
        self.assertEqual(sorted(s.name for s in handle.servers()), ["api", "new", "site"])
        self.assertEqual(self.status("/a"), "phantom-frame; hit")
        self.assertEqual(self.status("/api/a"), "phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(self.status("/old/a"), "phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(self.origin.requests[-1]["uri"], "/old/a")
        self.assertEqual(self.status("/new/b"), "phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(self.origin.requests[-1]["uri"], "/new/b")
        self.assertEqual(self.warmups.discarded, [api, old])
        self.assertEqual(self.warmups.added, [handle.server("api"), handle.server("new")])
        self.assertEqual(self.certificate.reloads, 1)
        self.assertIn(
            "reloaded: unchanged site, changed api, added new, removed old",
            " ".join(self.messages()),
        )
        _, text = self.proxy.scrape(self, {"Authorization": "Bearer one"})
        self.assertEqual(value(samples(text), "phantom_frame_config_reloads_total", outcome="ok"), 1)

    def test_invalid(self) -> None:
        """
        An invalid file changes nothing; its errors are logged and
        returned, and the certificate is reloaded anyway.
        """
        router = self.proxy.site.resource
        before = list(self.proxy.handle.servers())
        self.write(ROOT + SITE + '[server.api]\ncache_stratgy = "all"\nbind_to = "nope"\n')
        result = self.reloader.reload()
        self.assertFalse(result.ok)
        self.assertEqual(len(result.errors), 2)
        self.assertIn("did you mean cache_strategy", result.errors[0] + result.errors[1])
        self.assertIs(self.proxy.site.resource, router)
        self.assertEqual(list(self.proxy.handle.servers()), before)
        self.assertEqual(self.certificate.reloads, 1)
        self.assertEqual(result.as_json()["ok"], False)
        self.assertEqual(result.as_json()["errors"], list(result.errors))
        self.assertTrue(result.as_json()["certificate_reloaded"])
        [message] = [m for m in self.messages() if "not reloaded" in m]
        self.assertIn("2 error(s)", message)
        self.assertIn("cache_stratgy", message)
        self.write("")
        self.assertFalse(self.reloader.reload().ok)
        os.remove(self.path)
        result = self.reloader.reload()
        self.assertIn("cannot read the file", result.errors[0])
        _, text = self.proxy.scrape(self, {"Authorization": "Bearer one"})
        self.assertEqual(value(samples(text), "phantom_frame_config_reloads_total", outcome="error"), 3)

    def test_restart_required(self) -> None:
        """
        Changed listener keys are reported and logged, keep their running
        values, and are reported again by the next reload.
        """
        self.write(ROOT.replace("3456", "4000").replace('"127.0.0.1"', '"0.0.0.0"') + SITE + API + OLD)
        result = self.reloader.reload()
        self.assertTrue(result.ok)
        self.assertEqual(result.restart_required, ("http_port", "bind_address"))
        self.assertEqual(result.unchanged, ("site", "api", "old"))
        self.assertEqual(self.reloader.config.http_port, 3456)
        self.assertEqual(self.reloader.config.bind_address, "127.0.0.1")
        self.assertIn("http_port, bind_address changed; restart", " ".join(self.messages()))
        self.assertEqual(self.reloader.reload().restart_required, ("http_port", "bind_address"))
        self.assertEqual(
            result.as_json(),
            {
                "ok": True,
                "servers": {"unchanged": ["site", "api", "old"], "changed": [], "added": [], "removed": []},
                "applied": [],
                "restart_required": ["http_port", "bind_address"],
                "certificate_reloaded": True,
            },
        )

    def test_live_keys(self) -> None:
        """
        C{log_format}, C{access_log}, C{shutdown_grace} and C{control_auth}
        apply at once.
        """

        class Graceful:
            grace = 10.0

        self.reloader._graceful = graceful = Graceful()
        control = StubTreq(self.proxy.control)
        root = ROOT.replace('"one"', '"two"') + 'log_format = "json"\naccess_log = false\nshutdown_grace = 3\n'
        self.write(root + SITE + API + OLD)
        result = self.reloader.reload()
        self.assertEqual(result.applied, ("control_auth", "log_format", "access_log", "shutdown_grace"))
        self.assertEqual((self.proxy.site.log_format, self.proxy.site.access_log, graceful.grace), ("json", False, 3.0))
        for token, code in (("one", 401), ("two", 200)):
            response = self.successResultOf(control.get("http://control/stats", headers={"Authorization": "Bearer " + token}))
            self.assertEqual(response.code, code)
        self.write(ROOT.replace('control_auth = "one"', "") + SITE + API + OLD)
        self.reloader.reload()
        response = self.successResultOf(control.get("http://control/stats"))
        self.assertEqual(response.code, 200)
        self.assertIn("no longer requires a token", " ".join(self.messages()))

    def test_build_failure(self) -> None:
        """
        When a new server cannot be built, nothing changes and the servers
        built so far are closed.
        """
        built: List[Any] = []
        build = self.proxy.build

        def failing(block: Any, handle: Any) -> Any:
            if block.name == "new":
                raise OSError("cannot create the cache directory")
            server = build(block, handle)
            built.append(server)
            return server

        self.reloader._build = failing
        before = list(self.proxy.handle.servers())
        router = self.proxy.site.resource
        self.write(ROOT + SITE + API_CHANGED + NEW)
        result = self.reloader.reload()
        self.assertEqual(result.errors, ("cannot apply the configuration: cannot create the cache directory",))
        self.assertEqual(list(self.proxy.handle.servers()), before)
        self.assertIs(self.proxy.site.resource, router)
        self.assertEqual([s.name for s in built], ["api"])
        self.flushLoggedErrors(OSError)

    def test_filesystem_rollback(self) -> None:
        """
        A filesystem server built and dropped again (another server failed)
        emptied the bucket of the running server of the same name: that one
        forgets its entries, so they are fetched again instead of read from
        missing files.
        """
        directory = os.path.abspath(self.mktemp())
        disk = f'[server.disk]\nbind_to = "/disk"\nproxy_url = "http://origin.example"\n' \
            f'cache_storage_mode = "filesystem"\ncache_directory = "{directory}"\n'
        self.write(ROOT + SITE + disk)
        self.assertTrue(self.reloader.reload().ok)
        self.assertEqual(self.status("/disk/a"), "phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(self.status("/disk/a"), "phantom-frame; hit")
        self.assertTrue(os.listdir(os.path.join(directory, "disk")))
        build = self.proxy.build

        def failing(block: Any, handle: Any) -> Any:
            if block.name == "new":
                raise ValueError("no")
            return build(block, handle)

        self.reloader._build = failing
        self.write(ROOT + SITE + disk + "cache_404_capacity = 5\n" + NEW)
        self.assertFalse(self.reloader.reload().ok)
        self.assertEqual(self.proxy.handle.server("disk").cache.entry_count, 0)
        self.assertEqual(self.status("/disk/a"), "phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(self.status("/disk/a"), "phantom-frame; hit")
        self.flushLoggedErrors(ValueError)

    def test_supervision(self) -> None:
        """
        Servers with C{execute} are supervised with their command; removed
        servers and servers without one are released.
        """
        self.write(
            ROOT + SITE + 'execute = "origin --port 1"\nexecute_dir = "/srv"\n' + API + NEW + 'execute = "new-origin"\n'
        )
        self.reloader.reload()
        self.assertEqual(
            self.supervisor.calls,
            [
                ("release", "old"),
                ("supervise", "site", "origin --port 1", "/srv"),
                ("release", "api"),
                ("supervise", "new", "new-origin", None),
            ],
        )

    def test_no_file(self) -> None:
        """
        Without a configuration file, a reload only reloads the certificate.
        """
        self.reloader.path = None
        result = self.reloader.reload()
        self.assertEqual(result.errors, ("no configuration file to reload",))
        self.assertEqual(self.certificate.reloads, 1)


class HandleTests(SynchronousTestCase):
    """
    L{CacheHandle._replace} and L{CacheHandle._remove}.
    """

    def test_replace_remove(self) -> None:
        """
        C{_replace} puts a server in the place of the one of the same name
        and returns it; C{_remove} forgets one; neither closes anything.
        """
        clock = MemoryReactorClock()
        handle = CacheHandle()
        for name in ("a", "b"):
            create_proxy(CreateProxyConfig("http://127.0.0.1:1"), clock, agent=object(), name=name, handle=handle, runner=runInline)
        old = handle.server("a")
        _, other = create_proxy(CreateProxyConfig("http://127.0.0.1:2"), clock, agent=object(), name="a", runner=runInline)
        new = other.server("a")
        self.assertIs(handle._replace(new), old)
        self.assertEqual([s for s in handle.servers()], [new, handle.server("b")])
        b = handle.server("b")
        self.assertIs(handle._remove("b"), b)
        self.assertEqual(list(handle.servers()), [new])
        self.assertRaises(UnknownServer, handle._remove, "b")
        _, third = create_proxy(CreateProxyConfig("http://127.0.0.1:2"), clock, agent=object(), name="c", runner=runInline)
        self.assertRaises(UnknownServer, handle._replace, third.server("c"))
        handle.close()
        old.close()
        b.close()
        third.close()


class FakeReactor:
    """
    Runs what is called from a thread at once.
    """

    def callFromThread(self, f: Any, *args: Any) -> None:
        """
        Call C{f} now.
        """
        f(*args)


class HangupTests(SynchronousTestCase):
    """
    L{HangupReloader} and C{SIGHUP}.
    """

    def setUp(self) -> None:
        if not hasattr(signal, "SIGHUP"):
            raise self.skipTest("no SIGHUP on this platform")

    def test_signal(self) -> None:
        """
        Once started, C{SIGHUP} calls the reload function in the reactor
        thread; stopping puts the previous handler back.
        """
        calls: List[int] = []
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        hup = HangupReloader(lambda: calls.append(1), FakeReactor())
        hup.startService()
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual(calls, [1])
        hup.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)

    def test_not_installed(self) -> None:
        """
        Without C{install_signal}, the handler is left alone.
        """
        previous = signal.getsignal(signal.SIGHUP)
        hup = HangupReloader(lambda: None, FakeReactor(), install_signal=False)
        hup.startService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)
        hup.stopService()


class ServiceReloadTests(SynchronousTestCase):
    """
    C{POST /reload} on the control site of L{build_service}.
    """

    def test_control_route(self) -> None:
        """
        C{POST /reload} is behind C{control_auth}; it answers 200 with what
        was done, or 400 with the errors of an invalid file.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(ROOT + SITE)
        top = build_service(load_config(path), MemoryReactorClock())
        self.addCleanup(top.handle.close)
        control = StubTreq(top.control)
        auth = {"Authorization": "Bearer one"}

        def reload(headers: Dict[str, str]) -> Any:
            response = self.successResultOf(control.post("http://control/reload", headers=headers))
            return response.code, json.loads(self.successResultOf(response.content()))

        self.assertEqual(reload({})[0], 401)
        with open(path, "w") as f:
            f.write(ROOT + SITE + API)
        code, answer = reload(auth)
        self.assertEqual((code, answer["servers"]["added"]), (200, ["api"]))
        self.assertEqual([name for _, _, name in top.site.resource.routes], ["site", "api"])
        with open(path, "w") as f:
            f.write(ROOT + "[server.site]\nproxy_url = 3\n")
        code, answer = reload(auth)
        self.assertEqual(code, 400)
        self.assertEqual(answer["ok"], False)
        self.assertIn("server.site.proxy_url", answer["errors"][0])
        self.assertEqual([name for _, _, name in top.site.resource.routes], ["site", "api"])


TWISTD_CONFIG = """
http_listen = "tcp:0:interface=127.0.0.1"
control_listen = "tcp:0:interface=127.0.0.1"
control_auth = "one"
shutdown_grace = 2

[server.site]
proxy_url = "http://127.0.0.1:{origin}"
"""


class TwistdReloadTests(TestCase):
    """
    C{SIGHUP} to a real C{twistd -n phantom-frame}.
    """

    timeout = 60

    async def test_sighup(self) -> None:
        """
        After the file gains a server and the process gets C{SIGHUP}, the
        new prefix is served, the unchanged server kept its cache, and
        C{/metrics} counts the reload.
        """
        import treq
        from twisted.internet import reactor
        from twisted.web.client import Agent, HTTPConnectionPool
        from twisted.web.server import Site

        from tests.test_plugin import spawn_twistd

        if not hasattr(signal, "SIGHUP"):
            raise self.skipTest("no SIGHUP on this platform")
        origin = Origin()
        originPort = reactor.listenTCP(0, Site(origin), interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        text = TWISTD_CONFIG.format(origin=originPort.getHost().port)
        child = spawn_twistd(self, text)
        path = child.config
        http, control = await child.ports()
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, pool=pool)

        async def get(url: str, headers: Optional[Dict[str, List[str]]] = None) -> Any:
            from twisted.web.http_headers import Headers

            response = await agent.request(b"GET", url.encode(), Headers(headers or {}))
            return response, await treq.content(response)

        await get(f"http://127.0.0.1:{http}/page")
        response, _ = await get(f"http://127.0.0.1:{http}/page")
        self.assertEqual(response.headers.getRawHeaders(b"cache-status"), [b"phantom-frame; hit"], child.text())
        with open(path, "w") as f:
            f.write(text + '\n[server.api]\nbind_to = "/api"\nproxy_url = "http://127.0.0.1:%d/v1"\n'
                    % originPort.getHost().port)
        os.kill(child.transport.pid, signal.SIGHUP)
        await child.matches(rb"reloaded: unchanged site, changed none, added api, removed none")
        await get(f"http://127.0.0.1:{http}/api/users")
        self.assertEqual(origin.requests[-1]["uri"], "/v1/users", child.text())
        response, _ = await get(f"http://127.0.0.1:{http}/page")
        self.assertEqual(response.headers.getRawHeaders(b"cache-status"), [b"phantom-frame; hit"])
        response, body = await get(f"http://127.0.0.1:{control}/metrics", {"Authorization": ["Bearer one"]})
        parsed = samples(body.decode())
        self.assertEqual(value(parsed, "phantom_frame_config_reloads_total", outcome="ok"), 1)
        self.assertEqual(
            value(parsed, "phantom_frame_requests_total", server="site", method="get_head", status="2xx", cache="hit"), 2
        )
        os.kill(child.transport.pid, signal.SIGTERM)
        self.assertEqual(await child.ended, 0, child.text())
