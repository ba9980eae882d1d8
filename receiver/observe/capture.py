"""The capture journal: every delivery to a capturing integration, as JSON Lines.

One file per process and day, rotated by size (``captures-20261127-<pid>-000.jsonl``),
created 0600 in a 0700 folder. A record holds what a replay needs (the exact
raw body, base64 when it is not UTF-8, and the headers that matter) and what
happened (verification, status, delivery and event ids). Secrets never land
here: the verify token of a handshake is masked, and app secrets are never seen.
Redaction rules (dotted JSON paths, ``*`` for any key or index) mask or drop
values before writing; a redacted body is marked so, as its signature no
longer matches.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from receiver.observe.logsafe import MASK, is_secret_query_key
from receiver.routing.contracts import Request, Result
from receiver.settings import defaults

KEPT_HEADERS = (
    "X-Hub-Signature-256",
    "X-Hub-Signature",
    "Content-Type",
    "User-Agent",
    "X-Forwarded-For",
)


@dataclass(frozen=True)
class Redaction:
    path: tuple[str, ...]
    drop: bool = False

    @classmethod
    def parse(cls, rule: str) -> Redaction:
        """``"entry.*.changes.*.value.message"`` masks; a leading ``-`` drops the key instead."""
        drop = rule.startswith("-")
        return cls(tuple(rule.lstrip("-").split(".")), drop)


def redact(data: Any, rules: tuple[Redaction, ...]) -> tuple[Any, bool]:
    changed = False
    for rule in rules:
        changed = _apply(data, rule.path, rule.drop) or changed
    return data, changed


def _apply(node: Any, path: tuple[str, ...], drop: bool) -> bool:
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        keys = list(node) if head == "*" else [head] if head in node else []
    elif isinstance(node, list):
        keys = (
            list(range(len(node)))
            if head == "*"
            else ([int(head)] if head.isdigit() and int(head) < len(node) else [])
        )
    else:
        return False
    changed = False
    for key in reversed(keys):
        if rest:
            changed = _apply(node[key], rest, drop) or changed
        elif drop:
            del node[key]
            changed = True
        else:
            node[key] = MASK
            changed = True
    return changed


class CaptureJournal:
    """Appends one line per delivery; cheap enough for the ack path (measured in bench/)."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        max_bytes: int = defaults.CAPTURE_MAX_BYTES,
        max_total_bytes: int = defaults.CAPTURE_MAX_TOTAL_BYTES,
        redactions: tuple[str, ...] = (),
    ) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.max_total_bytes = max_total_bytes
        self.redactions = tuple(Redaction.parse(r) for r in redactions)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._day: date | None = None
        self._size = 0
        self._pid = 0

    def record(self, request: Request, result: Result, received_at: datetime) -> None:
        line = json.dumps(self._entry(request, result, received_at), separators=(",", ":"))
        data = (line + "\n").encode()
        with self._lock:
            fd = self._file(received_at.date(), len(data))
            os.write(fd, data)
            self._size += len(data)

    def _entry(self, request: Request, result: Result, received_at: datetime) -> dict[str, Any]:
        headers = {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
        query = {k: (MASK if is_secret_query_key(k) else v) for k, v in request.query.items()}
        entry: dict[str, Any] = {
            "id": result.delivery_id or f"r{received_at.timestamp():.6f}".replace(".", ""),
            "received_at": received_at.isoformat(),
            "integration": result.integration or request.integration,
            "method": request.method,
            "path": request.path,
            "query": query,
            "headers": headers,
            "verified": result.verified,
            "secret_index": result.secret_index,
            "status": result.status,
            "error": result.error,
            "reason": result.reason,
            "delivery_id": result.delivery_id,
            "replayed": request.replayed,
            "event_ids": [e.id for e in result.events],
            "events": sorted({e.name for e in result.events}),
            "topic": result.events[0].topic if result.events else None,
        }
        if result.verified == "failed":
            # Anyone can send these: keep an excerpt to debug with, nothing to replay or
            # to fill the disk with.
            excerpt = request.body[: defaults.CAPTURE_UNVERIFIED_EXCERPT]
            entry.update(
                {
                    "body": None,
                    "body_note": "signature did not verify; only an excerpt is kept",
                    "body_excerpt": excerpt.decode("utf-8", "replace"),
                }
            )
        else:
            entry.update(self._body(request.body, request.body_too_large))
        return entry

    def _body(self, body: bytes, too_large: bool) -> dict[str, Any]:
        if too_large:
            return {"body": None, "body_note": "too large; not kept"}
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return {"body": None, "body_b64": base64.b64encode(body).decode("ascii")}
        if self.redactions and text:
            try:
                data, changed = redact(json.loads(text), self.redactions)
            except ValueError:
                changed = False
            if changed:
                return {"body": json.dumps(data), "body_redacted": True}
        return {"body": text}

    def _file(self, day: date, incoming: int) -> int:
        pid = os.getpid()
        if (
            self._fd is None
            or day != self._day
            or pid != self._pid
            or (self._size + incoming > self.max_bytes and self._size > 0)
        ):
            if self._fd is not None and pid == self._pid:
                os.close(self._fd)
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._day, self._pid = day, pid
            self._fd, self._size = self._open_next(day, pid, incoming)
            self._prune()
        return self._fd

    def _prune(self) -> None:
        """Oldest files go once the folder outgrows ``max_total_bytes`` (never the open one)."""
        files = [(p.stat().st_mtime, p) for p in capture_files(self.folder)]
        total = sum(p.stat().st_size for _, p in files)
        for _, path in sorted(files)[:-1]:
            if total <= self.max_total_bytes:
                return
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            total -= size

    def _open_next(self, day: date, pid: int, incoming: int) -> tuple[int, int]:
        for number in range(100000):
            path = self.folder / f"captures-{day:%Y%m%d}-{pid}-{number:03d}.jsonl"
            size = path.stat().st_size if path.exists() else 0
            if size == 0 or size + incoming <= self.max_bytes:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                return fd, size
        raise OSError(f"too many capture files for {day} in {self.folder}")


def capture_files(folder: str | os.PathLike[str]) -> list[Path]:
    path = Path(folder)
    return sorted(path.glob("captures-*.jsonl")) if path.is_dir() else []


def read_captures(paths: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` for every line of capture files, oldest file first."""
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    yield f"{path}:{number}", json.loads(line)


def record_body(record: Mapping[str, Any]) -> bytes | None:
    if record.get("body") is not None:
        return str(record["body"]).encode("utf-8")
    if record.get("body_b64"):
        return base64.b64decode(record["body_b64"])
    return None


def record_time(record: Mapping[str, Any]) -> datetime | None:
    raw = record.get("received_at")
    return datetime.fromisoformat(raw).astimezone(UTC) if raw else None
