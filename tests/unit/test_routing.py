"""Routing: names, wildcards, filters, order, isolation of failures."""

from __future__ import annotations

from typing import Any

import pytest

import receiver
from receiver import Event, PluginError, Router


def test_decorator_returns_function_unchanged(router: Router) -> None:
    def handle(event: Event) -> str:
        return "called"

    assert router.on("group.posts")(handle) is handle
    assert handle(None) == "called"  # type: ignore[arg-type]


def test_default_router_is_used_by_module_level_on() -> None:
    with receiver.default_router.isolated():

        @receiver.on("group.posts", background=True, queue="slow", retry=5)
        def handle(event: Event) -> None: ...

        [handler] = [h for h in receiver.default_router.handlers() if h.func is handle]
        assert (handler.background, handler.queue, handler.retry) == (True, "slow", 5)
    assert all(h.func is not handle for h in receiver.default_router.handlers())


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("group", {}, "not an event pattern"),
        ("group.posts.x", {}, "not an event pattern"),
        ("group.posts", {"verbb": "add"}, "unknown option"),
        ("group.posts", {"retry": -1}, "retry"),
        ("group.posts", {"timeout": 0}, "timeout"),
        ("page.messages", {"ordered_by": "sender_id"}, "add background=True"),
        ("page.messages", {"background": True, "ordered_by": "sender"}, "not an Event attr"),
        ("page.messages", {"background": True, "ordered_by": "graph"}, "name one of"),
        ("page.messages", {"background": True, "ordered_by": 3}, "or a function"),
        ("page.messages", {"background": True, "ordered_by": lambda: 1}, "or a function"),
        ("page.messages", {"background": True, "on_failure": "block"}, "add ordered_by="),
        (
            "page.messages",
            {"background": True, "ordered_by": "sender_id", "on_failure": "stop"},
            "use 'skip'",
        ),
    ],
)
def test_registration_mistakes(
    router: Router, name: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(PluginError, match=message):
        router.connect(name, lambda e: None, **options)


def test_a_handler_must_take_the_event(router: Router) -> None:
    """Found at import time, not at the first delivery."""
    def no_argument() -> None: ...

    def two_arguments(event: Event, other: str) -> None: ...

    for wrong in (no_argument, two_arguments):
        with pytest.raises(PluginError, match="must take the event as its one argument"):
            router.on("group.posts")(wrong)

    async def handle(event: Event, *, also: int = 1) -> None: ...

    router.on("group.posts")(handle)
    router.connect("group.comments", print)  # a builtin: its signature is not always readable


def test_ordered_handlers_and_their_keys(router: Router) -> None:
    """``ordered_by`` names an attribute or is a function; ``None`` leaves an event unordered,
    and a key function that raises does too (logged), as a filter that raises is no match."""
    by_sender = router.connect(
        "page.messages", lambda e: None, background=True, ordered_by="sender_id"
    )

    def conversation(event: Event) -> str | None:
        if event.value.get("boom"):
            raise ValueError("no conversation")
        return event.value.get("thread")

    by_thread = router.connect(
        "group.posts", conversation, background=True, ordered_by=conversation, on_failure="block"
    )
    message = Event("page", "messages", {"sender": {"id": "42"}}, "e1", "d1", "default")
    assert by_sender.order_key(message) == "42"
    assert by_sender.order_key(Event("page", "messages", {}, "e2", "d1", "default")) is None
    assert by_thread.order_key(Event("group", "posts", {"thread": 7}, "e3", "d1", "x")) == "7"
    assert by_thread.order_key(Event("group", "posts", {"boom": 1}, "e4", "d1", "x")) is None
    assert (by_thread.on_failure, by_sender.on_failure) == ("block", "skip")


def test_handlers_set_aside_come_back_as_they_were(router: Router) -> None:
    """Every option survives, ``ordered_by`` included (a copy spelling the options it knew
    once dropped it, and later tests saw unordered handlers)."""
    kept = router.connect("group.posts", lambda e: None)
    aside = router.connect(
        "page.messages", print, background=True, ordered_by="sender_id", on_failure="block"
    )
    with router.set_aside(lambda h: h is aside):
        assert router.handlers() == [kept]
    assert router.handlers() == [kept, aside]
    assert router.handler(aside.id) is aside


def test_match_all_finds_what_match_finds(router: Router) -> None:
    """A delivery's pairs, names looked up once: the same handlers, the same order."""
    from receiver.routing.signals import event_signal

    def make(field: str, verb: str, n: int) -> Event:
        return Event("group", field, {"verb": verb, "n": n}, f"id{n}", "d", "i", verb=verb)

    def boom(event: Event) -> bool:
        raise ValueError("a filter that fails matches nothing")

    router.connect("*", lambda event: None)
    router.connect("group.comments", lambda event: None, verb="add")
    router.connect("group.*", lambda event: None, lambda event: event.value["n"] % 2 == 0)
    router.connect("group.posts", lambda event: None, background=True)
    router.connect("group.comments", lambda event: None, boom)
    events = [make(f, v, n) for n, (f, v) in enumerate(
        [("comments", "add"), ("posts", "edit"), ("comments", "remove"), ("comments", "add"),
         ("other", "add")]
    )]  # fmt: skip
    expected = [(e, h) for e in events for h in router.match(e)]
    assert len(expected) == 11
    assert router.match_all(events) == expected

    def foreign(sender: Any, event: Event) -> None:
        return None

    event_signal("group.posts").connect(foreign, weak=False)  # anyone's receiver: asked per event
    try:
        assert router.match_all(events) == expected
    finally:
        event_signal("group.posts").disconnect(foreign)


def test_kept_lookups_follow_every_change(router: Router) -> None:
    """Handlers and lifecycle receivers are looked up once and kept: a change is still seen."""
    import gc

    from receiver.routing.signals import event_signal, generation, receivers

    event = Event("group", "comments", {"verb": "add"}, "id1", "d", "i", verb="add")
    first = router.connect("group.comments", lambda event: None)
    assert [h for _, h in router.match_all([event])] == [first]
    second = router.connect("*", lambda event: None)
    assert [h for _, h in router.match_all([event])] == [first, second]
    router.disconnect(first.id)
    assert [h for _, h in router.match_all([event])] == [second]

    signal = event_signal("test.kept-lookups")
    sender = object()

    def strong(sender: Any) -> None: ...

    signal.connect(strong, sender=sender, weak=False)
    assert receivers(signal, sender) == (strong,)
    assert receivers(signal, object()) == ()

    def weak(sender: Any) -> None: ...

    signal.connect(weak)  # weakly held: never kept alive by a lookup
    assert set(receivers(signal, sender)) == {strong, weak}
    del weak
    gc.collect()
    assert receivers(signal, sender) == (strong,)
    signal.disconnect(strong, sender=sender)
    assert receivers(signal, sender) == ()

    class Sender:
        pass

    gone = Sender()
    signal.connect(strong, sender=gone, weak=False)
    assert receivers(signal, gone) == (strong,)
    before = generation()
    del gone  # blinker forgets a dead sender's receivers: a change like any other
    gc.collect()
    assert generation() > before
