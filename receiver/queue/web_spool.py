"""Web side: the local spool, where acknowledged deliveries wait while Redis cannot take them.

One file per delivery, named by arrival time so draining keeps order,
created 0600, written then fsynced then renamed into place (a half-written
file is never seen). A flusher claims a file by renaming it, pushes it to
Redis and removes it; a crash in between means a second push, which the
per-item dedupe in Redis turns into a no-op.

With ``durability = "replicated"`` a file may also be *held*: its packets are
in Redis, but replicas had not confirmed them (``queue.durability``). A held
file's name carries the master's replication id and offset
(``….json.held-<replid>-<offset>``); it stays until replicas confirm, or goes
back to waiting when that master is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from receiver.settings.model import Settings

log = logging.getLogger("receiver.spool")

STALE_CLAIM = 60.0
"""Seconds after which another process may take over a claimed file (its flusher died)."""


Lanes = Mapping[str, Sequence[Sequence[str]]]
"""Queue name → ``(lane, element, wake)`` per ordered item (``ordering.elements``)."""


@dataclass(frozen=True)
class Spooled:
    path: Path
    delivery_id: str
    queues: dict[str, list[str]]
    """Queue name → packets (JSON text), as the web side would have pushed them."""
    lanes: Lanes = field(default_factory=dict)
    """Its ordered items; they join their keys' order when the spool is flushed."""


class Held(NamedTuple):
    """A spool file whose packets are in a master, unconfirmed by its replicas."""

    path: Path
    replid: str
    offset: int


HELD = ".held-"
"""Between a file's waiting name and the mark of a held one."""

Mark = tuple[str, int]
"""A master's ``(replid, offset)`` at or past a held file's packets."""


def spool_folder(settings: Settings) -> Path:
    return Path(settings.data_dir) / "spool"


def spool_counts(settings: Settings) -> tuple[int, int]:
    """This machine's spool files, and how many of them are held for replicas (metrics)."""
    spool = Spool(spool_folder(settings))
    return len(spool), len(spool.held())


class Spool:
    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def write(
        self,
        delivery_id: str,
        packets: dict[str, str],
        lanes: Lanes | None = None,
        held: Mark | None = None,
    ) -> Path:
        """Store one packet per queue, and ordered items, durably; raise ``OSError`` when the
        disk cannot.

        ``held``: the packets are in Redis already, at this mark, unconfirmed by replicas.
        """
        # Lists on disk: the file format predates one packet per queue, and stays readable.
        queues = {queue: [packet] for queue, packet in packets.items()}
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{time.time_ns():020d}-{delivery_id}.json"
        temporary = self.folder / f".{name}.tmp"
        content: dict[str, Any] = {"delivery_id": delivery_id, "queues": queues}
        if lanes:
            content["lanes"] = lanes
        data = json.dumps(content).encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.folder / name
        if held is not None:
            final = _held_name(final, held)
        os.rename(temporary, final)
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return final

    def files(self) -> list[Path]:
        """Waiting deliveries, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(
            p for p in self.folder.iterdir() if p.name.endswith(".json") and p.name[0] != "."
        )

    def __len__(self) -> int:
        """Deliveries only this machine holds (waiting or being pushed), not held copies."""
        return len(self.files()) + len(self._claims())

    def held(self) -> list[Held]:
        """Files whose packets are in Redis, kept until replicas confirm them."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.iterdir()):
            _, sep, mark = path.name.partition(f".json{HELD}")
            replid, _, offset = mark.rpartition("-")
            if sep and offset.isdigit():
                found.append(Held(path, replid, int(offset)))
        return found

    def release(self, path: Path) -> None:
        """A held file waits again, to be pushed (its master is gone)."""
        with contextlib.suppress(FileNotFoundError):  # another process released it
            os.rename(path, path.with_name(path.name.split(HELD)[0]))

    def forget(self, path: Path) -> None:
        """A held file's packets are confirmed: the copy goes."""
        path.unlink(missing_ok=True)

    def flush(self, push: Callable[[Spooled], Mark | None]) -> int:
        """Push waiting deliveries in order, stopping at the first failure; return the count.

        A push that returns a mark stored the packets unconfirmed: the file is kept, held.
        """
        self._release_stale_claims()
        moved = 0
        for path in self.files():
            claimed = path.with_name(f"{path.name}.claimed-{os.getpid()}")
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # another process took it
            try:
                data: dict[str, Any] = json.loads(claimed.read_bytes())
                held = push(
                    Spooled(path, data["delivery_id"], data["queues"], data.get("lanes", {}))
                )
            except Exception:
                os.rename(claimed, path)
                raise
            if held is None:
                claimed.unlink()
            else:
                os.rename(claimed, _held_name(path, held))
            moved += 1
        return moved

    def _claims(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.iterdir() if ".json.claimed-" in p.name]

    def _release_stale_claims(self) -> None:
        for claimed in self._claims():
            try:
                if time.time() - claimed.stat().st_mtime > STALE_CLAIM:
                    os.rename(claimed, claimed.with_name(claimed.name.split(".claimed-")[0]))
            except FileNotFoundError:
                pass


def _held_name(path: Path, held: Mark) -> Path:
    replid, offset = held
    return path.with_name(f"{path.name}{HELD}{replid}-{offset}")


class SpoolFlusher:
    """A daemon thread per web process that empties the spool once Redis answers again.

    ``tend``, when given, runs first on every pass (``durability.tend_held``).
    """

    def __init__(
        self,
        spool: Spool,
        push: Callable[[Spooled], Mark | None],
        every: float = 1.0,
        tend: Callable[[], None] | None = None,
    ) -> None:
        self.spool = spool
        self.push = push
        self.every = every
        self.tend = tend
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def ensure_running(self) -> None:
        with self._lock:
            # After gunicorn forks, the parent's thread does not exist in the child.
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="receiver-spool", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.every)
            if self.tend is not None:
                try:
                    self.tend()
                except Exception as exc:
                    log.debug("held deliveries not confirmed yet: %s", exc)
            if not len(self.spool):
                continue
            try:
                moved = self.spool.flush(self.push)
            except Exception as exc:
                log.debug("spool not flushed yet: %s", exc)
                continue
            if moved:
                log.warning("moved %d spooled deliveries into Redis", moved)
