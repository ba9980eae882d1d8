"""Every Redis key and claim-state string the queue side writes, built here and only here.

Like RQ's ``registry.py`` and ``job.py`` own theirs: other modules call these
builders and never splice or slice the strings themselves. Lua scripts get
the prefixes they need as ARGV, never a literal of their own.

Keys (all under ``receiver:``)::

    pending:<queue>        list   packets waiting for a drainer (web side appends)
    drainers:<queue>       zset   drainer id → epoch seconds its slot lasts until
    inflight:<drainer>     list   packets one drainer has taken and not finished
    alive:<drainer>        string a drainer's heartbeat (expires when it is killed)
    state:<integration>:<handler>:<event id>
                           string one item's claim state, for ``dedupe_window``
    lane:<digest>          list   one order key's waiting items, oldest first (``ordering``)
    lanes:<queue>          zset   lane → epoch seconds its head last changed
    held:<queue>           hash   lane → why its head holds it (a retry, or blocked)
    replication-probe      string a counter the web side increments when it needs a write
                           for WAIT to cover (``durability``)

Claim states (see ``receiver.worker.claims``)::

    failed                 may run again (a redelivery re-runs a failure)
    running:<token>        a claimant runs it
    retrying:<token>       a scheduled retry owns it
    done                   handled; later copies are skipped

Tokens name the claimant: ``d:<drainer id>`` (a drain job), ``r:<retry job id>``
(a scheduled retry), ``i:<delivery id>`` (run inline, in-process).
"""

from __future__ import annotations

import hashlib

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

PREFIX = "receiver:"
PENDING = f"{PREFIX}pending:"
DRAINERS = f"{PREFIX}drainers:"
INFLIGHT = f"{PREFIX}inflight:"
ALIVE = f"{PREFIX}alive:"
STATE = f"{PREFIX}state:"
LANE = f"{PREFIX}lane:"
LANES = f"{PREFIX}lanes:"
HELD = f"{PREFIX}held:"
REPLICATION_PROBE = f"{PREFIX}replication-probe"

DONE = "done"
FAILED = "failed"
RUNNING = "running:"
RETRYING = "retrying:"

DRAINER_TOKEN = "d:"
RETRY_TOKEN = "r:"
INLINE_TOKEN = "i:"

DRAIN_FUNCTION = "receiver.worker.drain.drain"
RETRY_FUNCTION = "receiver.worker.retries.retry_item"
"""RQ job functions, by the dotted path stored in each job."""
LEGACY_DRAIN_FUNCTIONS = ("receiver.drain.drain", "receiver.queue.worker_drain.drain")
LEGACY_RETRY_FUNCTIONS = (
    "receiver.drain.retry_item",
    "receiver.queue.worker_drain.retry_item",
    "receiver.worker.drain.retry_item",
)
"""Paths that jobs queued by earlier versions still name; the worker's job class runs them."""
JOB_ALIASES = {
    **dict.fromkeys(LEGACY_DRAIN_FUNCTIONS, DRAIN_FUNCTION),
    **dict.fromkeys(LEGACY_RETRY_FUNCTIONS, RETRY_FUNCTION),
}
"""Old dotted path -> today's: an upgrade with work in the queue loses nothing."""


def pending_key(queue: str) -> str:
    return f"{PENDING}{queue}"


def drainers_key(queue: str) -> str:
    return f"{DRAINERS}{queue}"


def inflight_key(drainer: str) -> str:
    return f"{INFLIGHT}{drainer}"


def alive_key(drainer: str) -> str:
    return f"{ALIVE}{drainer}"


def state_key(integration: str, handler_id: str, event_id: str) -> str:
    return f"{STATE}{integration}:{handler_id}:{event_id}"


def lane_key(handler_id: str, integration: str, key: str) -> str:
    """One (handler, integration, order key)'s lane; hashed: keys are the users' strings."""
    digest = hashlib.blake2b(f"{handler_id}\0{integration}\0{key}".encode(), digest_size=16)
    return f"{LANE}{digest.hexdigest()}"


def lanes_key(queue: str) -> str:
    return f"{LANES}{queue}"


def held_key(queue: str) -> str:
    return f"{HELD}{queue}"


def drainer_token(drainer: str) -> str:
    return f"{DRAINER_TOKEN}{drainer}"


def retry_token(job_id: str) -> str:
    return f"{RETRY_TOKEN}{job_id}"


def inline_token(delivery_id: str) -> str:
    return f"{INLINE_TOKEN}{delivery_id}"


def running(token: str) -> str:
    return f"{RUNNING}{token}"


def retrying(token: str) -> str:
    return f"{RETRYING}{token}"


RUNNING_IN_DRAINER = running(DRAINER_TOKEN)
"""Prefix of a state held by a drain job: followed by the drainer's id."""


def is_running(state: str | None) -> bool:
    return state is not None and state.startswith(RUNNING)


def rq_queue(name: str, connection: Redis) -> Queue:
    """RQ's queue of that name, with the JSON serializer every receiver job uses."""
    return Queue(name, connection=connection, serializer=JSONSerializer)
