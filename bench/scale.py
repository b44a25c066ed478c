"""
The scale-out scenarios of C{bench/run.py} (C{python -m bench --only
workers,redis-l1}):

- C{workers}: aggregate hit throughput and CPU per request of one
  configuration run with C{workers = 1} and with C{workers = 2}. The CPU is
  summed over the supervisor and every worker (C{/proc/PID/stat} of each);
  C{wrk -t2 -c64} drives it, nothing is pinned (the workers need both CPUs),
  and wrk's own CPU is reported beside. On a 2-CPU machine wrk takes about
  one CPU itself, so two workers cannot show twice the requests per second
  here: what the row shows is the cost per request of the multi-process
  set-up and how far two workers go on the CPU left.
- C{redis-l1}: the cost of a hit that misses the memory L1 and is read from
  Redis, next to memory hits of the same pages in the same proxy process:
  a C{"memory"} server and a C{"redis"} server (C{redis_l1_bytes} of 1 MiB,
  about 100 pages) in front of the same origin, a real C{redis-server} on a
  UNIX socket in a temporary directory. wrk cycles through C{PAGES}
  distinct pages (so every request of the Redis server misses its L1), or
  asks for one page (L1 hits). CPU per request of the proxy and of
  redis-server, and Redis reads per request (C{INFO stats}), are given.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import statistics
import subprocess
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: Distinct pages cycled through in C{redis-l1}.
PAGES = 1000

#: The configuration of C{workers} (a format string: C{port}, C{control},
#: C{origin}, C{workers}).
WORKERS_CONF = """\
http_listen = "tcp:{port}:interface=127.0.0.1:backlog=1024"
control_port = {control}
access_log = false
workers = {workers}

[server.site]
bind_to = "*"
proxy_url = "http://127.0.0.1:{origin}"
"""

#: The configuration of C{redis-l1} (C{port}, C{control}, C{origin},
#: C{redis}).
REDIS_CONF = """\
http_listen = "tcp:{port}:interface=127.0.0.1:backlog=1024"
control_port = {control}
access_log = false
redis_url = "unix://{redis}"
redis_l1_bytes = "1MB"

[server.mem]
bind_to = "/mem"
proxy_url = "http://127.0.0.1:{origin}"

[server.shared]
bind_to = "/redis"
proxy_url = "http://127.0.0.1:{origin}"
cache_storage_mode = "redis"
"""

#: A wrk script asking for C{PREFIX}1 ... C{PREFIX}N in turn.
CYCLE = """\
local n = 0
request = function()
  n = n % {count} + 1
  return wrk.format(nil, "{prefix}" .. n)
