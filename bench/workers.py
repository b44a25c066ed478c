"""
Two ways for two worker processes to share one port, measured with wrk:

- C{shared}: one listening socket, opened once and passed to both workers
  (what C{workers = 2} does);
- C{reuseport}: each worker its own socket bound with C{SO_REUSEPORT} to the
  same port; the kernel spreads new connections between the sockets.

    python bench/workers.py [--seconds S] [--connections 32,64] [--rounds N]
                            [--accepts 1,100] [--ways shared,reuseport]

Both run the very same worker (C{twistd -n phantom-frame} in worker mode,
handed its socket as an inherited descriptor) in front of the bench origin, and wrk
asks for one cached page. For each way it prints the requests per second,
the CPU time the workers spent per request, and how the requests spread
(each worker's share of the cache hits, read from its private control
socket). wrk opens its connections once, so the spread is decided when they
connect; C{--connections} should be a few dozen.

C{--close} makes every request a new connection (C{Connection: close}),
where the accept loop is busiest. C{--accepts} sets how many connections a worker accepts per wake-up
(L{phantom_frame.ops.inherit.ACCEPTS_PER_WAKEUP}, 1 in the product; 100 is
Twisted's own accept loop, the behaviour before the limit), so that both
are measured in the same run. Every combination is measured once per
round, the rounds interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import free_port, wait_port  # noqa: E402
from bench._programs import ORIGIN  # noqa: E402

WORKER = "PHANTOM_FRAME_WORKER"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _control(path: str, target: str) -> Dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data.partition(b"\r\n\r\n")[2])


def _listening_socket(port: int, reuseport: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


#: A worker: C{twistd -n phantom-frame} with C{ACCEPTS_PER_WAKEUP} set from
#: its first argument.
LAUNCH = ("import sys, phantom_frame.ops.inherit as inherit; "
          "inherit.ACCEPTS_PER_WAKEUP = int(sys.argv.pop(1)); "
          "from twisted.scripts.twistd import run; run()")


def _workers(config: str, port: int, reuseport: bool, directory: str,
             accepts: int) -> Tuple[List[subprocess.Popen], List[str]]:
    shared = None if reuseport else _listening_socket(port, False)
    children, sockets = [], []
    for index in range(2):
        sock = _listening_socket(port, True) if reuseport else shared
        control = os.path.join(directory, f"{'r' if reuseport else 's'}{index}.sock")
        fd = sock.fileno()
        setup = {"index": index, "listeners": {"http_port": [fd, socket.AF_INET]}, "control": control}
        children.append(subprocess.Popen(
            [sys.executable, "-c", LAUNCH, str(accepts),
             "-n", "--pidfile=", "phantom-frame", "--config", config],
            env=dict(os.environ, **{WORKER: json.dumps(setup)}),
            pass_fds=(fd,), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        ))
        sockets.append(control)
        if reuseport:
            sock.close()
    if shared is not None:
        shared.close()
    return children, sockets


def measure(config: str, port: int, reuseport: bool, seconds: float, connections: int,
            accepts: int, close: bool = False) -> Tuple[float, float, float]:
    """
    @return: requests per second, CPU per request (µs) and the larger
        worker's share of the hits.
    """
    directory = tempfile.mkdtemp()
    children, sockets = _workers(config, port, reuseport, directory, accepts)
    try:
        for path in sockets:
            deadline = time.time() + 30
            while True:
                try:
                    _control(path, "/health")
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/page"
        subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=False)
        before = [_cpu_seconds(c.pid) for c in children]
        hits_before = [_control(s, "/stats")["servers"]["bench"]["hits"] for s in sockets]
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s",
             *(["-H", "Connection: close"] if close else []), url], capture_output=True, text=True
        ).stdout
        cpu = sum(_cpu_seconds(c.pid) - b for c, b in zip(children, before))
        hits = [_control(s, "/stats")["servers"]["bench"]["hits"] - h for s, h in zip(sockets, hits_before)]
    finally:
        for child in children:
            child.terminate()
            child.wait()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = sum(hits) or 1
    return rate, 1e6 * cpu / total, max(hits) / total


def main() -> None:
    """
    Measure every way, number of connections and accept limit, in
    interleaved rounds; print each run, then the medians.
    """
    parser = argparse.ArgumentParser(prog="python bench/workers.py")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", default="32,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accepts", default="1,100")
    parser.add_argument("--ways", default="shared,reuseport")
    parser.add_argument("--close", action="store_true",
                        help="a new connection per request (Connection: close)")
    args = parser.parse_args()
    combos = [(way, int(c), int(a)) for way in args.ways.split(",")
              for c in args.connections.split(",") for a in args.accepts.split(",")]
    results: Dict[Tuple[str, int, int], List[Tuple[float, float, float]]] = {}
    origin_port, control_port = free_port(), free_port()
    config = os.path.join(tempfile.mkdtemp(), "config.toml")
    with open(config, "w") as f:
        f.write(
            f'control_port = {control_port}\naccess_log = false\n'
            f'[server.bench]\nproxy_url = "http://127.0.0.1:{origin_port}"\n'
        )
    origin = subprocess.Popen([sys.executable, "-c", ORIGIN, str(origin_port), "0"])
    try:
        wait_port(origin_port)
        for number in range(args.rounds):
            for way, connections, accepts in combos[number % len(combos):] + combos[:number % len(combos)]:
                rate, cpu, top = measure(config, free_port(), way == "reuseport", args.seconds,
                                         connections, accepts, args.close)
                results.setdefault((way, connections, accepts), []).append((rate, cpu, top))
                print(f"round {number + 1}: {way:<10} {connections:>3} conns, {accepts:>3} accepts/wake-up: "
                      f"{rate:>7.0f} req/s {cpu:>6.1f} us CPU/request, busier worker {top:.0%}", flush=True)
    finally:
        origin.terminate()
        origin.wait()
    print()
    print("| way | connections | accepts per wake-up | req/s | CPU µs/request | busier worker's share, each round |")
    print("|---|---:|---:|---:|---:|---|")
    for key in combos:
        runs = results.get(key, [])
        if runs:
            way, connections, accepts = key
            print(f"| {way} | {connections} | {accepts} | {statistics.median(r[0] for r in runs):,.0f} "
                  f"| {statistics.median(r[1] for r in runs):.1f} | "
                  + ", ".join(f"{r[2]:.0%}" for r in runs) + " |")


if __name__ == "__main__":
    main()
