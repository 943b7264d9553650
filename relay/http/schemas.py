"""The HTTP API's request and response bodies as pydantic models: the handlers parse query
strings and JSON bodies with them, and ``relay.http.openapi`` describes the API from them.

Response models describe what ``relay.http.render`` writes; they allow extra fields (QStash adds
fields over time, and so may relay) but require what the official SDKs require.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from relay.models import MessageState

# Times are ms since the epoch; 13 digits reach the year 2286 and keep the order keys sortable.
MAX_TIME_MS = 9_999_999_999_999
Time = Field(default=None, ge=0, le=MAX_TIME_MS, description="ms since the Unix epoch")
Cursor = Field(
    default=None,
    pattern=r"^\d{1,36}$",
    description="continues a listing: the `cursor` of the previous page",
)


class _Wire(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


# --- query strings ---------------------------------------------------------------------------


class StateFilter(enum.StrEnum):
    """A state to filter logs on: a message state, or IN_PROGRESS (ACTIVE, RETRY or ERROR)."""

    CREATED = "CREATED"
    ACTIVE = "ACTIVE"
    RETRY = "RETRY"
    ERROR = "ERROR"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    CANCELED = "CANCELED"
    IN_PROGRESS = "IN_PROGRESS"


class EventFilter(_Wire):
    """``GET /v2/events``: repeated parameters (or comma-separated values) are OR-ed."""

    message_id: list[str] = []
    message_ids: list[str] = []
    state: list[StateFilter] = []
    url: list[str] = []
    topic_name: list[str] = []
    queue_name: list[str] = []
    schedule_id: list[str] = []
    label: list[str] = []
    host: list[str] = []
    path: list[str] = []
    flow_control_key: list[str] = []
    caller_ip: list[str] = []
    from_date: int | None = Time
    to_date: int | None = Time
    cursor: str | None = Cursor
    count: int | None = Field(default=None, ge=1, description="page size, at most 1000")

    @field_validator("state", mode="before")
    @classmethod
    def _spelling(cls, value: Any) -> Any:
        """Case-insensitive, and the OpenAPI spelling CANCELLED too."""
        if isinstance(value, list):
            return [
                v.upper().replace("CANCELLED", "CANCELED") if isinstance(v, str) else v
                for v in value
            ]
        return value


class DlqFilter(_Wire):
    """``GET /v2/dlq``, and the bulk ``DELETE /v2/dlq`` and ``POST /v2/dlq/retry``."""

    dlq_ids: list[str] = []
    message_id: list[str] = []
    url: list[str] = []
    topic_name: list[str] = []
    queue_name: list[str] = []
    schedule_id: list[str] = []
    label: list[str] = []
    response_status: list[Annotated[int, Field(ge=0, le=999)]] = []
    caller_ip: list[str] = []
    flow_control_key: list[str] = []
    from_date: int | None = Time
    to_date: int | None = Time
    cursor: str | None = Cursor
    count: int | None = Field(default=None, ge=1, description="page size")


class MessageFilter(_Wire):
    """``DELETE /v2/messages``: ids, or filters over the messages not yet finished; with
    neither, every pending message. ``count`` is accepted and ignored."""

    message_ids: list[str] = []
    url: list[str] = []
    host: list[str] = []
    path: list[str] = []
    topic_name: list[str] = []
    queue_name: list[str] = []
    schedule_id: list[str] = []
    label: list[str] = []
    flow_control_key: list[str] = []
    caller_ip: list[str] = []
    from_date: int | None = Time
    to_date: int | None = Time
    count: int | None = Field(default=None, description="ignored (the TypeScript SDK sends it)")


class RunFilter(_Wire):
    """``DELETE /v2/workflows/runs``: run ids, or a workflow URL (a prefix unless
    ``workflowUrlExactMatch``), or all, narrowed by the message filters; at most ``count``."""

    workflow_run_ids: list[str] = []
    workflow_url: str | None = None
    workflow_url_exact_match: bool = False
    count: int | None = Field(default=None, ge=1)
    label: list[str] = []
    flow_control_key: list[str] = []
    caller_ip: list[str] = []
    host: list[str] = []
    path: list[str] = []
    from_date: int | None = Time
    to_date: int | None = Time


# --- request headers and bodies --------------------------------------------------------------


class PublishHeaders(BaseModel):
    """The ``Upstash-*`` headers of publish (``Upstash-Forward-<Name>`` and the
    ``Upstash-Callback-*`` / ``Upstash-Failure-Callback-*`` families are not listed)."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] | None = Field(
        default=None, alias="Upstash-Method"
    )
    delay: str | None = Field(default=None, alias="Upstash-Delay", examples=["10s", "2h"])
    not_before: int | None = Field(
        default=None, alias="Upstash-Not-Before", ge=0, description="Unix seconds"
    )
    retries: int | None = Field(default=None, alias="Upstash-Retries", ge=0)
    retry_delay: str | None = Field(
        default=None, alias="Upstash-Retry-Delay", examples=["pow(2, retried) * 1000"]
    )
    callback: str | None = Field(default=None, alias="Upstash-Callback")
    failure_callback: str | None = Field(default=None, alias="Upstash-Failure-Callback")
    timeout: str | None = Field(default=None, alias="Upstash-Timeout", examples=["30s"])
    deduplication_id: str | None = Field(default=None, alias="Upstash-Deduplication-Id")
    content_based_deduplication: bool | None = Field(
        default=None, alias="Upstash-Content-Based-Deduplication"
    )
    label: str | None = Field(default=None, alias="Upstash-Label", examples=["billing,eu"])
    redact_fields: str | None = Field(
        default=None,
        alias="Upstash-Redact-Fields",
        examples=["body,header[Authorization]"],
        description="body, header, header[<Name>]: stored and delivered, shown as REDACTED",
    )
    header_forward: bool | None = Field(default=None, alias="Upstash-Header-Forward")
    flow_control_key: str | None = Field(default=None, alias="Upstash-Flow-Control-Key")
    flow_control_value: str | None = Field(
        default=None,
        alias="Upstash-Flow-Control-Value",
        examples=["parallelism=3, rate=10, period=60s"],
        description="the key's limits; excess messages wait (relay.flow_control)",
    )


