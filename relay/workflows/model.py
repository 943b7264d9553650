"""The records of a workflow run: the run itself and its ordered entries."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.flow_control import H_KEY as H_FLOW_CONTROL_KEY
from relay.models import passes_filters, split_labels
from relay.protocol import H_REDACT, BadRequest, parse_redact_fields


class RunState(enum.StrEnum):
    """A run's state, spelled as the workflow logs spell it."""

    RUN_STARTED = "RUN_STARTED"
    RUN_SUCCESS = "RUN_SUCCESS"
    RUN_FAILED = "RUN_FAILED"
    RUN_CANCELED = "RUN_CANCELED"

    @property
    def ended(self) -> bool:
        return self is not RunState.RUN_STARTED


@dataclass(slots=True)
class WorkflowRun:
    """One run: created by its Init message (entry 0 = the initial payload), ended by success,
    failure or cancel. ``settings`` are the Init's run-level publish headers (forwards, retries,
    retry delay, flow control, label, failure callback and its family), as sent."""

    run_id: str
    url: str
    created_at: int  # ms
    message_id: str  # the Init message's
    payload: bytes  # the initial payload, exactly as received
    settings: list[tuple[str, str]] = field(default_factory=list)
    label: str | None = None
    caller_ip: str | None = None  # the Init publisher's
    state: RunState = RunState.RUN_STARTED
    completed_at: int | None = None  # ms
    response: str | None = None  # workflowRunResponse: the DELETE body of a success
    dlq_id: str | None = None  # the DLQ entry of the message that failed the run
    entries: int = 1  # how many entries the run has (entry 0 included)

    def to_record(self) -> dict[str, Any]:
        """Everything but the payload, JSON-ready (backends keep the payload as bytes)."""
        return {
            "run_id": self.run_id,
            "url": self.url,
            "created_at": self.created_at,
            "message_id": self.message_id,
            "settings": self.settings,
            "label": self.label,
            "caller_ip": self.caller_ip,
        }

    @property
    def flow_control_key(self) -> str | None:
        """The run's flow-control key (its Init's ``Upstash-Flow-Control-Key``)."""
        return next((v for k, v in self.settings if k.lower() == H_FLOW_CONTROL_KEY), None)

    @property
    def redact(self) -> str | None:
        """The run's ``Upstash-Redact-Fields`` (its Init's), canonical; None when not set."""
        raw = [v for k, v in self.settings if k.lower() == H_REDACT]
        return parse_redact_fields(",".join(raw))

    @classmethod
    def from_record(cls, record: dict[str, Any], payload: bytes, **state: Any) -> WorkflowRun:
        data = dict(record)
        data["settings"] = [(str(k), str(v)) for k, v in data["settings"]]
        return cls(payload=payload, **data, **state)


@dataclass(slots=True)
class RunEntry:
    """One entry of a run: the body of the message that carried it, exactly as received."""

    index: int
    message_id: str
    body: bytes
    time: int  # ms, when it was accepted


@dataclass(slots=True)
class RunQuery:
    """Which runs a bulk cancel means: by ids, or by URL (a prefix unless ``url_exact``), or
    all, narrowed by the message filters' rule (relay.models.passes_filters: labels, flow
    control keys, caller IPs, hosts, paths, created within ``from_time``…``to_time``); only
    runs not yet ended; at most ``count``."""

    run_ids: list[str] = field(default_factory=list)
    url: str | None = None
    url_exact: bool = False
    count: int | None = None
    labels: list[str] = field(default_factory=list)
    flow_control_keys: list[str] = field(default_factory=list)
    caller_ips: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    from_time: int | None = None
    to_time: int | None = None

    def matches(self, run: WorkflowRun) -> bool:
        if self.run_ids and run.run_id not in self.run_ids:
            return False
        if self.url is not None and not (
            run.url == self.url if self.url_exact else run.url.startswith(self.url)
        ):
            return False
        wanted: list[tuple[list[str], Sequence[str | None]]] = [
            (self.labels, split_labels(run.label)),
            (self.flow_control_keys, [run.flow_control_key]),
            (self.caller_ips, [run.caller_ip]),
        ]
        return passes_filters(wanted, run.url, run.created_at, self)


@dataclass(slots=True)
class RunLogQuery:
    """Which runs the workflow logs list: newest first, before ``before`` (the cursor: created
    at, run id), exact matches on the fields given (``label``: one of the run's labels), created
    within ``from_time``…``to_time`` (ms, inclusive), at most ``count``."""

    run_id: str | None = None
    url: str | None = None
    state: str | None = None
    created_at: int | None = None
    label: str | None = None
    from_time: int | None = None
    to_time: int | None = None
    before: tuple[int, str] = (2**62, "")
    count: int = 10


class RunEnded(BadRequest):
    """400: a message for a workflow run that has ended (or never started); nothing stored.
    The JS SDK reads a 400 on a step submit as "the run is over" and stops quietly."""
