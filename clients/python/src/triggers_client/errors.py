"""Exceptions: one class per GraphQL ``extensions.code`` the server answers with."""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
    "TriggersError",
    "BadConfiguration",
    "BadInput",
    "NotFound",
    "InvalidState",
    "Conflict",
    "Unauthorized",
    "Unavailable",
    "InternalError",
    "error_for",
]


class TriggersError(Exception):
    """An error answered by the server (or detected before asking it).

    ``code`` is the server's ``extensions.code`` (``"NOT_FOUND"``, ...) and
    ``message`` its human message.
    """

    code: str = "ERROR"

    def __init__(self, message: str, code: Optional[str] = None,
                 extensions: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extensions: Dict[str, Any] = dict(extensions or {})

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadConfiguration(TriggersError):
    """``configure`` rejected the tasks; nothing was written."""

    code = "BAD_CONFIGURATION"


class BadInput(TriggersError):
    """Kwargs, results or metadata that are not objects, empty names, bad arguments."""

    code = "BAD_INPUT"


class NotFound(TriggersError):
    """An unknown instance or task was named."""

    code = "NOT_FOUND"


class InvalidState(TriggersError):
    """Replay or skip of an instance that is not ``failed``."""

    code = "INVALID_STATE"


class Conflict(TriggersError):
    """A lease token that expired or was claimed again."""

    code = "CONFLICT"


class Unauthorized(TriggersError):
    """A missing or wrong API token."""

    code = "UNAUTHORIZED"


class Unavailable(TriggersError):
    """The server (or its database) cannot be reached right now: retry later."""

    code = "UNAVAILABLE"


class InternalError(TriggersError):
    """The server's own fault; ``extensions["errorId"]`` finds its log line."""

    code = "INTERNAL"


_BY_CODE: Dict[str, Type[TriggersError]] = {
    cls.code: cls
    for cls in (BadConfiguration, BadInput, NotFound, InvalidState, Conflict,
                Unauthorized, Unavailable, InternalError)
}


def error_for(code: Optional[str], message: str,
              extensions: Optional[Dict[str, Any]] = None) -> TriggersError:
    """The exception for a server error with ``extensions.code`` ``code``."""
    cls = _BY_CODE.get(code or "", TriggersError)
    return cls(message, code=code or TriggersError.code, extensions=extensions)