class MessageIds(_Wire):
    """``DELETE /v2/messages`` as the Python SDK sends it."""

    message_ids: list[str] = []


class DlqIds(_Wire):
    """``DELETE /v2/dlq`` and ``POST /v2/dlq/retry`` with a JSON body."""

    dlq_ids: list[str] = []


class BatchItem(BaseModel):
    """One message of ``POST /v2/batch``."""

    destination: str
    headers: dict[str, str] | None = None
    body: str | None = None
    queue: str | None = None


class Endpoint(BaseModel):
    """An endpoint of a URL group."""

    url: str | None = None
    name: str | None = None


class Endpoints(BaseModel):
    """Endpoints to add to or remove from a URL group."""

    endpoints: list[Endpoint]


# --- responses -------------------------------------------------------------------------------


class Error(BaseModel):
    """Every error: ``{"error": "<what went wrong>"}``."""

    error: str


class Published(_Wire):
    """One accepted message; ``url`` for a URL group's endpoints; ``deduplicated`` when it
    repeats an earlier message (whose id it carries)."""

    message_id: str
    url: str | None = None
    deduplicated: bool | None = None


class Message(_Wire):
    """A message (``GET /v2/messages/{id}``); redacted fields read ``REDACTED:<sha256>``."""

    message_id: str
    url: str
    method: str
    header: dict[str, list[str]] = {}
    max_retries: int
    not_before: int
    created_at: int
    timeout: int | None = None
    state: MessageState | None = None
    retried: int | None = None
    body: str | None = None
    body_base64: str | None = None
    callback: str | None = None
    failure_callback: str | None = None
    topic_name: str | None = None
    endpoint_name: str | None = None
    queue_name: str | None = None
    schedule_id: str | None = None
    caller_ip: str | None = Field(default=None, alias="callerIP")
    retry_delay_expression: str | None = None
    label: str | None = None
    labels: list[str] | None = None


