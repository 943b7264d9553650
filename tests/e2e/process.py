"""A real ``relay`` process for end-to-end tests: started as a user would, killed as a crash."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

_RUNNING_AT = re.compile(r"running at http://\S+:(\d+) \(")
_IN_USE = f"[Errno {errno.EADDRINUSE}]"


def listening_socket() -> socket.socket:
    """A loopback socket listening on a port the kernel picked, for a test's own server to serve
    on (uvicorn's ``sockets=``, werkzeug's ``fd=``): the port is known before the server starts,
    and no other process can take it in between."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


class RelayProcess:
    """``python -m relay <command> --port P --db PATH``, with the lines it prints at start.

    Without ``port`` it starts with ``--port 0`` and takes the port the relay prints. With one
    (a restart on the port of a relay just killed, so its URL stays the same) a start that finds
    the port taken by another process is tried again until ``start``'s timeout."""

    def __init__(
        self,
        db: Path,
        *,
        command: str = "dev",
        port: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.db = db
        self.command = command
        self.port = port
        self.extra_env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.env: dict[str, str] = {}
        self.output: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> RelayProcess:
        deadline = time.monotonic() + timeout
        while True:
            if self._start(deadline):
                assert self.port, "relay did not print the port it listens on"
                return self
            if self.port == 0 or _IN_USE not in "".join(self.output):
                raise RuntimeError("relay exited at start:\n" + "".join(self.output))
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} stayed in use:\n" + "".join(self.output))

    def _start(self, deadline: float) -> bool:
        """One start: True once the relay has printed its settings, False if it exited first."""
        self.env = {}
        self.output = []
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
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self.proc.stdout.close()
                return False
            self.output.append(line)
            running = _RUNNING_AT.search(line)
            if running:
                self.port = int(running.group(1))
            name, sep, value = line.strip().partition("=")
            if sep and name.startswith(("QSTASH_", "RELAY_")):
                self.env[name] = value
            if name == "RELAY_WEBHOOK_SECRET":
                return True
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
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.output.extend(self.proc.stdout.readlines())
            self.proc.stdout.close()
        return int(self.proc.returncode)
