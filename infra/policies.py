"""The functions' IAM policies in template.yaml, enforced on the local stack (moto enforces none).

- :class:`Policies` answers whether a function's role (its inline statements, resources resolved
  to the stack's ARNs, plus the managed policies SAM attaches) allows an action on a resource:
  `*` and `?` wildcards as IAM reads them, an explicit Deny over any Allow.
- :func:`accesses` says what IAM checks for one botocore call: its actions (a batch or
  transaction checks the actions of its parts) and the resources they touch (a DynamoDB index,
  an S3 object's key, ...).
- :class:`PolicyWatch` attributes calls to functions: a client created while a function runs
  (:meth:`PolicyWatch.acting_as`, set around its module's loading and each invocation) makes
  every call of its own on that function's behalf, from whichever thread; the watch keeps the
  calls its policy does not allow. Clients made by the emulator or the tests are never checked.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlparse

from botocore import handlers

from infra.template import as_list

log = logging.getLogger("infra.policies")

ACCOUNT = "123456789012"  # moto's account
DENIED = "its policy in template.yaml does not allow it"  # in each warning line

_LOGS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
# The AWS managed policies SAM attaches to functions' roles, as AWS publishes them.
MANAGED: dict[str, list[dict[str, Any]]] = {
    "service-role/AWSLambdaBasicExecutionRole": [
        {"Effect": "Allow", "Action": _LOGS, "Resource": "*"}
    ],
    "service-role/AWSLambdaSQSQueueExecutionRole": [
        {
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", *_LOGS],
            "Resource": "*",
        }
    ],
}
_SUPPORTED_KEYS = {"Sid", "Effect", "Action", "Resource"}


# --- the checker ----------------------------------------------------------------------------------


@cache
def _pattern(text: str, ignore_case: bool = False) -> re.Pattern[str]:
    """IAM's wildcards: `*` any characters, `?` one, everything else literal."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(body, re.IGNORECASE if ignore_case else 0)


def action_matches(pattern: str, action: str) -> bool:
    """Actions are case-insensitive (`dynamodb:*`, `s3:Get*`)."""
    return _pattern(pattern, True).fullmatch(action) is not None


def resource_matches(pattern: str, resource: str) -> bool:
    """ARNs segment by segment (a wildcard stays within its segment up to the resource part,
    which may span `/` and `:`); `*` alone is any resource."""
    if pattern == "*":
        return True
    wanted, got = pattern.split(":", 5), resource.split(":", 5)
    return len(wanted) == len(got) and all(
        _pattern(w).fullmatch(g) is not None for w, g in zip(wanted, got, strict=True)
    )


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement: Allow or Deny of these actions on these resources (patterns)."""

    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Statement:
        """A statement of a policy document; keys this checker cannot judge (Condition,
        NotAction, ...) are refused rather than read as an unconditional grant."""
        unknown = set(raw) - _SUPPORTED_KEYS
        if unknown:
            raise ValueError(f"policy statement with {sorted(unknown)}: not supported here")
        if raw["Effect"] not in ("Allow", "Deny"):
            raise ValueError(f"policy statement with Effect {raw['Effect']!r}")
        return cls(raw["Effect"], tuple(as_list(raw["Action"])), tuple(as_list(raw["Resource"])))

    def covers(self, action: str, resource: str) -> bool:
        return any(action_matches(a, action) for a in self.actions) and any(
            resource_matches(r, resource) for r in self.resources
        )


class Policies:
    """Each function's statements: ``allows(function, action, resource)``."""

    def __init__(self, statements: Mapping[str, list[Mapping[str, Any]]]) -> None:
        self._statements = {
            function: [Statement.parse(raw) for raw in found]
            for function, found in statements.items()
        }

    @classmethod
    def of_stack(
        cls, inline: Mapping[str, list[dict[str, Any]]], managed: Mapping[str, list[str]]
    ) -> Policies:
        """From each function's resolved inline statements and its managed policy ARNs."""
        return cls(
            {
                function: [*found, *(s for arn in managed[function] for s in _managed(arn))]
                for function, found in inline.items()
            }
        )

    def allows(self, function: str, action: str, resource: str) -> bool:
        matching = [s for s in self._statements.get(function, []) if s.covers(action, resource)]
        return bool(matching) and all(s.effect == "Allow" for s in matching)


def _managed(arn: str) -> list[dict[str, Any]]:
    name = arn.split(":policy/", 1)[-1]
    if name not in MANAGED:
        raise ValueError(f"managed policy {arn}: its statements are not in infra/policies.py")
    return MANAGED[name]


# --- what a call asks IAM for ---------------------------------------------------------------------

# Operations IAM knows under another action (the batches: each entry is checked as the single).
_ACTIONS = {
    "sqs": {
        "SendMessageBatch": "SendMessage",
        "DeleteMessageBatch": "DeleteMessage",
        "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
    },
    "s3": {
        "HeadObject": "GetObject",
        "HeadBucket": "ListBucket",
        "ListObjects": "ListBucket",
        "ListObjectsV2": "ListBucket",
        "DeleteObjects": "DeleteObject",
        "CreateMultipartUpload": "PutObject",
        "UploadPart": "PutObject",
        "CompleteMultipartUpload": "PutObject",
    },
}
_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


@dataclass(frozen=True, slots=True)
class Access:
    """One thing IAM checks: an action on a resource."""

    action: str
    resource: str


