"""What one Lambda execution environment builds once and keeps: an event loop, the AWS backend,
the service (with the token and initial signing keys read once from Secrets Manager) and one
aiohttp session for deliveries. ``lambda/*.py`` are thin wrappers around :class:`LambdaRuntime`.

Signing keys: the secret holds the initial pair; `POST /v2/keys/rotate` stores the rotated pair
in the table's settings item, the one source of truth (``RelayService.load_keys``). The delivery
function reads it once per SQS batch, overlapped with the batch's leases, so a container that
started before a rotation signs its next batch with the new current key: one consistent GetItem
(1 read request unit, $0.125 per million) per delivery invocation. Measured with bench.aws_cost:
0.45 GetItem per message for single publishes (2.5 records per batch), 0.29 for batch publishes,
i.e. $0.06 and $0.04 per million messages, under 1% of the total. The API function reads it
only for `/v2/keys` and the rotation itself; publishing never does, and the scheduler does not
sign. A time-based cache was rejected: it would sign with the old current key for up to its
lifetime after a rotation, and receivers that took the new pair reject that.

Wake-ups: the dispatch queue also carries records that wake a pass at its deadline (waiter
timeouts: ``AwsBackend.wake_at``); the backend knows none of the service's passes, so its
``lease_record`` raises ``TimerDue`` and :meth:`Relay.deliver` runs the pass named in ``TIMERS``
(the same code the scheduler's tick runs), then lets the record be deleted.

Lambda calls a synchronous handler; the runtime keeps one event loop per container and runs
each invocation on it, so that the aiohttp session and its pooled connections (bound to that
loop) survive from one invocation to the next.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp

from relay import scheduling, webhooks
from relay.backends.aws import AwsBackend, LeaseDeferred, TimerDue
from relay.clock import Clock, SystemClock
from relay.config import Settings
from relay.delivery import Deliverer
from relay.destinations import connector_options
from relay.http.lambda_adapter import ProxyResult, handle_event
from relay.metrics import Metrics
from relay.service import RelayService, keys_in_force
from relay.signing import SigningKeys
from relay.tokens import client_token
from relay.workflows import waiter_index, waiters

log = logging.getLogger("relay.aws")
T = TypeVar("T")

# A generated secret (template.yaml's GenerateSecretString) is 128 letters and digits: the token
# is the first 40, the signing keys are `sig_` + the next 28 and the 28 after, and the last 32
# are the bytes of the Standard Webhooks `whsec_` secret.
_TOKEN, _CURRENT, _NEXT, _WEBHOOK = slice(0, 40), slice(40, 68), slice(68, 96), slice(96, 128)

Pass = Callable[[RelayService, int], Awaitable[object]]
TIMERS: dict[str, Pass] = {waiter_index.TIMER: waiters.expire}  # wake-up name → the pass it runs


def parse_credentials(secret: str) -> tuple[str, SigningKeys]:
    """The token and signing keys from the secret's value: the 128 characters generated at
    deploy, or JSON ``{"token", "currentSigningKey", "nextSigningKey"}`` (optionally
    ``"webhookSecret"`` and ``"webhookKeys"``), set by hand — to keep QStash's keys when moving
    from QStash, or to rotate."""
    text = secret.strip()
    if text.startswith("{"):
        data = json.loads(text)
        webhook_secret = data.get("webhookSecret")
        return data["token"], SigningKeys(
            data["currentSigningKey"],
            data["nextSigningKey"],
            webhooks.check_secret(webhook_secret) if webhook_secret else None,
            tuple(data.get("webhookKeys") or ()),
        )
    if len(text) < _WEBHOOK.stop or not text.isalnum():
        raise ValueError("the credentials secret is neither 128 letters and digits nor JSON")
    webhook_secret = webhooks.SECRET_PREFIX + base64.b64encode(text[_WEBHOOK].encode()).decode()
    return text[_TOKEN], SigningKeys("sig_" + text[_CURRENT], "sig_" + text[_NEXT], webhook_secret)


def env_lines(url: str, token: str, keys: SigningKeys) -> list[str]:
    """The four lines `relay dev` prints, for the SDKs' environment."""
    return [
        f"QSTASH_URL={url}",
        f"QSTASH_TOKEN={client_token(token)}",
        f"QSTASH_CURRENT_SIGNING_KEY={keys.current}",
        f"QSTASH_NEXT_SIGNING_KEY={keys.next}",
    ]


