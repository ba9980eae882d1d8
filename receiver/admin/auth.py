"""Who may use the admin dashboard: the password, the session cookie, CSRF tokens, login limits.

No Flask here: decisions and Redis, the views translate.
The configured password is kept only as a werkzeug hash (scrypt) and checked
in constant time; the session is an itsdangerous token, time-limited, that
names a random session id; each form carries an HMAC of that id (the CSRF
token). The login form has one too, tied to a short-lived cookie of its own,
so no other site can sign a browser in to a session of its choosing.
Changing the password signs everyone out, whether or not ``secret_key`` is
set: the cookie key derives from both (``session_key``).

Sign-in limits, one Lua script per attempt (plain commands, any Redis from
6.2; every key it writes expires):

- Per address (an IPv6 address's whole /64): 5 wrong passwords per 15-minute
  window, then 429 until the window ends. Attempts refused 429 are not
  counted, so hammering does not extend anything.
- For everyone, a slow-down, not a lockout: a budget of 50 checks that
  refills one every 18 s (a GCRA pace). Addresses that have used their own
  five eat into it; when it is spent, the next check is at most 18 s away.
  One address can use 5 of the 50, so it cannot slow anyone down; to hold
  sign-in slowed, an attacker needs ten fresh addresses (/64s) every window.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import redis
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.security import check_password_hash, generate_password_hash

from receiver.settings import defaults
from receiver.settings.model import Settings

log = logging.getLogger("receiver.admin")

COOKIE = "receiver_admin"
LOGIN_COOKIE = "receiver_admin_login"
"""Set with the login form: a signed random nonce its CSRF token is derived from."""
COOKIE_PATH = "/admin"
CSRF_FIELD = "csrf_token"
SIGNED_OUT_PREFIX = "receiver:admin:signed-out:"
"""Per session id signed out before its cookie expired (kept as long as the cookie lasts)."""
FAILURES_PREFIX = "receiver:admin:login-failures:"
"""Per client address (IPv6: per /64): sign-in attempts checked in the current window,
less the ones that had the right password."""
EVERYONE_KEY = "receiver:admin:login-pace"
"""Everyone's pace: the time (ms) up to which the checks let through are paid for. Not
under ``FAILURES_PREFIX``: no client address (a forwarded one is any text) can name it."""
EVERYONE_FACTOR = 10
"""Checks from all addresses together let through at once, as a multiple of one's limit;
they come back one per window divided by that many."""
_ATTEMPT = """
-- KEYS[1]: the address's counter; KEYS[2]: everyone's pace (GCRA, ms)
-- ARGV: the address's limit, window (s), everyone's burst, everyone's interval (ms)
-- {0, 0}: counted, check the password; {1, s}: the address's limit, {2, s}: everyone's
-- pace, wait s seconds. A refused attempt is counted nowhere.
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local burst, interval = tonumber(ARGV[3]), tonumber(ARGV[4])
local count = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if count >= limit then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 0 then  -- left without an expiry (by an earlier version): give it one
    redis.call('EXPIRE', KEYS[1], window)
    ttl = window
  end
  return {1, ttl}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local paid = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') or 0, now)
local ahead = paid + interval - now
if ahead > burst * interval then
  return {2, math.ceil((ahead - burst * interval) / 1000)}
end
redis.call('SET', KEYS[2], paid + interval, 'PX', ahead)
redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], window) end
return {0, 0}
"""
_TAKE_BACK = """
-- KEYS as _ATTEMPT's; ARGV[1]: everyone's interval (ms). The attempt had the right password.
if (tonumber(redis.call('GET', KEYS[1]) or '0') or 0) > 0 then redis.call('DECR', KEYS[1]) end
local paid = tonumber(redis.call('GET', KEYS[2]) or '')
local left = redis.call('PTTL', KEYS[2])
local interval = tonumber(ARGV[1])
if paid and left > interval then
  redis.call('SET', KEYS[2], paid - interval, 'PX', left - interval)
elseif paid then
  redis.call('DEL', KEYS[2])
end
"""


@dataclass(frozen=True)
class Session:
    sid: str
    csrf: str


@dataclass(frozen=True)
class Refused:
    """A sign-in attempt not checked: the seconds to wait, and whose limit it met."""

    wait: int
    everyone: bool
    """Everyone's slow-down, not this address's own limit."""


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
        key = session_key(configured, settings.secret_key)
        self._serializer = URLSafeTimedSerializer(key, salt="receiver-admin")
        self._login_serializer = URLSafeTimedSerializer(key, salt="receiver-admin-login")
        self._csrf_key = hmac.new(key, b"csrf", hashlib.sha256).digest()
        self.max_age = defaults.ADMIN_SESSION_TTL
        self.login_failures = defaults.ADMIN_LOGIN_FAILURES
        self.login_window = defaults.ADMIN_LOGIN_WINDOW
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

    def attempt(self, connection: redis.Redis, address: str) -> Refused | None:
        """Count a sign-in attempt before its password is checked, or say why not.

        Counted first and atomically, so guesses sent at once cannot all pass a check made
        before any of them was counted; ``succeeded`` takes a right password's attempt back.
        """
        burst = self.login_failures * EVERYONE_FACTOR
        found = connection.register_script(_ATTEMPT)(
            keys=[FAILURES_PREFIX + limited_as(address), EVERYONE_KEY],
            args=[self.login_failures, self.login_window, burst, self._interval_ms()],
        )
        kind, wait = (int(n) for n in found)
        return None if kind == 0 else Refused(wait=max(1, wait), everyone=kind == 2)

    def succeeded(self, connection: redis.Redis, address: str) -> None:
        """The right password: its attempt counts against nobody."""
        connection.register_script(_TAKE_BACK)(
            keys=[FAILURES_PREFIX + limited_as(address), EVERYONE_KEY], args=[self._interval_ms()]
        )

    def _interval_ms(self) -> int:
        """Everyone's pace once the burst is spent: one check per this many milliseconds."""
        return max(1, self.login_window * 1000 // (self.login_failures * EVERYONE_FACTOR))


def limited_as(address: str) -> str:
    """Whose limit an address counts against: itself, or for IPv6 its /64, as one host
    (or one customer of a provider) may send from any address of its /64."""
    try:
        ip = ipaddress.ip_address(_without_port(address))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        unscoped = ipaddress.IPv6Address(int(ip))  # ``exploded`` fails on ``fe80::1%eth0``
        return str(ipaddress.ip_network(f"{unscoped}/64", strict=False))
    return str(ip)


def _without_port(address: str) -> str:
    """``203.0.113.7:40000`` and ``[2001:db8::1]:40000`` as their host: some proxies append
    the client's port to X-Forwarded-For, a new one per connection."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit():
        return address
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host if "." in host and ":" not in host else address


def session_key(password: str, secret_key: str | None) -> bytes:
    """The key cookies and CSRF tokens are signed with: from the password *and* the
    ``secret_key``, so that a new value of either signs everyone out (with the key alone,
    a password change left every cookie good).

    The password (or the hash configured in its place) goes through scrypt once, at
    start-up: a stolen cookie is no fast way to try passwords offline. A fixed salt, so
    that every web process derives the same key.
    """
    stretched = hashlib.scrypt(
        password.encode(), salt=b"receiver admin session key", n=2**14, r=8, p=1, dklen=32
    )
    return hmac.new((secret_key or "").encode(), stretched, hashlib.sha256).digest()


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
