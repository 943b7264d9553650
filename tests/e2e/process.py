"""A real ``relay`` process for end-to-end tests: started as a user would, killed as a crash."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RelayProcess:
    """``python -m relay <command> --port P --db PATH``, with the lines it prints at start."""

    def __init__(
        self,
        db: Path,
        *,
        command: str = "dev",
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.db = db
        self.command = command
        self.port = port or free_port()
        self.extra_env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.env: dict[str, str] = {}
        self.output: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> RelayProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "relay",
                self.command,
                "--port",
                str(self.port),
                "--db",
                str(self.db),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("relay exited at start:\n" + "".join(self.output))
            self.output.append(line)
            name, sep, value = line.strip().partition("=")
            if sep and name.startswith(("QSTASH_", "RELAY_")):
                self.env[name] = value
            if name == "RELAY_WEBHOOK_SECRET":
                return self
        raise RuntimeError("relay did not print its settings in time")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, and wait for a clean exit."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.output.extend(self.proc.stdout.readlines())
            self.proc.stdout.close()
        return int(self.proc.returncode)
