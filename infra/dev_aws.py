"""`make dev-aws`: template.yaml's stack on a local moto server, served on 127.0.0.1 — the
HttpApi, the SQS event source and the schedule emulated, the Lambda handlers run unchanged.
Like `relay dev`, it uses the QStash dev server's credentials, allows loopback destinations and
prints the four QSTASH_* lines."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from infra.emulator import LocalAws
from relay import protocol as p
from relay.aws_runtime import env_lines
from relay.signing import SigningKeys

DEV_CREDENTIALS = {
    "token": p.DEV_TOKEN,
    "currentSigningKey": p.DEV_CURRENT_SIGNING_KEY,
    "nextSigningKey": p.DEV_NEXT_SIGNING_KEY,
    "webhookSecret": p.DEV_WEBHOOK_SECRET,
}


async def serve(args: argparse.Namespace) -> None:
    parameters = {"PublicApi": args.public_api}
    if args.batching_window is not None:
        parameters["DeliverBatchingWindow"] = args.batching_window
    local = LocalAws(
        host=args.host,
        port=args.port,
        parameters={
            "PublicApi": args.public_api,
            **(
                {}
                if args.batching_window is None
                else {"DeliverBatchingWindow": args.batching_window}
            ),
        },
        credentials=DEV_CREDENTIALS,
        tick_seconds=args.tick_seconds,
    )
    await local.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = "localhost" if args.host in ("127.0.0.1", "0.0.0.0", "::") else args.host
    token, current, following = local.token_and_keys()
    print(
        f"relay dev-aws running at {local.url} ({args.public_api} emulated; "
        f"moto at {local.endpoint_url})"
    )
    for line in env_lines(f"http://{host}:{local.port}", token, SigningKeys(current, following)):
        print(line)
    sys.stdout.flush()
    await stop.wait()
    print("relay dev-aws: shutting down")
    await local.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.dev_aws", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--public-api", choices=["HttpApi", "FunctionUrl"], default="HttpApi")
    parser.add_argument(
        "--tick-seconds",
        type=float,
        default=None,
        help="run the scheduler this often (default: the template's schedule, every minute)",
    )
    parser.add_argument(
        "--batching-window",
        default=None,
        help="seconds the SQS event source gathers records (default: the template's, 1)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("botocore", "werkzeug", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"relay dev-aws: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
