"""The dashboard under attack (issue 18): each test is an attack that once worked, sent
as an attacker would, and what it must get now."""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import quote

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from .conftest import login
from .test_admin import SECURITY_HEADERS, directives

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
