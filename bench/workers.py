"""
Two ways for two worker processes to share one port, measured with wrk:

- C{shared}: one listening socket, opened once and passed to both workers
  (what C{workers = 2} does);
- C{reuseport}: each worker its own socket bound with C{SO_REUSEPORT} to the
  same port; the kernel spreads new connections between the sockets.

    python bench/workers.py [SECONDS] [CONNECTIONS]

Both run the very same worker (C{twistd -n phantom-frame} in worker mode,
handed its socket as an inherited descriptor) in front of the bench origin, and wrk
asks for one cached page. For each way it prints the requests per second,
the CPU time the workers spent per request, and how the requests spread
(each worker's share of the cache hits, read from its private control
socket). wrk opens its connections once, so the spread is decided when they
connect; C{CONNECTIONS} should be a few dozen.
"""

from __future__ import annotations

import json
import os
import re
import socket
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


def _workers(config: str, port: int, reuseport: bool, directory: str) -> Tuple[List[subprocess.Popen], List[str]]:
    shared = None if reuseport else _listening_socket(port, False)
    children, sockets = [], []
    for index in range(2):
        sock = _listening_socket(port, True) if reuseport else shared
        control = os.path.join(directory, f"{'r' if reuseport else 's'}{index}.sock")
        fd = sock.fileno()
        setup = {"index": index, "listeners": {"http_port": [fd, socket.AF_INET]}, "control": control}
        children.append(subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
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


def measure(config: str, port: int, reuseport: bool, seconds: float, connections: int) -> str:
    """
    @return: one line: the way, requests per second, CPU per request and
        each worker's share of the hits.
    """
    directory = tempfile.mkdtemp()
    children, sockets = _workers(config, port, reuseport, directory)
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
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url], capture_output=True, text=True
        ).stdout
        cpu = sum(_cpu_seconds(c.pid) - b for c, b in zip(children, before))
        hits = [_control(s, "/stats")["servers"]["bench"]["hits"] - h for s, h in zip(sockets, hits_before)]
    finally:
        for child in children:
            child.terminate()
            child.wait()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = sum(hits) or 1
    shares = " / ".join(f"{100 * h / total:.0f}%" for h in hits)
    way = "reuseport" if reuseport else "shared"
    return f"{way:<10} {rate:>9.0f} req/s  {1e6 * cpu / total:>6.1f} us CPU/request  spread {shares}"


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 32
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
        for reuseport in (False, True):
            print(measure(config, free_port(), reuseport, seconds, connections), flush=True)
    finally:
        origin.terminate()
        origin.wait()


if __name__ == "__main__":
    main()
