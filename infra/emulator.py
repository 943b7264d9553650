"""template.yaml run locally: its resources on a moto server, its functions in-process, each in
its own "container" (its handler module loaded on its own, invoked on its own thread), and the
parts of AWS that call them played faithfully enough for the handlers to run unchanged:

- the HttpApi (or function URL): HTTP request → payload 2.0 event → handler → HTTP response;
- the SQS event source mapping: ReceiveMessage → `{"Records": [...]}` batch → handler; records
  the handler does not list in `batchItemFailures` are deleted, the others return to the queue
  when their visibility timeout ends; a handler that raises leaves the whole batch to return;
- the schedule: the scheduler function every ``tick_seconds``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import logging
import math
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import boto3
from aiohttp import web

from infra import limits, moto_fixes
from infra.meter import AwsMeter
from infra.policies import Denied, Policies, PolicyWatch
from infra.stack import Deployed, LocalStack
from infra.template import Function, Transformed, rate_seconds, transform_template

log = logging.getLogger("infra.emulator")

REGION = "us-east-1"
HTTP_API_MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded")


class LambdaContext:
    """The parts of Lambda's context object handlers use."""

    def __init__(self, function: Function, name: str) -> None:
        self.function_name = name
        self.memory_limit_in_mb = function.memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + function.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Invocations:
    """Invocations of one function and how long each took (for the cost model)."""

    durations_ms: list[float] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    errors: int = 0


class Container:
    """One function's execution environment: its module, loaded on its own, on one thread.
    With a ``watch``, the AWS calls of clients made while it loads or runs are checked against
    the function's policy."""

    def __init__(self, function: Function, name: str, watch: PolicyWatch | None = None) -> None:
        self.function = function
        self.name = name
        self.watch = watch
        self.module: ModuleType
        self.handler: Any
        self._load()
        # One thread: a container runs one invocation at a time, on the loop it keeps.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=function.logical_id)
        self.invocations = Invocations()

    def _acting(self) -> contextlib.AbstractContextManager[None]:
        if self.watch is None:
            return contextlib.nullcontext()
        return self.watch.acting_as(self.function.logical_id)

    def _load(self) -> None:
        with self._acting():  # module-level code is the function's too (a cold start)
            self._exec_module()

    def _exec_module(self) -> None:
        module_name, _, attr = self.function.handler.rpartition(".")
        path = self.function.code_dir / f"{module_name}.py"
        spec = importlib.util.spec_from_file_location(f"_lambda_{self.function.logical_id}", path)
        assert spec is not None and spec.loader is not None
        self.module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.module)
        self.handler = getattr(self.module, attr)

    async def cold_start(self) -> None:
        """Replace the execution environment, as Lambda does: the old one is closed and the
        module loaded afresh, between two invocations (on the container's one thread)."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._restart)

    def _restart(self) -> None:
        runtime = getattr(self.module, "runtime", None)
        if runtime is not None and hasattr(runtime, "close"):
            runtime.close()
        self._load()

    async def invoke(self, event: dict[str, Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, event)

    def _call(self, event: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            with self._acting():
                result = self.handler(event, LambdaContext(self.function, self.name))
            self.invocations.results.append(result)
            return result
        except Exception:
            self.invocations.errors += 1
            raise
        finally:
            self.invocations.durations_ms.append((time.perf_counter() - started) * 1000)

    async def close(self) -> None:
        runtime = getattr(self.module, "runtime", None)
        if runtime is not None and hasattr(runtime, "close"):
            await asyncio.get_running_loop().run_in_executor(self._thread, runtime.close)
        self._thread.shutdown(wait=True)


# --- the HttpApi ---------------------------------------------------------------------------------


def http_api_event(request: web.Request, body: bytes) -> dict[str, Any]:
    """The payload 2.0 event API Gateway sends for ``request``."""
    path, _, query = request.raw_path.partition("?")
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    cookies = [c.strip() for c in headers.pop("cookie", "").split(";") if c.strip()]
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": request.host,
            "domainPrefix": request.host.split(".")[0],
            "http": {
                "method": request.method,
                "path": path,
                "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
                "sourceIp": request.remote or "127.0.0.1",
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        params: dict[str, str] = {}
        for key, value in request.query.items():
            params[key] = f"{params[key]},{value}" if key in params else value
        event["queryStringParameters"] = params
    if body:
        textual = headers.get("content-type", "").lower().startswith(_TEXT_TYPES)
        try:
            text = body.decode("utf-8") if textual else None
        except UnicodeDecodeError:
            text = None
        if text is None:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
        else:
            event["body"] = text
    return event


def http_response(result: Any) -> web.Response:
    """The HTTP response API Gateway makes of a payload 2.0 proxy result."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # Payload 2.0 infers a 200 JSON response from anything else.
        return web.Response(status=200, text=json.dumps(result), content_type="application/json")
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    response = web.Response(status=int(result["statusCode"]), body=body)
    for name, value in (result.get("headers") or {}).items():
        response.headers[name] = str(value)
    for cookie in result.get("cookies") or []:
        response.headers.add("Set-Cookie", cookie)
    return response