class LogEntry(_Wire):
    """One state change of one message (``GET /v2/events``)."""

    time: int
    message_id: str
    state: MessageState
    url: str
    error: str | None = None
    next_delivery_time: int | None = None
    response_status: int | None = None
    response_body: str | None = None
    label: str | None = None


class DlqMessage(Message):
    """A message whose retries ran out, with the last response it got."""

    dlq_id: str
    response_status: int
    response_header: dict[str, list[str]] = {}
    response_body: str | None = None
    response_body_base64: str | None = None
    failed_at: int | None = None
    error: str | None = None


class EventsPage(BaseModel):
    """A page of logs; ``cursor`` is absent on the last page."""

    events: list[LogEntry]
    cursor: str | None = None


class LogsPage(BaseModel):
    """``GET /v2/logs``: the same page under the key the docs use."""

    logs: list[LogEntry]
    cursor: str | None = None


class DlqPage(BaseModel):
    """A page of the DLQ; ``cursor`` is absent on the last page."""

    messages: list[DlqMessage]
    cursor: str | None = None


class Cancelled(BaseModel):
    """How many messages a cancel stopped."""

    cancelled: int


class Deleted(BaseModel):
    """How many DLQ entries were deleted; ``cursor`` continues a delete by filter."""

    deleted: int
    cursor: str | None = None


class Retried(BaseModel):
    """The new messages of a DLQ retry; ``cursor`` continues a retry by filter."""

    responses: list[Published]
    cursor: str | None = None


class UrlGroup(_Wire):
    """A URL group (topic) and its endpoints."""

    name: str
    created_at: int
    updated_at: int | None = None
    endpoints: list[Endpoint]


class ScheduleHeaders(PublishHeaders):
    """The headers of ``POST /v2/schedules/{destination}``: ``Upstash-Cron`` and the publish
    headers, applied to each fire's message (``Upstash-Not-Before`` is refused, the dedup
    headers are replaced by the schedule's own per fire)."""

    cron: str = Field(
        alias="Upstash-Cron",
        examples=["*/5 * * * *", "CRON_TZ=America/New_York 0 9 * * 1-5"],
        description="five fields, UTC unless prefixed with CRON_TZ=<IANA zone>",
    )
    schedule_id: str | None = Field(
        default=None,
        alias="Upstash-Schedule-Id",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="create or replace the schedule of this id",
    )
    queue_name: str | None = Field(default=None, alias="Upstash-Queue-Name")


class ScheduleCreated(_Wire):
    """The id of the schedule created (or replaced)."""

    schedule_id: str


class Schedule(_Wire):
    """A cron schedule (``GET /v2/schedules/{id}``); times are ms since the epoch, ``delay``
    and ``timeout`` seconds; ``lastScheduleStates`` maps the last fire's message ids to
    IN_PROGRESS, SUCCESS or FAIL."""

    schedule_id: str
    destination: str
    cron: str
    created_at: int
    method: str
    retries: int
    header: dict[str, list[str]] = {}
    body: str | None = None
    body_base64: str | None = None
    delay: int | None = None
    timeout: int | None = None
    callback: str | None = None
    failure_callback: str | None = None
    callback_header: dict[str, list[str]] | None = None
    failure_callback_header: dict[str, list[str]] | None = None
    retry_delay_expression: str | None = None
    queue_name: str | None = None
    caller_ip: str | None = Field(default=None, alias="callerIP")
    is_paused: bool = False
    label: str | None = None
    labels: list[str] | None = None
    flow_control_key: str | None = None
    parallelism: int | None = None
    rate: int | None = None
    period: int | None = None
    last_schedule_time: int | None = None
    next_schedule_time: int | None = None
    last_schedule_states: dict[str, Literal["IN_PROGRESS", "SUCCESS", "FAIL"]] | None = None
    error: str | None = None


class SigningKeys(BaseModel):
    """The signing keys: deliveries are signed with ``current``; receivers also accept
    ``next``."""

    current: str
    next: str


class Empty(BaseModel):
    """An answer with nothing to say: ``{}``."""
