"""
Shared pieces of the benchmarks: free ports, waiting for a listener, RSS,
and an origin plus phantom-frame started as child processes.

Run the benchmarks from the project root (``python bench/NAME.py``) with
phantom-frame installed, so twistd finds its plugin.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Iterator, List, Tuple


def free_port() -> int:
    """
    @return: a loopback TCP port that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, seconds: float = 30) -> None:
    """
    Wait until something accepts connections on C{port}.
    """
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def rss_kb(pid: int) -> int:
    """
    @return: the resident set size of process C{pid}, in KiB.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@contextlib.contextmanager
def origin_and_proxy(
    origin_source: str, origin_args: List[str] = (), root_config: str = ""
) -> Iterator[Tuple[int, subprocess.Popen]]:
    """
    Run C{origin_source} (a Python program whose first argument is its
    port) and phantom-frame in front of it, access log off.

    @param root_config: more root keys of its configuration, as TOML lines.

    @return: a context manager giving the proxy's port and process.
    """
    origin_port, proxy_port, control_port = free_port(), free_port(), free_port()
    config = os.path.join(tempfile.mkdtemp(), "config.toml")
    with open(config, "w") as f:
        f.write(
            f'http_port = {proxy_port}\ncontrol_port = {control_port}\nbind_address = "127.0.0.1"\n'
            f'access_log = false\n{root_config}[server.bench]\nproxy_url = "http://127.0.0.1:{origin_port}"\n'
        )
    origin = subprocess.Popen([sys.executable, "-c", origin_source, str(origin_port), *origin_args])
    proxy = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "phantom-frame", "--config", config],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(origin_port)
        wait_port(proxy_port)
        yield proxy_port, proxy
    finally:
        for child in (proxy, origin):
            child.terminate()
            child.wait()
