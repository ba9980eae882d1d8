"""Operators' side: failed items, queue depths, requeue. Data only; the CLI formats it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from receiver.errors import UnknownFailedItem
from receiver.queue import keys, ordering
from receiver.queue.handoff import job_item
from receiver.routing.contracts import QueueDepth
from receiver.routing.handlers import Router
from receiver.settings.model import Settings


@dataclass
class FailedItem:
    job_id: str
    queue: str
    event_name: str
    event_id: str
    handler: str
    attempts: int
    error: str
    key: str | None = None
    """Its order key, for an ``ordered_by`` handler's item."""
    blocks: bool = False
    """It holds its key until requeued or skipped (``on_failure="block"``)."""


def queue_names(settings: Settings, router: Router) -> list[str]:
    return sorted(
        {settings.queue_name} | {h.queue for h in router.handlers() if h.background and h.queue}
    )


def known_queues(settings: Settings, connection: redis.Redis) -> list[str]:
    """The default queue and every queue RQ knows of: when no router is at hand (gunicorn's
    master serving metrics loads no handler modules)."""
    names = {q.name for q in Queue.all(connection=connection, serializer=JSONSerializer)}
    return sorted({settings.queue_name} | names)


def failed_items(connection: redis.Redis, queues: list[str]) -> tuple[list[FailedItem], list[str]]:
    """Failed handler items, and the ids of abandoned drain jobs (their work was recovered)."""
    items: list[FailedItem] = []
    drains: list[str] = []
    for name in queues:
        registry = FailedJobRegistry(queue=keys.rq_queue(name, connection))
        for job_id in registry.get_job_ids():
            try:
                job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
            except Exception:
                continue
            item = job_item(job)
            if item is None:
                if job.func_name in (keys.DRAIN_FUNCTION, *keys.LEGACY_DRAIN_FUNCTIONS):
                    drains.append(job_id)
                continue
            attempts = int((job.meta or {}).get("attempts", item.get("attempts", 1)))
            result = job.latest_result()
            error = ((result.exc_string if result else None) or "").strip().splitlines()
            items.append(
                FailedItem(
                    job_id=job_id,
                    queue=name,
                    event_name=item["event"].get("name", "?"),
                    event_id=item["event"].get("id", "?"),
                    handler=item["handler"],
                    attempts=attempts,
                    error=error[-1] if error else "",
                    key=item.get("key"),
                    blocks=bool(item.get("block")),
                )
            )
    return items, drains


def requeue(connection: redis.Redis, queues: list[str], job_ids: list[str] | None) -> list[str]:
    """Put failed items back on their queues (all when ``job_ids`` is None).

    With all, dead drain jobs are dropped too: maintenance already recovered their work.
    """
    wanted, drains = _failed_named(connection, queues, job_ids)
    for job_id, queue in wanted.items():
        FailedJobRegistry(queue=keys.rq_queue(queue, connection)).requeue(job_id)
    if job_ids is None:
        for name in queues:
            registry = FailedJobRegistry(queue=keys.rq_queue(name, connection))
            for job_id in drains:
                registry.remove(job_id, delete_job=True)
    return list(wanted)


def _failed_named(
    connection: redis.Redis, queues: list[str], job_ids: list[str] | None
) -> tuple[dict[str, str], list[str]]:
    """``{job id: queue}`` of the failed items named (all when ``None``), and dead drain jobs.

    Only ids read from the failed registries are used: one that is not there (a typo, an
    id already requeued, any odd text) is an ``UnknownFailedItem``, never a Redis key.
    """
    failed, drains = failed_items(connection, queues)
    found = {f.job_id: f.queue for f in failed}
    wanted = set(found) if job_ids is None else set(job_ids)
    unknown = wanted - set(found)
    if unknown:
        raise UnknownFailedItem(sorted(unknown))
    return {job_id: queue for job_id, queue in found.items() if job_id in wanted}, drains


def skip(connection: redis.Redis, queues: list[str], job_ids: list[str]) -> list[str]:
    """Drop failed items for good (work nobody wants to run again), their jobs too; an
    ordered one's key moves on past it.

    Returns the keys that were held by them and now go on (a drainer picks them up
    within one maintenance round).
    """
    wanted, _ = _failed_named(connection, queues, job_ids)
    moved = []
    for job_id, queue in wanted.items():
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
        item = job_item(job) or {}
        FailedJobRegistry(queue=keys.rq_queue(queue, connection)).remove(job_id, delete_job=True)
        if ordering.skip(connection, queue, item, job_id):
            moved.append(str(item.get("key")))
    return moved


def depths(connection: redis.Redis, queues: list[str]) -> list[QueueDepth]:
    out = []
    for name in queues:
        queue = keys.rq_queue(name, connection)
        out.append(
            QueueDepth(
                queue=name,
                pending_packets=int(connection.llen(keys.pending_key(name))),
                drainers=int(connection.zcard(keys.drainers_key(name))),
                rq_jobs=queue.count,
                scheduled_retries=ScheduledJobRegistry(queue=queue).count,  # type: ignore[no-untyped-call]
                failed=FailedJobRegistry(queue=queue).count,
                oldest_pending_at=packet_time(connection.lindex(keys.pending_key(name), 0)),
                ordered_keys=ordering.active(connection, name),
                held_keys=int(connection.hlen(keys.held_key(name))),
            )
        )
    return out


def packet_time(raw: bytes | str | None) -> float | None:
    """When a stored packet was queued (its ``at``), for the oldest-pending gauge."""
    if raw is None:
        return None
    try:
        at = json.loads(raw).get("at")
    except (ValueError, AttributeError):
        return None
    return float(at) if isinstance(at, int | float) else None
