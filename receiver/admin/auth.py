"""Who may use the admin dashboard: the password, the session cookie, CSRF tokens, login limits.

No Flask here, so the rq-dashboard mount (plain WSGI) checks the same cookie.
The configured password is kept only as a werkzeug hash (scrypt) and checked
in constant time; the session is an itsdangerous token, time-limited, that
names a random session id; each form carries an HMAC of that id (the CSRF
token). The login form has one too, tied to a short-lived cookie of its own,
so no other site can sign a browser in to a session of its choosing.
Changing the password signs everyone out: the cookie key derives from it
(or from ``secret_key`` when one is set).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import redis
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.security import check_password_hash, generate_password_hash

from .. import defaults
from ..config import Settings

log = logging.getLogger("receiver.admin")

COOKIE = "receiver_admin"
LOGIN_COOKIE = "receiver_admin_login"
"""Set with the login form: a signed random nonce its CSRF token is derived from."""
COOKIE_PATH = "/admin"
CSRF_FIELD = "csrf_token"
SIGNED_OUT_PREFIX = "receiver:admin:signed-out:"
"""Per session id signed out before its cookie expired (kept as long as the cookie lasts)."""
FAILURES_PREFIX = "receiver:admin:login-failures:"
"""Per client address (and ``*`` for all of them): login attempts in the current window,
less the ones that had the right password."""
EVERYONE = "*"
EVERYONE_FACTOR = 10
"""Failed logins from all addresses together allowed per window, as a multiple of one's."""
_TAKE_BACK = """
-- KEYS: attempt counters; each one still there goes down by one (never created anew)
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('DECR', key) end
end
"""


@dataclass(frozen=True)
class Session:
    sid: str
    csrf: str