def accesses(service: str, operation: str, params: Mapping[str, Any], region: str) -> list[Access]:
    """What IAM checks for one call of ``service`` (its signing name) with ``params``."""
    action = f"{service}:{_ACTIONS.get(service, {}).get(operation, operation)}"
    if service == "dynamodb":
        return _dynamodb(operation, action, params, region)
    if service == "s3":
        return _s3(operation, action, params)
    return [Access(action, _resource(service, params, region))]


def _table_arn(name: str, region: str, index: str | None = None) -> str:
    arn = name if name.startswith("arn:") else f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{name}"
    return f"{arn}/index/{index}" if index else arn


def _dynamodb(operation: str, action: str, params: Mapping[str, Any], region: str) -> list[Access]:
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return [Access(action, _table_arn(t, region)) for t in params["RequestItems"]]
    if operation in ("TransactWriteItems", "TransactGetItems"):
        found = []
        for item in params["TransactItems"]:
            ((kind, part),) = item.items()
            found.append(
                Access(f"dynamodb:{_TRANSACT_ACTIONS[kind]}", _table_arn(part["TableName"], region))
            )
        return found
    if "TableName" not in params:
        return [Access(action, "*")]  # ListTables, DescribeLimits, ...
    return [Access(action, _table_arn(params["TableName"], region, params.get("IndexName")))]


def _s3(operation: str, action: str, params: Mapping[str, Any]) -> list[Access]:
    bucket = params.get("Bucket")
    if bucket is None:
        return [Access(action, "*")]  # ListBuckets
    if operation == "DeleteObjects":
        keys = [o["Key"] for o in params["Delete"]["Objects"]]
        return [Access(action, f"arn:aws:s3:::{bucket}/{key}") for key in keys]
    if "Key" not in params:
        return [Access(action, f"arn:aws:s3:::{bucket}")]
    found = [Access(action, f"arn:aws:s3:::{bucket}/{params['Key']}")]
    if operation == "CopyObject":
        source = params["CopySource"]
        if isinstance(source, Mapping):
            source = f"{source['Bucket']}/{source['Key']}"
        found.append(Access("s3:GetObject", f"arn:aws:s3:::{str(source).lstrip('/')}"))
    return found


def _resource(service: str, params: Mapping[str, Any], region: str) -> str:
    """SQS: the queue (by its URL or name); Secrets Manager: the secret (an ARN as given, a name
    as `…:secret:<name>`, which only a wildcard matches); anything else: `*`."""
    if service == "sqs" and "QueueUrl" in params:
        account, name = urlparse(params["QueueUrl"]).path.strip("/").split("/")[-2:]
        return f"arn:aws:sqs:{region}:{account}:{name}"
    if service == "sqs" and "QueueName" in params:
        return f"arn:aws:sqs:{region}:{ACCOUNT}:{params['QueueName']}"
    if service == "secretsmanager" and "SecretId" in params:
        secret = str(params["SecretId"])
        if secret.startswith("arn:"):
            return secret
        return f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{secret}"
    return "*"


# --- attributing calls to functions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Denied:
    """A call a function made that its policy does not allow."""

    function: str
    action: str
    resource: str

    def __str__(self) -> str:
        return f"{self.function}: {self.action} on {self.resource}: {DENIED}"


@dataclass(frozen=True, slots=True)
class _Caller:
    watch: PolicyWatch
    function: str

    def on_call(self, params: Mapping[str, Any], model: Any, context: Any, **_: Any) -> None:
        """before-parameter-build on one of the function's clients."""
        try:
            found = accesses(
                model.service_model.signing_name, model.name, params, context["client_region"]
            )
        except Exception:  # the watch must never fail the call it watches
            log.exception("IAM check of %s.%s", model.service_model.signing_name, model.name)
            return
        for access in found:
            self.watch.check(self.function, access)


_acting: contextvars.ContextVar[_Caller | None] = contextvars.ContextVar(
    "relay_acting_function", default=None
)


class _Attributed:
    """The base a client class made while a function runs gets: its calls are checked."""

    _relay_caller: _Caller
    meta: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meta.events.register("before-parameter-build", self._relay_caller.on_call)


def _on_client_class(class_attributes: dict[str, Any], base_classes: list[type], **_: Any) -> None:
    caller = _acting.get()
    if caller is not None:
        class_attributes["_relay_caller"] = caller
        base_classes.insert(0, _Attributed)


_HOOK = ("creating-client-class", _on_client_class)


class PolicyWatch:
    """Checks each call a function's clients make against ``policies``; keeps what is denied
    (each distinct denial logged once, as a warning). Its botocore hook, once installed, stays:
    it does nothing for a client made while no function acts."""

    def __init__(self, policies: Policies) -> None:
        self.policies = policies
        self.denied: list[Denied] = []
        self._lock = threading.Lock()
        if _HOOK not in handlers.BUILTIN_HANDLERS:  # sessions made from now on see it
            handlers.BUILTIN_HANDLERS.append(_HOOK)

    @contextlib.contextmanager
    def acting_as(self, function: str) -> Iterator[None]:
        """Clients created within (and in tasks and threads started within) are ``function``'s."""
        token = _acting.set(_Caller(self, function))
        try:
            yield
        finally:
            _acting.reset(token)

    def check(self, function: str, access: Access) -> None:
        if self.policies.allows(function, access.action, access.resource):
            return
        denied = Denied(function, access.action, access.resource)
        with self._lock:
            if denied in self.denied:
                return
            self.denied.append(denied)
        log.warning("%s", denied)
