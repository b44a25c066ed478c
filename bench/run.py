"""
The whole benchmark: phantom-frame against nginx and plain twisted.web.

    python bench/run.py [--quick] [--rounds N] [--duration S] [--only NAMES]
                        [--python PATH]
    python -m bench ...

Run it from the project root, with phantom-frame installed for the
interpreter given by C{--python} (so that twistd finds its plugin). It
installs nothing. It needs C{wrk}; C{nginx} is optional (its row, and the
ratios against it, are skipped when it is absent).

Every server is a child process: a local origin (this interpreter), nginx
with C{proxy_cache}, a bare twisted.web C{static.Data} site and a
twisted.web C{ReverseProxyResource} (both on C{--python}), and phantom-frame
run by twistd from a generated configuration (access log off, Brotli
storage, a C{"*"} server and a C{"/pass"} server with C{cache_strategy =
"none"}). When C{taskset} exists and two CPUs are available, servers run on
the first CPU and C{wrk} (and the origin) on the second.

The request-rate scenarios are measured in interleaved rounds: each round
runs every system once, one after the other, so that noise on the machine
falls on all of them alike; the table gives the median over the rounds.
C{wrk -t1 -c50 --latency}, keep-alive, a 10 KB HTML page. CPU per request is
the server process's user and system time (C{/proc/PID/stat}) over the run,
divided by the requests C{wrk} counted; peak RSS is the process's C{VmHWM}.
The CPU time that processes outside the benchmark took meanwhile (the
machine's busy time in C{/proc/stat} minus the benchmark's own processes)
is reported too: figures taken on a busy machine say so.

Scenarios (C{--only} takes these names, or their numbers):

 1. C{nginx}: nginx C{proxy_cache} hit, one worker.
 2. C{nginx-pass}: nginx C{proxy_pass} to the origin, keep-alive upstream.
 3. C{ceiling}: a raw Twisted C{Protocol} writing a canned answer per
    request head (what no Twisted server beats).
 4. C{data}: twisted.web C{static.Data}, the 10 KB page.
 5. C{rpr}: twisted.web C{ReverseProxyResource} in front of the origin.
 6. C{hit}: phantom-frame cache hit, identity.
 7. C{hit-br}: phantom-frame cache hit, C{Accept-Encoding: br}.
 8. C{hit-vary}: a hit of a page carrying Next.js's C{Vary}, br.
 9. C{hit-304}: a conditional hit (C{If-None-Match}) answered 304.
10. C{hit-range}: a hit with C{Range: bytes=0-1023} answered 206.
11. C{hit-head}: a HEAD hit.
12. C{pass}: phantom-frame pass-through (C{cache_strategy = "none"}).
13. C{pass-post}: pass-through of 1 MB POST bodies.
14. C{fill}: every request a new key: fetched and stored (Brotli storage,
    compressed once asked for again, so never here).
15. C{fill-plain}: the same on a server that stores bodies as they are
    (C{compress_strategy = "none"}).
16. C{pass-new}: pass-through with a new path every request, as the
    fills have: what a fill costs beyond relaying the same requests.
17. C{misses}: concurrent misses of one new key, with the origin counting
    the requests it gets for it (its answer takes 200 ms).
18. C{stream}: RSS growth while a large body streams through the proxy.
19. C{entries}: memory per cached entry beyond the body
    (C{bench/entry_memory.py}).
20. C{compress}: hit latency alone and while 5 MB pages are compressed
    with Brotli (each filled, then asked for again, which has it
    compressed), with how long each compression took meanwhile.
21. C{ws}: WebSocket echo through the tunnel and directly
    (C{bench/ws_echo.py}).
22. C{workers}: hits with C{workers = 1} and C{workers = 2}, CPU summed
    over the supervisor and the workers (C{bench/scale.py}).
23. C{redis-l1}: hits that miss the memory L1 and are read from a real
    redis-server, next to memory hits (C{bench/scale.py}).

Compare the rows by CPU per request, not by req/s: C{wrk -t1} has one core
and saturates before nginx does, so a req/s ratio against nginx is the
client's limit. The ratios in the report are CPU ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import http.client
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Callable, Dict, List, Optional, Sequence, Tuple

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

import compress_latency  # noqa: E402
import scale  # noqa: E402
import stream_rss  # noqa: E402
from _harness import free_port, rss_kb  # noqa: E402
from _programs import NGINX_CONF, ORIGIN, PROXY_CONF, REFERENCE  # noqa: E402
from _report import (  # noqa: E402
    DEFAULT_TARGETS,
    HTTP_SCENARIOS,
    PYPY_TARGETS,
    RATE_SCENARIOS,
    SCENARIOS,
    Results,
    report,
)


def log(message: str) -> None:
    """
    Report progress on standard error (the results go to standard output).
    """
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class StartError(Exception):
    """
    A child server did not start; the message has the end of its output.
    """


class Children:
    """
    Every child process of the benchmark, each in its own session so that
    its own children go with it, and the temporary directories; all of
    them go away at exit.
    """

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen] = []
        self.dirs: List[str] = []
        self.taskset = shutil.which("taskset")
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if self.taskset and len(cpus) >= 2:
            self.server_cpu: Optional[int] = cpus[0]
            self.client_cpu: Optional[int] = cpus[1]
        else:
            self.server_cpu = self.client_cpu = None

    def tempdir(self) -> str:
        """
        @return: a new temporary directory, removed at exit.
        """
        path = tempfile.mkdtemp(prefix="phantom-frame-bench-")
        self.dirs.append(path)
        return path

    def start(self, argv: Sequence[str], cpu: Optional[int] = None,
              stdout: object = subprocess.DEVNULL) -> subprocess.Popen:
        """
        Start C{argv} from the project root, on CPU C{cpu} when pinning is
        possible.
        """
        if cpu is not None and self.taskset:
            argv = [self.taskset, "-c", str(cpu), *argv]
        proc = subprocess.Popen(
            list(argv), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=stdout,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        """
        Stop C{proc} and its process group: SIGTERM, then SIGKILL after 5 s.
        """
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if proc in self.procs:
            self.procs.remove(proc)

    def cleanup(self) -> None:
        """
        Stop every child still running, newest first, and remove the
        temporary directories.
        """
        while self.procs:
            self.stop(self.procs[-1])
        while self.dirs:
            shutil.rmtree(self.dirs.pop(), ignore_errors=True)


children = Children()


def wait_listening(proc: subprocess.Popen, port: int, logfile: Optional[str], what: str,
                   seconds: float = 60.0) -> None:
    """
    Wait until C{port} accepts connections while C{proc} runs.

    @raise StartError: C{proc} exited, or C{seconds} went by.
    """
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    tail = ""
    if logfile and os.path.exists(logfile):
        with open(logfile, errors="replace") as f:
            tail = "".join(f.readlines()[-15:])
    children.stop(proc)
    raise StartError(f"{what} did not start (exit status {proc.returncode}):\n{tail}")


def start_python(python: str, source: str, args: Sequence[object], what: str,
                 cpu: Optional[int]) -> Tuple[subprocess.Popen, int]:
    """
    Run C{source} with C{python}; its first argument is a free port.

    @return: the process and its port, once it listens.
    """
    port = free_port()
    logfile = os.path.join(children.tempdir(), "output.log")
    with open(logfile, "w") as out:
        proc = children.start([python, "-c", source, str(port), *map(str, args)], cpu, out)
    wait_listening(proc, port, logfile, what)
    return proc, port


def start_proxy(python: str, config: str, cpu: Optional[int]) -> Tuple[subprocess.Popen, int]:
    """
    Run phantom-frame with twistd from the configuration text C{config}
    (a format string taking C{port}, C{control}).

    @return: the twistd process and the proxy's port, once it listens.
    """
    tmp = children.tempdir()
    port = free_port()
    path = os.path.join(tmp, "config.toml")
    with open(path, "w") as f:
        f.write(config.format(port=port, control=free_port()))
    logfile = os.path.join(tmp, "twistd.log")
    with open(logfile, "w") as out:
        proc = children.start(
            [python, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "phantom-frame", "--config", path],
            cpu, out,
        )
    wait_listening(proc, port, logfile, "phantom-frame")
    return proc, port


def start_nginx(nginx: str, origin_port: int, cpu: Optional[int]) -> Tuple[subprocess.Popen, int]:
    """
    Run nginx (one process, no master) with a C{proxy_cache} in front of
    the origin, everything in a temporary directory.

    @return: the nginx process and its port, once it listens.
    """
    tmp = children.tempdir()
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, port=port, origin=origin_port))
    logfile = os.path.join(tmp, "error.log")
    with open(os.path.join(tmp, "stdout.log"), "w") as out:
        proc = children.start([nginx, "-p", tmp, "-c", conf, "-e", logfile], cpu, out)
    wait_listening(proc, port, logfile, "nginx")
    return proc, port


def cpu_seconds(pid: int) -> float:
    """
    @return: the user and system CPU time of process C{pid}, all threads.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kb(pid: int) -> int:
    """
    @return: the peak resident set size (C{VmHWM}) of process C{pid}, in KiB.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def fetch(port: int, path: str, headers: Optional[Dict[str, str]] = None,
          timeout: float = 30.0) -> Tuple[int, Dict[str, str], bytes]:
    """
    @return: the status, headers (lower-cased names) and body of a GET.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def origin_count(origin_port: int, path: str) -> int:
    """
    @return: how many requests the origin got for C{path}.
    """
    return int(fetch(origin_port, f"/count?path={path}")[2])


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def system_cpu() -> Tuple[float, float]:
    """
    @return: the busy and stolen CPU time of the whole machine, in seconds.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def own_cpu(pids: Sequence[int]) -> float:
    """
    @return: the CPU time of C{pids}, of this process and of its reaped
        children, in seconds.
    """
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def run_wrk(wrk: str, url: str, seconds: float, connections: int = 50,
            headers: Sequence[str] = (), pid: Optional[int] = None,
            origin: Optional[int] = None, script: Optional[str] = None) -> Dict[str, float]:
    """
    Run C{wrk} against C{url} on the client CPU (its script given a token
    of this run's own as its argument).

    @param pid: the server process whose CPU time is measured.
    @param origin: the origin process, whose CPU time is measured too.
    @param script: a wrk Lua script (method, body, or paths of each request).
    @return: C{rps}, C{p50} and C{p99} (ms), C{requests}, C{errors}
        (non-2xx/3xx answers and socket errors), C{other} (the CPUs used
        meanwhile by processes that are not part of the benchmark),
        C{steal} (CPUs taken by the hypervisor) and, with C{pid}, C{cpu_us}
        (server CPU time per request, in µs) and C{busy} (the share of a
        CPU the server used); with C{origin}, C{origin_us}.
    """
    head = script == HEAD_LOAD
    if head:
        argv = [sys.executable, HEAD_LOAD, url, f"{seconds:g}", str(connections)]
    else:
        argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
        if script is not None:
            argv += ["-s", script]
        for header in headers:
            argv += ["-H", header]
        # A token of the run's own, for the scripts that make new paths.
        argv += [url, "--", uuid.uuid4().hex[:12]]
    pids = [p for p in (pid, origin) if p]
    before = {p: cpu_seconds(p) for p in pids}
    own_before, (busy_before, steal_before) = own_cpu(pids), system_cpu()
    started = time.monotonic()
    proc = children.start(argv, children.client_cpu, subprocess.PIPE)
    try:
        out = proc.communicate(timeout=seconds + 60)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk did not finish on {url}") from None
    finally:
        children.stop(proc)
    elapsed = time.monotonic() - started
    busy_after, steal_after = system_cpu()
    own = own_cpu(pids) - own_before
    spent = {p: cpu_seconds(p) - before[p] for p in pids}
    match = re.search(r"^requests (\d+)$" if head else r"(\d+) requests in", out, re.M)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"{'the HEAD load' if head else 'wrk'} failed on {url}:\n{out}")
    if head:
        requests = float(match.group(1))
        result = {
            "requests": requests, "rps": requests / elapsed,
            "errors": float(re.search(r"^errors (\d+)$", out, re.M).group(1)),
            "other": max(0.0, (busy_after - busy_before - own) / elapsed),
            "steal": (steal_after - steal_before) / elapsed,
            "p50": float(re.search(r"^p50 ([\d.]+)$", out, re.M).group(1)),
            "p99": float(re.search(r"^p99 ([\d.]+)$", out, re.M).group(1)),
        }
        if pid and requests:
            result["cpu_us"] = spent[pid] * 1e6 / requests
            result["busy"] = spent[pid] / elapsed
        return result
    result: Dict[str, float] = {
        "requests": float(match.group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "errors": 0.0,
        "other": max(0.0, (busy_after - busy_before - own) / elapsed),
        "steal": (steal_after - steal_before) / elapsed,
    }
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        result[f"p{pct}"] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        result["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        result["errors"] += sum(int(g) for g in m.groups())
    if pid and result["requests"]:
        result["cpu_us"] = spent[pid] * 1e6 / result["requests"]
        result["busy"] = spent[pid] / elapsed
    if origin and result["requests"]:
        result["origin_us"] = spent[origin] * 1e6 / result["requests"]
        result["origin_busy"] = spent[origin] / elapsed
    return result


def run_http(args: argparse.Namespace, selected: List[str], results: Results) -> None:
    """
    Scenarios 1 to 7: start the origin and the servers they need, measure
    the request rates in interleaved rounds, then the concurrent misses.
    """
    server_cpu, client_cpu = children.server_cpu, children.client_cpu
    log("starting the origin")
    origin, origin_port = start_python(sys.executable, ORIGIN, [args.slow], "the origin", client_cpu)
    targets: Dict[str, Tuple[str, Sequence[str], int, Optional[str]]] = {}
    started: List[subprocess.Popen] = [origin]
    proxy_port = 0
    try:
        if {"nginx", "nginx-pass"} & set(selected):
            if args.nginx:
                log("starting nginx")
                try:
                    proc, port = start_nginx(args.nginx, origin_port, server_cpu)
                except StartError as e:
                    results.missing["nginx"] = results.missing["nginx-pass"] = str(e).splitlines()[0]
                    log(str(e))
                else:
                    started.append(proc)
                    targets["nginx"] = (f"http://127.0.0.1:{port}/page/nginx", (), proc.pid, None)
                    targets["nginx-pass"] = (f"http://127.0.0.1:{port}/pass/page/nginx-pass", (),
                                             proc.pid, None)
                    for _ in range(3):
                        fetch(port, "/page/nginx")
                    if origin_count(origin_port, "/page/nginx") != 1:
                        results.warnings.append("nginx: the warm-up did not give a cache hit")
            else:
                results.missing["nginx"] = results.missing["nginx-pass"] = "nginx not found"
        for name in ("ceiling", "data", "rpr"):
            if name in selected:
                log(f"starting the twisted reference ({name})")
                try:
                    proc, port = start_python(args.python, REFERENCE, [name, origin_port],
                                              f"twisted {name}", server_cpu)
                except StartError as e:
                    results.missing[name] = str(e).splitlines()[0]
                    log(str(e))
                    continue
                started.append(proc)
                targets[name] = (f"http://127.0.0.1:{port}/page/{name}", (), proc.pid, None)
        proxy_rows = [n for n in PROXY_SCENARIOS if n in selected and n not in FILL_ROWS]
        fill_rows = [n for n in FILL_ROWS if n in selected]
        scripts = wrk_scripts()
        groups = ((proxy_rows, "phantom-frame", True), (fill_rows, "phantom-frame for the fills", False))
        for rows, what, misses in groups:
            if not (rows or (misses and "misses" in selected)):
                continue
            log(f"starting {what}")
            try:
                proc, port = start_proxy(
                    args.python, PROXY_CONF.replace("{origin}", str(origin_port)), server_cpu)
            except StartError as e:
                for name in rows + (["misses"] if misses else []):
                    results.missing[name] = str(e).splitlines()[0]
                log(str(e))
                continue
            started.append(proc)
            url = f"http://127.0.0.1:{port}"
            for name in rows:
                path, headers, script = PROXY_TARGETS[name]
                targets[name] = (url + path, headers, proc.pid, scripts.get(script))
            if misses:
                proxy_port = port
                check_proxy(proxy_port, results)
        rate = [name for name in RATE_SCENARIOS if name in selected and name in targets]
        if rate:
            log(f"warming up: {', '.join(rate)}")
            for name in rate:
                url, headers, pid, script = targets[name]
                run_wrk(args.wrk, url, min(2, args.duration), headers=headers, pid=pid,
                        origin=origin.pid, script=script)
            for number in range(args.rounds):
                order = rate[number % len(rate):] + rate[:number % len(rate)]
                log(f"round {number + 1}/{args.rounds}: {', '.join(order)}")
                for name in order:
                    url, headers, pid, script = targets[name]
                    result = run_wrk(args.wrk, url, args.duration, headers=headers, pid=pid,
                                     origin=origin.pid, script=script)
                    results.rounds.setdefault(name, []).append(result)
                    results.background.append(result)
                    log(f"  {name}: {result['rps']:.0f} req/s, p99 {result['p99']:.2f} ms, "
                        f"{result.get('cpu_us', float('nan')):.1f} µs/req, server "
                        f"{result.get('busy', 0):.0%} of a CPU, origin "
                        f"{result.get('origin_busy', 0):.0%}, other processes {result['other']:.0%}")
                    if result["errors"]:
                        results.warnings.append(
                            f"{name}: {result['errors']:.0f} errors or non-2xx answers in a round")
            for name in rate:
                results.rss[name] = peak_rss_kb(targets[name][2])
            for name, path in (("nginx", "/page/nginx"), ("hit", "/page/pf"), ("hit-br", "/page/pf"),
                               ("hit-vary", "/next/page"), ("hit-304", "/page/pf"),
                               ("hit-range", "/page/pf"), ("hit-head", "/page/pf")):
                if name in rate:
                    n = origin_count(origin_port, path)
                    if n != 1:
                        results.warnings.append(
                            f"{name}: the origin saw {n} requests for {path} (all hits should give 1)")
        if "misses" in selected and proxy_port:
            run_misses(args, proxy_port, origin_port, results)
    finally:
        for proc in reversed(started):
            children.stop(proc)


#: phantom-frame's rate scenarios: path, headers and wrk script of each.
PROXY_TARGETS: Dict[str, Tuple[str, Tuple[str, ...], Optional[str]]] = {
    "hit": ("/page/pf", (), None),
    "hit-br": ("/page/pf", ("Accept-Encoding: br",), None),
    "hit-vary": ("/next/page", ("Accept-Encoding: br",), None),
    "hit-304": ("/page/pf", ('If-None-Match: "bench"',), None),
    "hit-range": ("/page/pf", ("Range: bytes=0-1023",), None),
    "hit-head": ("/page/pf", (), "head-load"),
    "pass": ("/pass/page/pass", (), None),
    "pass-post": ("/pass/post", ("Content-Type: application/octet-stream",), "post"),
    "fill": ("/fill/", (), "fill"),
    "fill-plain": ("/plain/fill/", (), "fill"),
    "pass-new": ("/pass/new/", (), "fill"),
}
PROXY_SCENARIOS = tuple(PROXY_TARGETS)

#: The rows measured on a phantom-frame process of their own: the bodies a
#: fill stores and evicts by the hundred megabytes would weigh (on PyPy's
#: collector above all) on the rows measured after them in a shared one.
FILL_ROWS = ("fill", "fill-plain")

#: C{wrk} cannot read HEAD answers: this load generator sends them instead.
HEAD_LOAD = os.path.join(BENCH_DIR, "head_load.py")

#: wrk Lua scripts: 1 MB POST bodies, a new path per request.
WRK_SCRIPTS = {
    "post": 'wrk.method = "POST"\nwrk.body = string.rep("x", 1048576)\n',
    # (wrk's math.random gives the same numbers in every run: the run's own
    # token, its first argument, keeps one run from asking for the keys an
    # earlier one stored.)
    "fill": ('local n = 0\n'
             'local run = ""\n'
             'init = function(args) run = (args[1] or "") .. "-" end\n'
             'request = function()\n'
             '  n = n + 1\n'
             '  return wrk.format(nil, wrk.path .. run .. tostring(n))\n'
             'end\n'),
}


def wrk_scripts() -> Dict[str, str]:
    """
    @return: the path of each of L{WRK_SCRIPTS}, written to a temporary
        directory.
    """
    tmp = children.tempdir()
    paths = {}
    for name, text in WRK_SCRIPTS.items():
        path = os.path.join(tmp, name + ".lua")
        with open(path, "w") as f:
            f.write(text)
        paths[name] = path
    paths["head-load"] = HEAD_LOAD
    return paths


def check_proxy(port: int, results: Results) -> None:
    """
    Check that phantom-frame answers the rate scenarios as intended: the
    page stored and hit, in identity and in Brotli, and passed through.
    """
    fetch(port, "/page/pf")
    status, headers, body = fetch(port, "/page/pf")
    if status != 200 or len(body) != 10240 or "hit" not in headers.get("cache-status", ""):
        results.warnings.append(f"hit: the second GET gave {status}, {len(body)} bytes, "
                                f"Cache-Status {headers.get('cache-status')!r}")
    status, headers, body = fetch(port, "/page/pf", {"Accept-Encoding": "br"})
    if status != 200 or headers.get("content-encoding") != "br":
        results.warnings.append(f"hit-br: got {status}, Content-Encoding "
                                f"{headers.get('content-encoding')!r}")
    else:
        log(f"phantom-frame stores the page as {len(body)} bytes of Brotli")
    fetch(port, "/next/page")
    status, headers, body = fetch(port, "/next/page")
    if status != 200 or "hit" not in headers.get("cache-status", ""):
        results.warnings.append(f"hit-vary: the second GET gave {status}, "
                                f"Cache-Status {headers.get('cache-status')!r}")
    status, headers, body = fetch(port, "/page/pf", {"If-None-Match": '"bench"'})
    if status != 304:
        results.warnings.append(f"hit-304: got {status}")
    status, headers, body = fetch(port, "/page/pf", {"Range": "bytes=0-1023"})
    if status != 206 or len(body) != 1024:
        results.warnings.append(f"hit-range: got {status}, {len(body)} bytes")
    status, headers, body = fetch(port, "/pass/page/pass")
    if status != 200 or len(body) != 10240 or "hit" in headers.get("cache-status", ""):
        results.warnings.append(f"pass: got {status}, {len(body)} bytes, "
                                f"Cache-Status {headers.get('cache-status')!r}")


async def _burst(port: int, path: str, count: int, timeout: float) -> List[Tuple[int, str]]:
    """
    Open C{count} connections, then send one GET for C{path} on each at
    once.

    @return: the status and C{Cache-Status} of every answer.
    """
    conns = await asyncio.wait_for(
        asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(count))),
        timeout)
    await asyncio.sleep(0.2)
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Connection: close\r\n\r\n").encode()
    for _, writer in conns:
        writer.write(request)

    async def answer(reader: asyncio.StreamReader) -> Tuple[int, str]:
        data = await reader.read()
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        status = int(head[0].split()[1]) if head and len(head[0].split()) > 1 else 0
        cache = next((line.split(":", 1)[1].strip() for line in head[1:]
                      if line.lower().startswith("cache-status:")), "")
        return status, cache

    try:
        return await asyncio.wait_for(asyncio.gather(*(answer(r) for r, _ in conns)), timeout)
    finally:
        for _, writer in conns:
            writer.close()


def run_misses(args: argparse.Namespace, proxy_port: int, origin_port: int,
               results: Results) -> None:
    """
    Scenario 7: C{args.misses} concurrent requests for one new key.
    """
    path = f"/slow/{uuid.uuid4().hex}"
    log(f"{args.misses} concurrent requests for {path}")
    started = time.monotonic()
    answers = asyncio.run(_burst(proxy_port, path, args.misses, 120.0))
    elapsed = time.monotonic() - started
    statuses: Dict[int, int] = {}
    kinds: Dict[str, int] = {}
    for status, cache in answers:
        statuses[status] = statuses.get(status, 0) + 1
        kind = ("collapsed" if "collapsed" in cache else "stored" if "stored" in cache
                else "hit" if "hit" in cache else cache or "none")
        kinds[kind] = kinds.get(kind, 0) + 1
    results.values["misses"] = {
        "requests": len(answers), "origin": origin_count(origin_port, path),
        "statuses": statuses, "kinds": kinds, "seconds": elapsed,
    }


def run_stream(args: argparse.Namespace, results: Results) -> None:
    """
    Scenario 8: the origin of C{bench/stream_rss.py} sends C{args.stream_mb}
    MiB; the proxy's RSS is sampled while a client downloads it.
    """
    log(f"streaming {args.stream_mb} MiB through phantom-frame")
    origin, origin_port = start_python(sys.executable, stream_rss.ORIGIN, [args.stream_mb],
                                       "the streaming origin", children.client_cpu)
    try:
        config = ('http_port = {port}\ncontrol_port = {control}\nbind_address = "127.0.0.1"\n'
                  'access_log = false\n[server.bench]\nbind_to = "*"\n'
                  f'proxy_url = "http://127.0.0.1:{origin_port}"\n')
        proxy, port = start_proxy(args.python, config, children.server_cpu)
        try:
            before, hwm_before = rss_kb(proxy.pid), peak_rss_kb(proxy.pid)
            peak, received = before, [0]

            def download() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("GET", "/big")
                response = conn.getresponse()
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    received[0] += len(chunk)
                conn.close()

            started = time.monotonic()
            client = threading.Thread(target=download, daemon=True)
            client.start()
            while client.is_alive():
                peak = max(peak, rss_kb(proxy.pid))
                client.join(0.05)
            elapsed = time.monotonic() - started
            hwm = peak_rss_kb(proxy.pid)
            if hwm > hwm_before:
                peak = max(peak, hwm)
        finally:
            children.stop(proxy)
    finally:
        children.stop(origin)
    if received[0] != args.stream_mb * 1048576:
        results.warnings.append(f"stream: received {received[0]} bytes of "
                                f"{args.stream_mb * 1048576}")
    results.values["stream"] = {
        "mib": received[0] / 1048576, "seconds": elapsed,
        "before": before / 1024, "peak": peak / 1024, "growth": (peak - before) / 1024,
    }


def run_entries(args: argparse.Namespace, results: Results) -> None:
    """
    Scenario 9: C{bench/entry_memory.py} with C{--python}.
    """
    log(f"memory per entry, {args.entries} entries")
    proc = children.start([args.python, os.path.join(BENCH_DIR, "entry_memory.py"),
                           str(args.entries)], None, subprocess.PIPE)
    try:
        out = proc.communicate(timeout=600)[0].decode(errors="replace")
    finally:
        children.stop(proc)
    m = re.search(r"([\d.]+) bytes per entry beyond the body", out)
    if proc.returncode != 0 or not m:
        results.missing["entries"] = "entry_memory.py failed: " + (out.strip().splitlines() or ["?"])[-1]
        return
    results.values["entries"] = {"count": args.entries, "bytes": float(m.group(1)),
                                 "line": out.strip().splitlines()[-1]}


def run_compress(args: argparse.Namespace, results: Results) -> None:
    """
    Scenario 10: the origin of C{bench/compress_latency.py}; hits on the
    10 KB page (Brotli, C{wrk -c10}) alone and while a client keeps having
    new 5 MB pages compressed, in interleaved rounds: it fills one (stored
    in identity), asks for it again with C{HEAD} (which has it compressed)
    and asks with C{HEAD} every 20 ms until it comes back in Brotli, then
    goes on with the next page. Each compression's time, from the second
    request to the first Brotli answer, is reported beside the latencies.
    """
    log("hit latency during 5 MB Brotli compressions")
    origin, origin_port = start_python(sys.executable, compress_latency.ORIGIN, [],
                                       "the compression origin", children.client_cpu)
    try:
        config = ('http_port = {port}\ncontrol_port = {control}\nbind_address = "127.0.0.1"\n'
                  'access_log = false\n[server.bench]\nbind_to = "*"\n'
                  f'proxy_url = "http://127.0.0.1:{origin_port}"\ncompress_strategy = "brotli"\n')
        proxy, port = start_proxy(args.python, config, children.server_cpu)
        try:
            url = f"http://127.0.0.1:{port}/page"
            for _ in range(2):
                fetch(port, "/page", {"Accept-Encoding": "br"})
            hit = ("Accept-Encoding: br",)
            run_wrk(args.wrk, url, min(2, args.duration), 10, hit, proxy.pid, origin.pid)
            alone: List[Dict[str, float]] = []
            busy: List[Dict[str, float]] = []
            compressions: List[float] = []
            started_compressions = [0]
            counter = [0]
            for number in range(args.rounds):
                log(f"round {number + 1}/{args.rounds}: alone, during compressions")
                alone.append(run_wrk(args.wrk, url, args.duration, 10, hit, proxy.pid, origin.pid))
                results.background.append(alone[-1])
                stop = threading.Event()

                def compress_loop(stop: threading.Event = stop) -> None:
                    while not stop.is_set():
                        counter[0] += 1
                        path = f"/large?{counter[0]}"
                        if fetch(port, path)[0] != 200:
                            continue
                        started = time.monotonic()
                        started_compressions[0] += 1
                        while not stop.is_set():
                            status, headers, _ = head(port, path, {"Accept-Encoding": "br"})
                            if status == 200 and headers.get("content-encoding") == "br":
                                compressions.append(time.monotonic() - started)
                                break
                            stop.wait(0.02)

                worker = threading.Thread(target=compress_loop, daemon=True)
                worker.start()
                time.sleep(0.5)
                try:
                    busy.append(run_wrk(args.wrk, url, args.duration, 10, hit, proxy.pid,
                                         origin.pid))
                    results.background.append(busy[-1])
                finally:
                    stop.set()
                    worker.join(60)
        finally:
            children.stop(proxy)
    finally:
        children.stop(origin)
    p99_alone = statistics.median(r["p99"] for r in alone)
    p99_busy = statistics.median(r["p99"] for r in busy)
    results.values["compress"] = {
        "alone_p99": p99_alone, "busy_p99": p99_busy, "ratio": p99_busy / p99_alone,
        "alone_rps": statistics.median(r["rps"] for r in alone),
        "busy_rps": statistics.median(r["rps"] for r in busy),
        "started": started_compressions[0], "fills": len(compressions),
        "fill_ms": statistics.median(compressions) * 1000 if compressions else float("nan"),
    }


def head(port: int, path: str, headers: Dict[str, str]) -> Tuple[int, Dict[str, str], bytes]:
    """
    @return: the status, headers (lower-cased names) and empty body of a
        C{HEAD}.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30.0)
    try:
        conn.request("HEAD", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, b""
    finally:
        conn.close()


def run_ws(args: argparse.Namespace, results: Results) -> None:
    """
    Scenario 11: C{bench/ws_echo.py} with C{--python}, if it is there.
    """
    script = os.path.join(BENCH_DIR, "ws_echo.py")
    if not os.path.exists(script):
        results.missing["ws"] = "not available (bench/ws_echo.py is absent)"
        return
    seconds = max(2, args.duration)
    log(f"WebSocket echo, {seconds:g} s each way")
    proc = children.start([args.python, script, f"{seconds:g}"], None, subprocess.PIPE)
    try:
        out = proc.communicate(timeout=120 + 4 * seconds)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        out = ""
    finally:
        children.stop(proc)
    tunnel = re.search(r"through phantom-frame \|\s*([\d.]+)", out)
    direct = re.search(r"direct to the origin \|\s*([\d.]+)", out)
    if proc.returncode != 0 or not (tunnel and direct):
        results.missing["ws"] = "not available (ws_echo.py failed: " + \
            ((out.strip().splitlines() or ["timed out"])[-1]) + ")"
        return
    clients = re.search(r"(\d+) clients", out)
    results.values["ws"] = {
        "tunnel": float(tunnel.group(1)), "direct": float(direct.group(1)),
        "clients": int(clients.group(1)) if clients else 0, "seconds": seconds,
    }


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def interpreter(python: str) -> str:
    """
    @return: a description of C{python} and its Twisted, or why it failed.
    """
    try:
        return subprocess.run(
            [python, "-c", "import platform, twisted; print(platform.python_implementation(), "
                           "platform.python_version(), '/ Twisted', twisted.__version__)"],
            capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise SystemExit(f"{python} cannot run Twisted: {e}") from None


def parse_args(argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, List[str]]:
    """
    @return: the options and the selected scenario names, in order.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="phantom-frame against nginx proxy_cache and twisted.web.")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5,
                        help="seconds of each wrk run (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 3 s, a 256 MiB streamed body")
    parser.add_argument("--only", default="",
                        help="comma-separated scenarios, by name or number: " + ", ".join(
                            f"{i + 1}={n}" for i, n in enumerate(SCENARIOS)))
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter for phantom-frame and the twisted.web references "
                             "(default: this one)")
    parser.add_argument("--stream-mb", type=int, default=None,
                        help="MiB streamed in scenario 8 (default 1024, 256 with --quick)")
    parser.add_argument("--entries", type=int, default=100000,
                        help="entries stored in scenario 9 (default 100000)")
    parser.add_argument("--misses", type=int, default=1000,
                        help="concurrent requests in scenario 7 (default 1000)")
    parser.add_argument("--slow", type=float, default=0.2,
                        help="seconds the origin takes to answer in scenario 7 (default 0.2)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 3
        if args.stream_mb is None:
            args.stream_mb = 256
    if args.stream_mb is None:
        args.stream_mb = 1024
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds and --duration must be positive")
    selected: List[str] = []
    for item in filter(None, (s.strip() for s in args.only.split(","))):
        name = SCENARIOS[int(item) - 1] if item.isdigit() and 0 < int(item) <= len(SCENARIOS) else item
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {item!r}; choose from {', '.join(SCENARIOS)}")
        if name not in selected:
            selected.append(name)
    selected = [n for n in SCENARIOS if n in selected] if selected else list(SCENARIOS)
    return args, selected


def main(argv: Optional[Sequence[str]] = None) -> None:
    """
    Run the selected scenarios and print the report; on Ctrl-C, stop every
    child and exit with status 130.
    """
    try:
        _main(argv)
    except KeyboardInterrupt:
        children.cleanup()
        log("interrupted; every server was stopped")
        raise SystemExit(130) from None


def _main(argv: Optional[Sequence[str]]) -> None:
    args, selected = parse_args(argv)
    if not os.path.exists(os.path.join(ROOT, "twisted", "plugins", "phantom_frame_plugin.py")):
        raise SystemExit(f"{ROOT} does not look like the phantom-frame project root")
    args.targets = PYPY_TARGETS if interpreter(args.python).startswith("PyPy") else DEFAULT_TARGETS
    args.wrk = shutil.which("wrk")
    if args.wrk is None and (set(RATE_SCENARIOS) | {"compress", "workers", "redis-l1"}) & set(selected):
        raise SystemExit("wrk is not installed (on Debian or Ubuntu: apt-get install wrk); "
                         "it drives the request-rate and latency scenarios")
    args.nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    atexit.register(children.cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))

    header = [
        f"phantom-frame benchmark, {time.strftime('%Y-%m-%d %H:%M')}: servers on "
        f"{interpreter(args.python)}; harness and origins on {platform.python_implementation()} "
        f"{platform.python_version()}; {os.cpu_count()} CPUs; "
        + (f"servers pinned to CPU {children.server_cpu}, wrk and the origins to CPU "
           f"{children.client_cpu}" if children.server_cpu is not None else "no CPU pinning")
        + f"; nginx {'found' if args.nginx else 'not found'}; load average "
        f"{os.getloadavg()[0]:.2f} at start.",
        "",
        "Command: `python " + " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]) + "`",
    ]
    results = Results()
    started = time.monotonic()
    steps: List[Tuple[str, Callable[[argparse.Namespace, Results], None]]] = [
        ("stream", run_stream), ("entries", run_entries), ("compress", run_compress), ("ws", run_ws),
        ("workers", lambda a, r: scale.run_workers(a, r, sys.modules[__name__])),
        ("redis-l1", lambda a, r: scale.run_redis(a, r, sys.modules[__name__])),
    ]
    try:
        if set(HTTP_SCENARIOS) & set(selected):
            try:
                run_http(args, selected, results)
            except (StartError, RuntimeError, OSError, asyncio.TimeoutError,
                    subprocess.SubprocessError) as e:
                log(f"{type(e).__name__}: {e}")
                for name in HTTP_SCENARIOS:
                    if name not in results.rounds and name not in results.values:
                        results.missing.setdefault(name, _first_line(e))
        for name, step in steps:
            if name in selected:
                try:
                    step(args, results)
                except (StartError, RuntimeError, OSError, subprocess.SubprocessError) as e:
                    log(f"{type(e).__name__}: {e}")
                    results.missing[name] = _first_line(e)
    finally:
        children.cleanup()
    log(f"done in {time.monotonic() - started:.0f} s")
    report(args, selected, results, header)


if __name__ == "__main__":
    main()