def read_secret(secret_id: str, session: Any = None) -> str:
    """The secret's current value (one GetSecretValue call)."""
    import boto3

    client = (session or boto3.session.Session()).client("secretsmanager")
    return str(client.get_secret_value(SecretId=secret_id)["SecretString"])


def stack_env_lines(stack: str, region: str | None = None) -> list[str]:
    """The QSTASH_* lines of a stack deployed from template.yaml: its ApiUrl output, the token
    in its secret and the signing keys in force (for `relay aws-env`)."""
    import boto3

    session = boto3.session.Session(region_name=region)
    described = session.client("cloudformation").describe_stacks(StackName=stack)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Stacks"][0]["Outputs"]}
    token, initial = parse_credentials(read_secret(outputs["CredentialsSecret"], session))

    async def in_force() -> SigningKeys:
        backend = AwsBackend(outputs["TableName"], outputs["DispatchQueueUrl"], session=session)
        try:
            return await keys_in_force(backend, initial)
        finally:
            await backend.close()

    return env_lines(outputs["ApiUrl"], token, asyncio.run(in_force()))


class _LeaseLost(Exception):
    """The outcome of an attempt was not stored because its lease had ended."""


class Relay:
    """An opened relay on AWS: backend, service and the delivery session of one container."""

    def __init__(
        self,
        backend: AwsBackend,
        service: RelayService,
        session: aiohttp.ClientSession,
        boto: Any,
    ) -> None:
        self.backend = backend
        self.service = service
        self.session = session
        self.deliverer = Deliverer(service, session)
        self._boto = boto
        self._visibility_known = False
        # CloudWatch dimensions of the EMF lines: one stack's figures apart from another's.
        self.metric_dimensions = {"Stack": "relay"}

    async def api(self, event: Mapping[str, Any]) -> ProxyResult:
        """Answer one API Gateway HTTP API / function URL event."""
        return await handle_event(
            self.service, event, max_request_bytes=self.service.settings.max_request_bytes
        )

    async def deliver(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Deliver one SQS batch concurrently; the partial batch response lists the records
        whose outcome was not stored (they come back after the visibility timeout).

        A record is a success once its outcome is stored — delivered, re-enqueued with the
        retry backoff, or failed to relay's DLQ — or when it needs no delivery (cancelled or
        already finished): the event source mapping then deletes it.
        """
        if not self._visibility_known:
            await self._learn_visibility()
        # The keys in force (a rotation by any container), read while the records are leased;
        # the batch's log lines go to shared log pages, written once the outcomes are stored.
        keys = asyncio.ensure_future(self.service.load_keys())
        passes: dict[str, asyncio.Future[None]] = {}  # the batch's wake-ups: one run per pass
        async with self.backend.log_batch():
            results = await asyncio.gather(
                *(self._deliver_record(record, keys, passes) for record in records),
                return_exceptions=True,
            )
        await asyncio.gather(keys, return_exceptions=True)  # settled, even if no record used them
        failures = []
        for record, result in zip(records, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, LeaseDeferred | _LeaseLost):
                    log.error(
                        "record %s: outcome not stored, it comes back after its visibility timeout",
                        record.get("messageId"),
                        exc_info=result,
                    )
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    async def _learn_visibility(self) -> None:
        """A record's lease lasts as long as the queue hides it: read the queue's visibility
        timeout (once per container) rather than keep a second copy of the number."""
        assert self.backend.queue_url is not None
        sqs = self._boto.client("sqs")
        answer = await asyncio.to_thread(
            sqs.get_queue_attributes,
            QueueUrl=self.backend.queue_url,
            AttributeNames=["VisibilityTimeout"],
        )
        self.backend.record_visibility = int(answer["Attributes"]["VisibilityTimeout"]) * 1000
        self._visibility_known = True

    async def _deliver_record(
        self,
        record: Mapping[str, Any],
        keys: Awaitable[SigningKeys],
        passes: dict[str, asyncio.Future[None]],
    ) -> None:
        now = self.service.clock.now_ms()
        try:
            lease = await self.backend.lease_record(record, now)
        except TimerDue as due:
            # Wake-ups due together (deadlines in the same second) share one run of their pass.
            if due.timer not in passes:
                passes[due.timer] = asyncio.ensure_future(self.wake(due.timer, now))
            await passes[due.timer]
            return
        if lease is None:
            return
        await keys  # never sign with keys older than this batch
        if not await self.deliverer.deliver(lease):
            # Another lease took the message over (or it was cancelled): keep this copy; the
            # backend drops it on its next receipt if nothing is left to do.
            raise _LeaseLost(lease.message.id)

    async def wake(self, timer: str, now: int) -> None:
        """Run the pass a wake-up names (an unknown name, from another version: nothing)."""
        run = TIMERS.get(timer)
        if run is None:
            log.warning("dropping a wake-up of an unknown pass %r", timer)
            return
        await run(self.service, now)

    async def tick(self) -> dict[str, Any]:
        """Fire the cron schedules that are due (so on AWS a fire is up to a minute late), run
        the workflow passes (waiter timeouts and their wake-ups, recovery) and move what came
        due (long delays, long retry backoffs) to the dispatch queue."""
        now = self.service.clock.now_ms()
        fired = (await scheduling.tick(self.service, now)).fired
        moved = await self.backend.promote_due(now)
        # Once a minute, the queue gauges (the API and delivery functions only count).
        self.service.metrics.observe_queue(await self.backend.queue_stats(now), now)
        return {"fired": fired, "promoted": moved}

    def flush_metrics(self) -> None:
        """Write what this invocation counted as CloudWatch EMF lines (stdout is the log)."""
        lines = self.service.metrics.drain_emf(
            dimensions=self.metric_dimensions, now=self.service.clock.now_ms()
        )
        if lines:
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()

    async def close(self) -> None:
        await self.session.close()
        await self.backend.close()


async def open_relay(
    environ: Mapping[str, str], *, clock: Clock | None = None, boto_session: Any = None
) -> Relay:
    """Build and open the relay a container serves, from the function's environment."""
    import boto3

    settings = Settings()
    boto = boto_session or boto3.session.Session()
    secret = await asyncio.to_thread(read_secret, environ["RELAY_CREDENTIALS_SECRET"], boto)
    token, keys = parse_credentials(secret)
    backend = AwsBackend.from_env(environ, session=boto, retention_days=settings.retention_days)
    await backend.open()
    allow_private = settings.allow_private_destinations
    service = RelayService(
        backend,
        settings,
        keys=keys,
        token=token,
        clock=clock or SystemClock(),
        allow_private=allow_private,
        metrics=Metrics(emf=True),
    )
    connector = aiohttp.TCPConnector(
        limit=settings.delivery_concurrency, **connector_options(allow_private)
    )
    # No cookie jar: a destination's cookies must not travel with later deliveries.
    session = aiohttp.ClientSession(
        connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    )
    relay = Relay(backend, service, session, boto)
    relay.metric_dimensions = {"Stack": environ.get("RELAY_STACK_NAME") or "relay"}
    return relay


class LambdaRuntime:
    """The per-container state of one function: built on the first invocation, then reused.

    Each handler module makes one; the local emulator loads each function's module on its own,
    so that, as on Lambda, every function has its own container.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        opener: Callable[[Mapping[str, str]], Awaitable[Relay]] | None = None,
    ) -> None:
        self._environ = environ
        self._opener = opener or open_relay
        self._loop: asyncio.AbstractEventLoop | None = None
        self._relay: Relay | None = None

    def run(self, work: Callable[[Relay], Awaitable[T]]) -> T:
        """Run ``work`` on this container's loop, opening the relay on first use."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self._run(work))

    async def _run(self, work: Callable[[Relay], Awaitable[T]]) -> T:
        if self._relay is None:
            self._relay = await self._opener(os.environ if self._environ is None else self._environ)
        try:
            return await work(self._relay)
        finally:
            self._relay.flush_metrics()

    def close(self) -> None:
        """Release the session, backend and loop (Lambda never does; the emulator does)."""
        if self._loop is None:
            return
        if self._relay is not None:
            self._loop.run_until_complete(self._relay.close())
            self._relay = None
        self._loop.close()
        self._loop = None
