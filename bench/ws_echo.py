"""
WebSocket echo throughput through phantom-frame's tunnel, and directly.

    python bench/ws_echo.py [SECONDS] [CLIENTS]

Runs an autobahn echo origin and phantom-frame in front of it (child
processes), then, in this process, CLIENTS (default 16) autobahn clients
that each send a small text message as soon as the previous one is echoed,
for SECONDS (default 5) after a one-second warm-up: once through the proxy,
once straight to the origin. Prints messages per second for both and their
ratio as a Markdown table.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any, List

from _harness import origin_and_proxy, wait_port
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint

ORIGIN = r'''
import sys
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor

class Echo(WebSocketServerProtocol):
    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)

factory = WebSocketServerFactory()
factory.protocol = Echo
reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1")
with open(sys.argv[2], "w") as f:
    f.write(sys.argv[1])
reactor.run()
'''

MESSAGE = b'{"type": "tick", "payload": "phantom frame"}'


class Pinger(WebSocketClientProtocol):
    """
    Sends the next message when the last one comes back, while the run is
    on; counts echoes.
    """

    def onOpen(self) -> None:
        self.lost: Deferred[None] = Deferred()
        self.factory.ready.pop(0).callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.count += 1
        if self.factory.running:
            self.sendMessage(MESSAGE)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if hasattr(self, "lost"):
            self.lost.callback(None)


def cpu_seconds(pid: int) -> float:
    """
    @return: the user and system CPU time process C{pid} has used.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(reactor: Any, port: int, clients: int, seconds: float) -> float:
    """
    @return: echoed messages per second over C{seconds}.
    """
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/ws", reactor=reactor)
    factory.protocol = Pinger
    factory.noisy = False
    factory.ready, factory.count, factory.running = [], 0, True
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    waiting: List[Deferred] = []
    for _ in range(clients):
        d: Deferred = Deferred()
        factory.ready.append(d)
        waiting.append(d)
        await endpoint.connect(factory)
    pingers = await gatherResults(waiting)
    for p in pingers:
        p.sendMessage(MESSAGE)
    await task.deferLater(reactor, 1.0, lambda: None)
    factory.count, started = 0, time.perf_counter()
    await task.deferLater(reactor, seconds, lambda: None)
    count, elapsed = factory.count, time.perf_counter() - started
    factory.running = False
    for p in pingers:
        p.sendClose()
    await gatherResults([p.lost for p in pingers])
    return count / elapsed


async def run(reactor: Any, seconds: float, clients: int) -> None:
    """
    Start the origin and the proxy, measure through both, print the table.
    """
    portfile = os.path.join(tempfile.mkdtemp(), "origin-port")
    with origin_and_proxy(ORIGIN, [portfile]) as (proxy_port, proxy):
        with open(portfile) as f:
            origin_port = int(f.read())
        wait_port(origin_port)
        cpu = cpu_seconds(proxy.pid)
        tunnel = await measure(reactor, proxy_port, clients, seconds)
        cpu = cpu_seconds(proxy.pid) - cpu
        direct = await measure(reactor, origin_port, clients, seconds)
    print(f"| WebSocket echo, {clients} clients, {len(MESSAGE)}-byte text, {seconds:g} s | messages/s |")
    print("|---|---:|")
    print(f"| through phantom-frame | {tunnel:.0f} |")
    print(f"| direct to the origin | {direct:.0f} |")
    print(f"| ratio (tunnel / direct) | {tunnel / direct:.2f} |")
    print(
        f"phantom-frame used {cpu / (seconds + 1):.0%} of a core during the tunnelled run "
        f"(including warm-up), on {os.cpu_count()} CPUs shared by client, proxy and origin."
    )


def main() -> None:
    """
    Read C{SECONDS} and C{CLIENTS} from the command line and run.
    """
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    task.react(lambda reactor: Deferred.fromCoroutine(run(reactor, seconds, clients)))


if __name__ == "__main__":
    main()
