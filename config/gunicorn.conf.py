"""gunicorn settings for the Procfile's web process.

One worker per core, 4 threads each (gthread). Measured with
`bench/http_bench.py --duration 10 --runs 3` on 2 cores (medians):

    durable ack (background handler)   sync: 1,275 req/s, p50 12.7 ms
                                       gthread ×4: 1,845 req/s, p50 9.0 ms
    inline handler                     sync: 3,129 req/s, p99 9.5 ms
                                       gthread ×4: 3,614 req/s, p99 16.3 ms

The durable path waits on a Redis round trip per delivery; threads overlap
those waits and keep connections alive, where a sync worker idles and closes
every connection. Server CPU per request is about the same either way. The
price is a longer inline p99 under saturation, and handlers must be thread-safe.
Override with WEB_CONCURRENCY (workers) and GUNICORN_THREADS (1 = sync).
"""

import logging
import multiprocessing
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread" if threads > 1 else "sync"
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

# The receiver's own loggers (handler failures, dev-mode warnings) go to stderr too.
# Not through `logconfig_dict`: with it set, gunicorn formats an access-log record
# for every request even when access logging is off (≈8 % of CPU, seen in py-spy).
_handler = logging.StreamHandler()
_handler.setFormatter(
    logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
)
for _name in ("receiver", "handlers"):
    logging.getLogger(_name).setLevel(loglevel.upper())
    logging.getLogger(_name).addHandler(_handler)
