"""The queue side's Lua scripts, each with its KEYS and ARGV, and their registration.

Every string a script compares or builds comes in as ARGV from ``keys``;
a script spells no key prefix or claim state of its own. Scripts are
registered once per Redis client (registering hashes the source every time).
The script that moves ordered work on (``ordering.LANE``) lives with the rest of it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any
from weakref import WeakKeyDictionary

from redis import Redis
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

CLAIM = """
-- KEYS: the items' state keys (keys.state_key).
-- ARGV[1] the claimant's token; ARGV[2] dedupe window, seconds; ARGV[3] keys.ALIVE;
-- ARGV[4] keys.RUNNING; ARGV[5] keys.RETRYING; ARGV[6] keys.RUNNING_IN_DRAINER;
-- ARGV[7] keys.FAILED; ARGV[7 + i] the token of the scheduled retry KEYS[i]'s item is
-- ('' when none). A key may be claimed when absent or failed, already this claimant's,
-- owned by the item's own retry, or held by a drainer whose heartbeat has expired.
-- Returns one flag per key: 1 claimed (now running:<token>), 0 not.
local out = {}
local running = ARGV[4] .. ARGV[1]
local retrying = ARGV[5] .. ARGV[1]
local in_drainer = ARGV[6]
for i, key in ipairs(KEYS) do
  local s = redis.call('GET', key)
  local ok = false
  local owner = ARGV[7 + i] or ''
  if not s or s == ARGV[7] or s == running or s == retrying
     or (owner ~= '' and s == ARGV[5] .. owner) then
    ok = true
  elseif string.sub(s, 1, #in_drainer) == in_drainer then
    ok = redis.call('EXISTS', ARGV[3] .. string.sub(s, #in_drainer + 1)) == 0
  end
  if ok then
    redis.call('SET', key, running, 'EX', ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

PUSH = """
-- KEYS[1] keys.pending_key(queue); KEYS[2] keys.drainers_key(queue); KEYS[3] keys.lanes_key(queue);
-- KEYS[3 + i] the lane (keys.lane_key) of the i-th ordered item.
-- ARGV[1] max drainers; ARGV[2] a candidate drainer id; ARGV[3] seconds a new slot lasts
-- before its job must beat; ARGV[4] packets waiting per live drainer before another
-- starts; ARGV[5] seconds an idle lane lives; ARGV[6] how many packets follow (none: only
-- ask whether a drainer is wanted); ARGV[7..] the packets to append; then per ordered item
-- its lane element and the wake packet its lane gets if it was empty (see ``ordering``).
-- Returns 1 when the candidate took a slot (the caller enqueues its drain job), else 0.
local n = tonumber(ARGV[6])
if n > 0 then redis.call('RPUSH', KEYS[1], unpack(ARGV, 7, 6 + n)) end
local now = tonumber(redis.call('TIME')[1])
local at = 7 + n
for i = 4, #KEYS do
  if redis.call('RPUSH', KEYS[i], ARGV[at]) == 1 then
    redis.call('RPUSH', KEYS[1], ARGV[at + 1])
    redis.call('ZADD', KEYS[3], now, KEYS[i])
  end
  redis.call('EXPIRE', KEYS[i], ARGV[5])
  at = at + 2
end
local live = redis.call('ZCOUNT', KEYS[2], now, '+inf')
local waiting = redis.call('LLEN', KEYS[1])
if waiting > 0 and (live == 0 or (live < tonumber(ARGV[1])
                                  and waiting > live * tonumber(ARGV[4]))) then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
  return 1
end
return 0
"""

POP = """
-- KEYS[1] keys.pending_key(queue); KEYS[2] keys.inflight_key(drainer).
-- ARGV[1] at most this many packets.
-- Moves packets from the front of the queue to the drainer's in-flight list; returns them.
local packets = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #packets > 0 then
  redis.call('LTRIM', KEYS[1], #packets, -1)
  redis.call('RPUSH', KEYS[2], unpack(packets))
end
return packets
"""

FINISH = """
-- KEYS[1] keys.pending_key(queue); KEYS[2] keys.drainers_key(queue);
-- KEYS[3] keys.inflight_key(drainer). ARGV[1] the drainer id.
-- Called once the drainer has removed every packet it finished, so its in-flight list
-- is empty. Packets still there (a lost master had applied their removal, the promoted
-- replica had not) go back to the front of the queue, in order, as a dead drainer's do
-- (REAP): returns minus their number, and the caller keeps going or hands over.
-- Otherwise, when nothing waits, the drainer gives up its slot: returns 1; else 0
-- (work arrived meanwhile: the caller keeps going or hands over).
local left = redis.call('LRANGE', KEYS[3], 0, -1)
if #left > 0 then
  for i = #left, 1, -1 do redis.call('LPUSH', KEYS[1], left[i]) end
  redis.call('DEL', KEYS[3])
  return -#left
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

DONE = """
-- KEYS[1] keys.inflight_key(drainer); KEYS[2..] the state keys of items whose handler ran
-- and succeeded. ARGV[1] keys.DONE; ARGV[2] dedupe window, seconds; ARGV[3..] packets
-- every item of which has its outcome, to remove from the in-flight list (one copy each).
-- The states are written first: a packet never leaves the list before its items' outcomes.
-- Returns how many packets were removed.
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2])
end
local removed = 0
for i = 3, #ARGV do
  removed = removed + redis.call('LREM', KEYS[1], 1, ARGV[i])
end
return removed
"""
"""A drainer's successes of one turn in one command. As a SET per item and an LREM per
packet in a redis-py pipeline, their packing was a quarter of a drainer's CPU (cProfile of
a burst drain); and a script reaches a replica (or a master promoted after a failover)
whole or not at all."""

REAP = """
-- KEYS[1] keys.pending_key(queue); KEYS[2] keys.drainers_key(queue).
-- ARGV[1] keys.INFLIGHT; ARGV[2] keys.ALIVE.
-- Drainers whose slot lapsed and whose heartbeat expired are dead: their in-flight
-- packets go back to the front of the queue, in order, and their slots are freed.
-- Returns how many lapsed slots were looked at.
local now = tonumber(redis.call('TIME')[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
for _, id in ipairs(dead) do
  if redis.call('EXISTS', ARGV[2] .. id) == 0 then
    local key = ARGV[1] .. id
    local packets = redis.call('LRANGE', key, 0, -1)
    for i = #packets, 1, -1 do redis.call('LPUSH', KEYS[1], packets[i]) end
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[2], id)
  end
end
return #dead
"""

_registered: WeakKeyDictionary[Redis, dict[str, Any]] = WeakKeyDictionary()


def run(
    connection: Redis,
    source: str,
    keys: Sequence[Any],
    args: Sequence[Any],
    *,
    held: Held | None = None,
) -> Any:
    """``script(connection, source)(keys=keys, args=args)``, with less Python per call.

    The same EVALSHA on a connection of the client's pool, under the client's own
    retry policy (``connect``'s: one quick retry after a connection error), and the
    same reload after a Redis restart (NOSCRIPT: the ``Script`` path). What it skips:
    redis-py's per-argument encoding checks and its generic command path (command
    lookup, options, response callbacks), ≈ 40 % of a durable delivery's CPU in
    ``bench/wsgi_bench.py``'s cProfile. Keys and arguments are ``str``, ``bytes``
    or ``int``. With ``held``, its connection is used instead of one of the pool's
    (``Held.call``).
    """
    command = (b"EVALSHA", _sha(source), b"%d" % len(keys), *_args(keys), *_args(args))
    if held is not None:
        try:
            return held.call(command)
        except NoScriptError:
            return script(connection, source)(keys=keys, args=args)  # Redis restarted
    pool = connection.connection_pool
    conn: Any = pool.get_connection()  # redis-py's connections carry no type hints
    try:
        packed = [_pack(command)] if _pack is not None else conn.pack_command(*command)
        return conn.retry.call_with_retry(
            lambda: _send(conn, packed),
            lambda error: conn.disconnect(),  # as redis-py does before its retry
        )
    except NoScriptError:
        pass  # the server restarted since the script was loaded
    finally:
        _tend(conn)
        pool.release(conn)
    return script(connection, source)(keys=keys, args=args)


def _send(conn: Any, packed: Any) -> Any:
    conn.send_packed_command(packed)
    return conn.read_response()


def _tend(conn: Any) -> None:
    """Reconnect when redis-py ≥ 7's maintenance notifications asked for it."""
    reconnect = getattr(conn, "should_reconnect", None)
    if reconnect is not None and reconnect():
        conn.disconnect()
        conn.connect()


class Held:
    """One connection taken from a client's pool and kept, for a caller that writes alone.

    Taking a connection from redis-py's pool and giving it back costs more than
    the round trip's own Python under gevent workers: the pool's locks (gevent's,
    in Python), a process id check (a ``getpid`` system call) and a readiness poll
    of the socket on every take (``bench/wsgi_bench.py --gevent``). The web side's
    group writer (``web_store.PacketGroup``: one write at a time per process) keeps
    one instead. It is taken again after a fork (a child never writes on its
    parent's socket), and dropped (disconnected) whenever a call on it fails, so no
    half-read reply is ever read as the next call's.
    """

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._conn: Any = None
        self._pid = -1
        self._io: _Direct | None = None

    def connection(self) -> Any:
        if self._conn is None or self._pid != _PID[0]:
            self._conn = self.client.connection_pool.get_connection()
            self._pid = _PID[0]
        return self._conn

    def call(self, command: tuple[bytes, ...]) -> Any:
        """Send one command on the held connection and read its reply, as redis-py would.

        The same retry (the client's policy, as ``run``'s), the same errors (a reply
        that is an error is raised; a timeout or a broken socket drops the connection
        and raises redis-py's ``TimeoutError``/``ConnectionError``) and the same health
        check (a PING first after ``health_check_interval`` idle seconds); the connection
        is dropped after any failure but NOSCRIPT, as ``run`` drops it. What it skips
        is redis-py's per-command Python around the socket (``_Direct``).
        """
        conn = self.connection()
        try:
            packed = _pack(command) if _pack is not None else b"".join(conn.pack_command(*command))
            try:
                return self._round_trip(conn, packed)
            except ResponseError:
                raise  # the connection is in step
            except Exception as error:  # the retry policy decides, as if it had made the call
                first = [error]
            return conn.retry.call_with_retry(
                lambda: self._round_trip(conn, packed) if not first else _raise(first.pop()),
                lambda error: conn.disconnect(),
            )
        except NoScriptError:
            raise  # in step: loaded again through the pool
        except BaseException:  # a reply may be left half read: never reuse the connection
            conn.disconnect()
            raise
        finally:
            _tend(conn)

    def _round_trip(self, conn: Any, packed: bytes) -> Any:
        sock = conn._sock
        io = self._io
        if io is None or io.sock is not sock:
            io = self._io = _Direct.of(conn)
        if io is None or (conn.health_check_interval and time.monotonic() > conn.next_health_check):
            return _send(conn, [packed])  # connects, or PINGs first: redis-py's own path
        reply = io.round_trip(packed)
        if conn.health_check_interval:
            conn.next_health_check = time.monotonic() + conn.health_check_interval
        if isinstance(reply, ResponseError):
            raise reply
        if isinstance(reply, RedisConnectionError):  # LOADING, say: redis-py drops it
            conn.disconnect()
            raise reply
        return reply


def _kernel_timeouts(sock: socket.socket) -> None:
    """The socket's timeout enforced by the kernel (``SO_SNDTIMEO``/``SO_RCVTIMEO``).

    A Python socket with a timeout polls before every ``send`` and ``recv``: two
    more system calls per round trip, and under gthread workers two more releases
    of the GIL, each a chance for another thread to take it and for this one to
    wait for it back (futex calls, context switches). A blocking socket with the
    kernel's timeouts waits as long, and fails with EAGAIN (``BlockingIOError``,
    read as a timeout) instead. Left as it is when the options cannot be set.
    """
    timeout = sock.gettimeout()
    if timeout is None or timeout <= 0:
        return
    seconds = int(timeout)
    value = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    except OSError:
        return
    sock.settimeout(None)


def _raise(error: BaseException) -> Any:
    raise error


class _Direct:
    """A held connection's socket and hiredis reader, used without redis-py's layers.

    Per round trip redis-py runs a dozen Python calls around ``sendall`` and
    ``recv_into`` (the retry wrapper, ``send_packed_command``, ``check_health``,
    ``read_response`` twice, ``read_from_socket``, ``_host_error``…), and under gevent
    ``sendall`` is four more in Python plus a ``getsockopt`` system call, and
    ``recv_into`` two. Here: one non-blocking ``send`` and ``recv_into`` on gevent's
    underlying socket, waiting (gevent's wait, its timeout) only when the reply is not
    there yet.
    """

    __slots__ = (
        "sock",
        "_conn",
        "_parser",
        "_reader",
        "_push",
        "_buffer",
        "_raw",
        "_wait",
        "_event",
    )

    def __init__(self, conn: Any, sock: Any, parser: Any, buffer: bytearray) -> None:
        self.sock = sock
        self._conn = conn
        self._parser = parser
        self._reader = parser._reader
        self._push = getattr(parser, "_hiredis_PushNotificationType", None)
        """RESP3's push message type, when hiredis has one (as redis-py checks for it)."""
        self._buffer = buffer
        kind = type(sock)
        plain_gevent = (kind.__module__, kind.__name__) == ("gevent._socket3", "socket")
        raw = getattr(sock, "_sock", None) if plain_gevent else None  # never TLS's
        wait, event = getattr(sock, "_wait", None), getattr(sock, "_read_event", None)
        gevent = raw is not None and wait is not None and event is not None
        self._raw = raw if gevent else None
        self._wait = wait
        self._event = event
        if kind is socket.socket:
            _kernel_timeouts(sock)

    @classmethod
    def of(cls, conn: Any) -> _Direct | None:
        """For a connected connection with redis-py's hiredis parser, else None.

        Also None for a connection class with a ``read_response`` or
        ``send_packed_command`` of its own: Sentinel's turns a demoted master's READONLY
        into a ``ConnectionError`` (retried on the new master), which this path would not.
        """
        kind = type(conn)
        if (
            getattr(kind, "read_response", None) is not _READ_RESPONSE
            or getattr(kind, "send_packed_command", None) is not _SEND_PACKED
        ):
            return None
        sock = getattr(conn, "_sock", None)
        parser = getattr(conn, "_parser", None)
        reader = getattr(parser, "_reader", None)
        buffer = getattr(parser, "_buffer", None)
        if sock is None or reader is None or not isinstance(buffer, bytearray):
            return None
        return cls(conn, sock, parser, buffer)

    def round_trip(self, packed: bytes) -> Any:
        try:
            self._send(packed)
        except OSError as error:
            raise self._failed(error, "writing to") from error
        except BaseException:
            self._conn.disconnect()
            raise
        try:
            return self._read()
        except OSError as error:
            raise self._failed(error, "reading from") from error
        except BaseException:
            self._conn.disconnect()
            raise

    def _send(self, packed: bytes) -> None:
        raw = self._raw
        if raw is None:
            self.sock.sendall(packed)
            return
        try:
            sent = raw.send(packed)
        except BlockingIOError:
            sent = 0
        if sent < len(packed):
            self.sock.sendall(memoryview(packed)[sent:])  # gevent waits for room

    def _read(self) -> Any:
        reader, buffer, sock, raw, wait = (
            self._reader,
            self._buffer,
            self.sock,
            self._raw,
            self._wait,
        )
        while True:
            if raw is None or wait is None:
                count = sock.recv_into(buffer)
            else:
                try:
                    count = raw.recv_into(buffer)
                except BlockingIOError:  # not there yet: let other greenlets run meanwhile
                    wait(self._event)  # gevent's: raises socket.timeout after its timeout
                    continue
            if not count:
                raise RedisConnectionError("Connection closed by server.")
            reader.feed(buffer, 0, count)
            reply = reader.gets()
            if reply is not False:
                if self._push is not None and isinstance(reply, self._push):
                    return self._after_push(reply)
                return reply

    def _after_push(self, push: Any) -> Any:
        """A RESP3 push message came first: its handler, then redis-py reads the reply
        (from the same reader), as its ``read_response`` does."""
        self._parser.handle_push_response(push)
        return self._conn.read_response()

    def _failed(self, error: OSError, doing: str) -> Exception:
        """redis-py's exception for a failed send or read; the connection is dropped."""
        self._conn.disconnect()
        timeout = isinstance(error, socket.timeout) and error.errno != errno.ETIMEDOUT
        if timeout or isinstance(error, BlockingIOError):  # BlockingIOError: the kernel's
            return RedisTimeoutError(f"Timeout {doing} socket")
        return RedisConnectionError(f"Error while {doing} socket: {error.args}")


_READ_RESPONSE = getattr(AbstractConnection, "read_response", None)
_SEND_PACKED = getattr(AbstractConnection, "send_packed_command", None)

_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def _args(values: Sequence[Any]) -> list[bytes]:
    """``_arg`` of each value, the common types without a call each."""
    return [
        v
        if (kind := type(v)) is bytes
        else v.encode()
        if kind is str
        else b"%d" % v
        if kind is int
        else _arg(v)
        for v in values
    ]


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    raise TypeError(f"script argument {value!r}: str, bytes or int only")


_shas: dict[str, bytes] = {}


def _sha(source: str) -> bytes:
    found = _shas.get(source)
    if found is None:
        found = _shas[source] = hashlib.sha1(source.encode()).hexdigest().encode()
    return found


try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # redis-py packs it then
    _pack: Any = None
else:
    _pack = _hiredis_pack


def script(connection: Redis, source: str) -> Any:
    """The client's ``Script`` for ``source``: EVALSHA, loading it again after a Redis restart."""
    scripts = _registered.setdefault(connection, {})
    found = scripts.get(source)
    if found is None:
        found = scripts[source] = connection.register_script(source)
    return found


class Batch:
    """Script calls and plain commands for one round trip, sent as ``run`` sends a script.

    Replies come back in order. A script Redis no longer knows (NOSCRIPT: it restarted)
    did not run, so it alone runs again through its ``Script``; any other error reply is
    raised once every reply is read. Also takes the pipeline methods that
    ``trace.attempt_commands`` calls (``eval``, ``rpush``, ``expire``), so the trace's
    attempts ride along without redis-py's pipeline.
    """

    def __init__(self) -> None:
        self.commands: list[tuple[bytes, ...]] = []
        self.scripts: list[tuple[str, Sequence[Any], Sequence[Any]] | None] = []

    def __len__(self) -> int:
        return len(self.commands)

    def script(self, source: str, keys: Sequence[Any], args: Sequence[Any]) -> None:
        self.commands.append(
            (b"EVALSHA", _sha(source), b"%d" % len(keys), *map(_arg, keys), *map(_arg, args))
        )
        self.scripts.append((source, keys, args))

    def command(self, *parts: Any) -> None:
        self.commands.append(tuple(map(_arg, parts)))
        self.scripts.append(None)

    def eval(self, source: str, numkeys: int, *keys_and_args: Any) -> None:
        self.script(source, keys_and_args[:numkeys], keys_and_args[numkeys:])

    def rpush(self, key: str, *values: Any) -> None:
        self.command(b"RPUSH", key, *values)

    def expire(self, key: str, seconds: int) -> None:
        self.command(b"EXPIRE", key, seconds)

    def execute(self, connection: Redis) -> list[Any]:
        """Send everything, read every reply.

        Unlike ``run``, never sent again after a connection error: whether the commands
        ran is then unknown, and only the caller knows which of them may run twice (a
        POP whose reply was lost must not: the packets it moved would be nobody's).
        """
        if not self.commands:
            return []
        pool = connection.connection_pool
        conn: Any = pool.get_connection()
        try:
            if _pack is not None:
                packed = [_pack(command) for command in self.commands]
            else:
                packed = conn.pack_commands(self.commands)
            count = len(self.commands)

            conn.send_packed_command(packed)
            replies: list[Any] = []
            for _ in range(count):
                try:
                    replies.append(conn.read_response())
                except ResponseError as error:  # the connection is in step: read on
                    replies.append(error)
        except BaseException:
            conn.disconnect()  # replies may be left unread: no one else may use it as it is
            raise
        finally:
            reconnect = getattr(conn, "should_reconnect", None)
            if reconnect is not None and reconnect():
                conn.disconnect()
                conn.connect()
            pool.release(conn)
        for index, reply in enumerate(replies):
            call = self.scripts[index]
            if isinstance(reply, NoScriptError) and call is not None:
                source, keys, args = call
                replies[index] = script(connection, source)(keys=keys, args=args)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies
