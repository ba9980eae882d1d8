"""The admin dashboard in a real browser: Debian's chromium driven by Playwright, against the
Procfile's gunicorn, a real `receiver worker` and a Redis of its own.

One walk-through, as an operator would use it: a wrong password, logging in, a signed
delivery showing up and its trace, a handler failing, fixed and requeued, an integration
switched off (its callback answers 403) and on again, a form without its CSRF token refused,
queues and workers. Then two attacks that must run no script.
Screenshots of every page go to ``.artifacts/admin/`` (git-ignored). When axe-core's
``axe.min.js`` is at hand (``AXE_CORE_JS``; ``.ci/run`` installs it from npm), every page
is checked with it.

Outside CI, a machine without chromium or Playwright skips this module, saying why; in CI
(``CI`` set) that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from receiver.testing import RedisServer, free_port, group_comment, without_settings
from tests.conftest import SECRET, TOKEN, payload, signed
from tests.plugins.recording import calls
from tests.processes import (
    ROOT,
    gunicorn_command,
    receiver_command,
    stop,
    wait_for_http,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis]  # starts servers of its own

PASSWORD = "browser-test-admin-password"
ARTIFACTS = ROOT / ".artifacts" / "admin"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _missing() -> str | None:
    if CHROMIUM is None:
        return "no chromium on PATH (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


if (why := _missing()) is not None:
    if os.environ.get("CI"):
        raise RuntimeError(f"browser tests must run in CI: {why}")
    pytest.skip(f"browser tests skipped: {why}", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


class Deployment:
    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.redis = RedisServer(tmp_path / "redis")
        self.redis.start()
        self.db = str(tmp_path / "side-effects.sqlite")
        self.fixed = tmp_path / "fixed"
        config = tmp_path / "receiver.toml"
        config.write_text(
            "[receiver]\njob_retries = 0\n"
            'handlers = ["tests.plugins.recording"]\n'
            f'data_dir = "{tmp_path / "data"}"\n'
            f'capture_dir = "{tmp_path / "captures"}"\n'
            'admin_password = { env = "ADMIN_PASSWORD_FOR_TEST" }\n'
        )
        self.env = {
            **without_settings(os.environ),
            "REDIS_URL": self.redis.url,
            "RECEIVER_APP_SECRET": SECRET,
            "RECEIVER_VERIFY_TOKEN": TOKEN,
            "RECEIVER_CAPTURE": "1",
            "RECEIVER_CONFIG": str(config),
            "RECEIVER_LOG_LEVEL": "WARNING",
            "ADMIN_PASSWORD_FOR_TEST": PASSWORD,
            "RECORDING_DB": self.db,
            "FIXED_FLAG": str(self.fixed),
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.web = subprocess.Popen(gunicorn_command(port), env=self.env, cwd=ROOT)
        self.worker = subprocess.Popen(receiver_command("worker"), env=self.env, cwd=ROOT)

    def post(self, data: bytes) -> int:
        return requests.post(
            f"{self.url}/webhook", data=data, headers=signed(data), timeout=30
        ).status_code

    def close(self) -> None:
        stop(self.web)
        stop(self.worker)
        self.redis.stop()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deployed = Deployment(tmp_path)
    try:
        wait_for_http(f"{deployed.url}/healthz", deployed.web)
        yield deployed
    finally:
        deployed.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    check_accessibility(page, name)


def check_accessibility(page: Page, name: str) -> None:
    """axe-core's WCAG 2 A/AA rules, when its script is at hand (AXE_CORE_JS)."""
    script = os.environ.get("AXE_CORE_JS")
    if not script:
        return
    page.add_script_tag(path=script)
    result: dict[str, Any] = page.evaluate(
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}})"
    )
    problems = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
    ]
    assert not problems, f"accessibility problems on {name}: {problems}"


def reload_until(page: Page, url: str, selector: str, what: str, timeout: float = 30) -> None:
    def shown() -> bool:
        page.goto(url)
        return page.locator(selector).count() > 0

    wait_until(shown, timeout, what)


