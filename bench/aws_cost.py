"""What relay costs on AWS per million delivered messages, from the requests the stack makes.

template.yaml's stack runs locally (infra/: moto server, emulated HttpApi and SQS event source,
lambda/*.py unchanged). Every AWS request of every client is counted with botocore hooks
(infra/meter.py) while N messages are published — one per `POST /v2/publish`, or 100 per
`POST /v2/batch` — and delivered to a local receiver; the counts become dollars at us-east-1
list prices. Lambda durations come from a second, unmetered pass (the meter's own look-ups would
slow the handlers).

    python -m bench.aws_cost [--messages 300] [--write]

``--write`` puts the results in docs/benchmarks.md between the aws-cost markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from infra.dev_aws import DEV_CREDENTIALS
from infra.emulator import LocalAws
from infra.meter import Usage

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
START, END = "<!-- aws-cost:start -->", "<!-- aws-cost:end -->"

# us-east-1 list prices (first tier), dollars per unit.
PRICE = {
    "http_api": 1.00 / 1e6,  # HTTP API request (up to 512 KB)
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second_arm": 0.0000133334,
    "sqs": 0.40 / 1e6,  # standard queue, per 64 KB chunk of a request
    "ddb_write": 0.625 / 1e6,  # on-demand write request unit
    "ddb_read": 0.125 / 1e6,  # on-demand read request unit
    "s3_put": 0.005 / 1000,
    "s3_get": 0.0004 / 1000,
}
QSTASH_PER_MILLION = 10.0
BATCH = 100


@dataclass
class Run:
    """One scenario: what N delivered messages cost the stack."""

    name: str
    messages: int
    usage: Usage
    api_calls: int  # HttpApi requests = API function invocations
    deliver_invocations: int
    batch_sizes: list[int]
    api_ms: list[float] = field(default_factory=list)  # from the unmetered pass
    deliver_ms: list[float] = field(default_factory=list)
    memory_mb: dict[str, int] = field(default_factory=dict)

    def per_message(self, value: float) -> float:
        return value / self.messages

    def costs(self, public_api: str) -> dict[str, float]:
        """Dollars per million delivered messages, by line."""
        m = 1e6 / self.messages
        billed_ms = {
            "ApiFunction": _per_call_ms(self.api_ms) * self.api_calls,
            "DeliverFunction": _per_call_ms(self.deliver_ms) * self.deliver_invocations,
        }
        gb_seconds = sum(ms / 1000 * self.memory_mb[name] / 1024 for name, ms in billed_ms.items())
        u = self.usage
        return {
            "API requests": (self.api_calls * PRICE["http_api"] if public_api == "HttpApi" else 0)
            * m,
            "Lambda requests": (self.api_calls + self.deliver_invocations)
            * PRICE["lambda_request"]
            * m,
            "Lambda GB-seconds": gb_seconds * PRICE["lambda_gb_second_arm"] * m,
            "SQS": u.sqs_billed * PRICE["sqs"] * m,
            "DynamoDB writes": u.write_units * PRICE["ddb_write"] * m,
            "DynamoDB reads": u.read_units * PRICE["ddb_read"] * m,
            "S3": (
                u.requests["s3.PutObject"] * PRICE["s3_put"]
                + u.requests["s3.GetObject"] * PRICE["s3_get"]
            )
            * m,
        }


def _per_call_ms(durations: list[float]) -> float:
    """Mean billed duration: Lambda rounds each invocation up to the millisecond."""
    return sum(math.ceil(d) for d in durations) / len(durations) if durations else 0.0


class Sink:
    """A local destination that counts deliveries."""

    def __init__(self) -> None:
        self.count = 0
        self.expected = 0  # messages published so far
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> Sink:
        async def hook(request: web.Request) -> web.Response:
            await request.read()
            self.count += 1
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def _publish(
    session: aiohttp.ClientSession, stack: LocalAws, sink: Sink, n: int, batch: bool
) -> None:
    sink.expected += n
    headers = {"Authorization": f"Bearer {DEV_CREDENTIALS['token']}"}
    body = json.dumps({"order": 42, "items": ["a", "b"], "note": "x" * 100})
    semaphore = asyncio.Semaphore(8)

    async def post(url: str, data: str, extra: dict[str, str]) -> None:
        async with semaphore, session.post(url, data=data, headers={**headers, **extra}) as r:
            assert r.status == 201, await r.text()

    if batch:
        calls = [
            post(
                f"{stack.url}/v2/batch",
                json.dumps(
                    [
                        {
                            "destination": sink.url,
                            "headers": {"Content-Type": "application/json"},
                            "body": body,
                        }
                        for _ in range(min(BATCH, n - start))
                    ]
                ),
                {"Content-Type": "application/json"},
            )
            for start in range(0, n, BATCH)
        ]
    else:
        calls = [
            post(f"{stack.url}/v2/publish/{sink.url}", body, {"Content-Type": "application/json"})
            for _ in range(n)
        ]
    await asyncio.gather(*calls)


async def _wait_delivered(stack: LocalAws, sink: Sink, timeout: float = 300) -> None:
    """Until every published message arrived and its record was deleted (outcome stored)."""
    source = stack.event_sources[0]
    total = sink.expected
    deadline = time.monotonic() + timeout
    while sink.count < total or source.deleted < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sink.count}/{total} delivered, {source.deleted} deleted")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # let the last batch's bookkeeping finish


async def _scenario(
    stack: LocalAws, sink: Sink, session: aiohttp.ClientSession, n: int, batch: bool
) -> tuple[Usage, int, int, list[int], list[float], list[float]]:
    assert stack.meter is not None
    api = stack.containers[stack.transformed.api_function or ""].invocations
    deliver = stack.containers["DeliverFunction"].invocations
    source = stack.event_sources[0]
    stack.meter.reset()
    before = (len(api.durations_ms), len(deliver.durations_ms), len(source.batches))
    empty = source.empty_receives
    await _publish(session, stack, sink, n, batch)
    await _wait_delivered(stack, sink)
    usage = stack.meter.reset()
    idle = source.empty_receives - empty  # idle polling is a fixed cost, not a per-message one
    usage.requests["sqs.ReceiveMessage"] -= idle
    usage.sqs_billed -= idle
    return (
        usage,
        len(api.durations_ms) - before[0],
        len(deliver.durations_ms) - before[1],
        source.batches[before[2] :],
        api.durations_ms[before[0] :],
        deliver.durations_ms[before[1] :],
    )


async def measure(messages: int = 300, public_api: str = "HttpApi") -> list[Run]:
    """Run both scenarios (single and batch publishes), each on a fresh stack (moto's
    TransactWriteItems copies the whole table, so a grown table would slow the handlers)."""
    runs: list[Run] = []
    for name, batch in (("single publish", False), (f"batch publish ({BATCH}/call)", True)):
        sink = await Sink().start()
        stack = await LocalAws(
            credentials=DEV_CREDENTIALS,
            meter=True,
            parameters={"PublicApi": public_api},
            tick_seconds=3600,  # the scheduler is a fixed cost: keep it out of the counts
        ).start()
        assert stack.meter is not None
        try:
            async with aiohttp.ClientSession() as session:
                # Warm every container (cold starts read the secret, learn the queue).
                await _publish(session, stack, sink, 1, batch=False)
                await _wait_delivered(stack, sink)
                stack.meter.active = False
                timing = await _scenario(stack, sink, session, messages, batch)
                stack.meter.active = True
                usage, api_calls, invocations, sizes, _, _ = await _scenario(
                    stack, sink, session, messages, batch
                )
        finally:
            await stack.stop()
            await sink.stop()
        runs.append(
            Run(
                name=name,
                messages=messages,
                usage=usage,
                api_calls=api_calls,
                deliver_invocations=invocations,
                batch_sizes=sizes,
                api_ms=timing[4],
                deliver_ms=timing[5],
                memory_mb={n: c.function.memory_mb for n, c in stack.containers.items()},
            )
        )
    return runs


def report(runs: list[Run], public_api: str = "HttpApi") -> str:
    """The markdown section for docs/benchmarks.md."""
    lines = [
        f"_Last run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Reproduce with "
        "`.venv/bin/python -m bench.aws_cost --write`._",
        "",
        f"{runs[0].messages} messages per scenario (JSON body of 140 bytes), published to the "
        "emulated HttpApi and delivered by lambda/deliver.py to a local receiver; AWS requests "
        "counted by botocore hooks on every client (relay's and the SQS event source's), DynamoDB "
        "request units from item sizes before and after each write (transactions at double "
        "price, index writes included). Idle SQS polling and cold starts are left out (fixed "
        "costs, below).",
        "",
        "### AWS requests per delivered message",
        "",
        "| request | " + " | ".join(r.name for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    keys = sorted({k for r in runs for k in r.usage.requests if r.usage.requests[k]})
    rows: list[tuple[str, list[float]]] = [
        ("HttpApi request / API Lambda invocation", [r.per_message(r.api_calls) for r in runs]),
        (
            "delivery Lambda invocation",
            [r.per_message(r.deliver_invocations) for r in runs],
        ),
    ]
    rows += [(f"`{k}`", [r.per_message(r.usage.requests[k]) for r in runs]) for k in keys]
    rows += [
        ("SQS billed requests (64 KB chunks)", [r.per_message(r.usage.sqs_billed) for r in runs]),
        ("DynamoDB write request units", [r.per_message(r.usage.write_units) for r in runs]),
        ("DynamoDB read request units", [r.per_message(r.usage.read_units) for r in runs]),
        ("records per delivery batch (mean)", [_mean(r.batch_sizes) for r in runs]),
        ("API Lambda ms per invocation (mean, billed)", [_per_call_ms(r.api_ms) for r in runs]),
        (
            "delivery Lambda ms per invocation (mean, billed)",
            [_per_call_ms(r.deliver_ms) for r in runs],
        ),
    ]
    for label, values in rows:
        lines.append(f"| {label} | " + " | ".join(f"{v:.3g}" for v in values) + " |")
    memory = runs[0].memory_mb
    lines += [
        "",
        f"### Dollars per million delivered messages ({public_api}, us-east-1 list prices)",
        "",
        "| line | " + " | ".join(r.name for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    all_costs = [r.costs(public_api) for r in runs]
    for line in all_costs[0]:
        lines.append(f"| {line} | " + " | ".join(f"${c[line]:.3f}" for c in all_costs) + " |")
    totals = [sum(c.values()) for c in all_costs]
    lines.append("| **total** | " + " | ".join(f"**${t:.2f}**" for t in totals) + " |")
    url_totals = [sum(r.costs("FunctionUrl").values()) for r in runs]
    lines.append(
        "| total with a function URL instead (no per-request API fee) | "
        + " | ".join(f"${t:.2f}" for t in url_totals)
        + " |"
    )
    lines.append(
        "| QStash pay-as-you-go ($10/M) / relay | "
        + " | ".join(f"{QSTASH_PER_MILLION / t:.1f}x" for t in totals)
        + " |"
    )
    targets = [1.40, 0.50]
    cheapest = [min(t, u) for t, u in zip(totals, url_totals, strict=True)]
    lines += [
        "",
        "Prices: HTTP API $1.00/M requests; Lambda $0.20/M requests + "
        f"${PRICE['lambda_gb_second_arm']:.10f}/GB-s on arm64 (memory: "
        + ", ".join(f"{n} {mb} MB" for n, mb in memory.items())
        + "); SQS $0.40/M per 64 KB chunk; DynamoDB on-demand $0.625/M write and $0.125/M "
        "read request units; S3 $0.005/1,000 PUT, $0.0004/1,000 GET. Durations are measured "
        "against moto on loopback (about 3 ms per call); in a region DynamoDB and SQS calls take "
        "a few milliseconds more, which moves only the GB-second line.",
        "",
        "### Targets",
        "",
        "| scenario | target | HttpApi | function URL | QStash ($10/M) / relay | |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for run, total, url_total, best, target in zip(
        runs, totals, url_totals, cheapest, targets, strict=False
    ):
        verdict = (
            "met"
            if best <= target
            else f"NOT met, even with the cheaper API (+${best - target:.2f})"
        )
        lines.append(
            f"| {run.name} | ${target:.2f} | ${total:.2f} | ${url_total:.2f} | "
            f"{QSTASH_PER_MILLION / best:.1f}x | {verdict} |"
        )
    lines += ["", *summary_lines(runs, all_costs, url_totals), "", *floor_lines(runs)]
    return "\n".join(lines)


def summary_lines(
    runs: list[Run], all_costs: list[dict[str, float]], url_totals: list[float]
) -> list[str]:
    """How far below QStash relay lands, and which lines make up the rest."""
    parts = []
    for run, costs, url_total in zip(runs, all_costs, url_totals, strict=True):
        total = sum(costs.values())
        top = sorted(costs.items(), key=lambda kv: kv[1], reverse=True)[:3]
        drivers = ", ".join(f"{name} ${value:.2f} ({value / total:.0%})" for name, value in top)
        parts.append(
            f"- **{run.name}**: ${total:.2f} per million with the HttpApi, ${url_total:.2f} "
            f"with a function URL — {QSTASH_PER_MILLION / total:.1f}x and "
            f"{QSTASH_PER_MILLION / url_total:.1f}x below QStash's $10. Largest lines: {drivers}; "
            f"{run.per_message(run.usage.write_units):.2f} write units, "
            f"{run.per_message(run.usage.sqs_billed):.2f} billed SQS requests per message."
        )
    return [
        "### What it comes to",
        "",
        *parts,
        "",
        "DynamoDB writes dominate: the message item when accepted (1 unit under 1 KB), the log "
        "index entry that lists a single publish's CREATED event (a batch shares one log page "
        "instead), the one conditional write that stores the outcome with its ACTIVE and outcome "
        "events, and the delivery batch's log page (a tenth of two units). An item over 1 KB — a "
        "large inline body, many response headers, a long retry history — costs a unit per KB "
        "at each write. Single publishes add the API's per-request fee (none with a function "
        "URL), the API function's invocation and one SQS send each. The SQS event source "
        "long-polls while it fills a batch (`DeliverBatchingWindow`): at this benchmark's rate "
        "(tens of messages a second) a receive brings about one message, at hundreds a second "
        "ten. Lambda memory stays 256 MB: GB-seconds are a small line, and 128 MB would halve "
        "the CPU share that signing and JSON run on for a few cents per million.",
    ]


def floor_lines(runs: list[Run]) -> list[str]:
    """What the targets leave for DynamoDB once the requests no design can avoid are paid, and
    what kind of storage would fit in that budget (modelled from the price table; GB-seconds
    are this run's)."""
    m = 1e6
    wru, sqs, req = PRICE["ddb_write"] * m, PRICE["sqs"] * m, PRICE["lambda_request"] * m
    # The delivery side with full batches of 10: a receive, a delete and an invocation per 10.
    deliver = 0.2 * sqs + 0.1 * req
    single, batch = runs[0], runs[1]
    gb_single = single.costs("FunctionUrl")["Lambda GB-seconds"]
    gb_batch = batch.costs("FunctionUrl")["Lambda GB-seconds"]
    fixed_url = req + sqs + deliver  # the API invocation and one SQS send per single publish
    fixed_api = PRICE["http_api"] * m + fixed_url
    left_single = 1.40 - fixed_url - gb_single
    fixed_batch = (PRICE["http_api"] * m + req) / BATCH + 0.1 * sqs + deliver
    left_batch = 0.50 - fixed_batch - gb_batch
    # The same single publish if the API wrote only DynamoDB and a stream-fed function sent
    # the SQS copies ten at a time (stream reads by Lambda are free; ~100 records/invocation).
    streamed = req + 0.1 * sqs + req / 100 + deliver + gb_single
    return [
        "### What the targets would take",
        "",
        "Whatever the storage, each message pays for the requests that carry it: with full "
        f"delivery batches, a receive, a delete and an invocation per ten (${deliver:.2f} per "
        f"million); a single publish adds its API invocation and its own SQS send "
        f"(${req + sqs:.2f}), and with the HttpApi its request fee ($1.00). So:",
        "",
        f"- **single publish through the HttpApi**: ${fixed_api:.2f} before anything is "
        "stored — above the $1.40 target with no storage at all.",
        f"- **single publish through a function URL**: ${fixed_url:.2f} + "
        f"${gb_single:.2f} GB-seconds leaves **${left_single:.2f}** for DynamoDB: "
        f"{left_single / wru:.2f} write units per message. Storing the message durably before "
        f"publish answers is 1 unit, so its outcome and its log line would have to cost "
        "nothing of their own.",
        f"- **batch publish**: ${fixed_batch:.2f} + ${gb_batch:.2f} GB-seconds leaves "
        f"**${left_batch:.2f}**: {left_batch / wru:.2f} write units per message for its "
        "acceptance, its outcome and its log lines together.",
        "",
        "Today each message has its own item: one unit to accept it, one for the conditional "
        "write that stores its outcome (and, for a single publish, one for its log index "
        "entry). Per-message items are what make a message findable by id in one read, "
        "deduplication and cancel conditional writes, and exactly one stored outcome per "
        "message. A table that fits the budgets would store messages and outcomes in shared "
        "items instead:",
        "",
        "- a batch as **one compressed item** (a hundred 140-byte messages fit in a few KB: "
        "a few units for all of them, ~0.05 a message), its message ids naming that item;",
        "- **outcomes written once per delivery batch**, as one item in the partition of each "
        "accept the batch's messages came from, so a message is still found by its id (one "
        "Query of its accept's partition: the accept, its outcomes, any cancel) — 0.1 to "
        "0.2 units a message, so a batch publish lands at the edge of its budget;",
        "- for single publishes, accepts **grouped into time-bucket partitions** so that a "
        "delivery batch's outcomes land in one or two shared items, and the bucket itself is "
        "the log listing (no index entry) — plus, to stay under $1.40, the API writing only "
        "DynamoDB and a function on the table's stream sending the SQS copies ten at a time: "
        f"that single publish would cost about ${streamed:.2f} + ${wru:.2f} (its accept) + a "
        f"share of an outcome item ≈ ${streamed + wru * 1.15:.2f}.",
        "",
        "What that trades away: a retried, cancelled or deduplicated message needs an item of "
        "its own again (the shared item only covers the happy path); two copies of a message "
        "attempted at once can each store an outcome (readers keep the first); a time bucket "
        "takes all single publishes of its second, so its partition's write limit (1,000 "
        "units a second) caps single publishes per bucket; and every read path (logs, "
        "console, DLQ, bulk cancel, workflow runs) learns the second layout. Not built: it is a "
        "different table design, for the issue's author to choose.",
    ]


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def write(section: str, doc: Path = DOC) -> None:
    """Replace the text between the aws-cost markers (appending the section the first time)."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{START}\n{section}\n{END}"
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Cost on AWS\n\n" + block + "\n"
    doc.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.aws_cost", description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--public-api", choices=["HttpApi", "FunctionUrl"], default="HttpApi")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    runs = asyncio.run(measure(args.messages, args.public_api))
    section = report(runs, args.public_api)
    print(section)
    if args.write:
        write(section)
        print(f"\nwritten to {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
