"""The original library's ``TriggerManager``, on top of :class:`~triggers_client.Session`.

Code written for the Django-cache + Celery framework ports by changing its
imports: ``TriggerManager(uid)`` talks to the server named by
``TRIGGERS_SERVER`` (default ``http://127.0.0.1:8080``) with the token in
``TRIGGERS_API_TOKEN``, or to the :class:`Client` passed in.
"""

from __future__ import annotations

import os
from typing import Any, List, Mapping, Optional

from .client import Client, InstanceRef, Session
from .models import FireResult, Instance

__all__ = ["TriggerManager"]

_default_client: Optional[Client] = None


def default_client() -> Client:
    """The process-wide client built from ``TRIGGERS_SERVER``/``TRIGGERS_API_TOKEN``."""
    global _default_client
    if _default_client is None:
        _default_client = Client(os.environ.get("TRIGGERS_SERVER", "http://127.0.0.1:8080"),
                                 token=os.environ.get("TRIGGERS_API_TOKEN") or None)
    return _default_client


class TriggerManager:
    """The seed's manager for one session uid."""

    def __init__(self, uid: str, client: Optional[Client] = None) -> None:
        self.uid = uid
        self.client = client or default_client()
        self.session: Session = self.client.session(uid)

    def __repr__(self) -> str:
        return f"TriggerManager({self.uid!r})"

    def update_configuration(self, config: Mapping[str, Any]) -> int:
        """Adds or replaces task configurations; returns the new version."""
        return self.session.configure(config)

    def fire(self, trigger_name: str, trigger_kwargs: Optional[Mapping[str, Any]] = None,
             idempotency_key: Optional[str] = None) -> FireResult:
        """Fires ``trigger_name`` with ``trigger_kwargs``."""
        return self.session.fire(trigger_name, trigger_kwargs, idempotency_key=idempotency_key)

    def replay_failed_instance(self, instance: InstanceRef,
                               replacement_kwargs: Optional[Mapping[str, Any]] = None) -> Instance:
        return self.session.replay_failed_instance(instance, replacement_kwargs)

    def skip_failed_instance(self, instance: InstanceRef, cascade: bool = False,
                             result: Optional[Mapping[str, Any]] = None) -> Instance:
        return self.session.skip_failed_instance(instance, cascade=cascade, result=result)

    def update_instance_status(self, instance: InstanceRef, status: str,
                               metadata: Optional[Mapping[str, Any]] = None, cascade: bool = False,
                               cascade_kwargs: Optional[Mapping[str, Any]] = None) -> Instance:
        return self.session.update_instance_status(instance, status, metadata=metadata, cascade=cascade,
                                                   cascade_kwargs=cascade_kwargs)

    def update_instance_metadata(self, instance: InstanceRef, metadata: Mapping[str, Any]) -> Instance:
        return self.session.update_instance_metadata(instance, metadata)

    def mark_instance_logs_resolved(self, instance: InstanceRef) -> Instance:
        return self.session.mark_instance_logs_resolved(instance)

    def get_unresolved_tasks(self) -> List[str]:
        return self.session.unresolved_tasks()

    def get_unresolved_instances(self) -> List[Instance]:
        return self.session.unresolved_instances()

    def get_instances_with_unresolved_logs(self) -> List[Instance]:
        return self.session.instances_with_unresolved_logs()

    def get_instance(self, name: str) -> Optional[Instance]:
        return self.session.instance(name)

    def get_instances(self) -> List[Instance]:
        return self.session.instances()
