"""The filters of bulk cancel and of the logs, matched the same way on every backend."""

from __future__ import annotations

from relay.models import Event, EventQuery, Message, MessageState, PendingQuery, split_labels


def message(**fields: object) -> Message:
    base: dict[str, object] = {
        "id": "m",
        "url": "https://example.com/jobs?x=1",
        "method": "POST",
        "body": b"",
        "headers": [],
        "max_retries": 3,
        "timeout": 30,
        "not_before": 0,
        "created_at": 1000,
    }
    return Message(**{**base, **fields})  # type: ignore[arg-type]


def test_an_empty_query_matches_everything() -> None:
    assert PendingQuery().matches(message())


def test_values_are_ored_and_fields_anded() -> None:
    m = message(label="billing,eu", topic_name="orders", caller_ip="10.0.0.1")
    assert PendingQuery(labels=["eu", "us"], topic_names=["orders"]).matches(m)
    assert not PendingQuery(labels=["eu"], topic_names=["other"]).matches(m)
    assert PendingQuery(hosts=["example.com"], paths=["/jobs"]).matches(m)
    assert not PendingQuery(urls=["https://example.com/jobs"]).matches(m)
    assert PendingQuery(caller_ips=["10.0.0.1"]).matches(m)
    assert not PendingQuery(flow_control_keys=["k"]).matches(m)
    assert PendingQuery(flow_control_keys=["k"]).matches(message(flow_control_key="k"))


def test_time_bounds_are_inclusive() -> None:
    assert PendingQuery(from_time=1000, to_time=1000).matches(message())
    assert not PendingQuery(from_time=1001).matches(message())
    assert not PendingQuery(to_time=999).matches(message())


def test_split_labels() -> None:
    assert split_labels(" a, b,,c ") == ["a", "b", "c"]
    assert split_labels(None) == []


def test_an_event_matches_on_its_message_fields_url_parts_state_and_time() -> None:
    m = message(label="billing,eu", flow_control_key="k", caller_ip="10.0.0.1", queue_name="q")
    event = Event.of(m, MessageState.RETRY, 2000)
    assert EventQuery().matches(event) and not EventQuery().beyond_index
    assert EventQuery(states=[MessageState.ACTIVE, MessageState.RETRY], labels=["eu"]).matches(
        event
    )
    assert not EventQuery(states=[MessageState.DELIVERED]).matches(event)
    query = EventQuery(hosts=["example.com"], paths=["/jobs"], caller_ips=["10.0.0.1"])
    assert query.beyond_index and query.matches(event)
    assert EventQuery(flow_control_keys=["k", "other"], queue_names=["q"]).matches(event)
    assert not EventQuery(flow_control_keys=["other"]).matches(event)
    assert not EventQuery(paths=["/jobs/"]).matches(event)
    assert not EventQuery(message_ids=["n"]).matches(event)
    assert EventQuery(from_time=2000, to_time=2000).matches(event)
    assert not EventQuery(to_time=1999).matches(event)
