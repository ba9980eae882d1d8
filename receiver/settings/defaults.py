"""Every default in one place; each is what a new deployment gets untouched."""

from __future__ import annotations

DEFAULT_INTEGRATION = "default"
"""Integration answered at ``/webhook``; the environment configures it."""

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest POST body accepted (Meta batches up to 1,000 updates; 4 MiB leaves room)."""

MAX_DEPTH = 64
"""Deepest JSON nesting accepted; Meta's envelopes are under 10 levels deep."""

READ_TIMEOUT = 15.0
"""Seconds a client may take to send its whole body; Meta sends small bodies at once."""

ANSWER_TIMEOUT = 5.0
"""Seconds synchronous topics (link previews) wait for their handlers' answers."""

DATA_DIR = ".receiver"
"""Local folder for the embedded Redis's data and other local state."""

QUEUE_NAME = "receiver"
"""RQ queue that background handlers use unless they name another."""

JOB_TIMEOUT = 180
"""Seconds one attempt of a background handler may run; past it the attempt counts as failed."""

JOB_RETRIES = 3
"""Extra attempts a failing background handler gets."""

RETRY_BACKOFF = 10.0
"""Seconds before the first retry; each next wait is four times longer (±20 % jitter)."""

WORKER_CONCURRENCY = 32
"""Handler calls one worker process runs at once (threads, plus one event loop for async).

Chosen from bench/slow_bench.py on 2 cores: handlers waiting 50 ms on HTTP scale almost
linearly to 16 (≈290 events/s), reach ≈460/s at 32 where the process runs out of CPU,
and gain nothing at 64; a rate-limited API gets less with the handler's concurrency=."""

MAX_DRAINERS = 8
"""Drain jobs per queue at once; set it to at least the number of worker processes."""

REDIS_TIMEOUT = 0.5
"""Seconds the web side waits for Redis before spooling the delivery to disk instead."""

SPOOL_MODE = "spool"
"""When Redis cannot take a delivery: ``spool`` it to local disk and ack, or ``reject`` (503)."""

DURABILITY = "local"
"""When a delivery is acknowledged: ``local`` once the Redis master holds its packet,
``replicated`` once ``min_replicas`` replicas hold it too (Redis's ``WAIT``)."""

MIN_REPLICAS = 1
"""Replicas that must confirm a packet before ``replicated`` durability acknowledges it."""

REPLICATION_TIMEOUT = 1.0
"""Seconds a delivery waits for its replicas; then it is held in the local spool (or 503)."""

REPLICATION_FSYNC = False
"""With ``replicated``: wait until the master and the replicas have also fsynced the packet
to their append-only files (``WAITAOF``: Redis >= 7.2, Valkey); about a second per round,
so it needs ``replication_timeout`` of 2 s or more."""

DEDUPE_WINDOW = 24 * 3600
"""Seconds a handled event id is remembered, well past Meta's first-retry horizon."""

SYNC_TOPICS = ("link",)
"""Topics whose handlers answer in the HTTP response body."""

CAPTURE_MAX_BYTES = 64 * 1024 * 1024
"""Size at which a capture file is rotated (files also rotate daily)."""

CAPTURE_MAX_TOTAL_BYTES = 1024 * 1024 * 1024
"""Size of the capture folder past which the oldest files are deleted at each rotation."""

CAPTURE_UNVERIFIED_EXCERPT = 2048
"""Characters kept of a body whose signature failed (an excerpt, never replayed)."""

GRAPH_BASE_URL = "https://graph.facebook.com"
"""Graph API host; Workplace also answers at ``https://graph.workplace.com``."""

GRAPH_API_VERSION = "v23.0"
"""Graph API version prefixed to every path a handler calls (``/v23.0/me``)."""

GRAPH_TIMEOUT = 10.0
"""Seconds one Graph API request may take (connect, read, write each)."""

GRAPH_RETRIES = 3
"""Extra attempts after a 5xx, a connection failure or a throttling error."""

GRAPH_BACKOFF = 0.5
"""Seconds before the first Graph retry; doubles per attempt (equal jitter), at most 30 s."""

GRAPH_MAX_WAIT = 60.0
"""Longest pause (Retry-After, usage) a Graph call waits in-process; longer ones raise."""

GRAPH_SLOW_DOWN_AT = 75.0
"""Usage percentage (X-App-Usage, X-Business-Use-Case-Usage) above which calls are paced."""

TRACE_TTL = 24 * 3600
"""Seconds Redis keeps a delivery's trace (events, handler outcomes) for ``receiver trace``."""

STATS_DAYS = 7
"""Days of per-integration delivery counts kept for ``receiver stats`` and the dashboard."""

READY_MAX_SPOOL = 1000
"""Spooled deliveries above which ``/readyz`` answers 503 (Redis has been away too long)."""

ADMIN_SESSION_TTL = 8 * 3600
"""Seconds an admin dashboard login lasts before the password is asked again."""

ADMIN_LOGIN_FORM_TTL = 3600
"""Seconds a login form (its cookie and CSRF token) stays good: reload the page after that."""

ADMIN_LOGIN_FAILURES = 5
"""Failed admin logins allowed per client address within ``ADMIN_LOGIN_WINDOW``; then 429."""

ADMIN_LOGIN_WINDOW = 15 * 60
"""Seconds over which failed admin logins are counted."""

SWITCH_REFRESH = 1.0
"""Seconds between two reads of the dashboard's integration switches by each web process."""

META_CLIENT_CERT_SUBJECT = "client.webhooks.fbclientcerts.com"
"""Common name of the client certificate Meta's webhook servers present over mutual TLS."""

ENTRY_POINT_GROUP = "receiver.handlers"
"""Entry-point group through which installed packages offer handler modules."""