class Gate:
    """Checks passwords, issues and reads session cookies, counts failed logins."""

    def __init__(self, settings: Settings) -> None:
        configured = settings.admin_password
        if not configured:
            raise ValueError("the admin dashboard needs admin_password")
        self._hash = (
            configured
            if configured.startswith(("scrypt:", "pbkdf2:"))
            else generate_password_hash(configured)
        )
        key_source = settings.secret_key or configured
        key = hmac.new(key_source.encode(), b"receiver admin session", hashlib.sha256).digest()
        self._serializer = URLSafeTimedSerializer(key, salt="receiver-admin")
        self._login_serializer = URLSafeTimedSerializer(key, salt="receiver-admin-login")
        self._csrf_key = hmac.new(key, b"csrf", hashlib.sha256).digest()
        self.max_age = defaults.ADMIN_SESSION_TTL
        self.login_form_max_age = defaults.ADMIN_LOGIN_FORM_TTL
        self.trusted_proxies = settings.trusted_proxies

    # --- password and session ---------------------------------------------------------------

    def password_ok(self, given: str) -> bool:
        return bool(given) and check_password_hash(self._hash, given)

    def new_cookie(self) -> str:
        return str(self._serializer.dumps({"sid": secrets.token_urlsafe(16)}))

    def session(self, cookie: str | None, connection: redis.Redis) -> Session | None:
        """The session a cookie names, or ``None``: absent, forged, older than ``max_age``,
        or signed out.

        Fails closed: when Redis cannot say whether the session was signed out, its
        ``RedisError`` propagates (the dashboard answers 503); the cookie is never taken.
        """
        sid = _signed_field(self._serializer, cookie, "sid", self.max_age)
        if sid is None:
            return None
        if connection.exists(SIGNED_OUT_PREFIX + sid):
            return None
        return Session(sid=sid, csrf=self._csrf(sid))

    def sign_out(self, connection: redis.Redis, session: Session) -> None:
        """Make this session's cookie worthless everywhere, not only in this browser."""
        connection.set(SIGNED_OUT_PREFIX + session.sid, "1", ex=self.max_age)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())

    def _csrf(self, sid: str) -> str:
        return hmac.new(self._csrf_key, sid.encode(), hashlib.sha256).hexdigest()

    # --- the login form -----------------------------------------------------------------------

    def login_form(self, cookie: str | None) -> tuple[str, str]:
        """``(cookie, csrf token)`` for a login form: the browser's own while still good."""
        nonce = self._login_nonce(cookie)
        if cookie is None or nonce is None:
            nonce = secrets.token_urlsafe(16)
            cookie = str(self._login_serializer.dumps({"login": nonce}))
        return cookie, self._csrf("login:" + nonce)

    def login_csrf_ok(self, cookie: str | None, given: str | None) -> bool:
        """The token came with the login cookie it was made for, within its time."""
        nonce = self._login_nonce(cookie)
        if nonce is None or not given:
            return False
        return hmac.compare_digest(self._csrf("login:" + nonce).encode(), given.encode())

    def _login_nonce(self, cookie: str | None) -> str | None:
        return _signed_field(self._login_serializer, cookie, "login", self.login_form_max_age)

    # --- where a request came from ------------------------------------------------------------

    def client_address(self, remote_addr: str | None, headers: Mapping[str, str]) -> str:
        """As the core judges ``allowed_networks``: the peer, or the trusted proxies' hop."""
        if self.trusted_proxies:
            chain = headers.get("X-Forwarded-For") or ""
            forwarded = [h.strip() for h in chain.split(",") if h.strip()]
            if len(forwarded) >= self.trusted_proxies:
                return forwarded[-self.trusted_proxies]
        return remote_addr or "unknown"

    def is_https(self, scheme: str, headers: Mapping[str, str]) -> bool:
        if scheme == "https":
            return True
        forwarded = (headers.get("X-Forwarded-Proto") or "").split(",")[-1].strip().lower()
        return bool(self.trusted_proxies) and forwarded == "https"

    # --- failed logins ------------------------------------------------------------------------

    def attempt(self, connection: redis.Redis, address: str) -> int:
        """Count a login attempt before its password is checked; return the seconds to wait
        when it is one too many (0: go on and check it).

        Counted first, so guesses sent at once cannot all pass a check made before any of
        them was counted; ``succeeded`` takes a right password's attempt back.
        """
        limits = {address: defaults.ADMIN_LOGIN_FAILURES}
        limits[EVERYONE] = defaults.ADMIN_LOGIN_FAILURES * EVERYONE_FACTOR
        window = defaults.ADMIN_LOGIN_WINDOW
        pipe = connection.pipeline(transaction=False)
        for who in limits:
            pipe.incr(FAILURES_PREFIX + who)
            pipe.expire(FAILURES_PREFIX + who, window, nx=True)
            pipe.ttl(FAILURES_PREFIX + who)
        answers = pipe.execute()
        wait = 0
        for index, limit in enumerate(limits.values()):
            count, ttl = int(answers[3 * index]), answers[3 * index + 2]
            if count > limit:
                wait = max(wait, int(ttl) if ttl and int(ttl) > 0 else 1)
        return wait

    def succeeded(self, connection: redis.Redis, address: str) -> None:
        """The right password: its attempt counts against nobody."""
        connection.eval(_TAKE_BACK, 2, FAILURES_PREFIX + address, FAILURES_PREFIX + EVERYONE)


def _signed_field(
    serializer: URLSafeTimedSerializer, cookie: str | None, name: str, max_age: int
) -> str | None:
    """A string field of a cookie signed by ``serializer`` within ``max_age``, or ``None``."""
    if not cookie:
        return None
    try:
        data = serializer.loads(cookie, max_age=max_age)
    except BadSignature:
        return None
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def safe_next(path: str | None) -> str:
    """Only plain paths under /admin/ on this host: a login link cannot send anyone elsewhere.

    Printable ASCII without space or backslash, else ``/admin/``: no control character
    (CR/LF) reaches the ``Location`` header, nothing a browser might read as another host.
    """
    if path and path.startswith("/admin/") and all("!" <= c <= "~" for c in path):
        if "\\" not in path:
            return path
    return "/admin/"
