"""gunicorn settings for the Procfile's web process (``python:receiver.deploy.gunicorn_config``).

A module inside the package, not a file of the checkout, so that a deployment
that installs the wheel serves with the Procfile's line from any folder.

One gevent worker per core. The callback URL is on the public internet: a
client that opens a connection and then stalls (headers or body half sent)
must cost a socket, not a thread. With gthread, 4 threads a worker, ten
stalled POSTs stopped `/healthz` and every delivery for as long as they
stayed connected; with gevent each connection is a greenlet, the headers must
arrive within `keepalive` seconds (gunicorn's own bound) and the body within
the receiver's `read_timeout` (15 s, enforced by the callback adapter), and
50 stalled connections leave `/healthz` and deliveries answering at once
(`tests/system/test_hostile_clients.py`; figures in docs/performance.md, `bench/http_bench.py`).

gevent patches sockets, `time.sleep`, threads and subprocesses in the worker,
so Redis round trips and handlers' network I/O overlap without threads. An
inline handler that blocks in C code (a database driver without gevent
support) or computes for long holds its whole worker: keep inline handlers
fast and move such work to background handlers (docs/handlers.md).

Override with WEB_CONCURRENCY (workers), GUNICORN_WORKER_CLASS (gthread,
sync) and GUNICORN_THREADS (gthread only): those classes do not bound a
stalled client's hold on a thread.
"""

import multiprocessing
import os

worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
if worker_class == "gevent":
    # Patch before anything imports ssl, sockets or threads (gevent's own advice):
    # the receiver is imported here, in the master, for its log formatters.
    from gevent import monkey

    monkey.patch_all()

# Metrics from every worker process add up (prometheus_client's multiprocess
# mode): its directory must be set before prometheus_client is imported, here
# in the master, and be fresh for each start.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="receiver-metrics-")
    _metrics_dir_is_ours = True
else:
    _metrics_dir_is_ours = False

from receiver.deploy import gunicorn_hooks  # noqa: E402
from receiver.observe import logsafe  # noqa: E402

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_connections = 1000
# Meta waits 20 s at most; a request still running after that is retried anyway.
timeout = 30
graceful_timeout = 30
keepalive = 5
# gunicorn 27's control socket lives at one path per user: several receivers on
# one machine (or a receiver and its tests) would fight over it. Not needed here.
control_socket_disable = True
accesslog = "-" if os.environ.get("RECEIVER_ACCESS_LOG") else None
errorlog = "-"
loglevel = os.environ.get("RECEIVER_LOG_LEVEL", "info").lower()
# gunicorn's own lines escaped like ours, verify tokens masked in the access log.
logger_class = "receiver.deploy.gunicorn_logging.Logger"

# The receiver's own loggers (and handler modules') go to stderr too, escaped.
# Not through `logconfig_dict`: with it set, gunicorn formats an access-log record
# for every request even when access logging is off (≈8 % of CPU, seen in py-spy).
# Batched: the request lines leave in one write every half second at most, not one
# write per request (a crash loses at most that: logsafe.BatchedStreamHandler).
logsafe.install(
    loglevel, "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s", batched=True
)


# Configuration and the Redis server's version checked once, before workers boot.
on_starting = gunicorn_hooks.on_starting
# Metrics: a dead worker's files are folded in; with metrics_bind the master serves them.
child_exit = gunicorn_hooks.child_exit
when_ready = gunicorn_hooks.when_ready
if worker_class == "gevent":
    # One request per turn: a keep-alive client whose next request is already
    # waiting would otherwise be served again and again without a yield.
    post_request = gunicorn_hooks.take_turns


def on_exit(server: object) -> None:
    if _metrics_dir_is_ours:
        import shutil

        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
