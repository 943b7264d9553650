"""Upstash Workflow's wire format on top of QStash: the control headers of a published message,
the run-level settings an Init message carries, and the entry array delivered to a workflow."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from relay import protocol as p
from relay.workflows.model import RunEntry

# Publish-side control headers (matched lower-cased; the SDKs send `-RunId` and `-Runid`).
H_INIT = "upstash-workflow-init"
H_RUN_ID = "upstash-workflow-runid"
H_URL = "upstash-workflow-url"
H_CALL_TYPE = "upstash-workflow-calltype"
H_SDK_VERSION = "upstash-workflow-sdk-version"
# Delivery-side headers relay adds to every delivery of a run to its workflow URL.
D_RUN_ID = "Upstash-Workflow-RunId"
D_URL = "Upstash-Workflow-Url"
D_CREATED_AT = "Upstash-Workflow-CreatedAt"
DEFAULT_RETRIES = 3  # what a workflow message without `Upstash-Retries` gets

# What an Init message sets for the whole run (JS sends it only there): applied to every later
# message of the run to the workflow URL that does not set it itself. `Upstash-Redact-Fields`
# too (both SDKs send it on the Init only), but wider: see with_run_redaction.
_RUN_LEVEL_EXACT = frozenset(
    {
        p.H_RETRIES,
        p.H_REDACT,
        p.H_RETRY_DELAY,
        p.H_LABEL,
        p.H_FAILURE_CALLBACK,
        "upstash-flow-control-key",
        "upstash-flow-control-value",
    }
)
_RUN_LEVEL_PREFIXES = (p.FORWARD_PREFIX, p.FAILURE_CALLBACK_PREFIX)


class CallType(enum.StrEnum):
    """``Upstash-Workflow-CallType``: what a run's message is (absent means ``step``)."""

    STEP = "step"  # an entry of the run, delivered inside the entry array
    TO_CALLBACK = "toCallback"  # context.call's request to a third party, delivered raw
    FROM_CALLBACK = "fromCallback"  # that request's callback to the workflow, delivered raw
    FAILURE_CALL = "failureCall"  # the failure callback of a failed run, delivered raw


# Run ids are in storage keys (on AWS: a DynamoDB sort key of at most 1,024 bytes).
MAX_RUN_ID_BYTES = 256


@dataclass(frozen=True, slots=True)
class RunHeaders:
    """The workflow control headers of one published message."""

    run_id: str
    init: bool
    call_type: CallType


def classify(headers: dict[str, str]) -> RunHeaders | None:
    """The workflow headers of a publish (``headers`` lower-cased); None for a plain message."""
    run_id = headers.get(H_RUN_ID, "").strip()
    if not run_id:
        return None
    if len(run_id.encode()) > MAX_RUN_ID_BYTES:
        raise p.BadRequest(f"a workflow run id is at most {MAX_RUN_ID_BYTES} bytes")
    raw = headers.get(H_CALL_TYPE, "").strip()
    call_type = next((c for c in CallType if c.lower() == raw.lower()), CallType.STEP)
    init = p.parse_bool(headers.get(H_INIT, "false")) and call_type is CallType.STEP
    return RunHeaders(run_id=run_id, init=init, call_type=call_type)


def takes_run_level(headers: RunHeaders) -> bool:
    """Whether a message gets its run's settings: every later message to the workflow URL
    (not the Init, which sets them, nor a call to a third party, nor the failure callback)."""
    return not headers.init and headers.call_type in (CallType.STEP, CallType.FROM_CALLBACK)


def run_level(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers of an Init message that hold for its whole run, as sent."""
    return [
        (name, value)
        for name, value in headers
        if name.lower() in _RUN_LEVEL_EXACT or name.lower().startswith(_RUN_LEVEL_PREFIXES)
    ]


def with_run_level(
    headers: Sequence[tuple[str, str]], run_level_headers: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """``headers`` plus the run-level ones they do not set themselves (theirs win)."""
    own = {name.lower() for name, _ in headers}
    return [*headers, *((k, v) for k, v in run_level_headers if k.lower() not in own)]


def with_run_settings(
    headers: Sequence[tuple[str, str]],
    message: RunHeaders,
    run_level_headers: Sequence[tuple[str, str]],
) -> list[tuple[str, str]]:
    """The headers a later message of a run is published with: the run-level settings if it
    takes them (takes_run_level), and in any case the run's redaction (with_run_redaction)."""
    if takes_run_level(message):
        headers = with_run_level(headers, run_level_headers)
    return with_run_redaction(headers, run_level_headers)


def with_run_redaction(
    headers: Sequence[tuple[str, str]], run_level_headers: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """``headers`` with the union of their ``Upstash-Redact-Fields`` and the run's (the
    Init's). Every later message of the run gets it, the context.call request to a third
    party and its callback included, and a message can add fields but never show what the run
    hides: a user who asked the SDK to redact expects the run's step outputs, call bodies and
    headers hidden in every view (relay.redaction), though the SDKs send it on the Init only."""
    fields = [v for k, v in [*headers, *run_level_headers] if k.lower() == p.H_REDACT]
    union = p.parse_redact_fields(",".join(fields))
    kept = [(k, v) for k, v in headers if k.lower() != p.H_REDACT]
    return kept if union is None else [*kept, (p.H_REDACT, union)]


def entry_array(entries: Sequence[RunEntry]) -> bytes:
    """The body of a step delivery: the run's entries, each body base64 of the exact bytes
    received, as compact JSON byte-identical to JavaScript's ``JSON.stringify`` (an express
    app verifies the signature over its re-serialization)."""
    return p.compact_json(
        [
            {"messageId": e.message_id, "body": p.b64(e.body), "callType": str(CallType.STEP)}
            for e in entries
        ]
    )
