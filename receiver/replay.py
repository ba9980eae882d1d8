"""Replay captured or hand-written deliveries: in-process through the core, or over HTTP.

Sources are capture journals (``.jsonl``), plain payload files (``.json``,
the whole file is the body) or folders of either. Every body is sent as
recorded, re-signed; HTTP replays carry a signed replay marker so handlers
see ``event.replayed``. Each delivery yields a ``Replayed`` outcome; reports
of two runs can be compared (same events, same handler outcomes?).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from receiver.core.handling import REPLAY_OUTCOMES_HEADER, Core, Headers, Request
from receiver.core.signature import signature_headers
from receiver.errors import ReceiverError, ReplayError
from receiver.model import replay_mark
from receiver.model.envelope import parse
from receiver.observe.capture import read_captures, record_body, record_time
from receiver.settings.defaults import DEFAULT_INTEGRATION
from receiver.worker.inline import InlineBackend


@dataclass
class Delivery:
    source: str
    """``file:line`` for captures, the file path for plain payloads."""
    key: str
    """Stable across runs: the capture id, or the payload file's name."""
    body: bytes
    integration: str | None = None
    received_at: datetime | None = None
    status: int | None = None
    topic: str | None = None
    fields: list[str] = field(default_factory=list)
    replayable: bool = True
    """False for a capture whose signature failed when received: listed, never re-signed."""
    replayed: bool = False
    """A capture of a replay (sent back to a capturing receiver): left out unless asked for,
    so replaying a folder twice does not replay the first replay's copies too."""


@dataclass
class Replayed:
    key: str
    source: str
    status: int
    events: list[list[str]] = field(default_factory=list)
    """``[name, id]`` per event, in order."""
    handlers: list[list[Any]] = field(default_factory=list)
    """``[handler, event id, ok, "inline" | "background"]`` per call the replay could observe:
    over HTTP only inline ones (background handlers run later, on a worker)."""
    error: str | None = None

    @property
    def failed(self) -> bool:
        return not 200 <= self.status < 300 or any(not h[2] for h in self.handlers)


def load(paths: Iterable[str | Path]) -> tuple[list[Delivery], list[str]]:
    """Deliveries from every source, in order; and notes on what was skipped."""
    deliveries: list[Delivery] = []
    skipped: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ReplayError(f"{path}: no such file or folder")
        files = (
            sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl"))
            if path.is_dir()
            else [path]
        )
        for file in files:
            if file.suffix == ".jsonl":
                _from_journal(file, deliveries, skipped)
            else:
                _from_payload(file, deliveries, skipped)
    return deliveries, skipped


def _from_journal(file: Path, deliveries: list[Delivery], skipped: list[str]) -> None:
    for where, record in read_captures([file]):
        unverified = record.get("verified") == "failed"
        body = record_body(record)
        if unverified and record.get("method") == "POST":
            body = b""  # listed, never replayed: anyone could have sent it
        if record.get("method") != "POST" or body is None:
            skipped.append(f"{where}: {record.get('method')} without a replayable body")
            continue
        if record.get("body_redacted"):
            skipped.append(f"{where}: redacted body (replayed as redacted)")
        topic, fields = _describe(body) if body else (None, [])
        deliveries.append(
            Delivery(
                source=where,
                key=str(record.get("id")),
                body=body,
                integration=record.get("integration"),
                received_at=record_time(record),
                status=record.get("status"),
                topic=topic or record.get("topic"),
                fields=fields,
                replayable=not unverified,
                replayed=bool(record.get("replayed")),
            )
        )


def _from_payload(file: Path, deliveries: list[Delivery], skipped: list[str]) -> None:
    body = file.read_bytes()
    topic, fields = _describe(body)
    if topic is None:
        skipped.append(f"{file}: not a webhook envelope")
        return
    deliveries.append(
        Delivery(source=str(file), key=file.name, body=body, topic=topic, fields=fields)
    )


def _describe(body: bytes) -> tuple[str | None, list[str]]:
    try:
        events = parse(body, delivery_id="-", integration="-", max_depth=512)
    except ReceiverError:
        return None, []
    if not events:
        try:
            topic = json.loads(body).get("object")
        except (ValueError, AttributeError):
            return None, []
        return (topic if isinstance(topic, str) else None), []
    return events[0].topic, sorted({e.field for e in events})


def select(
    deliveries: list[Delivery],
    *,
    topic: str | None = None,
    field_name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    status: int | None = None,
    integration: str | None = None,
) -> list[Delivery]:
    def keep(d: Delivery) -> bool:
        if topic is not None and d.topic != topic:
            return False
        if field_name is not None and field_name not in d.fields:
            return False
        if status is not None and d.status != status:
            return False
        if integration is not None and d.integration not in (None, integration):
            return False
        if since is not None and (d.received_at is None or d.received_at < since):
            return False
        return not (until is not None and (d.received_at is None or d.received_at > until))

    return [d for d in deliveries if keep(d)]


