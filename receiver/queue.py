"""Hand background work to RQ: one job per delivery and queue, stored in one round trip."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

import redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from .config import Settings
from .errors import QueueUnavailable
from .events import Event
from .jobs import WorkContext, execute, item
from .routing import Handler

log = logging.getLogger("receiver.queue")

JOB_FUNCTION = "receiver.jobs.run_batch"
BACKOFF_BASE = 10.0
BACKOFF_CAP = 3600.0

Work = Sequence[tuple[Event, Handler]]


class Backend(Protocol):
    """Where background work goes once the delivery is verified and parsed."""

    def submit(self, delivery_id: str, work: Work) -> list[str]:
        """Store the work durably (or run it); return job ids. Raise ``QueueUnavailable``."""
        ...


def backoff(retries: int) -> list[int]:
    """Exponential waits with ±20 % jitter, so a burst of failures does not retry in step."""
    return [
        max(1, round(min(BACKOFF_CAP, BACKOFF_BASE * 4**n) * random.uniform(0.8, 1.2)))
        for n in range(retries)
    ]


class RQBackend:
    """Durable: answers only after Redis has taken the jobs."""

    def __init__(self, settings: Settings, connection: redis.Redis) -> None:
        self.settings = settings
        self.connection = connection

    def submit(self, delivery_id: str, work: Work) -> list[str]:
        groups: dict[tuple[str, int, int], list[dict[str, object]]] = defaultdict(list)
        for event, handler in work:
            key = (
                handler.queue or self.settings.queue_name,
                handler.timeout or self.settings.job_timeout,
                self.settings.job_retries if handler.retry is None else handler.retry,
            )
            groups[key].append(item(event, handler))
        job_ids: list[str] = []
        try:
            with self.connection.pipeline(transaction=True) as pipe:
                for (queue_name, timeout, retries), items in groups.items():
                    queue = Queue(queue_name, connection=self.connection, serializer=JSONSerializer)
                    job_id = f"{delivery_id}-{queue_name}-{len(job_ids)}"
                    data = Queue.prepare_data(
                        JOB_FUNCTION,
                        args=(items,),
                        timeout=timeout,
                        result_ttl=0,
                        job_id=job_id,
                        description=f"{len(items)} event(s) of delivery {delivery_id}",
                        retry=Retry(max=retries, interval=backoff(retries)) if retries else None,
                    )
                    queue.enqueue_many([data], pipeline=pipe)
                    job_ids.append(job_id)
                pipe.execute()
        except redis.RedisError as exc:
            log.error("could not store background work of delivery %s: %s", delivery_id, exc)
            raise QueueUnavailable(
                "background work could not be stored (Redis unreachable); "
                "the delivery was not acknowledged and Meta will retry it"
            ) from exc
        return job_ids


class InlineBackend:
    """Runs background handlers at once, in this process: replay and handler tests."""

    def __init__(self, context: WorkContext) -> None:
        self.context = context

    def submit(self, delivery_id: str, work: Work) -> list[str]:
        if work:
            execute(
                [item(e, h) for e, h in work], self.context, job_id=delivery_id, final_attempt=True
            )
        return []
