"""``triggers_client.compat.TriggerManager``: the original library's API."""

from __future__ import annotations

import pytest

from triggers_client import Client, Instance, InvalidState
from triggers_client import compat
from triggers_client.compat import TriggerManager


def test_the_seed_api_ports_by_changing_imports(client: Client, uid: str) -> None:
    manager = TriggerManager(uid, client=client)
    manager.update_configuration({
        "t_fail": {"after": ["go"], "run": "triggers.testing.Failing"},
        "t_pass": {"after": ["go", "more"], "run": "triggers.testing.PassThru"},
        "t_after": {"after": ["t_fail"], "run": "triggers.testing.PassThru"},
    })
    assert manager.fire("go", {"n": 1}).scheduled == ["t_fail#0"]
    client.session(uid).settle()
    assert manager.get_unresolved_tasks() == ["t_after", "t_fail", "t_pass"]
    assert [i.name for i in manager.get_unresolved_instances()] == ["t_fail#0", "t_pass#0"]
    failed = manager.get_instances_with_unresolved_logs()
    assert [i.name for i in failed] == ["t_fail#0"]
    # an instance argument may be the Instance itself
    assert manager.mark_instance_logs_resolved(failed[0]).metadata["logsResolved"] is True
    assert manager.get_instances_with_unresolved_logs() == []

    clone = manager.replay_failed_instance(failed[0], replacement_kwargs={"go": {"n": 2}})
    assert isinstance(clone, Instance) and clone.name == "t_fail#1" and clone.kwargs == {"go": {"n": 2}}
    client.session(uid).settle()
    with pytest.raises(InvalidState):
        manager.skip_failed_instance("t_fail#0")
    assert manager.skip_failed_instance("t_fail#1", cascade=True, result={"ok": 1}).status == "skipped"
    client.session(uid).settle()
    assert manager.get_instance("t_after#0").result == {"kwargs": {"t_fail": {"ok": 1}}}  # type: ignore[union-attr]

    assert manager.update_instance_metadata("t_pass#0", {"owner": "ops"}).metadata["owner"] == "ops"
    changed = manager.update_instance_status("t_pass#0", "abandoned", metadata={"why": "closed"})
    assert changed.status == "abandoned" and changed.metadata["why"] == "closed"
    assert manager.get_unresolved_tasks() == []


def test_default_client_comes_from_the_environment(client: Client, uid: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGERS_SERVER", client.url)
    monkeypatch.setattr(compat, "_default_client", None)
    manager = TriggerManager(uid)
    assert manager.client.url == client.url
    assert manager.fire("hello").seq == 1
    assert [e.trigger for e in client.session(uid).events()] == ["hello"]
