"""The worker side: run the background work the web side stored.

- ``process``  ``receiver worker``: an RQ worker with the handlers loaded once
- ``drain``    drain jobs: pop packets, run their items, record their outcomes
- ``retries``  a failed item's next attempt (scheduled, with backoff), or its filing as failed
- ``claims``   run (event, handler) items exactly once per success
- ``inline``   the same claims, at once, in this process (replay, handler tests)

RQ jobs name ``receiver.worker.drain.drain`` and ``receiver.worker.retries.retry_item``;
paths stored by earlier versions are run through ``queue.keys.JOB_ALIASES``.
Layer: beside the web side and the dashboard (none imports another); imports
the queue side and below. Internal.
"""
