"""Routing: names, wildcards, filters, order, isolation of failures."""

from __future__ import annotations

import gc
from typing import Any

from flask.testing import FlaskClient

from receiver import Event, Router
from receiver import filters as F
from tests.conftest import envelope, signed


def deliver(client: FlaskClient, body: bytes) -> Any:
    response = client.post("/webhook", data=body, headers=signed(body))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


MEMBERSHIP_ADD = envelope(
    "group",
    {"field": "membership", "value": {"verb": "add", "member": {"id": "9"}}},
    id="g1",
    time=1600000000,
)
MEMBERSHIP_REMOVE = envelope("group", {"field": "membership", "value": {"verb": "remove"}}, id="g1")


def test_exact_topic_wildcard_and_catch_all(router: Router, client: FlaskClient) -> None:
    calls: list[str] = []
    router.connect("group.membership", lambda e: calls.append("exact"))
    router.connect("group.*", lambda e: calls.append("topic"))
    router.connect("*", lambda e: calls.append("all"))
    router.connect("page.*", lambda e: calls.append("other topic"))
    router.connect("group.posts", lambda e: calls.append("other field"))
    deliver(client, MEMBERSHIP_ADD)
    assert calls == ["exact", "topic", "all"]  # registration order


def test_unknown_topic_and_field_still_routed(
    router: Router, client: FlaskClient, seen: list[Event]
) -> None:
    deliver(client, envelope("brand_new_topic", {"field": "never_seen", "value": [1, 2]}))
    assert [(e.name, e.value) for e in seen] == [("brand_new_topic.never_seen", [1, 2])]


def test_keyword_and_combined_filters(router: Router, client: FlaskClient) -> None:
    calls: list[str] = []
    router.connect("group.membership", lambda e: calls.append("add"), verb="add")
    router.connect("group.membership", lambda e: calls.append("not add"), ~F.verb("add"))
    router.connect(
        "group.*", lambda e: calls.append("member 9"), F.value("member.id", "9") & F.verb(["add"])
    )
    router.connect("*", lambda e: calls.append("predicate"), lambda e: e.entry_id == "g1")
    deliver(client, MEMBERSHIP_ADD)
    assert calls == ["add", "member 9", "predicate"]
    calls.clear()
    deliver(client, MEMBERSHIP_REMOVE)
    assert calls == ["not add", "predicate"]


def test_raising_filter_is_no_match(router: Router, client: FlaskClient) -> None:
    calls: list[str] = []
    router.connect("*", lambda e: calls.append("bad"), lambda e: 1 / 0)
    router.connect("*", lambda e: calls.append("good"))
    deliver(client, MEMBERSHIP_ADD)
    assert calls == ["good"]


def test_locally_defined_handler_is_not_collected(router: Router, client: FlaskClient) -> None:
    calls: list[str] = []

    def register() -> None:
        @router.on("*")
        def local(event: Event) -> None:
            calls.append(event.name)

    register()
    gc.collect()
    deliver(client, MEMBERSHIP_ADD)
    assert calls == ["group.membership"]


def test_routers_do_not_see_each_other(client: FlaskClient, router: Router) -> None:
    other = Router()
    calls: list[str] = []
    other.connect("*", lambda e: calls.append("other router"))
    deliver(client, MEMBERSHIP_ADD)
    assert calls == []


def test_reregistering_replaces_not_duplicates(router: Router, client: FlaskClient) -> None:
    calls: list[str] = []

    def handle(event: Event) -> None:
        calls.append("x")

    router.connect("*", handle)
    router.connect("*", handle)
    deliver(client, MEMBERSHIP_ADD)
    assert calls == ["x"]


def test_every_item_of_a_batch_is_its_own_event(
    router: Router, client: FlaskClient, seen: list[Event]
) -> None:
    body = envelope("group", *[{"field": "posts", "value": {"n": i}} for i in range(3)])
    assert deliver(client, body)["events"] == 3
    assert [e.value["n"] for e in seen] == [0, 1, 2]
    assert len({e.delivery_id for e in seen}) == 1
