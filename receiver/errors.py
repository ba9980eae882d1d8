"""The receiver's exceptions: one root, narrow branches.

    ReceiverError
    ├── ConfigError            bad or missing configuration; start-up stops
    ├── PluginError            a handler module failed to import or register
    ├── QueueUnavailable       neither Redis nor the spool could take background work (→ 503)
    ├── NotReplicated          the Redis master took the work, too few replicas confirmed in time
    ├── HandlerFailed          a background handler raised (RQ retries, then fails the job)
    ├── ReplayError            a replay source cannot be read
    ├── UnknownFailedItem      a job id given for requeue or delete is not a failed item
    ├── GraphError             a Graph API call failed (status, code, subcode, type, fbtrace_id)
    │   ├── GraphAuthError     token, appsecret_proof or permission refused; renew or grant
    │   ├── GraphThrottled     rate limited past the retries (retry_after: seconds to wait)
    │   ├── GraphUnavailable   5xx or no connection, still failing after the retries
    │   └── GraphRequestError  any other 4xx: the call itself is wrong and will not succeed
    │       └── GraphBadId     an id (from a payload) that is no Graph id; nothing was sent
    └── Rejected               a request the receiver answers with a 4xx
        ├── HandshakeRejected  GET verification failed
        ├── SignatureRejected  missing, malformed or wrong HMAC signature
        ├── PayloadRejected    body too large, not UTF-8, not JSON, not an envelope
        └── TargetRejected     unknown or disabled integration, topic mismatch, method

Every ``Rejected`` carries the HTTP ``status``, a stable machine-readable
``code`` and a short ``message`` safe to send back: no secrets, no payload text.
"""

from __future__ import annotations

from typing import Any


class ReceiverError(Exception):
    """Root of every error the receiver raises on purpose."""


class ConfigError(ReceiverError):
    """The configuration cannot be used; the message says what to change."""


class PluginError(ReceiverError):
    """A handler module could not be loaded or registered."""

    def __init__(self, message: str, module: str | None = None) -> None:
        super().__init__(message)
        self.module = module


class QueueUnavailable(ReceiverError):
    """Background work could not be stored, so the delivery must not be acknowledged."""

    status = 503
    code = "queue_unavailable"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        """Why, for operators (the trace's and the log's ``reason``), e.g. a replication timeout."""


class NotReplicated(ReceiverError):
    """The master stored the packets, but fewer than ``min_replicas`` replicas confirmed them
    within ``replication_timeout``: they would not survive the loss of the master's machine.

    ``replid`` and ``offset`` place the packets in that master's replication history
    (``INFO replication``): once replicas of a master with this ``replid`` have confirmed a
    later write, they hold these packets too. ``replid`` is empty when it was not learnt.
    """

    def __init__(self, message: str, *, replid: str = "", offset: int = 0) -> None:
        super().__init__(message)
        self.replid = replid
        self.offset = offset


class HandlerFailed(ReceiverError):
    """A background handler raised; the message carries its traceback for RQ's failed registry."""


class ReplayError(ReceiverError):
    """A replay source cannot be read."""


class UnknownFailedItem(ReceiverError):
    """Job ids given for requeue or delete that are not failed items (already gone, a typo)."""

    def __init__(self, job_ids: list[str]) -> None:
        super().__init__(
            f"no failed item with job id {', '.join(job_ids)}; `receiver failed` lists them"
        )
        self.job_ids = job_ids


class GraphError(ReceiverError):
    """A Graph API call failed; carries what Graph said, never the access token.

    ``status`` is the HTTP status (0 when no answer came back); ``code``,
    ``error_subcode``, ``type``, ``fbtrace_id`` are Graph's error fields (``None``
    when the answer had none: quote ``fbtrace_id`` to Meta support).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: int | None = None,
        error_subcode: int | None = None,
        type: str | None = None,
        fbtrace_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.error_subcode = error_subcode
        self.type = type
        self.fbtrace_id = fbtrace_id
        self.method = method
        self.path = path


class GraphAuthError(GraphError):
    """The access token, its ``appsecret_proof`` or a permission was refused."""


class GraphThrottled(GraphError):
    """Graph's rate limits still refused the call after the retries."""

    def __init__(self, message: str, *, retry_after: float | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.retry_after = retry_after


class GraphUnavailable(GraphError):
    """Graph answered 5xx, or could not be reached, on every attempt."""


class GraphRequestError(GraphError):
    """Graph refused the call as made (a 4xx that retrying will not change)."""


class GraphBadId(GraphRequestError):
    """An id meant for a Graph path is not one (``value``); the call was not sent.

    Ids come from payloads: ``../x``, ``1#x`` or ``1?x`` would steer the call to another path.
    """

    def __init__(self, message: str, *, value: str, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.value = value


class Rejected(ReceiverError):
    """A request refused with a specific 4xx answer."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def as_dict(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


class HandshakeRejected(Rejected):
    """The verify-token handshake did not match."""


class SignatureRejected(Rejected):
    """The body's signature is missing, malformed or wrong."""

    status = 401


class PayloadRejected(Rejected):
    """The body is signed but cannot be read as a webhook envelope."""


class TargetRejected(Rejected):
    """The URL names no integration or topic that can take this request."""

    status = 404
