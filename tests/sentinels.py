"""A replicated Redis on loopback: a master, replicas and three Sentinels, for failover tests.

Every server is the suite's binary (``RECEIVER_REDIS_SERVER`` picks another; Redis and
Valkey both run as a Sentinel with ``--sentinel``), each on a free port with a folder of
its own. ``lose_master`` is the loss of a machine: the master is SIGKILLed and its data
folder deleted, so nothing it held can come back; the Sentinels then promote a replica.
Timings are short (``down-after-milliseconds`` 1000, ``failover-timeout`` 2000) so a
failover takes seconds; every wait is bounded.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from receiver.testing import RedisServer, free_port

from .processes import wait_until

SERVICE = "receiver-test"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 2000
QUORUM = 2
SENTINELS = 3
FAST_SYNC = ["--repl-diskless-sync-delay", "0"]
"""A replica's first sync starts at once (Redis waits 5 s for more replicas to share it)."""


class Sentinel:
    """One Sentinel process watching ``SERVICE``."""

    def __init__(self, folder: Path, binary: str, master_port: int) -> None:
        self.folder = folder
        self.port = free_port()
        self.binary = binary
        folder.mkdir(parents=True, exist_ok=True)
        # Sentinel rewrites its configuration file as it learns: it must be its own, writable.
        self.config = folder / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, str(self.config), "--sentinel"], stdout=subprocess.DEVNULL
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def master(self) -> dict[str, str] | None:
        """What this Sentinel knows of the service's master (``None``: not answering yet)."""
        try:
            reply = self.client().execute_command("SENTINEL", "MASTER", SERVICE)
        except redis.RedisError:
            return None
        if isinstance(reply, dict):
            return {str(k): str(v) for k, v in reply.items()}
        return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class ReplicatedRedis:
    """A master, ``replicas`` replicas and three Sentinels (or none: ``sentinels=False``);
    the receiver's URL for them."""

    def __init__(self, folder: Path, replicas: int = 1, sentinels: bool = True) -> None:
        self.folder = folder
        self.master = RedisServer(folder / "redis-0", extra_args=list(FAST_SYNC))
        self.replicas = [self._replica(i + 1) for i in range(replicas)]
        self.sentinels = [
            Sentinel(folder / f"sentinel-{i}", self.master.binary, self.master.port)
            for i in range(SENTINELS if sentinels else 0)
        ]

    def _replica(self, number: int, of: RedisServer | None = None) -> RedisServer:
        server = RedisServer(self.folder / f"redis-{number}", extra_args=list(FAST_SYNC))
        primary = of or self.master
        server.extra_args += ["--replicaof", "127.0.0.1", str(primary.port)]
        return server

    @property
    def url(self) -> str:
        if not self.sentinels:
            return self.master.url
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    def start(self, timeout: float = 60.0) -> None:
        """Everything up, each replica in sync, each Sentinel seeing the others and the replicas."""
        self.master.start()
        for replica in self.replicas:
            replica.start()
        for replica in self.replicas:
            wait_until(lambda r=replica: self.in_sync(r), timeout, f"replica {replica.port}")
        for sentinel in self.sentinels:
            sentinel.start()

        def aware(sentinel: Sentinel) -> bool:
            seen = sentinel.master()
            return (
                seen is not None
                and int(seen.get("num-other-sentinels", 0)) == SENTINELS - 1
                and int(seen.get("num-slaves", 0)) == len(self.replicas)
            )

        for sentinel in self.sentinels:
            wait_until(lambda s=sentinel: aware(s), timeout, f"sentinel {sentinel.port}")

    def __enter__(self) -> ReplicatedRedis:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def in_sync(self, replica: RedisServer) -> bool:
        """The replica's link is up, and the master counts it online (after its first ack)."""
        try:
            info = redis.Redis(port=replica.port, socket_timeout=2).info("replication")
            seen = self.client().info("replication")
        except redis.RedisError:
            return False
        online = [
            value
            for name, value in seen.items()
            if name.startswith("slave")
            and isinstance(value, dict)
            and value.get("port") == replica.port
            and value.get("state") == "online"
        ]
        return bool(info.get("master_link_status") == "up" and online)

    def lose_master(self) -> RedisServer:
        """The master's machine is gone: SIGKILL, and its data folder deleted."""
        lost = self.master
        _kill(lost)
        shutil.rmtree(lost.folder, ignore_errors=True)
        return lost

    def wait_for_promotion(self, lost: RedisServer, timeout: float = 60.0) -> RedisServer:
        """Until a quorum of Sentinels names a replica as master and that replica says so."""

        def promoted() -> RedisServer | None:
            named = [s.master() for s in self.sentinels]
            ports = [int(m["port"]) for m in named if m is not None and "port" in m]
            for server in self.replicas:
                if ports.count(server.port) >= QUORUM and self._role(server) == "master":
                    return server
            return None

        new = wait_until(promoted, timeout, f"a replica promoted in place of {lost.port}")
        self.replicas.remove(new)
        self.master = new
        return new

    def add_replica(self, timeout: float = 60.0) -> RedisServer:
        """A new machine replaces the lost one: an empty server that replicates the master."""
        number = 1 + max(int(p.name.split("-")[1]) for p in self.folder.glob("redis-*"))
        replica = self._replica(number, of=self.master)
        replica.start()
        self.replicas.append(replica)
        wait_until(lambda: self.in_sync(replica), timeout, f"replica {replica.port} in sync")
        return replica

    def client(self) -> redis.Redis:
        """The current master, as a test reads it."""
        return redis.Redis(port=self.master.port, socket_timeout=10)

    def stop(self) -> None:
        """Everything, at once: a server writing its first append-only file after a sync
        ignores SIGTERM, and a master waits for lagging replicas; nothing here is kept."""
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            _kill(server)

    @staticmethod
    def _role(server: RedisServer) -> str | None:
        try:
            info = redis.Redis(port=server.port, socket_timeout=2).info("replication")
        except redis.RedisError:
            return None
        return str(info.get("role"))


def _kill(server: RedisServer) -> None:
    if server.process is not None:
        server.process.kill()
        server.process.wait(timeout=10)
        server.process = None
