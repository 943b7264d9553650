"""relay.metrics: what one attempt counts as, the EMF lines CloudWatch reads, and the dashboard
in template.yaml drawing exactly the metrics those lines carry."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infra.template import load_template
from relay.aws_runtime import LambdaRuntime
from relay.metrics import EMF_METRICS, EMF_NAMESPACE, Metrics, destination_host, error_kind
from relay.models import Accepted, Attempt, DlqEntry, Message, MessageState, QueueStats, Settlement

NOW = 1_800_000_000_000


def _message(url: str = "https://api.example.com:8443/hook", created: int = NOW - 2_000) -> Message:
    return Message(
        id="msg_1",
        url=url,
        method="POST",
        body=b"",
        headers=[],
        max_retries=1,
        timeout=30,
        not_before=created,
        created_at=created,
    )


def _attempt(status: int | None, duration: int = 40, error: str | None = None) -> Attempt:
    return Attempt(status=status, headers=[], body=b"", error=error, duration_ms=duration)


def _settlement(state: MessageState, message: Message, **extra: Any) -> Settlement:
    return Settlement(state=state, retried=0, next_due=None, events=[], **extra)


def _feed(metrics: Metrics) -> None:
    ok, bad = _message(), _message("http://10.0.0.8/x")
    metrics.accepted(
        [ok, bad, ok],
        [
            Accepted("msg_1", ok.url),
            Accepted("m2", bad.url),
            Accepted("msg_1", ok.url, deduplicated=True),
        ],
    )
    metrics.settled(
        ok, _attempt(200), _settlement(MessageState.DELIVERED, ok, follow_ups=[ok]), NOW
    )
    metrics.settled(bad, _attempt(503), _settlement(MessageState.RETRY, bad), NOW)
    dlq = DlqEntry("d1", bad, NOW, None, [], b"", "timed out after 30s")
    metrics.settled(
        bad,
        _attempt(None, 30_000, "timed out after 30s"),
        _settlement(MessageState.FAILED, bad, dlq=dlq),
        NOW,
    )


def test_what_an_attempt_counts_as() -> None:
    metrics = Metrics()
    _feed(metrics)
    text = generate_latest(metrics.registry)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    assert samples[("relay_messages_published_total", (("source", "api"),))] == 2
    assert samples[("relay_messages_published_total", (("source", "callback"),))] == 1
    assert samples[("relay_messages_deduplicated_total", ())] == 1
    for outcome in ("delivered", "retried", "failed"):
        assert samples[("relay_delivery_attempts_total", (("outcome", outcome),))] == 1
    assert samples[("relay_messages_dead_lettered_total", (("reason", "retries_exhausted"),))] == 1
    errors = {k[1]: v for k, v in samples.items() if k[0] == "relay_delivery_errors_total"}
    assert errors == {
        (("host", "10.0.0.8"), ("kind", "http_5xx")): 1,
        (("host", "10.0.0.8"), ("kind", "timeout")): 1,
    }
    assert samples[("relay_delivery_end_to_end_seconds_sum", ())] == 2.0


def test_host_and_error_kind() -> None:
    assert destination_host("https://api.example.com:8443/hook?x=1") == "api.example.com:8443"
    assert destination_host("https://user:pw@example.com/") == "example.com"
    assert error_kind(_attempt(404)) == "http_4xx"
    assert error_kind(_attempt(None, error="ClientConnectorError: refused")) == "connection"


def test_emf_lines_carry_the_counts_latencies_and_host_errors() -> None:
    metrics = Metrics(emf=True)
    _feed(metrics)
    metrics.observe_queue(QueueStats(due=2, waiting=5, in_flight=1, oldest_due=NOW - 7_000), NOW)
    lines = metrics.drain_emf(dimensions={"Stack": "prod"}, now=NOW)
    assert metrics.drain_emf(dimensions={"Stack": "prod"}, now=NOW) == []  # drained
    totals, host = (json.loads(line) for line in lines)
    directive = totals["_aws"]["CloudWatchMetrics"][0]
    assert totals["_aws"]["Timestamp"] == NOW
    assert directive["Namespace"] == EMF_NAMESPACE and directive["Dimensions"] == [["Stack"]]
    names = {m["Name"] for m in directive["Metrics"]}
    assert names <= set(EMF_METRICS)
    assert all(name in totals for name in names)  # every declared metric has its value
    assert totals["Stack"] == "prod"
    assert (totals["Published"], totals["Deduplicated"]) == (3, 1)  # 2 publishes + 1 callback
    assert (totals["Delivered"], totals["Retried"], totals["Failed"]) == (1, 1, 1)
    assert totals["DeadLettered"] == 1
    assert totals["AttemptDuration"] == [40, 40, 30_000]
    assert totals["EndToEndLatency"] == [2_000]
    assert (totals["QueueDepth"], totals["QueueDue"], totals["OldestDueAge"]) == (8, 2, 7.0)
    assert host["Host"] == "10.0.0.8" and host["DeliveryErrors"] == 2
    assert host["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Host", "Stack"]]


def test_emf_splits_more_than_a_hundred_values() -> None:
    metrics = Metrics(emf=True)
    message = _message()
    for _ in range(250):
        metrics.settled(
            message, _attempt(200, 5), _settlement(MessageState.DELIVERED, message), NOW
        )
    documents = [json.loads(x) for x in metrics.drain_emf(dimensions={"Stack": "s"}, now=NOW)]
    assert [len(d["AttemptDuration"]) for d in documents] == [100, 100, 50]
    assert documents[0]["Delivered"] == 250 and "Delivered" not in documents[1]


def test_embedded_relays_keep_no_emf_backlog() -> None:
    metrics = Metrics()
    _feed(metrics)
    assert metrics.drain_emf(dimensions={"Stack": "s"}, now=NOW) == []


def test_a_lambda_invocation_flushes_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    class Relay:
        flushed = 0

        def flush_metrics(self) -> None:
            Relay.flushed += 1

        async def close(self) -> None:
            pass

    async def opener(environ: Any) -> Any:
        return Relay()

    async def fail(relay: Any) -> None:
        raise RuntimeError("boom")

    runtime = LambdaRuntime({}, opener=opener)
    try:
        with pytest.raises(RuntimeError):
            runtime.run(fail)
        runtime.run(lambda relay: _none())
    finally:
        runtime.close()
    assert Relay.flushed == 2  # after a failing invocation too


async def _none() -> None:
    return None


def test_dashboard_draws_the_metrics_relay_emits() -> None:
    dashboard = load_template()["Resources"]["Dashboard"]
    assert dashboard["Type"] == "AWS::CloudWatch::Dashboard"
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    text = re.sub(r"\$\{[^}]+\}", "X", body)
    widgets = json.loads(text)["widgets"]
    drawn = {
        row[1]
        for widget in widgets
        for row in widget["properties"]["metrics"]
        if isinstance(row[0], str) and row[0] == EMF_NAMESPACE
    }
    assert drawn and drawn <= set(EMF_METRICS)
    searches = [
        row[0]["expression"]
        for widget in widgets
        for row in widget["properties"]["metrics"]
        if isinstance(row[0], dict)
    ]
    assert any("DeliveryErrors" in s for s in searches)
    for widget in widgets:
        for row in widget["properties"]["metrics"]:
            if row[0] == EMF_NAMESPACE:
                assert row[2:4] == ["Stack", "X"]  # the stack's own figures
