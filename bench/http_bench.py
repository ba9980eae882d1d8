"""HTTP benchmark: the receiver next to reference Flask apps, over real HTTP, under gunicorn.

    .venv/bin/python bench/http_bench.py [--duration 10] [--runs 3]

Needs ``wrk`` (Debian: ``apt-get install -y wrk``). Starts a private
redis-server (AOF on) on a free loopback port, then serves each scenario in
turn with gunicorn as the Procfile does (``--config python:receiver.deploy.gunicorn_config``,
``--workers 2``, worker class and threads as the config says unless
``--worker-class`` / ``--threads N``; ``--worker-class gevent,sync`` gives a load
table per class in one run; bound to a free 127.0.0.1 port):

- bare Flask returning 200 (``bench.reference_apps:bare``);
- naive Flask: HMAC check, ``json.loads``, one RQ ``enqueue`` per change
  (``bench.reference_apps:naive_rq``);
- the receiver with an inline no-op handler (``bench.inline_noop``);
- the receiver with a background no-op handler (``bench.noop``): the durable
  ack path, with one ``receiver worker`` beside it. After the load it waits
  for the queue to drain and checks that every acked event was handled by
  counting the receiver's ``done`` state keys in Redis (no extra handler work);
- the same with ``bench.counting``, whose handler INCRs a Redis counter: the
  correctness check run (handled by the handler itself, not only recorded).

Load: ``wrk -t2 -c16`` for ``--duration`` seconds, POST /webhook of a ~509-byte
signed group.comments delivery. Every request carries a distinct comment (same
size, pre-signed with HMAC-SHA256, read by the Lua script from a pool file),
so the receiver's dedupe never turns the background work into skips; the
pool is sized so that it does not wrap. CPU per request is the utime+stime
of the gunicorn master and its workers (``psutil``) over the load, divided by
the requests wrk completed; RSS is per gunicorn worker after the load. wrk,
gunicorn, the worker and Redis share this machine's cores.

Below the table, one line per run: the kernel's share of the server CPU,
Redis commands and Redis CPU per request (for background scenarios counted
until drained, so the worker's commands are in), and for background
scenarios acked vs handled events, drain time and worker CPU per event.
"Handled" may exceed "acked" by up to the connection count: requests in
flight when wrk stops are served but not counted by wrk.

A second table sends deliveries of 1, 10, 100 and 1,000 changes, one at a
time from a Python client (fresh connection each: sync workers close it),
to the receiver with the background no-op handler: ack latency (p50, p99;
with 50 samples p99 is the slowest) and server CPU per event.

A third table is worker drain (``bench/queue_bench.py``'s): no-op background
events per second for one and two ``receiver worker`` processes, next to plain
RQ draining one job per event.

The receiver logs as shipped (``--log-level``, default INFO: a line per
request and per background attempt, to a file), with metrics in multiprocess
mode, traces and stats. ``--before PATH`` also serves the receiver (both
no-op scenarios, the size table and worker drain) from another checkout, e.g.
``git worktree add /tmp/main-ref main``, with this harness, interleaved with
this checkout's: before and after in one run.

Each (scenario, run) gets a flushed Redis and fresh processes; ``--runs N``
reports medians with the spread (min–max). Nothing but loopback; every
process started here is stopped on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis
from rq import Worker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.queue_bench import print_drain_table  # noqa: E402
from receiver.queue import keys  # noqa: E402
from receiver.testing import RedisServer, free_port, gunicorn_command  # noqa: E402

SECRET = "bench-secret"
QUEUE = "receiver"
PATH = "/webhook"
GUNICORN_WORKERS = 2
WRK_THREADS = 2
WRK_CONNECTIONS = 16
WARMUP_REQUESTS = 50
POOL_RATE = 8000
"""Requests per second the wrk pool covers before it would wrap."""
WARMUP_BASE = 900_000_000
"""Comment numbers for warm-up deliveries: apart from the wrk pool's."""
SIZES = ((1, 1000), (10, 300), (100, 100), (1000, 50))
"""(changes per delivery, deliveries sent) for the ack-cost table."""
STARTUP_TIMEOUT = 30.0