def test_an_operator_walks_through_the_dashboard(deployment: Deployment, browser: Browser) -> None:
    base = deployment.url
    context = browser.new_context(bypass_csp=True)  # only so axe-core can be injected
    page = context.new_page()

    # Pages need a login; a wrong password is refused.
    page.goto(f"{base}/admin/")
    assert page.url.startswith(f"{base}/admin/login")
    page.get_by_label("Admin password").fill("not the password")
    with page.expect_response(lambda r: r.url.endswith("/admin/login")) as refused:
        page.get_by_role("button", name="Sign in").click()
    assert refused.value.status == 401
    expect(page.get_by_role("alert")).to_have_text("Wrong password.")
    shoot(page, "login")

    page.get_by_label("Admin password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Integrations", exact=True)).to_be_visible()
    cookie = next(c for c in context.cookies() if c["name"] == "receiver_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # A signed delivery shows up in the list, and its trace tells what happened.
    assert deployment.post(payload("group__comments__add.json")) == 200
    reload_until(page, f"{base}/admin/deliveries", "[data-testid^=delivery-]", "the delivery")
    row = page.locator("[data-testid^=delivery-]").first
    delivery_id = (row.get_attribute("data-testid") or "").removeprefix("delivery-")
    expect(row).to_contain_text("group")
    expect(row).to_contain_text("200")
    shoot(page, "deliveries")
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name=f"Delivery {delivery_id}")).to_be_visible()
    expect(page.get_by_test_id("events")).to_contain_text("group.comments")
    expect(page.get_by_test_id("queued")).to_contain_text("1 item(s), stored in redis")
    wait_until(
        lambda: any(name == "group.comments" for _, name, _ in calls(deployment.db)), 60,
        "the worker to run the background handler",
    )
    shoot(page, "trace")
    # Captured, so replayable: through this receiver again, marked as a replay.
    page.get_by_test_id("replay").click()
    expect(page.get_by_role("heading", name="Delivery")).not_to_have_text(f"Delivery {delivery_id}")
    expect(page.get_by_test_id("replayed")).to_have_text("yes: a replayed delivery")
    expect(page.get_by_test_id("events")).to_contain_text("group.comments")

    # A handler fails: it shows under failed work with its traceback; fixed, requeued, done.
    broken = json.dumps({"object": "faulty", "entry": [
        {"id": "1", "time": 1700000000, "changes": [{"field": "broken", "value": {"n": 7}}]}
    ]}).encode()
    assert deployment.post(broken) == 200
    one_item = "[data-testid^=requeue-]:not([data-testid=requeue-all])"
    reload_until(page, f"{base}/admin/failed", one_item, "the failed item", timeout=60)
    expect(page.locator("pre").first).to_contain_text("broken until FIXED_FLAG exists")
    shoot(page, "failed")
    deployment.fixed.touch()
    page.locator(one_item).first.click()
    expect(page.get_by_role("status")).to_contain_text("Requeued 1 item(s)")
    wait_until(
        lambda: any(name == "faulty.broken" for _, name, _ in calls(deployment.db)), 60,
        "the requeued item to succeed",
    )
    reload_until(page, f"{base}/admin/failed", "[data-testid=no-failed]", "an empty failed list")

    # Switched off, the integration's callback answers 403; switched on, 200 again.
    page.goto(f"{base}/admin/")
    page.get_by_test_id("toggle-default").click()
    expect(page.get_by_test_id("state-default")).to_have_text("Switched off")
    wait_until(
        lambda: deployment.post(payload("group__comments__add.json")) == 403, 10,
        "every web process to refuse the switched-off integration",
    )
    shoot(page, "integrations-switched-off")
    page.get_by_test_id("toggle-default").click()
    expect(page.get_by_test_id("state-default")).to_have_text("Enabled")
    wait_until(
        lambda: deployment.post(payload("group__comments__add.json")) == 200, 10,
        "deliveries accepted again",
    )
    page.reload()
    shoot(page, "integrations")

    # A state-changing form posted without its CSRF token is refused, with the session cookie.
    answer = context.request.post(
        f"{base}/admin/integrations/default/switch", form={"on": "0"}, max_redirects=0
    )
    assert answer.status == 403 and "CSRF" in answer.text()
    page.reload()
    expect(page.get_by_test_id("state-default")).to_have_text("Enabled")

    # Queues and the workers running them; rq-dashboard's old address leads here.
    page.goto(f"{base}/admin/rq/")
    assert page.url == f"{base}/admin/queues"
    expect(page.get_by_test_id("queue-receiver")).to_be_visible()
    expect(page.locator("[data-testid^=worker-]").first).to_contain_text("receiver")
    shoot(page, "queues")

    # On a phone: nothing wider than the screen.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True,
                                storage_state=context.storage_state())
    small = phone.new_page()
    small.goto(f"{base}/admin/")
    assert small.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shoot(small, "integrations-phone")
    phone.close()

    # Signing out ends the session.
    page.goto(f"{base}/admin/")
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{base}/admin/deliveries")
    assert page.url.startswith(f"{base}/admin/login")
    context.close()


def test_no_script_runs_from_a_url_or_from_markup_a_failure_quotes(
    tmp_path: Path, browser: Browser
) -> None:
    """Two attacks, in chromium with the CSP enforced (not bypassed here): rq-dashboard's
    reflected XSS, a queue name closing a string of its inline script, sent through the
    login form's ``next=`` from another site; and a group comment's ``<img onerror>``,
    quoted by a failing background handler's exception, on the Failed work page. No script
    runs; the markup shows as text, and markup put into the page anyway stays inert."""
    markup = "<img src=x onerror=alert(document.domain)>"
    attack = ("/admin/rq/0/view/jobs/');}});alert(document.domain);"
              "$('x').on('y',function(){if(1){$(this).val('/failed/8/asc/1")
    deployment = Deployment(tmp_path, RECEIVER_HANDLERS="tests.plugins.quoting")
    try:
        wait_for_http(f"{deployment.url}/healthz", deployment.web)
        base = deployment.url
        context = browser.new_context()
        page = context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        refused: list[str] = []
        page.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(f"{base}/admin/login?next={quote(attack)}")
        page.get_by_label("Admin password").fill(PASSWORD)
        with page.expect_response(lambda r: "/admin/rq/" in r.url) as landed:
            page.get_by_role("button", name="Sign in").click()
        assert landed.value.status == 404
        expect(page.get_by_role("heading", name="rq-dashboard is gone")).to_be_visible()

        comment = json.dumps(group_comment(message=markup)).encode()
        assert deployment.post(comment) == 200
        reload_until(page, f"{base}/admin/failed", "[data-testid^=skip-]", "the failed job",
                     timeout=60)
        expect(page.locator("pre").first).to_contain_text(f"cannot parse comment {markup}")
        assert page.locator("main img").count() == 0
        # The CSP alone keeps an inline handler from running, were markup ever inserted.
        page.evaluate("html => document.body.insertAdjacentHTML('beforeend', html)", markup)
        wait_until(lambda: refused, 10, "chromium to refuse the inline handler")
        page.wait_for_timeout(500)
        assert dialogs == []
        assert all("inline event handler" in text for text in refused), refused
        context.close()
    finally:
        deployment.close()
