"""SQS event source → one delivery attempt per record, concurrently on one aiohttp session; a
record that is a due wake-up (a workflow wait's timeout) runs its pass instead (relay.aws_runtime).

Returns the partial batch response (`ReportBatchItemFailures`): the event source mapping
deletes every record not listed. Retries are not failures: relay re-enqueues them itself with
QStash's backoff, so SQS redrive (to the dispatch DLQ) is left for records that crash.
"""

from __future__ import annotations

from typing import Any

from relay.aws_runtime import LambdaRuntime

runtime = LambdaRuntime()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return runtime.run(lambda relay: relay.deliver(event["Records"]))
