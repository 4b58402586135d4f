"""Signed, expiring screen tokens (HMAC-SHA256) and the key they are signed with.

A token is ``base64url(claims JSON) "." base64url(HMAC-SHA256(key, claims part))``;
claims are ``{"scr": [screen, ...] | ["*"], "exp": unix seconds, "iat": unix seconds,
"sub": label, "role": "viewer" | "operator"}``. ``role`` absent means viewer (tokens
issued before roles keep working, read-only); an operator token names its person in
``sub`` (required, non-empty), which is who every action is recorded as. Tokens are stateless: any wall server holding the same key verifies
them, so replicas need no shared store. The key is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from ..config._wall import WallSettings
from ..errors import ConfigError
from .exceptions import CloseCode, TokenError

__all__ = ["ROLES", "Role", "TokenClaims", "TokenSigner", "load_or_create_secret"]

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
_MAX_NAME = 64


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token allows."""

    screens: tuple[str, ...]
    expires_at: float
    issued_at: float
    subject: str
    role: Role = "viewer"

    def allows(self, screen: str) -> bool:
        return "*" in self.screens or screen in self.screens

    @property
    def operator(self) -> str | None:
        """The operator's name when the token may act, else None."""
        return self.subject if self.role == "operator" else None


class TokenSigner:
    """Issues and verifies screen tokens with one HMAC key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError(f"expected a token key of at least 16 bytes, got {len(key)}")
        self._key = key

    def __repr__(self) -> str:  # never show the key
        return "TokenSigner(key=***)"

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def issue(self, screens: list[str] | tuple[str, ...], ttl_s: float, *, subject: str = "",
              role: Role = "viewer", now: float | None = None) -> str:
        """A token for ``screens`` (``["*"]``: all) valid ``ttl_s`` seconds from ``now``.

        ``role="operator"`` needs ``subject``: the operator's name (1-64 characters).

        Raises:
            ValueError: no screen, a ttl <= 0, an unknown role or an operator without a name.
        """
        if not screens:
            raise ValueError("expected at least one screen (or '*'), got none")
        if ttl_s <= 0:
            raise ValueError(f"expected a positive ttl, got {ttl_s}")
        if role not in ROLES:
            raise ValueError(f"role: expected one of {list(ROLES)}, got {role!r}")
        if role == "operator" and not (0 < len(subject.strip()) <= _MAX_NAME):
            raise ValueError(f"an operator token needs a name of 1-{_MAX_NAME} characters, "
                             f"got {subject!r}")
        now = time.time() if now is None else now
        claims: dict[str, object] = {"scr": list(screens), "iat": int(now),
                                     "exp": int(now + ttl_s), "sub": subject}
        if role != "viewer":  # viewer tokens keep the old claims exactly
            claims["role"] = role
        body = _b64(orjson.dumps(claims))
        return f"{body}.{self._sign(body)}"

    def verify(self, token: object, screen: str, *, now: float | None = None) -> TokenClaims:
        """Check signature, expiry and scope.

        Raises:
            TokenError: 4001 for a malformed, badly signed or expired token, 4003 when the
                token is valid but not for ``screen``.
        """
        # ASCII only: hmac.compare_digest raises TypeError on non-ASCII str.
        if (not isinstance(token, str) or len(token) > 4096 or not token.isascii()
                or token.count(".") != 1):
            raise TokenError(CloseCode.UNAUTHORIZED,
                             f"expected a token 'claims.signature' (base64url ASCII), got "
                             f"{type(token).__name__}"
                             f"{' of another shape' if isinstance(token, str) else ''}")
        body, sig = token.split(".")
        if not hmac.compare_digest(sig, self._sign(body)):
            raise TokenError(CloseCode.UNAUTHORIZED, "token signature does not match")
        try:
            raw = orjson.loads(_unb64(body))
            role = raw.get("role", "viewer")
            if role not in ROLES:
                raise ValueError(f"role: expected one of {list(ROLES)}, got {str(role)[:20]!r}")
            claims = TokenClaims(
                screens=tuple(str(s) for s in raw["scr"]),
                expires_at=float(raw["exp"]),
                issued_at=float(raw.get("iat", 0)),
                subject=str(raw.get("sub", "")),
                role=role,
            )
            if role == "operator" and not (0 < len(claims.subject.strip()) <= _MAX_NAME):
                raise ValueError(f"an operator token needs a name of 1-{_MAX_NAME} characters")
        except (ValueError, KeyError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
            raise TokenError(CloseCode.UNAUTHORIZED, f"token claims unreadable: {exc}") from exc
        now = time.time() if now is None else now
        if now >= claims.expires_at:
            raise TokenError(CloseCode.UNAUTHORIZED,
                             f"token expired {now - claims.expires_at:.0f} s ago")
        if not claims.allows(screen):
            raise TokenError(CloseCode.FORBIDDEN,
                             f"token is for screen(s) {list(claims.screens)}, not {screen!r}")
        return claims


def load_or_create_secret(settings: WallSettings) -> bytes:
    """The token key: ``settings.secret``, else ``secret_file``, created (mode 600) if absent."""
    if settings.secret is not None:
        return settings.secret.get_secret_value().encode()
    path = Path(settings.secret_file)
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = secrets.token_urlsafe(48).encode()
        # O_EXCL: two servers starting at once must not both write a key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(data + b"\n")
        return data
    if len(data) < 16:
        raise ConfigError([("wall.secret_file",
                           f"expected a key of at least 16 bytes in {path}, got {len(data)}")])
    return data
