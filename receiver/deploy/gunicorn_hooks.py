"""gunicorn server hooks the Procfile's config installs: start-up checks, metrics across workers.

Before any worker boots, the master checks the configuration and the Redis
server's version: a mistake is one ``Error:`` line and exit 1, not a
traceback from every worker process.

The master never serves deliveries; with ``metrics_bind`` set it serves
``/metrics`` on that private address (no token: keep it off the public
network), reading every worker's counters from the multiprocess directory
and the backlog from Redis. Workers add their counters to files there; when
one exits, prometheus_client is told so its live gauges stop counting it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from prometheus_client import multiprocess, start_http_server

log = logging.getLogger("receiver.metrics")


def on_starting(server: Any) -> None:
    from receiver.app import check_server, connect
    from receiver.errors import ConfigError
    from receiver.settings.loading import load_settings

    try:
        settings = load_settings()
        if settings.redis_url:
            check_server(connect(settings.redis_url, settings.redis_timeout), settings=settings)
    except ConfigError as exc:
        sys.stderr.write(f"Error: {' '.join(str(exc).split())}\n")
        sys.exit(1)


def take_turns(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """gevent workers' ``post_request``: let every other ready greenlet run before the next read.

    gevent switches greenlets only when one would block. A keep-alive client whose
    next request is already in the socket (or in gunicorn's read buffer) when its
    answer has been written is served again at once, and again: under ``wrk -c16``
    one connection held its worker while the other connections, and the trace
    writer's thread, waited. After answers started leaving in one TCP segment
    (``TCP_CORK``, issue 20) wrk's next request was nearly always there first: the
    inline scenario's p99 rose to 460–640 ms, and the trace writer, starved, held
    up to 2,900 deliveries' records (RSS per worker 57 → 67–79 MB). Yielding here,
    once per request, gave p99 58–89 ms and at most ≈ 100 records waiting
    (``bench/http_bench.py``'s gevent inline scenario, docs/performance.md).

    A request that waited on anything (its socket, Redis) let the hub run its loop,
    and so every other ready greenlet: that one needs no extra turn. Only an answer
    served without a single loop iteration since the previous answer yields: the
    keep-alive run above is still broken after one request, without a hub switch
    (two greenlet switches and a loop iteration) per request that already blocked.
    """
    import gevent

    loop = gevent.get_hub().loop
    if loop.iteration == _last_turn[0]:
        gevent.sleep(0)
    _last_turn[0] = loop.iteration


_last_turn = [-1]
"""The hub loop's iteration count when the previous answer's turn ended (per process)."""


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def when_ready(server: Any) -> None:
    from receiver.app import connect
    from receiver.observe import metrics
    from receiver.queue import ops
    from receiver.queue.web_spool import spool_counts
    from receiver.settings.loading import load_settings

    settings = load_settings()
    if not settings.metrics_bind:
        return
    host, _, port = settings.metrics_bind.rpartition(":")
    url = settings.redis_url
    client = connect(url, settings.redis_timeout) if url else None
    backlog = metrics.BacklogCollector(
        settings,
        lambda: client,
        lambda c: ops.depths(c, ops.known_queues(settings, c)),
        lambda: spool_counts(settings),
    )
    start_http_server(int(port), addr=host, registry=metrics.registry_for(backlog))
    log.warning(
        "metrics served at http://%s/metrics (no token: keep it private)", settings.metrics_bind
    )
