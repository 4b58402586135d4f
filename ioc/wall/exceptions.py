"""Errors of the wall server, each carrying the websocket close code sent to the client.

::

    IOCError
     └── WallError              (code, reason): closes the connection with them
          ├── TokenError        also an AuthError: bad, expired or wrong-screen token
          └── WallProtocolError a client message the protocol does not allow
"""

from __future__ import annotations

from ..errors import AuthError, IOCError

__all__ = ["CloseCode", "TokenError", "WallError", "WallProtocolError"]


class CloseCode:
    """Websocket close codes the wall server uses (4000-4999 are application codes)."""

    GOING_AWAY = 1001
    POLICY = 1008  # policy violation: a client that keeps flooding requests
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    PROTOCOL = 4000
    UNAUTHORIZED = 4001
    FORBIDDEN = 4003
    UNKNOWN_SCREEN = 4004
    AUTH_TIMEOUT = 4008
    HEARTBEAT_TIMEOUT = 4009
    STALLED = 4029


class WallError(IOCError):
    """A condition that ends one client's connection with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        # Close reasons must fit a control frame (123 bytes of UTF-8).
        self.reason = reason.encode()[:123].decode(errors="ignore")
        super().__init__(f"{code}: {reason}")


class TokenError(WallError, AuthError):
    """A screen token that is malformed, badly signed, expired or for another screen."""


class WallProtocolError(WallError):
    """A message the protocol does not allow in the current state."""
