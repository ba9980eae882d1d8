"""What the dashboard pages show, gathered from settings, traces, stats, RQ and captures.

Plain data for the templates: no Flask, no HTML. Secrets never leave this
module except as fingerprints (a salted SHA-256, 12 hex digits), enough to
tell which secret of a rotation list matched without revealing any of it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from receiver.admin import switches
from receiver.observe import trace
from receiver.observe.capture import CaptureJournal, capture_files, read_captures
from receiver.queue import ops, ordering
from receiver.queue.handoff import job_item
from receiver.routing.contracts import QueueDepth
from receiver.routing.handlers import Router
from receiver.settings.model import Integration, Settings

PALETTE = ("#1b6ac9", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c")
"""Bar colours per topic, chosen to stay apart for common colour blindness (with labels too)."""
LIST_LIMIT = 200
"""Deliveries listed at most on one page (after filtering the newest ``trace.RECENT``)."""


def fingerprint(secret: str) -> str:
    return hashlib.sha256(b"receiver secret fingerprint\0" + secret.encode()).hexdigest()[:12]


@dataclass
class Bar:
    x: float
    y: float
    height: float
    colour: str
    label: str


@dataclass
class Chart:
    """A 7-day stacked bar chart, laid out for inline SVG."""

    width: int
    height: int
    bars: list[Bar]
    days: list[tuple[float, str, int]]
    """``(x, "11-27", total)`` per day, for the axis labels."""
    legend: list[tuple[str, str]]
    """``(colour, topic)``."""
    summary: str
    bar_width: float
    peak: int


def chart(days: Mapping[str, Mapping[str, int]]) -> Chart:
    width, height, top, bottom = 320, 140, 14, 20
    topics = sorted({t for counts in days.values() for t in counts if not t.startswith("!")})
    colours = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(topics)}
    totals = {d: sum(v for t, v in c.items() if not t.startswith("!")) for d, c in days.items()}
    peak = max(totals.values(), default=0)
    slot = width / max(1, len(days))
    bar_width = slot * 0.6
    usable = height - top - bottom
    bars: list[Bar] = []
    labels: list[tuple[float, str, int]] = []
    for index, (day, counts) in enumerate(sorted(days.items())):
        x = index * slot + (slot - bar_width) / 2
        base = float(height - bottom)
        for topic in topics:
            count = counts.get(topic, 0)
            if not count or not peak:
                continue
            size = usable * count / peak
            base -= size
            bars.append(Bar(x, base, size, colours[topic], f"{day}: {topic} {count}"))
        labels.append((x + bar_width / 2, day[5:], totals[day]))
    summary = "Deliveries per day, last 7 days: " + ", ".join(
        f"{d} {totals[d]}" for d in sorted(days)
    )
    return Chart(width, height, bars, labels, [(colours[t], t) for t in topics], summary,
                 bar_width, peak)


@dataclass
class SecretRow:
    index: int
    fingerprint: str
    matched_last: bool


@dataclass
class IntegrationRow:
    name: str
    enabled_in_config: bool
    switched_off_at: str | None
    callback_urls: list[str]
    last: dict[str, str]
    chart: Chart
    signature_failures: int
    rejected: int
    refused_last_hour: dict[str, int]
    """Refusals of the last hour by ``error[/reason]``."""
    deliveries_7d: int
    secrets: list[SecretRow]
    access_token: bool
    accept_sha1: bool
    allowed_networks: list[str]

    @property
    def accepting(self) -> bool:
        return self.enabled_in_config and self.switched_off_at is None


def integrations(
    settings: Settings, connection: redis.Redis, base_url: str
) -> list[IntegrationRow]:
    names = sorted(settings.integrations, key=lambda n: (n != settings.default_integration, n))
    stats = trace.stats(connection, names)
    off = switches.switched_off(connection)
    return [
        _row(
            settings.integrations[name],
            settings,
            stats.get(name),
            off.get(name),
            base_url,
            trace.refusals(connection, name) if connection is not None else {},
        )
        for name in names
    ]


def _row(
    integration: Integration,
    settings: Settings,
    stats: Mapping[str, Any] | None,
    switched_off_at: str | None,
    base_url: str,
    refused_last_hour: dict[str, int],
) -> IntegrationRow:
    last: dict[str, str] = dict(stats["last"]) if stats else {}
    days: dict[str, dict[str, int]] = dict(stats["days"]) if stats else {}
    matched = last.get("secret_index")
    path = (
        "webhook"
        if integration.name == settings.default_integration
        else f"webhooks/{integration.name}"
    )
    return IntegrationRow(
        name=integration.name,
        enabled_in_config=integration.enabled,
        switched_off_at=switched_off_at,
        callback_urls=[base_url.rstrip("/") + "/" + path],
        last=last,
        chart=chart(days) if days else chart({}),
        signature_failures=sum(c.get("!signature_failures", 0) for c in days.values()),
        rejected=sum(c.get("!rejected", 0) for c in days.values()),
        refused_last_hour=refused_last_hour,
        deliveries_7d=sum(v for c in days.values() for t, v in c.items() if not t.startswith("!")),
        secrets=[
            SecretRow(i, fingerprint(s), matched is not None and str(i) == matched)
            for i, s in enumerate(integration.app_secrets)
        ],
        access_token=integration.access_token is not None,
        accept_sha1=integration.accept_sha1,
        allowed_networks=[str(n) for n in integration.allowed_networks],
    )


# --- deliveries --------------------------------------------------------------------------------


STATUS_FILTERS = {"ok": (200, 300), "refused": (400, 500), "error": (500, 600)}
SHOWS = ("verified", "refused")
"""What the Deliveries page lists: traced deliveries, or the kept sample of refused ones."""


def topic_of(record: Mapping[str, Any]) -> str | None:
    events = record.get("events") or []
    return str(events[0][0]).split(".", 1)[0] if events else None


def handler_failed(record: Mapping[str, Any]) -> bool:
    return any(o.get("outcome") != "ok" for o in record.get("inline") or [])


def deliveries(
    connection: redis.Redis,
    *,
    show: str = "verified",
    known: Iterable[str] = (),
    integration: str | None = None,
    topic: str | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """The newest deliveries matching every filter given (``status``: ok, refused,
    error, handler_failed, or a number): traced ones, or (``show="refused"``) the
    sample kept of the refused ones of the ``known`` integrations.

    Apart, so that forged traffic, however much, never pushes a genuine delivery off the list.
    """
    if show == "refused":
        names = [n for n in known if integration is None or n == integration]
        found = trace.refused_recent(connection, names)
    else:
        found = trace.recent(connection, trace.RECENT)
    out = []
    for record in found:
        if integration and record.get("integration") != integration:
            continue
        if topic and topic_of(record) != topic:
            continue
        if status and not _status_matches(record, status):
            continue
        record["topic"] = topic_of(record)
        record["handler_failed"] = handler_failed(record)
        out.append(record)
        if len(out) >= LIST_LIMIT:
            break
    return out


def _status_matches(record: Mapping[str, Any], wanted: str) -> bool:
    code = int(record.get("status") or 0)
    if wanted == "handler_failed":
        return handler_failed(record)
    if wanted in STATUS_FILTERS:
        low, high = STATUS_FILTERS[wanted]
        return low <= code < high
    # ASCII digits only: "²".isdigit() and "٣".isdecimal() are true, and int("²") raises.
    return wanted.isascii() and wanted.isdecimal() and code == int(wanted)


def find_capture(
    journal: CaptureJournal | None, record: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The captured request of a traced delivery: only the files of its day are read."""
    if journal is None:
        return None  # nothing is captured here
    delivery_id = record.get("delivery_id")
    received = record.get("received_at")
    if not delivery_id or not received:
        return None
    day = datetime.fromisoformat(received).astimezone(UTC).strftime("%Y%m%d")
    files = [p for p in capture_files(journal.folder) if f"-{day}-" in p.name]
    for _, captured in read_captures(files):
        if captured.get("delivery_id") == delivery_id:
            return captured
    return None


