"""The queue side: how background work is stored in Redis, and what both sides share.

A map, read top to bottom (each module imports only those below it)::

    web side     web_store      store a delivery's work in Redis before the answer
                                (RedisBackend), or in the spool when Redis cannot take it
                 durability     ``durability = "replicated"``: rounds that WAIT for replicas
                 web_spool      the local spool and the thread that flushes it to Redis
    operators    ops            queue depths, failed items, requeue, skip (CLI, dashboard)
    both sides   ordering       ``ordered_by``: per-key lanes the web side appends to and
                                drainers run the heads of; what operators see of them
                 handoff        packets, appending them, starting drain jobs
    shared       keys           every Redis key, claim-state string and job path
                 scripts        the Lua scripts, each with its KEYS and ARGV

Words: a *packet* is one delivery's items for one queue; an *item* is one
(event, handler) pair; to *drain* is what a drain job does to a queue (and
only that: the spool is *flushed*); a *lane* is one order key's waiting items,
and its *wake* the packet that gets a drainer to run them. The drain jobs
themselves run in ``receiver.worker``, a layer above this one.

Layer: above the core, beside ``receiver.graph``; imports the core's layers
and below. Nothing is imported here, so that loading one module loads no other.
Internal.
"""
