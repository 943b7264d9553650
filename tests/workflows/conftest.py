"""The relays the Python-SDK workflow scenarios run against: each a context manager giving a
``Target`` (URL, token, signing keys). Another stack joins by adding an entry to ``TARGETS``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

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


TARGETS: dict[str, Callable[[Path], AbstractContextManager[Target]]] = {"relay-dev": relay_dev}


@pytest.fixture(scope="module", params=sorted(TARGETS))
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    with TARGETS[request.param](tmp_path_factory.mktemp(request.param)) as running:
        yield running
