"""Where RQ finds drain and retry jobs enqueued before the queue side became a package.

Jobs store their function's dotted path; those already in Redis (scheduled
retries, failed items an operator requeues) name ``receiver.drain``.
New jobs name ``receiver.queue.worker_drain``.
"""

from __future__ import annotations

from .queue.worker_drain import drain, retry_item

__all__ = ["drain", "retry_item"]
