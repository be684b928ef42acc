"""The client against the real server: configure, fire, read, recover, errors."""

from __future__ import annotations

import threading
from typing import List

import pytest

from conftest import Proxy, Server, free_port, wait_for
from triggers_client import (BadConfiguration, BadInput, Client, Event, InvalidState, NotFound, TriggersError,
                             Unauthorized, Unavailable)

QUESTIONNAIRE = {
    "t_importSubject": {"after": ["firstPageReceived"], "run": "triggers.testing.PassThru"},
    "t_importResponses": {"after": ["firstPageReceived"], "andEvery": "pageReceived",
                          "run": "triggers.testing.PassThru", "withParams": {"scoring": {"model": "Psych 01"}}},
    "t_importBrowserMetadata": {"after": ["t_importSubject", "questionnaireComplete"],
                                "unless": ["questionnaireAbandoned"], "run": "triggers.testing.DevNull"},
}


def test_questionnaire_runs_and_cascades(client: Client, uid: str) -> None:
    session = client.session(uid)
    assert session.version == 0
    assert session.configure(QUESTIONNAIRE) == 1
    fired = session.fire("firstPageReceived", {"subject": {"id": 42}}, idempotency_key="page-1")
    assert fired.seq == 2 and not fired.duplicate
    assert fired.scheduled == ["t_importSubject#0"]  # t_importResponses also waits for pageReceived
    assert session.fire("pageReceived", {"page": 2}).scheduled == ["t_importResponses#0"]
    assert session.fire("pageReceived", {"page": 3}).scheduled == ["t_importResponses#1"]
    session.fire("questionnaireComplete")
    session.settle(timeout=20)

    subject = session.instance("t_importSubject#0")
    assert subject is not None
    assert subject.status == "finished"
    assert subject.result == {"kwargs": {"firstPageReceived": {"subject": {"id": 42}}}}
    assert subject.log_level == 20 and subject.depth == 0 and subject.parent is None
    responses = session.instances(task="t_importResponses")
    assert [i.name for i in responses] == ["t_importResponses#0", "t_importResponses#1"]
    assert responses[0].result == {"kwargs": {"firstPageReceived": {"subject": {"id": 42}}, "pageReceived": {"page": 2},
                                              "scoring": {"model": "Psych 01"}}}
    assert responses[1].kwargs["pageReceived"] == {"page": 3}
    # the cascade: t_importSubject's result fired t_importSubject, which (with questionnaireComplete) ran this one
    metadata = session.instance("t_importBrowserMetadata#0")
    assert metadata is not None and metadata.status == "finished"
    assert session.unresolved_tasks() == []
    assert session.unresolved_instances() == []
    assert [i.name for i in session.instances(status=["finished"])] == [i.name for i in session.instances()]
    assert session.instance("t_nothing#0") is None
    assert session.latest_kwargs()["firstPageReceived"] == {"subject": {"id": 42}}
    assert session.tasks()["t_importResponses"]["andEvery"] == "pageReceived"


def test_repeated_idempotency_key_is_a_duplicate(client: Client, uid: str) -> None:
    session = client.session(uid)
    first = session.fire("ping", {"n": 1}, idempotency_key="k1")
    again = session.fire("ping", {"n": 1}, idempotency_key="k1")
    assert again.duplicate and again.seq == first.seq
    assert session.version == first.seq


def test_events_page_through_a_long_log(client: Client, uid: str) -> None:
    session = client.session(uid)
    # one fire of a trigger 300 tasks wait for writes well over a page (1000) of events
    session.configure({f"t_{i}": {"after": ["go"], "run": "triggers.testing.DevNull"} for i in range(300)})
    session.fire("go")
    session.settle(timeout=60)
    version = session.version
    assert version > 1500
    events = list(session.events())
    assert [e.seq for e in events] == list(range(1, version + 1))
    assert events[0].kind == "SessionConfigured"
    assert events[1].kind == "TriggerFired" and events[1].trigger == "go" and events[1].caused_by is None
    assert [e.seq for e in session.events(after=version - 3)] == [version - 2, version - 1, version]
    finished = next(e for e in events if e.kind == "InstanceFinished")
    assert finished.instance is not None and finished.instance.startswith("t_") and finished.at.tzinfo is not None