WRK_SCRIPT = """\
-- Each wrk thread cycles through its own file of pre-signed deliveries:
-- one "<X-Hub-Signature-256 value> <body>" per line.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  pool = {}
  for line in io.lines(args[1] .. "/pool_" .. tid .. ".txt") do
    local signature, body = line:match("^(%S+) (.*)$")
    local headers = {["Content-Type"] = "application/json",
                     ["X-Hub-Signature-256"] = signature}
    pool[#pool + 1] = wrk.format("POST", args[2], headers, body)
  end
  index = 0
  wrapped = 0
end

function request()
  index = index + 1
  if index > #pool then
    index = 1
    wrapped = wrapped + 1
  end
  return pool[index]
end

function done(summary, latency, requests)
  local wraps = 0
  for _, thread in ipairs(threads) do
    wraps = wraps + thread:get("wrapped")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "wraps": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), wraps))
end
"""


# --- payloads ---------------------------------------------------------------------------------


def change(n: int) -> dict[str, object]:
    """A group.comments change (tests/payloads' sample) made distinct, at a fixed size, by n."""
    return {
        "field": "comments",
        "value": {
            "from": {"id": "100016022019645", "name": "REDACTED_NAME_1"},
            "comment_id": f"54523683251{n:09d}",
            "community": {"id": "1206397592809948"},
            "post_id": "483499012017824_545236315844093",
            "verb": "add",
            "created_time": "2018-01-16T03:03:13+0000",
            "message": f"this is comment {n:015d}",
            "permalink_url": "https://cibc.facebook.com/groups/483499012017824/permalink/"
            "545236315844093/?comment_id=545236832510708",
        },
    }


