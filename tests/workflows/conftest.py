"""The relays the Python-SDK workflow scenarios run against: each a context manager giving a
``Target`` (URL, token, signing keys). Another stack joins by adding an entry to ``TARGETS``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from infra.policies import DENIED
from tests.conftest import assert_within_policies
from tests.e2e.process import RelayProcess
from tests.workflows.apps import Target


@contextmanager
def relay_dev(tmp: Path) -> Iterator[Target]:
    """A real `relay dev` process on its own database."""
    relay = RelayProcess(tmp / "relay.db").start()
    try:
        yield Target(
            url=relay.url,
            token=relay.env["QSTASH_TOKEN"],
            current_signing_key=relay.env["QSTASH_CURRENT_SIGNING_KEY"],
            next_signing_key=relay.env["QSTASH_NEXT_SIGNING_KEY"],
        )
    finally:
        relay.stop()


@contextmanager
def aws_stack(tmp: Path) -> Iterator[Target]:
    """template.yaml's stack on a moto server (`make dev-aws`, infra/): the HttpApi calls
    lambda/api.py, the SQS event source lambda/deliver.py (a sleep is SQS DelaySeconds, a wait's
    timeout an SQS wake-up), the scheduler on the template's schedule (every minute: nothing
    here waits for it); loopback destinations allowed."""
    log = (tmp / "dev-aws.log").open("w")
    command = [sys.executable, "-m", "infra.dev_aws", "--port", "0"]  # it prints the port
    command += ["--batching-window", "0"]  # invoke at once: the window only adds latency here
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        env: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while "QSTASH_NEXT_SIGNING_KEY" not in env:
            line = process.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError(f"dev-aws did not start: see {tmp / 'dev-aws.log'}")
            name, sep, value = line.strip().partition("=")
            if sep and name.startswith("QSTASH_"):
                env[name] = value
        port = env["QSTASH_URL"].rsplit(":", 1)[1]
        yield Target(
            url=f"http://127.0.0.1:{port}",
            token=env["QSTASH_TOKEN"],
            current_signing_key=env["QSTASH_CURRENT_SIGNING_KEY"],
            next_signing_key=env["QSTASH_NEXT_SIGNING_KEY"],
        )
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    # dev-aws logs each call a function's policy does not allow (infra/policies.py).
    text = (tmp / "dev-aws.log").read_text()
    assert_within_policies(line for line in text.splitlines() if DENIED in line)


TARGETS: dict[str, Callable[[Path], AbstractContextManager[Target]]] = {
    "relay-dev": relay_dev,
    "aws-stack": aws_stack,
}


@pytest.fixture(scope="module", params=sorted(TARGETS))
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    with TARGETS[request.param](tmp_path_factory.mktemp(request.param)) as running:
        yield running
