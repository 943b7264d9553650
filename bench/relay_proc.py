"""Start the embedded relay as a subprocess: ``relay dev --port P --db <tmpdir>/relay.db``.

``relay dev`` allows loopback destinations and uses the QStash dev credentials (bench.common.DEV_*).
If ``.venv/bin/relay`` is not installed yet, ``relay.cli:main`` is invoked through the interpreter.
``BENCH_RELAY_CMD`` (shell words) replaces the ``relay`` command, e.g. to benchmark another build.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from bench.common import (
    DEV_CURRENT_KEY,
    DEV_NEXT_KEY,
    DEV_TOKEN,
    HOST,
    PYTHON,
    ROOT,
    ManagedProcess,
    free_port,
    wait_http,
)

RELAY_MISSING = "the relay server (relay/http/app.py, relay CLI) is missing"


def relay_command() -> list[str]:
    override = os.environ.get("BENCH_RELAY_CMD")
    if override:
        return shlex.split(override)
    script = Path(PYTHON).with_name("relay")
    if script.exists():
        return [str(script)]
    if (ROOT / "relay" / "cli.py").exists():
        return [PYTHON, "-c", "import sys; from relay.cli import main; sys.exit(main())"]
    raise FileNotFoundError(
        f"neither {script} nor relay/cli.py exists; install the project (make dev) first"
    )


def relay_available() -> bool:
    try:
        relay_command()
    except FileNotFoundError:
        return False
    return "BENCH_RELAY_CMD" in os.environ or (ROOT / "relay" / "http" / "app.py").exists()


class RelayProcess:
    """A ``relay dev`` server on a free port with a fresh SQLite file, stopped on exit."""

    token = DEV_TOKEN
    keys: tuple[str, str] = (DEV_CURRENT_KEY, DEV_NEXT_KEY)

    def __init__(self, port: int | None = None, extra_args: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-relay-"))
        self.db = self.tmp / "relay.db"
        argv = [*relay_command(), "dev", "--port", str(self.port), "--db", str(self.db)]
        self.process = ManagedProcess("relay", [*argv, *(extra_args or [])])

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def __aenter__(self) -> RelayProcess:
        self.process.start()
        try:
            await wait_http(f"{self.base}/", self.process, timeout=30)
        except BaseException:
            self.process.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.process.stop(timeout=10)
        if exc_type is not None:
            print(f"--- relay log ({self.process.log_path}) ---\n{self.process.log_tail(40)}")
        else:
            self.process.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)
