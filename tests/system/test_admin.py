"""The admin dashboard through Flask's test client, on a real Redis: login, CSRF, switches,
deliveries and their traces, replay, failed work and queues, secrets never shown.

The browser walk-through against gunicorn and a worker is ``test_admin_browser.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from flask import Flask
from rq.registry import FailedJobRegistry

from receiver import Router, create_app
from receiver.testing import body_of, group_comment
from tests.conftest import (
    admin_config,
    csrf_in,
    drain_worker,
    login,
    signed,
)
from tests.integration.test_admin import SECURITY_HEADERS, directives


@pytest.fixture
def choking_app(router: Router, redis_url: str, tmp_path: Path) -> Flask:
    """An admin app whose background handler fails quoting the group comment it was given."""
    return create_app(admin_config(
        redis_url, tmp_path, handlers=["tests.plugins.quoting"], job_retries=0
    ), router=router)


def fail_a_comment(app: Flask, worker_env: dict[str, str], message: str) -> str:
    """Deliver a group comment; a real worker runs the choking handler; the failed job's id."""
    body = body_of(group_comment(message=message))
    assert app.test_client().post("/webhook", data=body, headers=signed(body)).status_code == 200
    drain_worker({
        **worker_env, "RECEIVER_HANDLERS": "tests.plugins.quoting", "RECEIVER_JOB_RETRIES": "0"
    })
    connection = redis.Redis.from_url(app.extensions["receiver"].settings.redis_url)
    [job_id] = FailedJobRegistry("receiver", connection=connection).get_job_ids()
    return str(job_id)


def test_failed_work_is_requeued_or_deleted_by_a_form_never_by_a_link(
    choking_app: Flask, worker_env: dict[str, str]
) -> None:
    """What operators used rq-dashboard for, on the dashboard's own Failed work page: a
    failed job with its traceback, requeued or skipped by a POST with the session's CSRF
    token. A link (GET), rq-dashboard's old URLs included, changes nothing."""
    failed_job = fail_a_comment(choking_app, worker_env, "what is this")
    connection = redis.Redis.from_url(choking_app.extensions["receiver"].settings.redis_url)
    registry = FailedJobRegistry("receiver", connection=connection)
    client = choking_app.test_client()
    signed_in = login(client, data={"next": f"/admin/rq/job/{failed_job}/delete"})
    assert client.get(signed_in.headers["Location"]).status_code == 404
    for url in ("/admin/failed/requeue", "/admin/failed/skip",
                f"/admin/failed/skip?job_id={failed_job}", "/admin/rq/requeue/receiver",
                f"/admin/rq/job/{failed_job}/requeue", "/admin/rq/queue/receiver/failed/empty"):
        assert client.get(url).status_code in (404, 405), url
    assert client.post("/admin/failed/skip", data={"job_id": failed_job}).status_code == 403
    assert registry.get_job_ids() == [failed_job]

    page = client.get("/admin/failed").text
    assert f'data-testid="skip-{failed_job}"' in page and "cannot parse comment" in page
    token = csrf_in(page)
    skipped = client.post("/admin/failed/skip", data={"job_id": failed_job, "csrf_token": token})
    assert skipped.status_code == 303 and skipped.headers["Location"].endswith("?skipped=1")
    assert "Skipped 1 item(s)." in client.get(skipped.headers["Location"]).text
    assert registry.get_job_ids() == [] and not connection.exists(f"rq:job:{failed_job}")
    again = client.post("/admin/failed/skip", data={"job_id": failed_job, "csrf_token": token})
    assert again.status_code == 404 and "already requeued or removed" in again.text


MARKUP = "<img src=x onerror=alert(document.domain)>"


def test_a_failure_quoting_markup_shows_as_text(
    choking_app: Flask, worker_env: dict[str, str]
) -> None:
    """A background handler fails quoting a comment's ``<img onerror>``: the Failed work page
    shows it as text, under a CSP that lets no script run at all."""
    fail_a_comment(choking_app, worker_env, MARKUP)
    client = choking_app.test_client()
    assert login(client).status_code == 303
    page = client.get("/admin/failed")
    assert page.status_code == 200
    assert "cannot parse comment &lt;img src=x onerror=alert(document.domain)&gt;" in page.text
    assert "<img" not in page.text and "<script" not in page.text
    policy = directives(page)
    assert policy["default-src"] == "'none'" and "script-src" not in policy
    assert SECURITY_HEADERS.items() <= dict(page.headers).items()