def in_process(
    deliveries: list[Delivery], core: Core, secret: str, integration: str | None, sha1: bool = False
) -> Iterator[Replayed]:
    """Through the core and the loaded handlers; background handlers run here, in order."""
    backend = core.backend if isinstance(core.backend, InlineBackend) else None
    for delivery in deliveries:
        if backend is not None:
            backend.outcomes = []
        request = Request(
            "POST",
            delivery.body,
            Headers(signature_headers(delivery.body, secret, sha1=sha1)),
            integration=integration or delivery.integration,
            replayed=True,
        )
        result = core.handle(request)
        handlers = [[r.handler, r.event_id, r.ok, "inline"] for r in result.results]
        if backend is not None and result.stored == "inline":
            handlers += [
                [o.handler.id, o.event.id, o.ok, "background"] for o in backend.outcomes if o.ran
            ]
        yield Replayed(
            key=delivery.key,
            source=delivery.source,
            status=result.status,
            events=[[e.name, e.id] for e in result.events],
            handlers=handlers,
            error=result.error,
        )


def over_http(
    deliveries: list[Delivery],
    url: str,
    secret: str,
    *,
    marker_key: str | bytes,
    sha1: bool = False,
    rate: float | None = None,
    concurrency: int = 1,
    preserve_timing: bool = False,
    speed: float = 1.0,
    timeout: float = 30.0,
    integration: str = DEFAULT_INTEGRATION,
) -> Iterator[Replayed]:
    """POST each recorded body to ``url``, re-signed and marked; results in source order.

    ``integration`` is the one ``url`` reaches: event ids include it, and are
    computed here (the answer only counts events).
    """
    schedule = _schedule(deliveries, rate, preserve_timing, speed)
    start = time.monotonic()

    def send(index: int) -> Replayed:
        delay = start + schedule[index] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return _post(deliveries[index], url, secret, marker_key, sha1, timeout, integration)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        yield from pool.map(send, range(len(deliveries)))


def _schedule(
    deliveries: list[Delivery], rate: float | None, preserve: bool, speed: float
) -> list[float]:
    if preserve:
        times = [d.received_at for d in deliveries]
        if all(t is not None for t in times) and times:
            first = times[0]
            assert first is not None
            return [max(0.0, (t - first).total_seconds() / speed) for t in times if t is not None]
    if rate:
        return [i / rate for i in range(len(deliveries))]
    return [0.0] * len(deliveries)


def _post(
    delivery: Delivery,
    url: str,
    secret: str,
    marker_key: str | bytes,
    sha1: bool,
    timeout: float,
    integration: str,
) -> Replayed:
    headers = {
        **signature_headers(delivery.body, secret, sha1=sha1),
        replay_mark.HEADER: replay_mark.token(marker_key, delivery.key),
    }
    request = urllib.request.Request(url, data=delivery.body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, payload = response.status, response.read()
            reported = response.headers.get(REPLAY_OUTCOMES_HEADER)
    except urllib.error.HTTPError as exc:
        status, payload, reported = exc.code, exc.read(), None
    except OSError as exc:
        return Replayed(delivery.key, delivery.source, status=0, error=f"unreachable: {exc}")
    try:
        answer = json.loads(payload)
    except ValueError:
        answer = {}
    events: list[list[str]] = []
    if 200 <= status < 300:  # ids are content-derived: the same here as on the server
        events = [
            [e.name, e.id]
            for e in parse(delivery.body, delivery_id="-", integration=integration, max_depth=512)
        ]
    if reported is not None:
        observed = json.loads(reported)
    else:
        observed = answer.get("handlers", []) if isinstance(answer, dict) else []
    handlers = [[*h[:3], "inline"] for h in observed]
    error = answer.get("error") if isinstance(answer, dict) else None
    return Replayed(delivery.key, delivery.source, status, events, handlers, error)


def report(mode: str, results: list[Replayed]) -> dict[str, Any]:
    return {"mode": mode, "deliveries": [asdict(r) for r in results]}


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Differences a regression replay cares about: status, events, handler outcomes.

    Background outcomes count only when both runs saw them (both in-process).
    """
    kinds = {"inline"} if "http" in (_mode(old), _mode(new)) else {"inline", "background"}
    before = {d["key"]: d for d in old.get("deliveries", [])}
    after = {d["key"]: d for d in new.get("deliveries", [])}
    differences = [f"{k}: missing from this run" for k in before if k not in after]
    differences += [f"{k}: not in the earlier report" for k in after if k not in before]
    for key in before.keys() & after.keys():
        a, b = before[key], after[key]
        if a["status"] != b["status"]:
            differences.append(f"{key}: status {a['status']} → {b['status']}")
        if a["events"] != b["events"]:
            differences.append(f"{key}: events {a['events']} → {b['events']}")
        if _handlers(a, kinds) != _handlers(b, kinds):
            differences.append(
                f"{key}: handler outcomes {_handlers(a, kinds)} → {_handlers(b, kinds)}"
            )
    return sorted(differences)


def _mode(report_data: dict[str, Any]) -> str:
    return str(report_data.get("mode", "")).split(" ", 1)[0]


def _handlers(entry: dict[str, Any], kinds: set[str]) -> list[tuple[str, str, bool]]:
    return sorted((str(h[0]), str(h[1]), bool(h[2])) for h in entry["handlers"] if h[3] in kinds)


def summarize(results: list[Replayed]) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {
        "sent": len(results),
        "statuses": dict(sorted(statuses.items())),
        "events": sum(len(r.events) for r in results),
        "handler_errors": sum(1 for r in results for h in r.handlers if not h[2]),
        "failed": sum(1 for r in results if r.failed),
    }
