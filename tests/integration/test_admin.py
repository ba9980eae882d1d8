"""The admin dashboard through Flask's test client, on a real Redis: login, CSRF, switches,
deliveries and their traces, replay, failed work and queues, secrets never shown.

The browser walk-through against gunicorn and a worker is ``test_admin_browser.py``.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash
from werkzeug.test import TestResponse

from receiver import Event, Router, create_app
from receiver.admin.data import fingerprint
from receiver.admin.switches import Switches, switch
from receiver.errors import ConfigError
from receiver.observe import trace
from receiver.settings.loading import load_settings
from tests.conftest import (
    OLD_SECRET,
    PASSWORD,
    SECRET,
    TOKEN,
    admin_config,
    base_config,
    csrf,
    csrf_in,
    is_session,
    login,
    payload,
    signed,
)
from tests.processes import wait_until


def deliver(client: FlaskClient, name: str = "group__comments__add.json", secret: str = SECRET,
            path: str = "/webhook") -> Any:
    body = payload(name)
    return client.post(path, data=body, headers=signed(body, secret))


def flush_traces(app: Flask) -> None:
    app.extensions["receiver.trace"].flush()


def test_the_dashboard_is_off_without_a_password(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/admin/").status_code == 404
    assert client.get("/admin/login").status_code == 404
    assert client.get("/admin/rq/").status_code == 404


def test_pages_ask_for_a_login_first(admin_app: Flask) -> None:
    client = admin_app.test_client()
    for path in ("/admin/", "/admin/deliveries", "/admin/failed", "/admin/queues"):
        answer = client.get(path)
        assert answer.status_code == 303
        assert answer.headers["Location"].startswith("/admin/login?next=/admin/")
    assert client.get("/admin/rq/").headers["Location"] == "/admin/login?next=/admin/rq/"


def test_a_wrong_password_is_refused_and_logged(
    admin_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = admin_app.test_client()
    answer = login(client, "guess")
    assert answer.status_code == 401
    assert "Wrong password." in answer.text and "guess" not in answer.text
    assert not is_session(answer)
    assert any("admin login failed" in r.getMessage() for r in caplog.records)
    assert all("guess" not in r.getMessage() for r in caplog.records)
    assert client.get("/admin/").status_code == 303


def test_the_session_cookie_is_signed_http_only_strict_and_secure_over_https(
    admin_app: Flask,
) -> None:
    client = admin_app.test_client()
    answer = login(client, data={"next": "/admin/queues"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/admin/queues"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    over_tls = login(client, base_url="https://receiver.example")
    assert "Secure" in over_tls.headers["Set-Cookie"]
    # A cookie that was tampered with is no session.
    value = cookie.split(";")[0].split("=", 1)[1]
    fresh = admin_app.test_client()
    fresh.set_cookie("receiver_admin", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"),
                     path="/admin")
    assert fresh.get("/admin/").status_code == 303
    # Login links only lead inside the dashboard.
    away = login(client, data={"next": "//evil.example/"})
    assert away.headers["Location"] == "/admin/"


def test_a_login_link_with_control_characters_leads_to_the_dashboard(
    admin_app: Flask,
) -> None:
    client = admin_app.test_client()
    for crafted in ("/admin/\r\nX: y", "/admin/\tx", "/admin/ x", "/admin/\x7f", "/admin/é"):
        form = client.get("/admin/login", query_string={"next": crafted}).text
        assert "X: y" not in form
        answer = login(client, data={"next": crafted})
        assert answer.status_code == 303, crafted
        assert answer.headers["Location"] == "/admin/" and "X" not in answer.headers
    assert login(client, data={"next": "/admin/deliveries?status=ok"}).headers[
        "Location"
    ] == "/admin/deliveries?status=ok"


def test_failed_logins_are_rate_limited(admin_app: Flask, redis_url: str) -> None:
    client = admin_app.test_client()
    for _ in range(5):
        assert login(client, "nope").status_code == 401
    blocked = login(client)
    assert blocked.status_code == 429 and "Too many failed logins" in blocked.text
    # Counted in Redis: another web process refuses this address too.
    other = create_app(admin_config(redis_url, Path("/nonexistent")), router=Router())
    assert login(other.test_client()).status_code == 429
    # Another address may still log in.
    elsewhere = login(client, environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert elsewhere.status_code == 303


def test_guesses_sent_at_once_cannot_slip_past_the_limit(admin_app: Flask) -> None:
    """Each attempt is counted before its password is checked: of 8 wrong passwords sent
    together, 5 are checked (401) and 3 refused (429), however they interleave."""
    clients = [admin_app.test_client() for _ in range(8)]
    tokens = [csrf(client, "/admin/login") for client in clients]

    def guess(n: int) -> int:
        form = {"password": f"wrong-{n}", "csrf_token": tokens[n]}
        return clients[n].post("/admin/login", data=form).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(guess, range(8)))
    assert statuses == [401] * 5 + [429] * 3


def test_the_right_password_does_not_use_up_the_limit(admin_app: Flask) -> None:
    client = admin_app.test_client()
    for _ in range(4):
        assert login(client, "nope").status_code == 401
    assert login(client).status_code == 303  # taken back: still 4 wrong ones counted
    assert login(admin_app.test_client(), "nope").status_code == 401
    assert login(admin_app.test_client()).status_code == 429


def test_forms_without_their_csrf_token_are_refused(browser: FlaskClient) -> None:
    answer = browser.post("/admin/integrations/default/switch", data={"on": "0"})
    assert answer.status_code == 403 and "CSRF" in answer.text
    wrong = browser.post(
        "/admin/integrations/default/switch", data={"on": "0", "csrf_token": "0" * 64}
    )
    assert wrong.status_code == 403
    assert 'data-testid="state-default">Enabled' in browser.get("/admin/").text
    assert browser.post("/admin/failed/requeue", data={"all": "1"}).status_code == 403
    assert browser.post("/admin/logout").status_code == 403


def test_the_login_form_needs_its_own_csrf_token(
    admin_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """Another site cannot sign a browser in (login CSRF): the form's token must come back
    with the cookie set alongside it, within the hour."""
    form = admin_app.test_client().get("/admin/login").text
    assert form.count('name="csrf_token"') == 1 and "Sign out" not in form
    cross_site = admin_app.test_client().post("/admin/login", data={"password": PASSWORD})
    assert cross_site.status_code == 403 and not is_session(cross_site)
    assert "was stale or was not sent from this page" in cross_site.text
    assert any("missing or stale login-form token" in r.getMessage() for r in caplog.records)
    # A token copied from someone else's form is worthless without that form's cookie.
    token = csrf(admin_app.test_client(), "/admin/login")
    copied = admin_app.test_client().post(
        "/admin/login", data={"password": PASSWORD, "csrf_token": token}
    )
    assert copied.status_code == 403 and not is_session(copied)
    # Cookie without its token, or with a forged one.
    client = admin_app.test_client()
    csrf(client, "/admin/login")
    for forged in ({}, {"csrf_token": "0" * 64}):
        answer = client.post("/admin/login", data={"password": PASSWORD, **forged})
        assert answer.status_code == 403 and not is_session(answer)
    # A form older than an hour is stale; the refusal carries a fresh one that works.
    form_cookie = client.get("/admin/login").headers["Set-Cookie"]
    assert form_cookie.startswith("receiver_admin_login=")
    assert "HttpOnly" in form_cookie and "SameSite=Strict" in form_cookie
    gate = admin_app.extensions["receiver.admin"].gate
    gate.login_form_max_age = -1
    stale = login(client)
    assert stale.status_code == 403
    gate.login_form_max_age = 3600
    answer = client.post("/admin/login", data={
        "password": PASSWORD, "csrf_token": csrf_in(stale.text)
    })
    assert answer.status_code == 303 and is_session(answer)
    # Refused forms were not counted as failed logins (nobody's password was tried).
    assert login(admin_app.test_client()).status_code == 303


def test_switching_an_integration_off_refuses_its_deliveries_in_every_process(
    admin_app: Flask, browser: FlaskClient, redis_url: str, tmp_path: Path
) -> None:
    webhook = admin_app.test_client()
    other_process = create_app(admin_config(redis_url, tmp_path), router=Router()).test_client()
    assert deliver(webhook).status_code == 200
    assert deliver(other_process).status_code == 200

    token = csrf(browser)
    answer = browser.post(
        "/admin/integrations/default/switch", data={"on": "0", "csrf_token": token}
    )
    assert answer.status_code == 303
    # Each process rereads the switches every SWITCH_REFRESH (1 s); the waits here are
    # generous bounds for a loaded machine, not a timing this test asserts.
    wait_until(lambda: deliver(webhook).status_code == 403, 15, "the switch in this process")
    refused = wait_until(
        lambda: (r := deliver(other_process)).status_code == 403 and r, 15, "the other process"
    )
    assert refused.get_json()["error"] == "integration_switched_off"
    assert other_process.get("/webhook", query_string={
        "hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "c"
    }).status_code == 403
    page = browser.get("/admin/").text
    assert 'data-testid="state-default">Switched off' in page

    browser.post("/admin/integrations/default/switch", data={"on": "1", "csrf_token": token})
    wait_until(lambda: deliver(other_process).status_code == 200, 15, "switched on again")


def test_the_config_enabled_false_wins_over_the_dashboard(browser: FlaskClient) -> None:
    page = browser.get("/admin/").text
    assert 'data-testid="state-hr-bot">Disabled in the config' in page
    assert 'data-testid="toggle-hr-bot"' not in page
    answer = browser.post(
        "/admin/integrations/hr-bot/switch", data={"on": "1", "csrf_token": csrf(browser)}
    )
    assert answer.status_code == 409
    assert browser.post(
        "/admin/integrations/nobody/switch", data={"on": "0", "csrf_token": csrf(browser)}
    ).status_code == 404


def test_integrations_page_shows_stats_and_fingerprints_never_secrets(
    admin_app: Flask, browser: FlaskClient
) -> None:
    client = admin_app.test_client()
    assert deliver(client, secret=OLD_SECRET).status_code == 200  # the older secret matched
    body = payload("group__comments__add.json")
    client.post("/webhook", data=body, headers=signed(body, "forged"))
    client.get("/webhook", query_string={
        "hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "c"
    })
    flush_traces(admin_app)
    page = browser.get("/admin/").text
    for secret in (SECRET, OLD_SECRET, "hr-secret", TOKEN, PASSWORD):
        assert secret not in page
    assert fingerprint(SECRET) in page
    assert re.search(fingerprint(OLD_SECRET) + r"</code> · <strong>matched the last", page)
    section = page.split('data-testid="integration-default"')[1].split("</section>")[0]
    assert "<dt>Signature failures, 7 days</dt><dd>1" in section
    assert "<dt>Deliveries, 7 days</dt><dd>1<" in section
    assert "answered (200)" in section
    assert "http://localhost/webhook" in section
    assert re.search(r"<rect [^>]*><title>\d{4}-\d\d-\d\d: group 1</title>", section)


def test_deliveries_list_filters_and_opens_a_trace(
    admin_app: Flask, browser: FlaskClient, router: Router
) -> None:
    def fails(event: Event) -> None:
        raise RuntimeError("inline handler broke")

    router.connect("group.posts", fails)
    client = admin_app.test_client()
    comment = deliver(client, "group__comments__add.json")
    post = deliver(client, "group__posts__status_add.json")
    assert comment.status_code == post.status_code == 200
    flush_traces(admin_app)
    connection = redis.Redis.from_url(admin_app.extensions["receiver"].settings.redis_url)
    ids = [r["delivery_id"] for r in trace.recent(connection, 2)]
    newest, older = ids

    listing = browser.get("/admin/deliveries").text
    assert f'data-testid="delivery-{newest}"' in listing
    assert f'data-testid="delivery-{older}"' in listing
    failed_only = browser.get("/admin/deliveries?status=handler_failed").text
    assert f"delivery-{newest}" in failed_only and f"delivery-{older}" not in failed_only
    assert f"delivery-{newest}" not in browser.get("/admin/deliveries?integration=hr-bot").text

    assert f"delivery-{newest}" in browser.get("/admin/deliveries?status=200").text
    for odd in ("²", "٣", "1e3", " 200", "-200"):  # digits to str.isdigit(), not to int()
        answer = browser.get("/admin/deliveries", query_string={"status": odd})
        assert answer.status_code == 200 and "delivery-" not in answer.text, odd

    trace_page = browser.get(f"/admin/deliveries/{newest}").text
    assert "group.posts" in trace_page and "RuntimeError" in trace_page
    assert "no: live" in trace_page
    assert browser.get("/admin/deliveries/nothing-here").status_code == 404


def test_forged_traffic_neither_hides_genuine_deliveries_nor_overwrites_the_last_one(
    admin_app: Flask, browser: FlaskClient
) -> None:
    client = admin_app.test_client()
    genuine = deliver(client).get_json()["delivery_id"]
    for _ in range(1000):  # more than the Deliveries page lists (trace.RECENT)
        assert deliver(client, secret="forged").status_code == 403
    flush_traces(admin_app)

    listing = browser.get("/admin/deliveries").text
    assert f'data-testid="delivery-{genuine}"' in listing and "bad_signature" not in listing
    refused = browser.get("/admin/deliveries?show=refused").text
    assert f"delivery-{genuine}" not in refused
    assert refused.count('data-testid="delivery-') == trace.REFUSED_SAMPLE
    assert "bad_signature (no_secret_matches)" in refused
    assert "bad_signature" in browser.get(
        "/admin/deliveries?show=refused&integration=default&status=403"
    ).text
    assert browser.get("/admin/deliveries?show=everything").status_code == 400

    section = browser.get("/admin/").text.split('data-testid="integration-default"')[1]
    last = section.split("<dt>Last delivery</dt>")[1].split("</dd>")[0]
    assert " · 200 · " in last and genuine in last
    last_refusal = section.split('data-testid="last-refusal-default">')[1].split("</dd>")[0]
    assert "403 bad_signature (no_secret_matches)" in last_refusal
    assert "show=refused" in last_refusal
    hour = section.split("<dt>Refused, last hour</dt>")[1].split("</dd>")[0]
    assert hour.strip() == "<dd>1000 (bad_signature/no_secret_matches: 1000)"


def test_a_captured_delivery_replays_marked_as_a_replay(
    admin_app: Flask, browser: FlaskClient, seen: list[Event]
) -> None:
    client = admin_app.test_client()
    assert deliver(client).status_code == 200
    flush_traces(admin_app)
    connection = redis.Redis.from_url(admin_app.extensions["receiver"].settings.redis_url)
    [original] = trace.recent(connection, 1)
    page = browser.get(f"/admin/deliveries/{original['delivery_id']}").text
    assert 'data-testid="replay"' in page
    answer = browser.post(
        f"/admin/deliveries/{original['delivery_id']}/replay",
        data={"csrf_token": csrf(browser)},
    )
    assert answer.status_code == 303
    replayed_id = answer.headers["Location"].rsplit("/", 1)[1]
    assert replayed_id != original["delivery_id"]
    replayed_page = browser.get(answer.headers["Location"]).text
    assert "yes: a replayed delivery" in replayed_page
    assert [e.replayed for e in seen] == [False, True]
    assert seen[0].id == seen[1].id  # the same event, delivered again


def test_queues_page_lists_queues_and_workers(
    browser: FlaskClient, redis_url: str
) -> None:
    """What rq-dashboard's Workers tab showed: who is there to run the queues' work."""
    from rq import Worker
    from rq.serializers import JSONSerializer

    assert 'data-testid="no-workers"' in browser.get("/admin/queues").text
    worker = Worker(["receiver"], name="<b>w1</b>", connection=redis.Redis.from_url(redis_url),
                    serializer=JSONSerializer)
    worker.register_birth()
    try:
        page = browser.get("/admin/queues").text
        assert 'data-testid="queue-receiver"' in page
        assert "&lt;b&gt;w1&lt;/b&gt;" in page and "<b>w1" not in page
        assert "<td>receiver</td>" in page
    finally:
        worker.register_death()
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def directives(answer: TestResponse) -> dict[str, str]:
    pairs = (d.strip().partition(" ") for d in answer.headers["Content-Security-Policy"].split(";"))
    return {name: value for name, _, value in pairs}


def test_pages_are_never_cached_or_framed(browser: FlaskClient) -> None:
    answer = browser.get("/admin/")
    assert answer.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "DENY"


def test_admin_password_from_env_file_or_as_a_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, router: Router, redis_url: str
) -> None:
    base = base_config(redis_url=redis_url)
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    assert load_settings({**base, "receiver": {"admin_password": {"file": str(tmp_path / "pw")}}
                          }).admin_password == PASSWORD
    monkeypatch.setenv("ADMIN_PW", PASSWORD)
    assert load_settings({**base, "receiver": {"admin_password": {"env": "ADMIN_PW"}}}
                         ).admin_password == PASSWORD
    monkeypatch.setenv("RECEIVER_ADMIN_PASSWORD", PASSWORD)
    assert load_settings(base).admin_password == PASSWORD
    monkeypatch.delenv("RECEIVER_ADMIN_PASSWORD")
    with pytest.raises(ConfigError, match="at least 12 characters"):
        load_settings({**base, "receiver": {"admin_password": "short"}})
    hashed = generate_password_hash(PASSWORD)
    app = create_app({**base, "receiver": {"redis_url": redis_url, "admin_password": hashed}},
                     router=router)
    client = app.test_client()
    assert login(client, hashed).status_code == 401
    assert login(client).status_code == 303
    assert PASSWORD not in repr(load_settings({**base, "receiver": {"admin_password": PASSWORD}}))


def test_switches_are_read_in_the_background_not_per_request(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    reads: list[float] = []

    def counted() -> redis.Redis:
        reads.append(time.monotonic())
        return connection

    switches_ = Switches(counted, every=0.2)
    switch(connection, "default", on=False)
    wait_until(lambda: switches_("default"), 5, "the first background read")
    before, started = len(reads), time.monotonic()
    for _ in range(10_000):  # as many requests as you like: no Redis round trip each
        assert switches_("default")
    elapsed = time.monotonic() - started
    assert len(reads) - before <= 1 + elapsed / 0.2  # only the timer's reads
    switch(connection, "default", on=True)
    wait_until(lambda: not switches_("default"), 5, "the next background read")


def test_a_forged_delivery_is_never_replayed(admin_app: Flask, browser: FlaskClient) -> None:
    body = payload("group__comments__add.json")
    answer = admin_app.test_client().post("/webhook", data=body, headers=signed(body, "forged"))
    assert answer.status_code == 403
    flush_traces(admin_app)
    connection = redis.Redis.from_url(admin_app.extensions["receiver"].settings.redis_url)
    assert trace.recent(connection, 1) == []  # refused: kept apart from traced deliveries
    [forged] = trace.refused_recent(connection, ["default"])
    page = browser.get(f"/admin/deliveries/{forged['delivery_id']}").text
    assert "bad_signature" in page and 'data-testid="replay"' not in page
    refused = browser.post(
        f"/admin/deliveries/{forged['delivery_id']}/replay", data={"csrf_token": csrf(browser)}
    )
    assert refused.status_code == 404 and "signature verified" in refused.text


def test_signing_out_ends_the_session_everywhere(admin_app: Flask, browser: FlaskClient) -> None:
    cookie = browser.get_cookie("receiver_admin", path="/admin")
    assert cookie is not None
    stolen = admin_app.test_client()
    stolen.set_cookie("receiver_admin", cookie.value, path="/admin")
    assert stolen.get("/admin/").status_code == 200
    assert stolen.get("/admin/queues").status_code == 200
    answer = browser.post("/admin/logout", data={"csrf_token": csrf(browser)})
    assert answer.status_code == 303 and answer.headers["Location"] == "/admin/login"
    assert browser.get("/admin/").status_code == 303
    assert stolen.get("/admin/").status_code == 303  # the same cookie, kept elsewhere
    assert stolen.get("/admin/queues").status_code == 303
