"""The queue side: background work stored by the web side, run by the worker side.

A map, read top to bottom (each module imports only those below it)::

    web side     web_store      store a delivery's work in Redis before the answer
                                (RQBackend), or in the spool when Redis cannot take it
                 web_spool      the local spool and the thread that flushes it to Redis
    in-process   inline         run background work at once (replay, handler tests)
    worker side  worker_drain   drain jobs: pop packets, run items, retries, failures
                 worker_claims  claim an item, record its outcome (exactly once)
    operators    ops            queue depths, failed items, requeue, skip (CLI, dashboard)
    both sides   ordering       ``ordered_by``: per-key lanes the web side appends to and
                                drainers run the heads of; what operators see of them
    shared       keys           every Redis key and claim-state string
                 scripts        the Lua scripts, each with its KEYS and ARGV

Words: a *packet* is one delivery's items for one queue; an *item* is one
(event, handler) pair; to *drain* is what a drain job does to a queue (and
only that: the spool is *flushed*); a *lane* is one order key's waiting items,
and its *wake* the packet that gets a drainer to run them. The worker process itself
(``receiver.worker``) and the handler runner (``receiver.runner``) sit
outside: the first wires the app, the second serves the core too.

Nothing is imported here, so that the worker side never loads the web side.
"""