def replayable(captured: Mapping[str, Any] | None, dev_mode: bool) -> bool:
    """Only what was verified when received: re-signing anything else would launder a forgery."""
    if captured is None or captured.get("method") != "POST":
        return False
    verified = captured.get("verified")
    return verified == "ok" or (dev_mode and verified == "unchecked")


# --- failed work and queues ---------------------------------------------------------------------


@dataclass
class FailedRow:
    item: ops.FailedItem
    traceback: str
    delivery_id: str | None = None
    failed_at: str | None = None


def failed(connection: redis.Redis, queues: list[str]) -> list[FailedRow]:
    items, _ = ops.failed_items(connection, queues)
    rows = []
    for item in items:
        try:
            job = Job.fetch(item.job_id, connection=connection, serializer=JSONSerializer)
        except Exception:  # gone between the two reads
            continue
        result = job.latest_result()
        carried = job_item(job) or {}
        event = carried.get("event") if isinstance(carried.get("event"), dict) else {}
        ended = job.ended_at.replace(tzinfo=UTC).isoformat() if job.ended_at else None
        rows.append(
            FailedRow(
                item=item,
                traceback=((result.exc_string if result else None) or item.error).strip(),
                delivery_id=(event or {}).get("delivery_id"),
                failed_at=ended,
            )
        )
    return rows


@dataclass
class QueueRow:
    depth: QueueDepth
    oldest_age: float | None = field(default=None)


def queues(connection: redis.Redis, settings: Settings, router: Router) -> list[QueueRow]:
    names = queue_names(connection, settings, router)
    now = time.time()
    return [
        QueueRow(d, None if d.oldest_pending_at is None else max(0.0, now - d.oldest_pending_at))
        for d in ops.depths(connection, names)
    ]


def waiting(connection: redis.Redis, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Where the delivery's ordered events wait, and behind what (``ordering.waiting``)."""
    return ordering.waiting(connection, record) if record.get("ordered") else []


def held_keys(
    connection: redis.Redis, settings: Settings, router: Router
) -> list[ordering.HeldKey]:
    """Order keys whose events wait behind a failing one (``ordered_by`` handlers)."""
    return ordering.held(connection, queue_names(connection, settings, router))


def queue_names(connection: redis.Redis, settings: Settings, router: Router) -> list[str]:
    known = ops.known_queues(settings, connection)
    return sorted(set(ops.queue_names(settings, router)) | set(known))



@dataclass
class WorkerRow:
    name: str
    state: str
    queues: list[str]
    current_job: str | None
    last_heartbeat: str | None


def workers(connection: redis.Redis) -> list[WorkerRow]:
    """RQ's registered workers: whether anyone is there to run the queues' work."""
    rows = []
    for worker in Worker.all(connection=connection, serializer=JSONSerializer):
        beat = worker.last_heartbeat
        rows.append(
            WorkerRow(
                name=worker.name,
                state=worker.get_state(),
                queues=worker.queue_names(),
                current_job=worker.get_current_job_id(),
                last_heartbeat=beat.replace(tzinfo=UTC).isoformat() if beat else None,
            )
        )
    return sorted(rows, key=lambda row: row.name)
