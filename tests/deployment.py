"""A deployment as the Procfile runs it, for fault tests: gunicorn, workers, Redis; parts fail.

Handler side effects are counted with the recording plugin (``tests.plugins.recording``):
``numbers`` lists the ``n`` of every successful call, so a test can tell lost deliveries
from doubled ones.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import redis
import requests
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from receiver.app import connect
from receiver.queue import keys
from receiver.testing import RedisServer, free_port, without_settings

from .conftest import SECRET, TOKEN, signed
from .plugins.recording import successful
from .processes import (
    ROOT,
    gunicorn_command,
    receiver_command,
    stop,
    stop_group,
    wait_for_http,
    wait_until,
)


class Deployment:
    """One Redis, one gunicorn, N workers, as the Procfile runs them; parts can fail.

    ``redis_url`` names a Redis started elsewhere (a replicated one, through its
    Sentinels) instead of the one the deployment starts; ``settings`` are more
    ``[receiver]`` lines of its configuration file.
    """

    def __init__(self, tmp_path: Path, redis_url: str | None = None, settings: str = "") -> None:
        self.tmp = tmp_path
        self.redis = RedisServer(tmp_path / "redis")
        if redis_url is None:
            self.redis.start()
        self.redis_url = redis_url or self.redis.url
        self.db = str(tmp_path / "side-effects.sqlite")
        config = tmp_path / "receiver.toml"
        config.write_text(
            "[receiver]\nretry_backoff = 1.0\njob_retries = 2\nmax_drainers = 4\n"
            f'handlers = ["tests.plugins.recording"]\ndata_dir = "{tmp_path / "data"}"\n' + settings
        )
        self.env = {
            **without_settings(os.environ),
            "REDIS_URL": self.redis_url,
            "RECEIVER_APP_SECRET": SECRET,
            "RECEIVER_VERIFY_TOKEN": TOKEN,
            "RECEIVER_CONFIG": str(config),
            "RECEIVER_LOG_LEVEL": "WARNING",
            "RECORDING_DB": self.db,
            "FIXED_FLAG": str(tmp_path / "fixed"),
            "PYTHONPATH": str(ROOT),
        }
        self.web: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.url = ""

    def start_web(self) -> None:
        port = free_port()
        self.web = subprocess.Popen(gunicorn_command(port), env=self.env, cwd=ROOT)
        self.url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{self.url}/healthz", self.web)

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        worker = subprocess.Popen(
            receiver_command("worker", *args), env=self.env, cwd=ROOT, start_new_session=True
        )
        self.workers.append(worker)
        return worker

    def post(self, data: dict[str, Any]) -> int:
        body = json.dumps(data).encode()
        return requests.post(
            f"{self.url}/webhook", data=body, headers=signed(body), timeout=30
        ).status_code

    def cli(self, *args: str) -> str:
        """What `receiver ARGS…` prints, run as an operator would against this deployment."""
        return subprocess.run(
            receiver_command(*args),
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout

    def client(self) -> redis.Redis:
        """The deployment's Redis (its current master, through Sentinel)."""
        return connect(self.redis_url, 10)

    def wait_for_scheduler(self) -> None:
        """Until a worker's scheduler of retries holds its lock."""
        client = self.client()
        wait_until(lambda: client.keys("rq:scheduler-lock:*"), 60, "a worker's scheduler to start")

    def settled(self) -> bool:
        """No packet pending, no drainer, no RQ job queued or scheduled, no retry job taken
        and unfinished (a worker that lost Redis mid-job leaves it started, or in RQ's
        intermediate list, for ``recover_abandoned``)."""
        try:
            connection = self.client()
            queue = Queue("receiver", connection=connection)
            started = connection.zrange(StartedJobRegistry(queue=queue).key, 0, -1)
            taken = [
                job_id
                for job_id in connection.lrange(queue.intermediate_queue_key, 0, -1)
                if job_id.startswith(b"retry-") and connection.exists(Job.key_for(job_id.decode()))
            ]
            return (
                connection.llen(keys.pending_key("receiver")) == 0
                and connection.zcard(keys.drainers_key("receiver")) == 0
                and queue.count == 0
                and ScheduledJobRegistry(queue=queue).count == 0
                and not any(entry.startswith(b"retry-") for entry in started)
                and not taken
            )
        except redis.RedisError:
            return False

    def close(self) -> None:
        if self.web is not None:
            stop(self.web)
        for worker in self.workers:
            stop_group(worker)
        self.redis.stop()


def change(topic: str, field: str, **value: Any) -> dict[str, Any]:
    return {
        "object": topic,
        "entry": [{"id": "1", "time": 1700000000, "changes": [{"field": field, "value": value}]}],
    }


def numbers(db: str) -> list[int]:
    return sorted(json.loads(data)["value"]["n"] for (data,) in successful(db, "data"))
