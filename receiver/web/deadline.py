"""A total deadline on reading a request body, whatever the server's reader does inside.

A socket timeout bounds one ``recv``; a server's body reader loops over many
of them until it has what was asked, so a client trickling a byte every few
seconds never trips it. One watchdog thread per process (a greenlet under
gevent) keeps the deadlines of the reads in progress and, when one passes,
shuts the read side of that socket: the blocked read returns at once, and the
adapter answers 408 on the still-open write side.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time


class _Watch:
    __slots__ = ("deadline", "seq", "sock", "active")

    def __init__(self, deadline: float, seq: int, sock: socket.socket) -> None:
        self.deadline = deadline
        self.seq = seq
        self.sock = sock
        self.active = True

    def __lt__(self, other: _Watch) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[_Watch] = []
        self._seq = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float) -> _Watch:
        """Hang up ``sock``'s read side at ``deadline`` (``time.monotonic``) unless cancelled."""
        entry = _Watch(deadline, next(self._seq), sock)
        with self._changed:
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._changed.notify()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="receiver-read-deadline", daemon=True
                )
                self._thread.start()
        return entry

    def cancel(self, entry: _Watch) -> None:
        entry.active = False  # dropped lazily when it reaches the top of the heap

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._heap and not self._heap[0].active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._changed.wait()
                    continue
                wait = self._heap[0].deadline - time.monotonic()
                if wait > 0:
                    self._changed.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)
            if entry.active:
                try:
                    entry.sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass  # already closed: nothing left to stop


WATCHDOG = Watchdog()