def test_recovery_of_a_failed_instance(client: Client, uid: str) -> None:
    session = client.session(uid)
    session.configure({"t_fail": {"after": ["go"], "run": "triggers.testing.Failing"},
                       "t_after": {"after": ["t_fail"], "run": "triggers.testing.PassThru"}})
    session.fire("go", {"x": 1})
    session.settle()
    failed = session.instance("t_fail#0")
    assert failed is not None and failed.status == "failed"
    assert failed.metadata["exceptionType"] == "triggers.testing.Failure" and failed.log_level >= 40
    assert [i.name for i in session.instances_with_unresolved_logs()] == ["t_fail#0"]
    assert session.mark_instance_logs_resolved(failed).metadata["logsResolved"] is True
    assert session.instances_with_unresolved_logs() == []

    clone = session.replay_failed_instance("t_fail#0", replacement_kwargs={"go": {"x": 2}})
    assert clone.name == "t_fail#1" and clone.parent == "t_fail#0" and clone.depth == 1
    session.settle()
    assert session.instance("t_fail#0").status == "replayed"  # type: ignore[union-attr]
    with pytest.raises(InvalidState) as err:
        session.replay_failed_instance("t_fail#0")
    assert err.value.code == "INVALID_STATE" and "t_fail#0" in err.value.message

    skipped = session.skip_failed_instance("t_fail#1", cascade=True, result={"skipped": True})
    assert skipped.status == "skipped"
    session.settle()
    after = session.instance("t_after#0")
    assert after is not None and after.status == "finished"
    assert after.result == {"kwargs": {"t_fail": {"skipped": True}}}

    updated = session.update_instance_metadata("t_after#0", {"note": {"by": "ops"}})
    assert updated.metadata["note"] == {"by": "ops"}
    changed = session.update_instance_status("t_after#0", "abandoned", metadata={"why": "test"})
    assert changed.status == "abandoned" and changed.metadata["why"] == "test"


def test_errors_carry_the_server_code_and_write_nothing(client: Client, uid: str) -> None:
    session = client.session(uid)
    with pytest.raises(BadConfiguration) as bad:
        session.configure({"t_x": {"after": ["a"]}})
    assert bad.value.code == "BAD_CONFIGURATION" and "t_x" in bad.value.message and "run" in bad.value.message
    with pytest.raises(NotFound) as missing:
        session.replay_failed_instance("t_x#0")
    assert missing.value.code == "NOT_FOUND"
    with pytest.raises(BadInput):
        session.fire("")
    with pytest.raises(BadInput):
        session.instances(status=["done"])
    assert isinstance(missing.value, TriggersError)
    assert session.version == 0


def test_non_dict_kwargs_and_results_fail_before_any_request() -> None:
    # nothing listens there: any request would be Unavailable, so BadInput proves no request was made
    session = Client(f"http://127.0.0.1:{free_port()}").session("s")
    for call in (lambda: session.fire("go", [1, 2]),  # type: ignore[arg-type]
                 lambda: session.fire("go", "x"),  # type: ignore[arg-type]
                 lambda: session.configure(["t"]),  # type: ignore[arg-type]
                 lambda: session.skip_failed_instance("t#0", result=[1]),  # type: ignore[arg-type]
                 lambda: session.replay_failed_instance("t#0", replacement_kwargs=3),  # type: ignore[arg-type]
                 lambda: session.update_instance_metadata("t#0", None),  # type: ignore[arg-type]
                 lambda: session.client.complete_task("token", result=["not", "a", "dict"])):  # type: ignore[arg-type]
        with pytest.raises(BadInput) as err:
            call()
        assert "must be a dict" in err.value.message


def test_a_server_that_is_down_is_unavailable_naming_its_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable) as err:
        Client(url, timeout=2).session("s").fire("go")
    assert url in err.value.message and err.value.code == "UNAVAILABLE"