end
"""

#: The rows of C{redis-l1}: label, path (or prefix) and whether it cycles.
REDIS_ROWS: Tuple[Tuple[str, str, bool], ...] = (
    ("memory hit, one page", "/mem/page/1", False),
    (f"memory hit, {PAGES} pages in turn", "/mem/page/", True),
    ("redis server, L1 hit, one page", "/redis/page/1", False),
    (f"redis server, L1 miss → Redis, {PAGES} pages in turn", "/redis/page/", True),
)


def _wrk(bench: Any, argv: List[str], pids: Sequence[int], seconds: float,
         cpu: Optional[int]) -> Dict[str, Any]:
    """
    Run wrk, measuring the CPU time of C{pids}, of wrk itself and of the
    processes outside the benchmark.

    @return: C{requests}, C{rps}, C{errors}, C{cpu} (seconds, by pid),
        C{wrk} (wrk's share of a CPU), C{other} (CPUs used by the others),
        C{elapsed}.
    """
    before = {pid: bench.cpu_seconds(pid) for pid in pids}
    own_before, (busy_before, _) = bench.own_cpu(pids), bench.system_cpu()
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = bench.children.start(argv, cpu, subprocess.PIPE)
    try:
        out = proc.communicate(timeout=seconds + 60)[0].decode(errors="replace")
    finally:
        bench.children.stop(proc)
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = {pid: bench.cpu_seconds(pid) - before[pid] for pid in pids}
    other = bench.system_cpu()[0] - busy_before - (bench.own_cpu(pids) - own_before)
    match = re.search(r"(\d+) requests in", out)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed:\n{out}")
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses:\s+(\d+)",
                    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
        m = re.search(pattern, out)
        if m:
            errors += sum(int(g) for g in m.groups())
    wrk_cpu = (after.ru_utime + after.ru_stime) - (reaped.ru_utime + reaped.ru_stime)
    return {
        "requests": float(match.group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "errors": errors, "cpu": spent, "wrk": wrk_cpu / elapsed,
        "other": max(0.0, other / elapsed), "elapsed": elapsed,
    }


def _start_proxy(bench: Any, python: str, text: str, cpu: Optional[int]) -> Tuple[Any, int, str]:
    """
    Run phantom-frame from the configuration C{text} (a format string
    taking C{port} and C{control}).

    @return: the twistd process, the proxy's port and its log file.
    """
    tmp = bench.children.tempdir()
    port = bench.free_port()
    path = os.path.join(tmp, "config.toml")
    with open(path, "w") as f:
        f.write(text.format(port=port, control=bench.free_port()))
    logfile = os.path.join(tmp, "twistd.log")
    with open(logfile, "w") as out:
        proc = bench.children.start(
            [python, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "phantom-frame", "--config", path], cpu, out)
    bench.wait_listening(proc, port, logfile, "phantom-frame")
    return proc, port, logfile


def _worker_pids(logfile: str, count: int, seconds: float = 60.0) -> List[int]:
    """
    @return: the pids of the C{count} workers the supervisor logged, once
        every one has said its control site is up.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(logfile, errors="replace") as f:
            text = f.read()
        pids = [int(p) for p in re.findall(r"workers: worker-\d+ started \(pid (\d+)\)", text)]
        ready = len(re.findall(r"\[worker-\d+\] [^\n]*ControlSite starting on", text))
        if len(pids) >= count and ready >= count:
            return pids[-count:]
        time.sleep(0.1)
    raise RuntimeError(f"the {count} workers did not start:\n{text[-2000:]}")


def run_workers(args: Any, results: Any, bench: Any) -> None:
    """
    Scenario C{workers}: the same hit with C{workers = 1} and
    C{workers = 2}, in interleaved rounds.

    @param bench: the C{bench/run.py} module (its children, CPU readers and
        starters).
    """
    origin, origin_port = bench.start_python(bench.sys.executable, bench.ORIGIN, [args.slow],
                                             "the origin", None)
    try:
        servers: Dict[int, Tuple[Any, int, List[int]]] = {}
        for count in (1, 2):
            bench.log(f"starting phantom-frame with workers = {count}")
            proc, port, logfile = _start_proxy(
                bench, args.python,
                WORKERS_CONF.replace("{origin}", str(origin_port)).replace("{workers}", str(count)),
                None)
            pids = [proc.pid] + (_worker_pids(logfile, count) if count > 1 else [])
            servers[count] = (proc, port, pids)
        path = "/page/scale"
        rounds: Dict[int, List[Dict[str, Any]]] = {1: [], 2: []}
        argv = lambda port, seconds: [args.wrk, "-t2", "-c64", f"-d{seconds:g}s",  # noqa: E731
                                      f"http://127.0.0.1:{port}{path}"]
        for count, (_, port, pids) in servers.items():
            _wrk(bench, argv(port, min(2, args.duration)), pids, 2, None)
        seen = bench.origin_count(origin_port, path)
        if seen != 3:
            results.warnings.append(f"workers: the origin saw {seen} requests for {path} "
                                    "(one per process that serves: 3)")
        for number in range(args.rounds):
            order = (1, 2) if number % 2 == 0 else (2, 1)
            bench.log(f"round {number + 1}/{args.rounds}: workers = {order[0]}, {order[1]}")
            for count in order:
                _, port, pids = servers[count]
                result = _wrk(bench, argv(port, args.duration), pids, args.duration, None)
                rounds[count].append(result)
                total = sum(result["cpu"].values())
                bench.log(f"  workers = {count}: {result['rps']:.0f} req/s, "
                          f"{total * 1e6 / result['requests']:.1f} µs/req, proxy "
                          f"{total / result['elapsed']:.0%} of a CPU, wrk {result['wrk']:.0%}, "
                          f"other processes {result['other']:.0%}")
                if result["errors"]:
                    results.warnings.append(f"workers: {result['errors']} errors in a round")
        for count, (proc, _, _) in servers.items():
            bench.children.stop(proc)
    finally:
        bench.children.stop(origin)
    rows = []
    for count in (1, 2):
        runs = rounds[count]
        pids = servers[count][2]
        rows.append({
            "workers": count,
            "rps": statistics.median(r["rps"] for r in runs),
            "cpu_us": statistics.median(sum(r["cpu"].values()) * 1e6 / r["requests"] for r in runs),
            "busy": statistics.median(sum(r["cpu"].values()) / r["elapsed"] for r in runs),
            "shares": [statistics.median(r["cpu"][pid] / r["elapsed"] for r in runs) for pid in pids],
            "wrk": statistics.median(r["wrk"] for r in runs),
            "other": max(r["other"] for r in runs),
        })
    results.values["workers"] = {"rows": rows, "rounds": args.rounds, "duration": args.duration}


def _redis_command(path: str, command: str) -> bytes:
    """
    @return: the raw reply of an inline C{command} sent to the Redis server
        on the UNIX socket C{path}.
    """
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(command.encode() + b"\r\n")
        data = s.recv(65536)
        if data.startswith(b"$"):
            size = int(data[1:data.index(b"\r\n")])
            while len(data) < data.index(b"\r\n") + 2 + size:
                data += s.recv(65536)
        return data


def _redis_reads(path: str) -> int:
    """
    @return: the keyspace hits and misses the Redis server counted so far.
    """
    info = _redis_command(path, "INFO stats").decode(errors="replace")
    return sum(int(n) for n in re.findall(r"^keyspace_(?:hits|misses):(\d+)", info, re.M))


def _redis_ready(bench: Any, port: int, path: str, seconds: float = 30.0) -> None:
    """
    Fill new pages of the Redis server until one of them reaches Redis:
    the proxy connects to Redis after it starts, and a fill stored before
    that is only in its L1 (nothing is queued for later).

    @raise RuntimeError: when none reaches Redis within C{seconds}.
    """
    deadline = time.monotonic() + seconds
    number = 0
    while time.monotonic() < deadline:
        number += 1
        bench.fetch(port, f"/redis/ready/{number}")
        time.sleep(0.1)
        if int(_redis_command(path, "DBSIZE").strip()[1:] or 0) > 0:
            return
    raise RuntimeError("no entry reached Redis")


def start_redis(bench: Any, cpu: Optional[int]) -> Tuple[Any, str]:
    """
    Run redis-server on a UNIX socket in a temporary directory, without
    persistence.

    @return: the process and its socket's path, once it answers PING.
    @raise bench.StartError: when redis-server is absent or does not start.
    """
    import shutil

    server = shutil.which("redis-server")
    if server is None:
        raise bench.StartError("redis-server not found")
    tmp = bench.children.tempdir()
    path = os.path.join(tmp, "redis.sock")
    proc = bench.children.start(
        [server, "--port", "0", "--unixsocket", path, "--save", "", "--appendonly", "no",
         "--dir", tmp, "--maxmemory-policy", "allkeys-lru"], cpu)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _redis_command(path, "PING").startswith(b"+PONG"):
                return proc, path
        except OSError:
            pass
        time.sleep(0.05)
    bench.children.stop(proc)
    raise bench.StartError("redis-server did not start")


def run_redis(args: Any, results: Any, bench: Any) -> None:
    """
    Scenario C{redis-l1}: memory hits, Redis L1 hits and L1 misses read
    from Redis, in interleaved rounds, in one proxy process.

    @param bench: the C{bench/run.py} module.
    """
    client = bench.children.client_cpu
    origin, origin_port = bench.start_python(bench.sys.executable, bench.ORIGIN, [args.slow],
                                             "the origin", client)
    started = [origin]
    try:
        redis, sock = start_redis(bench, client)
        started.append(redis)
        text = REDIS_CONF.replace("{origin}", str(origin_port)).replace("{redis}", sock)
        proxy, port, _ = _start_proxy(bench, args.python, text, bench.children.server_cpu)
        started.append(proxy)
        tmp = bench.children.tempdir()
        scripts = {}
        for _, prefix, cycles in REDIS_ROWS:
            if cycles:
                scripts[prefix] = os.path.join(tmp, prefix.strip("/").replace("/", "-") + ".lua")
                with open(scripts[prefix], "w") as f:
                    f.write(CYCLE.format(count=PAGES, prefix=prefix))
        _redis_ready(bench, port, sock)
        bench.log(f"storing {PAGES} pages in each server")
        for number in range(1, PAGES + 1):
            for prefix in ("/mem/page/", "/redis/page/"):
                status, _, body = bench.fetch(port, f"{prefix}{number}")
                if status != 200 or len(body) != 10240:
                    raise RuntimeError(f"{prefix}{number}: {status}, {len(body)} bytes")

        def argv(prefix: str, seconds: float) -> List[str]:
            url = f"http://127.0.0.1:{port}"
            if prefix in scripts:
                return [args.wrk, "-t1", "-c50", f"-d{seconds:g}s", "-s", scripts[prefix], url + "/"]
            return [args.wrk, "-t1", "-c50", f"-d{seconds:g}s", url + prefix]

        pids = [proxy.pid, redis.pid]
        for _, prefix, _ in REDIS_ROWS:
            _wrk(bench, argv(prefix, min(2, args.duration)), pids, 2, client)
        rounds: Dict[str, List[Dict[str, Any]]] = {label: [] for label, _, _ in REDIS_ROWS}
        for number in range(args.rounds):
            order = REDIS_ROWS[number % len(REDIS_ROWS):] + REDIS_ROWS[:number % len(REDIS_ROWS)]
            bench.log(f"round {number + 1}/{args.rounds}: redis-l1")
            for label, prefix, _ in order:
                reads = _redis_reads(sock)
                result = _wrk(bench, argv(prefix, args.duration), pids, args.duration, client)
                result["reads"] = (_redis_reads(sock) - reads) / result["requests"]
                rounds[label].append(result)
                results.background.append({"other": result["other"], "steal": 0.0})
                bench.log(f"  {label}: {result['rps']:.0f} req/s, proxy "
                          f"{result['cpu'][proxy.pid] * 1e6 / result['requests']:.1f} µs/req, redis "
                          f"{result['cpu'][redis.pid] * 1e6 / result['requests']:.1f} µs/req, "
                          f"{result['reads']:.2f} Redis reads/req")
                if result["errors"]:
                    results.warnings.append(f"redis-l1: {label}: {result['errors']} errors in a round")
        counts = {p: bench.origin_count(origin_port, p) for p in ("/page/1", "/mem/page/1", "/redis/page/1")}
        if sum(counts.values()) != 2:
            results.warnings.append(f"redis-l1: the origin saw {counts} requests for page 1 "
                                    "(one per server: 2 in all)")
    finally:
        for proc in reversed(started):
            bench.children.stop(proc)
    rows = []
    for label, _, _ in REDIS_ROWS:
        runs = rounds[label]
        rows.append({
            "label": label,
            "rps": statistics.median(r["rps"] for r in runs),
            "proxy_us": statistics.median(r["cpu"][proxy.pid] * 1e6 / r["requests"] for r in runs),
            "redis_us": statistics.median(r["cpu"][redis.pid] * 1e6 / r["requests"] for r in runs),
            "reads": statistics.median(r["reads"] for r in runs),
            "other": max(r["other"] for r in runs),
        })
    results.values["redis-l1"] = {"rows": rows, "rounds": args.rounds, "duration": args.duration}


def report_lines(name: str, value: Dict[str, Any]) -> List[str]:
    """
    @return: the Markdown table of scenario C{name}'s C{value}.
    """
    rows = value["rows"]
    runs = f"median of {value['rounds']} interleaved round(s) of {value['duration']:g} s"
    if name == "workers":
        lines = ["| workers | req/s | CPU µs/req (all processes) | proxy CPU | each process "
                 "(supervisor first) | wrk CPU | others, at most |", "|---:|---:|---:|---:|---|---:|---:|"]
        for row in rows:
            shares = " / ".join(f"{s:.0%}" for s in row["shares"])
            lines.append(f"| {row['workers']} | {row['rps']:,.0f} | {row['cpu_us']:.1f} "
                         f"| {row['busy']:.0%} | {shares} | {row['wrk']:.0%} | {row['other']:.0%} |")
        lines += ["", f"`wrk -t2 -c64`, one cached 10 KB page, nothing pinned; {runs}. CPU is "
                      "summed over the supervisor and the workers; the shares are of one CPU; "
                      "\"others\" is the CPU that processes outside the benchmark took. wrk runs "
                      "on the same 2 CPUs: the proxy gets what wrk and the others leave."]
        return lines
    lines = ["| row | req/s | proxy CPU µs/req | redis-server CPU µs/req | Redis reads/req "
             "| others, at most |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['label']} | {row['rps']:,.0f} | {row['proxy_us']:.1f} "
                     f"| {row['redis_us']:.1f} | {row['reads']:.2f} | {row['other']:.0%} |")
    lines += ["", f"`wrk -t1 -c50`, 10 KB pages, proxy pinned to one CPU, wrk, the origin and "
                  f"redis-server (UNIX socket) to the other; `redis_l1_bytes = \"1MB\"`; {runs}."]
    return lines
