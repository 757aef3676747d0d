"""Authentication, CSRF tokens and security headers for the dashboard (pure ASGI).

* :class:`Auth`: a bearer token and/or a basic-auth user, from the environment
  (``EXQUEUE_DASHBOARD_TOKEN``; ``EXQUEUE_DASHBOARD_USER`` with
  ``EXQUEUE_DASHBOARD_PASSWORD``). A browser sends the token as the basic-auth
  password (any user name). Compared in constant time.
* CSRF: a random per-browser id in an HttpOnly, SameSite=Strict cookie; each
  form carries ``HMAC(secret, id)``, which a page of another site can neither
  read nor forge (not even by planting its own cookie). A POST whose ``Origin``
  names another host is refused as well.
* Headers on every answer: a CSP without inline script and with
  ``frame-ancestors 'none'``, ``nosniff``, ``DENY`` framing, no referrer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "exqueue_dashboard"
TOKEN_ENV = "EXQUEUE_DASHBOARD_TOKEN"
USER_ENV = "EXQUEUE_DASHBOARD_USER"
PASSWORD_ENV = "EXQUEUE_DASHBOARD_PASSWORD"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on
    # the dashboard's own form posts, which the origin check must refuse.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


@dataclass(frozen=True)
class Auth:
    """Who may use the dashboard: a token, a user and password, or both."""

    token: str | None = None
    user: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if self.token is None and (self.user is None or self.password is None):
            raise ValueError("give a token, or a user and a password")
        if (self.user is None) != (self.password is None):
            raise ValueError("a user needs a password and a password a user")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Auth | None:
        """The credentials set in the environment, or None when none are."""
        env = os.environ if environ is None else environ
        token = env.get(TOKEN_ENV) or None
        user, password = env.get(USER_ENV) or None, env.get(PASSWORD_ENV) or None
        if (user is None) != (password is None):
            raise ValueError(f"set both {USER_ENV} and {PASSWORD_ENV}, or neither")
        if token is None and user is None:
            return None
        return cls(token, user, password)

    def who(self, headers: Mapping[str, str]) -> str | None:
        """The name of the caller these headers authenticate, or None."""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token is not None:
            return "token" if _same(value.strip(), self.token) else None
        if scheme != "basic":
            return None
        try:
            user, sep, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not sep:
            return None
        if self.user is not None and self.password is not None:
            if _same(user, self.user) and _same(password, self.password):
                return user
        if self.token is not None and _same(password, self.token):
            return f"{user or 'token'} (token)"
        return None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def is_loopback(host: str) -> bool:
    """True for a host name or address that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Csrf:
    """Tokens bound to the browser's cookie id with a per-process secret."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def token(self, browser: str) -> str:
        return hmac.new(self._secret, browser.encode(), hashlib.sha256).hexdigest()

    def check(self, browser: str | None, token: str | None) -> bool:
        if not browser or not token:
            return False
        return hmac.compare_digest(self.token(browser), token)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


class Guard:
    """ASGI middleware: authentication, the browser cookie and the security headers.

    Puts ``exqueue.who`` (the caller, for the action log) and ``exqueue.browser``
    (the cookie id the CSRF token is bound to) in the scope.
    """

    def __init__(self, app: ASGIApp, auth: Auth | None) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        client = scope.get("client") or ("?", 0)
        who = f"anonymous@{client[0]}"
        if self.auth is not None:
            named = self.auth.who(headers)
            if named is None:
                await _plain(send, 401, "authentication required\n", realm=True)
                return
            who = f"{named}@{client[0]}"
        if scope["method"] not in ("GET", "HEAD") and not _same_origin(headers):
            await _plain(send, 403, "cross-origin request refused\n")
            return
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header: treat as none
            cookie = SimpleCookie()
        browser = cookie[COOKIE].value if COOKIE in cookie else None
        fresh = None
        if browser is None or len(browser) != 32:
            fresh = browser = secrets.token_hex(16)
        scope["exqueue.who"] = who
        scope["exqueue.browser"] = browser
        path = scope.get("root_path") or "/"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(HEADERS)
                if fresh is not None:
                    extra.append(
                        (
                            b"set-cookie",
                            f"{COOKIE}={fresh}; Path={path}; HttpOnly; SameSite=Strict".encode(),
                        )
                    )
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _same_origin(headers: Mapping[str, str]) -> bool:
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == headers.get("host", "")


async def _plain(send: Send, status: int, text: str, *, realm: bool = False) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS]
    if realm:
        headers.append((b"www-authenticate", b'Basic realm="exqueue", charset="UTF-8"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text.encode()})
