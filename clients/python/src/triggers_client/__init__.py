"""Python client and task worker for the triggers service.

>>> from triggers_client import Client
>>> session = Client("http://127.0.0.1:8080").session("questionnaire:1")
>>> session.fire("firstPageReceived", {"subject": {"id": 42}}, idempotency_key="page-1")
"""

from .client import Client, Session
from .errors import (
    BadConfiguration,
    BadInput,
    Conflict,
    InternalError,
    InvalidState,
    NotFound,
    TriggersError,
    Unauthorized,
    Unavailable,
)
from .models import Event, FireResult, Instance

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Session",
    "Instance",
    "Event",
    "FireResult",
    "TriggersError",
    "BadConfiguration",
    "BadInput",
    "NotFound",
    "InvalidState",
    "Conflict",
    "Unauthorized",
    "Unavailable",
    "InternalError",
]