def delivery(first: int, changes: int = 1) -> bytes:
    envelope = {
        "entry": [
            {
                "changes": [change(first + i) for i in range(changes)],
                "id": "483499012017824",
                "time": 1516071794,
            }
        ],
        "object": "group",
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def write_pools(folder: Path, threads: int, per_thread: int) -> None:
    """One file per wrk thread, disjoint comment numbers: no delivery is sent twice."""
    for thread in range(threads):
        with open(folder / f"pool_{thread + 1}.txt", "w") as pool:
            for n in range(thread * per_thread, (thread + 1) * per_thread):
                body = delivery(n)
                pool.write(f"{sign(body)} {body.decode()}\n")


# --- processes and measurements ---------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    """What every scenario shares: the folder, the private Redis, the environment, the pool."""

    folder: Path
    redis_url: str
    redis_pid: int
    env: dict[str, str]

    @property
    def connection(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=10)


def base_env(redis_url: str, data_dir: Path, log_level: str = "INFO") -> dict[str, str]:
    """This process's environment without any receiver or gunicorn tuning, plus the bench's."""
    tuning = ("RECEIVER_", "GUNICORN_", "WEB_CONCURRENCY", "PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuning)}
    env.update(
        RECEIVER_APP_SECRET=SECRET,
        RECEIVER_VERIFY_TOKEN="t",
        RECEIVER_DATA_DIR=str(data_dir),
        RECEIVER_LOG_LEVEL=log_level,
        REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
    )
    return env


@contextlib.contextmanager
def spawn(
    command: list[str], env: dict[str, str], log: Path, root: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in ``root``, logging to ``log``, stopped (SIGTERM, then SIGKILL)."""
    with open(log, "ab") as output:
        process = subprocess.Popen(
            command, env=env, cwd=root, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=35)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def gunicorn(
    lab: Lab, app: str, env: dict[str, str], root: Path = ROOT
) -> Iterator[tuple[int, int]]:
    """gunicorn as the Procfile runs it, on a free loopback port: yields (port, master pid)."""
    port = free_port()
    # A checkout from before the config moved into the package keeps it as a file.
    old_config = root / "config" / "gunicorn.conf.py"
    command = gunicorn_command(
        port, GUNICORN_WORKERS, app, config=old_config if old_config.exists() else
        "python:receiver.deploy.gunicorn_config"
    )
    log = lab.folder / "gunicorn.log"
    with spawn(command, {**env, "PYTHONPATH": str(root)}, log, root) as process:

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn {app} exited:\n{tail(log)}")
            return answers(port) and len(psutil.Process(process.pid).children()) >= 2

        wait_until(ready, STARTUP_TIMEOUT, f"gunicorn {app}")
        yield port, process.pid


@contextlib.contextmanager
def receiver_worker(lab: Lab, env: dict[str, str], root: Path = ROOT) -> Iterator[int]:
    """One ``receiver worker``, idle and registered with RQ before the load starts."""
    command = [sys.executable, "-m", "receiver", "worker"]
    log = lab.folder / "worker.log"
    with spawn(command, {**env, "PYTHONPATH": str(root)}, log, root) as process:

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"receiver worker exited:\n{tail(log)}")
            return bool(Worker.count(connection=lab.connection) >= 1)

        wait_until(ready, STARTUP_TIMEOUT, "receiver worker")
        yield process.pid


def cpu_times(pid: int, children: bool = True) -> tuple[float, float]:
    """(utime, stime) of a process and, by default, all its descendants."""
    root = psutil.Process(pid)
    user = system = 0.0
    for process in [root, *(root.children(recursive=True) if children else [])]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            user += times.user
            system += times.system
    return user, system


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


@dataclass(frozen=True)
class Usage:
    """Cumulative counters, to subtract: gunicorn tree CPU, worker CPU, Redis CPU and commands."""

    web_user: float
    web_system: float
    worker: float
    redis: float
    redis_commands: int

    @classmethod
    def now(cls, lab: Lab, master: int, worker: int | None) -> Usage:
        user, system = cpu_times(master)
        return cls(
            web_user=user,
            web_system=system,
            worker=cpu_seconds(worker) if worker else 0.0,
            redis=sum(cpu_times(lab.redis_pid, children=False)),
            redis_commands=int(lab.connection.info("stats")["total_commands_processed"]),
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.web_user - other.web_user,
            self.web_system - other.web_system,
            self.worker - other.worker,
            self.redis - other.redis,
            self.redis_commands - other.redis_commands,
        )

    @property
    def web(self) -> float:
        return self.web_user + self.web_system


def rss_per_worker_mb(master: int) -> float:
    workers = psutil.Process(master).children()
    return float(statistics.mean(w.memory_info().rss for w in workers)) / 2**20


def post(port: int, body: bytes) -> tuple[int, float]:
    """One signed POST on a fresh connection (sync workers close it anyway): status, seconds."""
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body)}
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", PATH, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    return response.status, time.perf_counter() - start


def warm_up(port: int) -> int:
    """A few requests first, so start-up costs stay out of the measurement: how many acked."""
    for i in range(WARMUP_REQUESTS):
        status, _ = post(port, delivery(WARMUP_BASE + i))
        if status != 200:
            raise RuntimeError(f"warm-up request answered {status}; check the gunicorn log")
    return WARMUP_REQUESTS


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_us: int
    non2xx: int
    socket_errors: int
    p50_us: int
    p99_us: int
    wraps: int

    @property
    def rate(self) -> float:
        return self.requests / (self.duration_us / 1e6)


def run_wrk(lab: Lab, port: int, duration: int) -> WrkResult:
    command = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(lab.folder / "pool.lua"),
        f"http://127.0.0.1:{port}{PATH}",
        "--",
        str(lab.folder),
        PATH,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return WrkResult(**json.loads(lines[0].removeprefix("WRK_JSON ")))


def wait_drained(connection: redis.Redis, timeout: float) -> float | None:
    """Seconds until no delivery is pending and no drainer holds a slot; None on timeout."""
    start = time.monotonic()
    while connection.llen(keys.pending_key(QUEUE)) or connection.zcard(keys.drainers_key(QUEUE)):
        if time.monotonic() - start > timeout:
            return None
        time.sleep(0.05)
    return time.monotonic() - start


def done_states(connection: redis.Redis) -> int:
    """Items the receiver recorded as handled (state ``done``) in this flushed Redis."""
    count = 0
    batch: list[bytes] = []
    for key in connection.scan_iter(match="receiver:state:*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            count += sum(v == b"done" for v in connection.mget(batch))
            batch = []
    if batch:
        count += sum(v == b"done" for v in connection.mget(batch))
    return count


# --- scenarios --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    label: str
    app: str
    handlers: str | None = None
    """``RECEIVER_HANDLERS``; ``None`` for the reference apps."""
    check: str | None = None
    """How handled events are counted once drained: ``states`` or ``counter``; None: no worker."""
    root: Path = ROOT
    """The checkout that serves it (``--before``: another one)."""


RECEIVER_APP = "receiver:create_app()"
SCENARIOS = (
    Scenario("bare Flask", "bench.reference_apps:bare"),
    Scenario("naive Flask: HMAC+json+RQ enqueue", "bench.reference_apps:naive_rq"),
    Scenario("receiver, inline no-op", RECEIVER_APP, "bench.inline_noop"),
    Scenario("receiver, background no-op", RECEIVER_APP, "bench.noop", "states"),
    Scenario("receiver, background counting (check)", RECEIVER_APP, "bench.counting", "counter"),
)


@dataclass(frozen=True)
class Outcome:
    wrk: WrkResult
    cpu_us: float
    rss_mb: float
    handled_ok: bool | None
    note: str = ""


def handled(lab: Lab, check: str) -> int:
    connection = lab.connection
    if check == "counter":
        from bench.counting import COUNTER

        return int(connection.get(COUNTER) or 0)
    return done_states(connection)


def measure(lab: Lab, scenario: Scenario, duration: int) -> Outcome:
    """One run: fresh Redis and processes, warm-up, wrk load, then (background) drain and check."""
    lab.connection.flushall()
    env = dict(lab.env)
    if scenario.handlers:
        env["RECEIVER_HANDLERS"] = scenario.handlers
    with contextlib.ExitStack() as stack:
        worker = (
            stack.enter_context(receiver_worker(lab, env, scenario.root))
            if scenario.check
            else None
        )
        port, master = stack.enter_context(gunicorn(lab, scenario.app, env, scenario.root))
        acked = warm_up(port)
        start = Usage.now(lab, master, worker)
        wrk = run_wrk(lab, port, duration)
        load = Usage.now(lab, master, worker) - start
        rss = rss_per_worker_mb(master)
        drained = None
        if scenario.check is not None:
            drained = wait_drained(lab.connection, timeout=max(60.0, 10.0 * duration))
        total = Usage.now(lab, master, worker) - start
    notes = [
        f"server CPU {load.web_system / load.web:.0%} in the kernel",
        f"redis {total.redis_commands / wrk.requests:.1f} commands and "
        f"{total.redis / wrk.requests * 1e6:.0f} µs CPU per request",
    ]
    ok = None
    if scenario.check is not None:
        acked += wrk.requests - wrk.non2xx
        count = handled(lab, scenario.check)
        ok = drained is not None and wrk.wraps == 0 and count >= acked
        notes += [
            f"acked {acked}, handled {count}",
            f"drained {drained:.1f}s after the load" if drained is not None else "NOT drained",
            f"worker CPU {total.worker / max(count, 1) * 1e6:.0f} µs/event",
            "pool wrapped: check n.a." if wrk.wraps else "",
        ]
    if wrk.socket_errors:
        notes.append(f"wrk socket errors {wrk.socket_errors}")
    return Outcome(wrk, load.web / wrk.requests * 1e6, rss, ok, "; ".join(filter(None, notes)))


# --- ack cost by delivery size ----------------------------------------------------------------


@dataclass(frozen=True)
class SizeOutcome:
    p50_ms: float
    p99_ms: float
    cpu_us_per_event: float
    sent: int
    handled_ok: bool


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def ack_sizes(lab: Lab, duration: int, root: Path = ROOT) -> list[SizeOutcome]:
    """Sequential signed POSTs of growing deliveries to the background no-op receiver."""
    bodies = {
        changes: [delivery(size_index * 10**8 + i * changes, changes) for i in range(count)]
        for size_index, (changes, count) in enumerate(SIZES)
    }
    lab.connection.flushall()
    env = {**lab.env, "RECEIVER_HANDLERS": "bench.noop"}
    outcomes = []
    with receiver_worker(lab, env, root), gunicorn(lab, RECEIVER_APP, env, root) as (
        port,
        master,
    ):
        warm_up(port)
        expected = WARMUP_REQUESTS
        for changes, _ in SIZES:
            deadline = time.monotonic() + duration
            walls: list[float] = []
            cpu = cpu_seconds(master)
            for body in bodies[changes]:
                status, wall = post(port, body)
                if status != 200:
                    raise RuntimeError(f"{changes}-change delivery answered {status}")
                walls.append(wall)
                if time.monotonic() > deadline:
                    break
            cpu = cpu_seconds(master) - cpu
            expected += len(walls) * changes
            drained = wait_drained(lab.connection, timeout=max(60.0, 10.0 * duration))
            outcomes.append(
                SizeOutcome(
                    p50_ms=statistics.median(walls) * 1000,
                    p99_ms=percentile(walls, 0.99) * 1000,
                    cpu_us_per_event=cpu / (len(walls) * changes) * 1e6,
                    sent=len(walls),
                    handled_ok=drained is not None and done_states(lab.connection) >= expected,
                )
            )
    return outcomes


# --- output -----------------------------------------------------------------------------------


def cell(values: Sequence[float], digits: int = 0) -> str:
    middle = f"{statistics.median(values):.{digits}f}"
    if len(values) == 1:
        return middle
    return f"{middle} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def verdict(checks: Sequence[bool | None]) -> str:
    if any(c is None for c in checks):
        return "n.a."
    passed = sum(bool(c) for c in checks)
    return "yes" if passed == len(checks) else f"no ({len(checks) - passed}/{len(checks)} runs)"


def print_load_table(scenarios: Sequence[Scenario], results: dict[str, list[Outcome]]) -> None:
    bare = results[scenarios[0].label]
    header = (
        f"{'scenario':<39}{'req/s':>20}{'p50 ms':>20}{'p99 ms':>20}{'CPU µs/req':>20}"
        f"{'× bare':>20}{'RSS MB/worker':>20}{'non-2xx':>9}  all acked handled"
    )
    print(header)
    print("-" * len(header))
    for scenario in scenarios:
        runs = results[scenario.label]
        ratios = [r.cpu_us / b.cpu_us for r, b in zip(runs, bare, strict=True)]
        print(
            f"{scenario.label:<39}"
            f"{cell([r.wrk.rate for r in runs]):>20}"
            f"{cell([r.wrk.p50_us / 1000 for r in runs], 2):>20}"
            f"{cell([r.wrk.p99_us / 1000 for r in runs], 2):>20}"
            f"{cell([r.cpu_us for r in runs]):>20}"
            f"{cell(ratios, 2):>20}"
            f"{cell([r.rss_mb for r in runs], 1):>20}"
            f"{sum(r.wrk.non2xx for r in runs):>9}  {verdict([r.handled_ok for r in runs])}"
        )
    print()
    for scenario in scenarios:
        for number, outcome in enumerate(results[scenario.label], 1):
            print(f"  {scenario.label}, run {number}: {outcome.note}")


def print_size_table(runs: list[list[SizeOutcome]]) -> None:
    header = (
        f"{'changes/delivery':>16}{'deliveries':>12}{'p50 ms':>26}{'p99 ms':>26}"
        f"{'CPU µs/event':>24}  all handled"
    )
    print(header)
    print("-" * len(header))
    for index, (changes, _) in enumerate(SIZES):
        rows = [run[index] for run in runs]
        print(
            f"{changes:>16}{min(r.sent for r in rows):>12}"
            f"{cell([r.p50_ms for r in rows], 2):>26}"
            f"{cell([r.p99_ms for r in rows], 2):>26}"
            f"{cell([r.cpu_us_per_event for r in rows], 1):>24}"
            f"  {verdict([r.handled_ok for r in rows])}"
        )


# --- main -------------------------------------------------------------------------------------


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit(
            "wrk is not installed; this benchmark needs it to drive HTTP load.\n"
            "Install it: apt-get update && apt-get install -y wrk   (Debian/Ubuntu, as root)\n"
            "            brew install wrk                            (macOS)"
        )
    return wrk


def wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    return (done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0]


def load_table(
    lab: Lab, args: argparse.Namespace, worker_class: str | None, roots: list[Path]
) -> None:
    """Every scenario under one worker class, interleaved run by run: the main table."""
    body = delivery(0)
    threads = f" --threads {args.threads}" if args.threads else ""
    print(
        f"\n{os.cpu_count()} cores; {wrk_version()}; redis-server "
        f"(AOF everysec); gunicorn --workers {GUNICORN_WORKERS} "
        f"--worker-class {worker_class or 'as in receiver/deploy/gunicorn_config.py'}{threads}\n"
        f"load: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{args.duration}s, "
        f"POST {PATH}, {len(body)}-byte signed group.comments delivery "
        f"(distinct per request); "
        + (f"median of {args.runs} runs (min–max)" if args.runs > 1 else "1 run")
        + "\n"
    )
    scenarios = list(SCENARIOS)
    if args.before is not None:
        scenarios[2:2] = [
            Scenario(f"{s.label} (before)", s.app, s.handlers, s.check, roots[0])
            for s in SCENARIOS[2:4]
        ]
    results: dict[str, list[Outcome]] = {s.label: [] for s in scenarios}
    for _ in range(args.runs):
        for scenario in scenarios:
            results[scenario.label].append(measure(lab, scenario, args.duration))
    print_load_table(scenarios, results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk load per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="gunicorn threads per worker (1 = sync workers); default: the Procfile's config",
    )
    parser.add_argument(
        "--worker-class",
        default=None,
        help="gunicorn worker class (gevent, gthread, sync), or several in one run "
        "(gevent,sync: a load table each; sizes under the first); default: the Procfile's",
    )
    parser.add_argument(
        "--drain-events",
        type=int,
        default=20000,
        help="events per worker drain measurement (0: no drain table)",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="the receiver's (RECEIVER_LOG_LEVEL); INFO as shipped"
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="another checkout whose receiver is measured too, interleaved (before/after)",
    )
    args = parser.parse_args()
    require_wrk()
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every process started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="http-bench-") as name:
        folder = Path(name)
        (folder / "pool.lua").write_text(WRK_SCRIPT)
        per_thread = args.duration * POOL_RATE // WRK_THREADS
        write_pools(folder, WRK_THREADS, per_thread)
        server = RedisServer(folder / "redis")
        server.start()
        try:
            assert server.process is not None
            classes = args.worker_class.split(",") if args.worker_class else [None]
            roots = [ROOT] if args.before is None else [args.before.resolve(), ROOT]
            for index, worker_class in enumerate(classes):
                env = base_env(server.url, folder / "data", args.log_level)
                if args.threads is not None:
                    env["GUNICORN_THREADS"] = str(args.threads)
                if worker_class is not None:
                    env["GUNICORN_WORKER_CLASS"] = worker_class
                lab = Lab(folder, server.url, server.process.pid, env)
                load_table(lab, args, worker_class, roots)
                if index == 0:  # by delivery size: under the first worker class only
                    for root in roots:
                        which = " (before)" if root != ROOT else ""
                        print(
                            f"\nack cost by delivery size{which}: receiver, background no-op, "
                            "one sequential client, fresh connection per POST; CPU = gunicorn "
                            f"master + workers ({worker_class or 'as configured'})"
                        )
                        print_size_table(
                            [ack_sizes(lab, args.duration, root) for _ in range(args.runs)]
                        )
            for root in roots if args.drain_events > 0 else ():
                if root != ROOT:
                    print("\n(before)", end="")
                print_drain_table(server.url, args.drain_events, args.runs, env, root)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