def http_api_app(container: Container) -> web.Application:
    async def entry(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if len(body) > HTTP_API_MAX_BODY:
            return web.json_response({"message": "Request Entity Too Large"}, status=413)
        try:
            result = await container.invoke(http_api_event(request, body))
        except Exception:
            log.exception("the API function failed")
            return web.json_response({"message": "Internal Server Error"}, status=500)
        return http_response(result)

    app = web.Application(client_max_size=HTTP_API_MAX_BODY + 1)
    app.router.add_route("*", "/{tail:.*}", entry)
    return app


# --- the SQS event source mapping ----------------------------------------------------------------


def sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """One record of an SQS event, as the event source mapping builds it."""
    attributes = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        attribute: dict[str, Any] = {
            "dataType": value["DataType"],
            "stringListValues": [],
            "binaryListValues": [],
        }
        if "StringValue" in value:
            attribute["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        attributes[name] = attribute
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


class SqsEventSource:
    """Polls a queue and invokes a function with batches, as Lambda's event source mapping does."""

    def __init__(
        self,
        container: Container,
        queue_url: str,
        *,
        batch_size: int,
        report_failures: bool,
        endpoint_url: str,
        wait_seconds: int = 1,
        batching_window: float = 0.0,
    ) -> None:
        self.container = container
        self.queue_url = queue_url
        self.batch_size = batch_size
        self.batching_window = batching_window
        self.report_failures = report_failures
        self.wait_seconds = wait_seconds
        self.sqs = boto3.session.Session().client("sqs", endpoint_url=endpoint_url)
        self.queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        self.empty_receives = 0  # idle polling: a fixed cost, not a cost per message
        self.batches: list[int] = []  # records per invocation
        self.deleted = 0  # records deleted after their batch succeeded
        self._stopping = threading.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.poll_once()
            except Exception:
                log.exception("polling %s failed", self.queue_url)
                await asyncio.sleep(0.5)

    async def poll_once(self) -> None:
        received = await asyncio.to_thread(
            self.sqs.receive_message,
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(10, self.batch_size),
            WaitTimeSeconds=self.wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = received.get("Messages", [])
        if not messages:
            self.empty_receives += 1
            return
        # With a batching window, Lambda's poller keeps receiving until the batch is full or
        # the window (counted from the first record) has passed; every receive is billed.
        deadline = time.monotonic() + self.batching_window
        while len(messages) < self.batch_size and time.monotonic() < deadline:
            more = await asyncio.to_thread(
                self.sqs.receive_message,
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                WaitTimeSeconds=max(1, min(20, math.ceil(deadline - time.monotonic()))),
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages += more.get("Messages", [])
        self.batches.append(len(messages))
        records = [sqs_record(m, self.queue_arn) for m in messages]
        try:
            result = await self.container.invoke({"Records": records})
        except Exception:
            log.exception("the delivery function failed: the batch returns after its visibility")
            return
        failed = self._failed_ids(result, {r["messageId"] for r in records})
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            await asyncio.to_thread(
                self.sqs.delete_message_batch,
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )
            self.deleted += len(chunk)

    def _failed_ids(self, result: Any, ids: set[str]) -> set[str]:
        """The records that return to the queue. As on Lambda: an invalid partial batch response
        (or an unknown id) fails the whole batch."""
        if not self.report_failures:
            return set()
        if result is None or (isinstance(result, dict) and not result.get("batchItemFailures")):
            return set()
        try:
            failed = {str(item["itemIdentifier"]) for item in result["batchItemFailures"]}
        except (KeyError, TypeError):
            return ids
        return failed if failed <= ids else ids

    def stop(self) -> None:
        self._stopping.set()


# --- the whole stack ---------------------------------------------------------------------------


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class LocalAws:
    """template.yaml on moto, served on ``host:port``: start(), then url / credentials."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        parameters: dict[str, str] | None = None,
        allow_private: bool = True,
        credentials: dict[str, str] | None = None,
        tick_seconds: float | None = None,
        visibility_timeout: int | None = None,
        meter: bool = False,
        stack_name: str = "relay",
    ) -> None:
        """``credentials`` ({"token", "currentSigningKey", "nextSigningKey"}) replace the ones
        generated at deploy. ``tick_seconds`` replaces the schedule's rate, ``visibility_timeout``
        the dispatch queue's (so that tests see failed records return in seconds)."""
        self.host = host
        self.port = port
        self.parameters = parameters or {}
        self.allow_private = allow_private
        self.credentials = credentials
        self.tick_seconds = tick_seconds
        self.visibility_timeout = visibility_timeout
        self.stack_name = stack_name
        self.meter: AwsMeter | None = None
        self.policy_watch: PolicyWatch | None = None
        self._want_meter = meter
        self.containers: dict[str, Container] = {}
        self.event_sources: list[SqsEventSource] = []
        self.deployed: Deployed
        self.transformed: Transformed
        self.endpoint_url = ""
        self._moto: Any = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._source_tasks: list[asyncio.Task[None]] = []
        self._env: contextlib.ExitStack | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> LocalAws:
        from moto.server import ThreadedMotoServer

        moto_fixes.apply()
        limits.install()  # requests AWS would reject fail here too (moto accepts them)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._env = contextlib.ExitStack()
        self._env.enter_context(
            _environment(
                {
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_SESSION_TOKEN": "testing",
                    "AWS_DEFAULT_REGION": REGION,
                    "AWS_REGION": REGION,
                }
            )
        )
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        self.transformed = transform_template(self.parameters)
        if self.visibility_timeout is not None:
            for trigger in self.transformed.sqs_triggers:
                queue = self.transformed.resources[trigger.queue_arn["Fn::GetAtt"][0]]
                queue["Properties"]["VisibilityTimeout"] = self.visibility_timeout
        stack = LocalStack(self.transformed, self.endpoint_url, self.stack_name)
        self.deployed = await asyncio.to_thread(stack.deploy)
        if self.credentials is not None:
            secret = self.deployed.environments[next(iter(self.deployed.environments))][
                "RELAY_CREDENTIALS_SECRET"
            ]
            await asyncio.to_thread(
                stack.client("secretsmanager").put_secret_value,
                SecretId=secret,
                SecretString=json.dumps(self.credentials),
            )
        environments = list(self.deployed.environments.values())
        if any(env != environments[0] for env in environments):
            raise RuntimeError("in-process functions share one environment; the template differs")
        # What a function sees on AWS, plus the endpoint of moto for every boto3 client.
        function_env = {**environments[0], "AWS_ENDPOINT_URL": self.endpoint_url}
        if self.allow_private:
            function_env["RELAY_ALLOW_PRIVATE_DESTINATIONS"] = "true"
        self._env.enter_context(_environment(function_env))
        if self._want_meter:
            self.meter = AwsMeter(self.endpoint_url).install()

        t = self.transformed
        self.policy_watch = PolicyWatch(
            Policies.of_stack(
                self.deployed.statements,
                {name: function.managed_policies for name, function in t.functions.items()},
            )
        )
        for name, function in t.functions.items():
            self.containers[name] = Container(
                function, f"{self.stack_name}-{name}", self.policy_watch
            )
        for trigger, queue_url in zip(
            t.sqs_triggers, self.deployed.trigger_queue_urls, strict=True
        ):
            source = SqsEventSource(
                self.containers[trigger.function],
                queue_url,
                batch_size=trigger.batch_size,
                batching_window=trigger.batching_window,
                report_failures=trigger.report_failures,
                endpoint_url=self.endpoint_url,
            )
            self.event_sources.append(source)
            self._source_tasks.append(asyncio.create_task(source.run()))
        for function, rate in t.schedules.items():
            every = self.tick_seconds if self.tick_seconds is not None else rate_seconds(rate)
            self._tasks.append(asyncio.create_task(self._tick(self.containers[function], every)))
        if t.api_function is not None:
            app = http_api_app(self.containers[t.api_function])
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            if self.port == 0:
                self.port = self._runner.addresses[0][1]
        return self

    async def _tick(self, container: Container, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            event = {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "region": REGION,
                "resources": [],
                "detail": {},
            }
            try:
                await container.invoke(event)
            except Exception:
                log.exception("the scheduler function failed")

    @property
    def denied(self) -> list[Denied]:
        """The AWS calls the functions made that their policies in template.yaml do not allow."""
        return [] if self.policy_watch is None else list(self.policy_watch.denied)

    def token_and_keys(self) -> tuple[str, str, str]:
        """The credentials the stack serves with (as `relay aws-env` reads them)."""
        from relay.aws_runtime import parse_credentials, read_secret

        environment = next(iter(self.deployed.environments.values()))
        token, keys = parse_credentials(read_secret(environment["RELAY_CREDENTIALS_SECRET"]))
        return token, keys.current, keys.next

    async def stop(self) -> None:
        for source in self.event_sources:
            source.stop()
        # Let each event source finish its batch (as a drained Lambda would), then cancel.
        if self._source_tasks:
            await asyncio.wait(self._source_tasks, timeout=5)
        for task in self._tasks + self._source_tasks:
            task.cancel()
        for task in self._tasks + self._source_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
        for container in self.containers.values():
            await container.close()
        if self.meter is not None:
            self.meter.uninstall()
        if self._moto is not None:
            # moto keeps its state per process, not per server: forget this stack.
            with contextlib.suppress(OSError):
                urllib.request.urlopen(
                    urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
                ).close()
            self._moto.stop()
        if self._env is not None:
            self._env.close()
