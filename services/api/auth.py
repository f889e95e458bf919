"""Who may read and who may write.

- Writes (acknowledge, resolve, label, thresholds, recalibration) always need
  `Authorization: Bearer <FW_API_TOKEN>`. With no token configured, the API makes one at start-up and
  logs a page link carrying it in the URL fragment (`/#token=...`: fragments are never sent to the
  server, so the token stays out of access logs) — the same habit as Jupyter.
- Reads are open when the API is bound to a loopback address (only this machine can connect) and
  need the token otherwise. A `<video>` or `<img>` element cannot send an Authorization header, so
  `POST /api/session` trades a valid bearer token for an HttpOnly, SameSite=Strict cookie that
  authorises reads only. Writes never accept the cookie, which is what makes them CSRF-proof.
- Loopback binds also check the Host header (localhost names only), so a web page elsewhere cannot
  reach the open reads by DNS rebinding.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass

from starlette.requests import Request

from schemas.errors import ConfigError

READ_COOKIE = "fw_read"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


MIN_TOKEN_CHARS = 16
# what people leave in templates (deploy/k8s/secret.yaml ships CHANGE-ME); compared lower-case, letters
# and digits only, so "Change_Me", "change-me-api-token" and "CHANGEME" all match
_PLACEHOLDER = re.compile(r"changeme|replaceme|yourtoken|placeholder|secret|password|token|example|admin|api|x{3,}")
HOW_TO = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def check_token(token: str, name: str = "FW_API_TOKEN") -> None:
    """Refuse a placeholder or short token at start-up (a guessable token is no token)."""
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{name} is {len(token)} characters; use at least {MIN_TOKEN_CHARS} random ones ({HOW_TO})")
    plain = re.sub(r"[^a-z0-9]", "", token.lower())
    if "changeme" in plain or len(_PLACEHOLDER.sub("", plain)) < 8 or len(set(token)) < 6:
        raise ConfigError(f"{name} looks like a placeholder, not a random token; set a random one ({HOW_TO})")


class Unauthorized(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Auth:
    token: str
    reads_open: bool
    generated: bool = False  # True when no FW_API_TOKEN was configured

    @classmethod
    def from_settings(cls, host: str, token: str | None) -> "Auth":
        if token:
            check_token(token)
            return cls(token=token, reads_open=is_loopback(host))
        return cls(token=secrets.token_urlsafe(24), reads_open=is_loopback(host), generated=True)

    @property
    def read_cookie(self) -> str:
        # derived, not the token itself: a leaked cookie cannot be replayed as a write credential
        return hmac.new(self.token.encode(), b"fusionwatch-read-v1", hashlib.sha256).hexdigest()

    def _bearer(self, request: Request) -> str | None:
        return bearer(request.headers.get("authorization"))

    def require_write(self, request: Request) -> None:
        given = self._bearer(request)
        if given is None:
            raise Unauthorized("this change needs 'Authorization: Bearer <token>' (FW_API_TOKEN; see docs/review.md)")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise Unauthorized("the bearer token is not valid; use the value of FW_API_TOKEN")

    def require_read(self, request: Request) -> None:
        if self.reads_open:
            return
        cookie = request.cookies.get(READ_COOKIE)
        if cookie and hmac.compare_digest(cookie.encode(), self.read_cookie.encode()):
            return
        given = self._bearer(request)
        if given is None:
            raise Unauthorized("reading needs 'Authorization: Bearer <token>' when the API is not bound to "
                               "loopback (FW_API_TOKEN; see docs/review.md)")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise Unauthorized("the bearer token is not valid; use the value of FW_API_TOKEN")


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when there is no header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return value.strip()


def token_matches(header: str | None, token: str) -> bool:
    try:
        given = bearer(header)
    except Unauthorized:
        return False
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
