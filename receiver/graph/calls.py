"""Calling the Graph API back from handlers: one configuration, a sync and an async client.

Every call carries ``appsecret_proof`` (HMAC-SHA256 of the access token keyed
with the integration's newest app secret) when the integration has both, so
a Workplace that requires it is satisfied; the token travels in the
``Authorization`` header, never in a URL that a log or a proxy could keep.
Retries, backoff and usage pacing are decided in ``receiver.graph.ratelimit``;
this module only does the I/O and keeps one pooled client per integration
and process (``client(name)``, ``event.graph``), rebuilt when the settings
change (a rotated token or secret) or the process forks.

It refuses absolute URLs: a path is always sent to the configured Graph host,
so a handler cannot hand the token to another server by mistake.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx

from receiver.core.signature import appsecret_proof
from receiver.errors import ConfigError, GraphBadId, GraphThrottled, GraphUnavailable
from receiver.graph.ratelimit import (
    GraphErrorFields,
    RetryPolicy,
    error_fields,
    is_retryable,
    retry_after,
    to_error,
    usage,
)
from receiver.observe.logsafe import MASK, mask_urls
from receiver.settings import active as runtime
from receiver.settings import defaults
from receiver.settings.model import Integration, Settings

log = logging.getLogger("receiver.graph")

_NOT_FORWARDED = frozenset({"access_token", "appsecret_proof"})
GRAPH_ID = re.compile(r"[0-9]+(?:_[0-9]+)*")
"""A Graph object id: digits, and for posts and comments ``<group>_<post>[_<comment>]``."""
R = TypeVar("R")


@dataclass(frozen=True)
class GraphConfig:
    """Everything a client needs, shared by ``GraphClient`` and ``AsyncGraphClient``."""

    access_token: str = field(repr=False)
    app_secret: str | None = field(default=None, repr=False)
    base_url: str = defaults.GRAPH_BASE_URL
    api_version: str = defaults.GRAPH_API_VERSION
    timeout: float = defaults.GRAPH_TIMEOUT
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    integration: str = defaults.DEFAULT_INTEGRATION

    @classmethod
    def for_integration(
        cls, integration: Integration, settings: Settings | None = None, *, app_token: bool = False
    ) -> GraphConfig:
        """The integration's user/page token, or (``app_token``) its ``app_id|app_secret``."""
        secret = integration.app_secrets[0] if integration.app_secrets else None
        if app_token:
            if not integration.app_id or not secret:
                raise ConfigError(
                    f"integration {integration.name!r} needs app_id and an app secret for the "
                    f"app token: set app_id in [integrations.{integration.name}] (or "
                    "RECEIVER_APP_ID for the default integration)"
                )
            token = f"{integration.app_id}|{secret}"
        elif not integration.access_token:
            raise ConfigError(
                f"integration {integration.name!r} has no access token; set access_token "
                f"in [integrations.{integration.name}] (or RECEIVER_ACCESS_TOKEN for the "
                "default integration) to call the Graph API"
            )
        else:
            token = integration.access_token
        policy = RetryPolicy()
        timeout = defaults.GRAPH_TIMEOUT
        if settings is not None:
            policy = RetryPolicy(retries=settings.graph_retries, backoff=settings.graph_backoff)
            timeout = settings.graph_timeout
        return cls(
            access_token=token,
            app_secret=secret,
            base_url=integration.graph_base_url,
            api_version=integration.api_version,
            timeout=timeout,
            policy=policy,
            integration=integration.name,
        )

    def proof(self) -> str | None:
        return appsecret_proof(self.access_token, self.app_secret) if self.app_secret else None

    def path(self, path: str) -> str:
        """``/v23.0/<path>``; a path that already names a version keeps it.

        Dot segments and fragments are refused: an id from a payload pasted into a path
        (``f"/{event.entry_id}/feed"``) must not climb out of it or cut it short.
        """
        if "://" in path or path.startswith("//"):
            raise ValueError(
                f"{path!r} is a URL; pass a Graph path such as '/me' or '/<group-id>/feed' "
                "(the client sends it to its configured Graph host only)"
            )
        segments = path.split("?", 1)[0].split("/")
        if "#" in path or any(unquote(s) in (".", "..") for s in segments):
            raise GraphBadId(
                f"{path!r} is not a Graph path (dot segments or a fragment); check the ids "
                "pasted into it, or use graph_id() on them",
                value=path,
                path=path,
            )
        path = path.lstrip("/")
        first = path.split("/", 1)[0]
        if first.startswith("v") and first[1:].replace(".", "").isdigit():
            return f"/{path}"
        return f"/{self.api_version}/{path}"

    def scrub(self, text: str) -> str:
        """``text`` without the token, its proof or the app secret, as sent or URL-encoded.

        Graph never echoes them, but a proxy or a misconfigured host might, in an error's
        message or ``fbtrace_id``: every log line, trace and error quoting Graph's answer
        goes through here (``scrub_fields``).
        """
        for secret in (self.access_token, self.proof(), self.app_secret):
            if secret:
                text = _any_encoding(secret).sub(MASK, text)
        return text

    def scrub_fields(self, fields: GraphErrorFields) -> GraphErrorFields:
        """Graph's error fields, each text in them scrubbed."""
        return replace(
            fields,
            message=self.scrub(fields.message),
            type=None if fields.type is None else self.scrub(fields.type),
            fbtrace_id=None if fields.fbtrace_id is None else self.scrub(fields.fbtrace_id),
        )

    def client_options(self) -> dict[str, Any]:
        proof = self.proof()
        return {
            "base_url": self.base_url.rstrip("/"),
            "headers": {"Authorization": f"Bearer {self.access_token}"},
            "params": {"appsecret_proof": proof} if proof else {},
            "timeout": self.timeout,
        }

    def describe(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> str:
        """The request as text with the token and proof masked: for ``--dry-run``."""
        proof = self.proof()
        query = {**dict(params or {}), **({"appsecret_proof": proof} if proof else {})}
        request = httpx.Request(method, self.base_url.rstrip("/") + self.path(path), params=query)
        token = self.access_token
        shown = f"{token.split('|', 1)[0]}|{MASK}" if "|" in token else MASK
        return f"{method} {mask_urls(str(request.url))}\nAuthorization: Bearer {shown}"


class _Usage:
    """The last usage the headers reported, as the earliest time the next call should go."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.clock = clock
        self.next_call_at = 0.0

    def note(self, headers: Mapping[str, str]) -> None:
        percent, regain = usage(headers)
        pause = self.policy.pause(percent, regain)
        if pause > 0:
            log.info("Graph usage at %.0f%%: pacing calls by %.2f s", percent, pause)
        self.next_call_at = self.clock() + pause

    def wait(self, method: str, path: str) -> float:
        wait = self.next_call_at - self.clock()
        if wait > self.policy.max_wait:
            raise GraphThrottled(
                f"{method} {path} not sent: Graph's usage headers ask for {wait:.0f} s of rest; "
                "retry later",
                retry_after=wait,
                method=method,
                path=path,
            )
        return max(0.0, wait)


class _Attempts:
    """One call's retry state: what to do after an answer or a connection failure."""

    def __init__(self, config: GraphConfig, method: str, path: str) -> None:
        self.config = config
        self.method = method
        self.path = path
        self.attempt = 0

    def after_response(self, response: httpx.Response) -> float | None:
        """``None``: success. A float: retry after that many seconds. Raises when final."""
        if response.is_success:
            return None
        fields = self.config.scrub_fields(error_fields(response.status_code, response.content))
        after = retry_after(response.headers)
        policy = self.config.policy
        if is_retryable(response.status_code, fields) and self.attempt <= policy.retries:
            delay = self.config.policy.delay(self.attempt, after)
            if delay <= self.config.policy.max_wait:
                log.warning(
                    "%s %s: HTTP %s code %s (fbtrace_id %s); retry %d/%d in %.2f s",
                    self.method,
                    self.path,
                    response.status_code,
                    fields.code,
                    fields.fbtrace_id,
                    self.attempt,
                    self.config.policy.retries,
                    delay,
                )
                return delay
            after = delay
        error = to_error(
            response.status_code,
            fields,
            method=self.method,
            path=self.path,
            retry_after=after,
            attempts=self.attempt,
        )
        error.message = self.config.scrub(error.message)  # the path a handler built, too
        error.args = (error.message,)
        raise error

    def after_failure(self, exc: httpx.TransportError) -> float:
        """Connection failures are retried like a 5xx; the last one raises ``GraphUnavailable``."""
        if self.attempt <= self.config.policy.retries:
            delay = self.config.policy.delay(self.attempt)
            log.warning(
                "%s %s: %s; retry %d/%d in %.2f s",
                self.method,
                self.path,
                type(exc).__name__,
                self.attempt,
                self.config.policy.retries,
                delay,
            )
            return delay
        raise GraphUnavailable(
            f"{self.method} {self.path}: no answer from {self.config.base_url} after "
            f"{self.attempt} attempts ({type(exc).__name__}); check the network and "
            "graph_base_url",
            method=self.method,
            path=self.path,
        ) from None


@functools.lru_cache(maxsize=32)
def _any_encoding(secret: str) -> re.Pattern[str]:
    """``secret`` as sent or URL-encoded in any way: each character as itself or ``%XX``
    (either case), a space as ``+`` too; letters in either case (an upper-case hex proof).
    Matching more than the exact secret costs nothing: it is masked, not read."""
    shapes = []
    for char in secret:
        encoded = "".join(f"%{byte:02X}" for byte in char.encode())
        alternatives = [re.escape(char), re.escape(encoded)]
        if char == " ":
            alternatives.append(r"\+")
        shapes.append("(?:" + "|".join(alternatives) + ")")
    return re.compile("".join(shapes), re.IGNORECASE)


def graph_id(value: object, what: str = "id") -> str:
    """``value`` if it is a Graph object id (digits and underscores), else ``GraphBadId``.

    For ids from payloads before they go into a path: ``../../x``, ``1#x`` or ``1?x``
    would otherwise send the call (with the token) to a path nobody meant.
    """
    text = str(value)
    if not GRAPH_ID.fullmatch(text):
        raise GraphBadId(
            f"{what} {text[:80]!r} is not a Graph id (digits and underscores); not sent",
            value=text,
        )
    return text


def _decode(response: httpx.Response) -> Any:
    return response.json() if response.content else None


def _next_params(page: Any, current: Mapping[str, Any]) -> dict[str, Any] | None:
    """Parameters for the next page from ``paging.next`` (token and proof dropped), or None."""
    paging = page.get("paging") if isinstance(page, dict) else None
    if not isinstance(paging, dict) or not paging.get("next"):
        return None
    query = {
        k: v
        for k, v in parse_qsl(urlsplit(str(paging["next"])).query)
        if k not in _NOT_FORWARDED
    }
    cursors = paging.get("cursors")
    if not query and isinstance(cursors, dict) and cursors.get("after"):
        query = {**current, "after": cursors["after"]}
    return query if query and query != dict(current) else None


def _items(page: Any) -> list[Any]:
    data = page.get("data") if isinstance(page, dict) else None
    return data if isinstance(data, list) else []


class _Helpers(Generic[R]):
    """What handlers do most, as thin calls over ``get``/``post``; shared by both clients."""

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> R:
        raise NotImplementedError

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> R:
        return self.request("GET", path, params=params)

    def post(
        self,
        path: str,
        data: Mapping[str, Any] | None = None,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> R:
        return self.request("POST", path, params=params, data=data, json=json)

    def delete(self, path: str, params: Mapping[str, Any] | None = None) -> R:
        return self.request("DELETE", path, params=params)

    def comment(self, object_id: str, message: str, **fields: Any) -> R:
        """Comment on a post, or reply to a comment (``object_id`` is the comment's id)."""
        path = f"/{graph_id(object_id, 'object_id')}/comments"
        return self.post(path, {"message": message, **fields})

    def post_to_group(self, group_id: str, message: str, **fields: Any) -> R:
        """A new post in a group's feed (``link=``, ``formatting="MARKDOWN"``, ...)."""
        return self.post(f"/{graph_id(group_id, 'group_id')}/feed", {"message": message, **fields})

    def send_message(
        self,
        recipient_id: str | None = None,
        text: str | None = None,
        *,
        thread_key: str | None = None,
        message: Mapping[str, Any] | None = None,
    ) -> R:
        """Send as the bot (Workplace's Send API): to a person, or to a group chat's thread.

        ``message`` replaces ``{"text": text}`` for attachments or quick replies.
        """
        if (recipient_id is None) == (thread_key is None):
            raise ValueError("send_message needs exactly one of recipient_id or thread_key")
        if (text is None) == (message is None):
            raise ValueError("send_message needs exactly one of text or message")
        recipient = {"id": recipient_id} if recipient_id is not None else {"thread_key": thread_key}
        body = dict(message) if message is not None else {"text": text}
        return self.post("/me/messages", json={"recipient": recipient, "message": body})

    def member(self, member_id: str, fields: tuple[str, ...] = ("id", "name")) -> R:
        """A member's profile; ask for ``email``, ``title``... only with the permission."""
        return self.get(f"/{graph_id(member_id, 'member_id')}", {"fields": ",".join(fields)})


class GraphClient(_Helpers[Any]):
    """Blocking Graph client: pooled connections, proof on every call, retries.

    ``sleep`` and ``clock`` are injectable so tests observe waits without taking them.
    """

    def __init__(
        self,
        config: GraphConfig | Integration,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(config, Integration):
            config = GraphConfig.for_integration(config, runtime.settings())
        self.config = config
        self._sleep = sleep
        self._usage = _Usage(config.policy, clock)
        self._http = httpx.Client(**config.client_options(), transport=transport)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """Send, retrying what may succeed later; the decoded JSON answer, or a ``GraphError``."""
        url = self.config.path(path)
        attempts = _Attempts(self.config, method, url)
        while True:
            pause = self._usage.wait(method, url)
            if pause:
                self._sleep(pause)
            attempts.attempt += 1
            try:
                response = self._http.request(
                    method, url, params=dict(params or {}), data=data, json=json
                )
            except httpx.TransportError as exc:
                self._sleep(attempts.after_failure(exc))
                continue
            self._usage.note(response.headers)
            delay = attempts.after_response(response)
            if delay is None:
                return _decode(response)
            self._sleep(delay)

    def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, *, max_pages: int | None = None
    ) -> Iterator[Any]:
        """Every item of every page (``data``), following Graph's cursors lazily."""
        current: dict[str, Any] = dict(params or {})
        pages = 0
        while True:
            page = self.get(path, current)
            pages += 1
            yield from _items(page)
            following = _next_params(page, current)
            if following is None or (max_pages is not None and pages >= max_pages):
                return
            current = following

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGraphClient(_Helpers[Awaitable[Any]]):
    """The same client for ``async`` code: ``async with AsyncGraphClient(config) as graph``."""

    def __init__(
        self,
        config: GraphConfig | Integration,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(config, Integration):
            config = GraphConfig.for_integration(config, runtime.settings())
        self.config = config
        self._sleep = sleep
        self._usage = _Usage(config.policy, clock)
        self._http = httpx.AsyncClient(**config.client_options(), transport=transport)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        url = self.config.path(path)
        attempts = _Attempts(self.config, method, url)
        while True:
            pause = self._usage.wait(method, url)
            if pause:
                await self._sleep(pause)
            attempts.attempt += 1
            try:
                response = await self._http.request(
                    method, url, params=dict(params or {}), data=data, json=json
                )
            except httpx.TransportError as exc:
                await self._sleep(attempts.after_failure(exc))
                continue
            self._usage.note(response.headers)
            delay = attempts.after_response(response)
            if delay is None:
                return _decode(response)
            await self._sleep(delay)

    async def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, *, max_pages: int | None = None
    ) -> AsyncIterator[Any]:
        current: dict[str, Any] = dict(params or {})
        pages = 0
        while True:
            page = await self.get(path, current)
            pages += 1
            for item in _items(page):
                yield item
            following = _next_params(page, current)
            if following is None or (max_pages is not None and pages >= max_pages):
                return
            current = following

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGraphClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# --- one pooled client per integration and process ---

_pool: dict[str, GraphClient] = {}
_pool_pid = os.getpid()
_pool_lock = threading.Lock()


def config_for(name: str | None = None) -> GraphConfig:
    """The Graph configuration of integration ``name`` in this process's active settings."""
    settings = runtime.settings()
    if settings is None:
        raise ConfigError(
            "no receiver settings are active in this process: call the Graph API from a "
            "handler run by the receiver, or build GraphClient(GraphConfig(...)) yourself"
        )
    integration = settings.integration(name)
    if integration is None:
        raise ConfigError(
            f"no integration named {name!r}; configure [integrations.{name}] to call the "
            "Graph API on its behalf"
        )
    return GraphConfig.for_integration(integration, settings)


def client(name: str | None = None) -> GraphClient:
    """The pooled client of integration ``name`` (default: the default integration).

    Built from the settings active in this process (the app's or the
    worker's); a changed token, secret or Graph setting gives a new client.
    """
    global _pool_pid
    config = config_for(name)
    with _pool_lock:
        if _pool_pid != os.getpid():  # forked: the parent's connections are not ours
            _pool.clear()
            _pool_pid = os.getpid()
        pooled = _pool.get(config.integration)
        if pooled is not None and pooled.config == config:
            return pooled
        fresh = GraphClient(config)
        _pool[config.integration] = fresh
    if pooled is not None:
        pooled.close()
    return fresh


def async_client(name: str | None = None) -> AsyncGraphClient:
    """A new async client for integration ``name``: ``async with graph.async_client() as g``.

    Not pooled: an ``httpx.AsyncClient`` belongs to the event loop it was used on.
    """
    return AsyncGraphClient(config_for(name))


def configured(name: str | None = None) -> bool:
    """Whether integration ``name`` can call the Graph API (it has an access token)."""
    settings = runtime.settings()
    integration = settings.integration(name) if settings is not None else None
    return bool(integration is not None and integration.access_token)


def close_all() -> None:
    """Close every pooled client (tests, and interpreter exit)."""
    with _pool_lock:
        clients = list(_pool.values()) if _pool_pid == os.getpid() else []
        _pool.clear()
    for pooled in clients:
        pooled.close()


atexit.register(close_all)