def test_strict_configure_refuses_an_unknown_directive_and_writes_nothing(sqlite_server: Server, uid: str) -> None:
    session = Client(sqlite_server.url).session(uid)
    with pytest.raises(BadConfiguration) as err:
        session.configure({"t_x": {"after": ["a"], "run": "triggers.testing.DevNull", "unles": ["b"]}}, strict=True)
    assert "unles" in err.value.message
    assert session.version == 0
    # not strict: kept as an extra
    assert session.configure({"t_x": {"after": ["a"], "run": "triggers.testing.DevNull", "unles": ["b"]}}) == 1
    assert session.tasks()["t_x"]["extras"] == {"unles": ["b"]}
    assert [(w["task"], w["directive"]) for w in session.last_warnings] == [("t_x", "unles")]
    assert 'did you mean "unless"?' in session.last_warnings[0]["message"]


def test_token_goes_in_the_header(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = Server(f"sqlite://{tmp_path / 't.db'}", tmp_path / "server.log", token="s3cret")
    try:
        with pytest.raises(Unauthorized):
            Client(server.url).session("s").fire("go")
        with pytest.raises(Unauthorized):
            Client(server.url, token="wrong").session("s").version
        session = Client(server.url, token="s3cret").session("s")
        assert session.fire("go").seq == 1
        watched = next(iter(session.watch(after_version=0)))
        assert watched.seq == 1 and watched.kind == "TriggerFired"
    finally:
        server.stop()


def test_watch_follows_the_live_log(client: Client, uid: str) -> None:
    session = client.session(uid)
    session.fire("before")
    seen: List[Event] = []
    done = threading.Event()

    def follow() -> None:
        for event in session.watch(after_version=0):
            seen.append(event)
            if len(seen) == 3:
                done.set()
                return

    threading.Thread(target=follow, daemon=True).start()
    wait_for(lambda: seen, what="the replayed event")
    session.fire("a")
    session.fire("b")
    assert done.wait(20)
    assert [(e.seq, e.trigger) for e in seen] == [(1, "before"), (2, "a"), (3, "b")]


def test_watch_reconnects_from_the_last_seen_version(proxy: Proxy, uid: str, sqlite_server: Server) -> None:
    direct = Client(sqlite_server.url).session(uid)
    watched = Client(proxy.url, timeout=5).session(uid)
    seen: List[Event] = []
    direct.fire("one")
    stream = watched.watch()  # from now on: after version 1

    def follow() -> None:
        for event in stream:
            seen.append(event)
            if len(seen) == 3:
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    wait_for(lambda: proxy.accepted >= 2, what="the subscription to connect")  # the version query, then the socket
    direct.fire("two")
    wait_for(lambda: len(seen) == 1, what="the first live event")
    connections = proxy.accepted
    proxy.cut()
    direct.fire("three")
    direct.fire("four")
    thread.join(20)
    assert [(e.seq, e.trigger) for e in seen] == [(2, "two"), (3, "three"), (4, "four")]
    assert proxy.accepted > connections  # it did reconnect


def test_unavailable_fires_with_a_key_are_retried_and_applied_once(proxy: Proxy, uid: str) -> None:
    session = Client(proxy.url, timeout=5, fire_retries=3).session(uid)
    proxy.refuse = 2
    result = session.fire("go", {"n": 1}, idempotency_key="once")
    assert result.seq == 1 and not result.duplicate
    assert proxy.accepted >= 3
    assert [e.trigger for e in session.events()] == ["go"]

    proxy.cut()  # no kept-alive connection: the next request connects again
    proxy.refuse = 1
    with pytest.raises(Unavailable):  # without a key a fire is never retried
        session.fire("go", {"n": 2})
    proxy.cut()
    proxy.refuse = 10
    with pytest.raises(Unavailable):  # and retries are bounded
        session.fire("go", {"n": 3}, idempotency_key="twice")
    proxy.refuse = 0
    assert session.version == 1
