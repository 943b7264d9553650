"""The workflow wire format: the entry array byte-exact as JavaScript's ``JSON.stringify`` writes
it, the classification of a published message, and the run-level headers of an Init."""

from __future__ import annotations

import base64
import json

import pytest

from relay import protocol as p
from relay.workflows import protocol as wp
from relay.workflows.model import RunEntry
from relay.workflows.protocol import CallType, RunHeaders


def _entries(*bodies: bytes) -> list[RunEntry]:
    return [RunEntry(i, f"msg_{i}", body, 0) for i, body in enumerate(bodies)]


def test_entry_array_is_compact_with_standard_padded_base64() -> None:
    body = wp.entry_array(_entries(b'{"n": 21}', b"\xfb\xff"))
    assert body == (
        b'[{"messageId":"msg_0","body":"eyJuIjogMjF9","callType":"step"},'
        b'{"messageId":"msg_1","body":"+/8=","callType":"step"}]'
    )


def test_entry_bodies_are_the_exact_bytes_received() -> None:
    python_step = b'{"stepId": 1, "stepName": "a", "out": "{\\"v\\": 1}"}'  # json.dumps spacing
    [element] = json.loads(wp.entry_array(_entries(python_step)))
    assert base64.b64decode(element["body"]) == python_step


@pytest.mark.parametrize(
    ("value", "stringified"),
    [
        ("Jörg ✓", '"Jörg ✓"'),  # raw UTF-8, no \u escapes
        ("a/b", '"a/b"'),  # the slash unescaped
        ('q"\\', '"q\\"\\\\"'),
        ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
        ("\x00\x1f\x7f", '"\\u0000\\u001f\x7f"'),  # other controls as lowercase \u00xx
        ("\u2028", '"\u2028"'),
        (10**15, "1000000000000000"),
        ([True, None, {"k": []}], '[true,null,{"k":[]}]'),
    ],
)
def test_compact_json_matches_json_stringify(value: object, stringified: str) -> None:
    assert p.compact_json(value) == stringified.encode()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"upstash-workflow-init": "true"}, None),  # no run id: a plain message
        (
            {"upstash-workflow-runid": "wfr_1", "upstash-workflow-init": "true"},
            RunHeaders("wfr_1", True, CallType.STEP),
        ),
        ({"upstash-workflow-runid": "wfr_1"}, RunHeaders("wfr_1", False, CallType.STEP)),
        (
            {"upstash-workflow-runid": "wfr_1", "upstash-workflow-init": "True"},
            RunHeaders("wfr_1", True, CallType.STEP),
        ),
        (
            {"upstash-workflow-runid": "wfr_1", "upstash-workflow-calltype": "tocallback"},
            RunHeaders("wfr_1", False, CallType.TO_CALLBACK),
        ),
        (
            {"upstash-workflow-runid": "wfr_1", "upstash-workflow-calltype": "fromCallback"},
            RunHeaders("wfr_1", False, CallType.FROM_CALLBACK),
        ),
        (
            {
                "upstash-workflow-runid": "wfr_1",
                "upstash-workflow-calltype": "failureCall",
                "upstash-workflow-init": "true",  # only a step starts a run
            },
            RunHeaders("wfr_1", False, CallType.FAILURE_CALL),
        ),
    ],
)
def test_classify(headers: dict[str, str], expected: RunHeaders | None) -> None:
    assert wp.classify(headers) == expected


def test_classify_any_case_of_the_run_id_header() -> None:
    for name in ("Upstash-Workflow-RunId", "Upstash-Workflow-Runid", "upstash-workflow-runid"):
        found = wp.classify(p.lower_headers([(name, "wfr_x")]))
        assert found is not None and found.run_id == "wfr_x"


def test_run_level_headers_and_merge_where_the_message_wins() -> None:
    init = [
        ("Upstash-Workflow-Init", "true"),
        ("upstash-forward-x-trace", "t1"),
        ("Upstash-Retries", "0"),
        ("upstash-retry-delay", "1000"),
        ("upstash-flow-control-key", "k"),
        ("upstash-label", "l1"),
        ("Upstash-Failure-Callback", "http://app/wf"),
        ("Upstash-Failure-Callback-Workflow-Runid", "wfr_1"),
        ("Content-Type", "application/json"),
        ("Upstash-Delay", "5s"),
    ]
    settings = wp.run_level(init)
    assert [k for k, _ in settings] == [k for k, _ in init[1:8]]
    step = [("Upstash-Forward-X-Trace", "t2"), ("Upstash-Workflow-Init", "false")]
    merged = wp.with_run_level(step, settings)
    assert merged[:2] == step
    assert ("upstash-forward-x-trace", "t1") not in merged
    assert ("Upstash-Retries", "0") in merged and ("upstash-label", "l1") in merged


def test_the_run_redaction_holds_for_every_later_message_of_the_run() -> None:
    settings = wp.run_level([("Upstash-Redact-Fields", "body"), ("Upstash-Retries", "0")])
    call = wp.RunHeaders(run_id="wfr_1", init=False, call_type=wp.CallType.TO_CALLBACK)
    step = wp.RunHeaders(run_id="wfr_1", init=False, call_type=wp.CallType.STEP)
    # a call to a third party takes no run-level setting but the redaction
    assert wp.with_run_settings([("X-A", "1")], call, settings) == [
        ("X-A", "1"),
        ("upstash-redact-fields", "body"),
    ]
    # a message's own fields add to the run's, never replace them
    own = [("upstash-redact-fields", "header[X-Secret]")]
    merged = wp.with_run_settings(own, step, settings)
    assert ("Upstash-Retries", "0") in merged
    assert [v for k, v in merged if k == "upstash-redact-fields"] == ["header[X-Secret],body"]
    assert wp.with_run_settings([("X-A", "1")], step, []) == [("X-A", "1")]


def test_with_headers_replaces_every_spelling() -> None:
    pairs = [("user-agent", "python"), ("X-A", "1"), ("upstash-signature", "old")]
    own = {"User-Agent": "Upstash-QStash", "Upstash-Signature": "new"}
    assert p.with_headers(pairs, own) == [
        ("X-A", "1"),
        ("User-Agent", "Upstash-QStash"),
        ("Upstash-Signature", "new"),
    ]
