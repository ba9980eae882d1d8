"""Reference Flask apps that bench/http_bench.py serves next to the receiver.

- ``bare``: answers 200 to anything; the floor of Flask under gunicorn.
- ``naive_rq``: what a webhook endpoint usually looks like: check the
  ``X-Hub-Signature-256`` HMAC, parse the JSON, one RQ ``Queue.enqueue`` per
  change (job ``bench.noop.noop_job``; Redis from ``REDIS_URL``). No dedupe,
  no spool, no routing.

Both serve any path: ``gunicorn 'bench.reference_apps:bare'``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import redis
from flask import Flask, Response, request
from rq import Queue

SECRET = os.environ.get("RECEIVER_APP_SECRET", "bench-secret").encode()
METHODS = ["GET", "POST"]

bare = Flask("bare")


@bare.route("/", defaults={"path": ""}, methods=METHODS)
@bare.route("/<path:path>", methods=METHODS)
def ok(path: str) -> Response:
    return Response(b"", status=200)


naive_rq = Flask("naive_rq")
_queue: Queue | None = None


def queue() -> Queue:
    global _queue
    if _queue is None:
        _queue = Queue("naive", connection=redis.Redis.from_url(os.environ["REDIS_URL"]))
    return _queue


@naive_rq.route("/", defaults={"path": ""}, methods=METHODS)
@naive_rq.route("/<path:path>", methods=METHODS)
def enqueue_changes(path: str) -> Response:
    body = request.get_data()
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(request.headers.get("X-Hub-Signature-256", ""), expected):
        return Response(b'{"error":"bad_signature"}', status=403, content_type="application/json")
    queued = 0
    for entry in json.loads(body).get("entry", []):
        for change in entry.get("changes", []):
            queue().enqueue("bench.noop.noop_job", change)
            queued += 1
    return Response(json.dumps({"queued": queued}), content_type="application/json")
