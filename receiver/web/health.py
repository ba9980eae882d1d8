"""Readiness: can this web process take deliveries and keep its promise about them?

``/healthz`` only says the process answers (liveness: restart it if not).
``/readyz`` says whether a load balancer should send it deliveries: Redis
answers within ``redis_timeout`` (the embedded default is up), the local
spool is not piling up (Redis away for long), and every handler module named
in the configuration is imported.
"""

from __future__ import annotations

import sys
from typing import Any

import redis

from receiver.core.handling import Core
from receiver.observe.trace import live_connection
from receiver.queue.web_spool import Spool, spool_folder


def readiness(core: Core) -> tuple[bool, dict[str, Any]]:
    """``(ready, checks)``: each check is ``{"ok": bool, ...}`` with what was found."""
    checks = {
        "redis": _redis(core),
        "spool": _spool(core),
        "handlers": _handlers(core),
    }
    return all(c["ok"] for c in checks.values()), checks


def _redis(core: Core) -> dict[str, Any]:
    if not core.backend.started:
        return {"ok": True, "detail": "embedded Redis, started by the first background work"}
    try:
        connection = live_connection(core.backend)
        if connection is None:
            return {"ok": True, "detail": "no Redis in use (background work runs inline)"}
        connection.ping()
    except (redis.RedisError, OSError) as exc:
        return {"ok": False, "detail": f"Redis did not answer: {type(exc).__name__}"}
    return {"ok": True}


def _spool(core: Core) -> dict[str, Any]:
    """Deliveries only this machine holds; copies held until replicas confirm them are
    counted apart and never make the process unready (every web process holds them alike
    while replicas are away: taking all out of rotation would stop every delivery)."""
    spool = Spool(spool_folder(core.settings))
    files = len(spool)
    limit = core.settings.ready_max_spool
    return {"ok": files <= limit, "files": files, "limit": limit, "held": len(spool.held())}


def _handlers(core: Core) -> dict[str, Any]:
    missing = [name for name in core.settings.handlers if name not in sys.modules]
    if missing:
        return {"ok": False, "detail": f"handler modules not loaded: {', '.join(missing)}"}
    return {"ok": True, "modules": len(core.settings.handlers)}
