"""The real ``relay`` command against a real ``relay dev`` process, over real HTTP: every remote
command group in both output modes, and the exit codes a script relies on (0 ok, 1 API error,
2 usage, 3 auth, 4 unreachable).

Most cases run the command in-process through click's ``CliRunner`` (a subprocess spends about a
second importing before it does anything). What only a process shows runs as one: the installed
``relay`` entry point, the exit codes and stdout/stderr streams a shell sees (``python -m
relay``), and the live tail of ``logs --follow`` until SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from relay.cli import main
from tests.e2e.process import RelayProcess

pytestmark = pytest.mark.slow


class _Handler(BaseHTTPRequestHandler):
    """/ok answers 200, /fail 500; every request is recorded."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.requests.append((self.command, self.path, dict(self.headers), body))
        status = 500 if self.path.startswith("/fail") else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"no" if status == 500 else b"ok")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def destination() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path_factory.mktemp("cli") / "dev.db").start()
    try:
        yield process
    finally:
        process.stop()


class Cli:
    """Runs the ``relay`` command with QSTASH_URL and QSTASH_TOKEN of the relay under test:
    in-process through click's ``CliRunner`` (calling it), or as ``python -m relay`` in a
    subprocess (``process``)."""

    def __init__(self, relay: RelayProcess) -> None:
        self.settings = {
            "QSTASH_URL": relay.url,
            "QSTASH_TOKEN": relay.env["QSTASH_TOKEN"],
            "COLUMNS": "200",
        }
        self.env = {**os.environ, **self.settings}

    def __call__(self, *args: str, code: int = 0, stdin: str | None = None, **env: str) -> Result:
        done = CliRunner().invoke(
            main,
            list(args),
            input=stdin if stdin is not None else "",
            env={**self.settings, **env},
            prog_name="relay",
            catch_exceptions=False,
        )
        assert done.exit_code == code, (args, done.exit_code, done.stdout, done.stderr)
        return done

    def process(
        self, *args: str, code: int = 0, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "relay", *args],
            capture_output=True,
            text=True,
            input=stdin if stdin is not None else "",
            env={**self.env, **env},
            timeout=60,
        )
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        return done

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self(*args, "--json", **kwargs).stdout)

    def wait_state(self, message_id: str, state: str, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.json("logs", "--message-id", message_id)["events"]
            if any(e["state"] == state for e in events):
                return list(events)
            time.sleep(0.1)
        raise AssertionError(f"{message_id} never reached {state}")


@pytest.fixture(scope="module")
def cli(relay: RelayProcess) -> Cli:
    return Cli(relay)


def test_help_documents_the_exit_codes(cli: Cli) -> None:
    """Through the installed ``relay`` entry point, as a user runs it."""
    entry_point = Path(sys.executable).with_name("relay")
    assert entry_point.exists(), f"{entry_point} is missing: `pip install -e .` installs it"
    done = subprocess.run(
        [str(entry_point), "--help"], capture_output=True, text=True, env=cli.env, timeout=60
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = done.stdout
    assert "Exit codes:" in out
    for line in ("0  success", "1  the relay answered", "2  usage", "3  authentication"):
        assert line in out
    for group in ("publish", "messages", "logs", "dlq", "url-groups", "queues", "keys"):
        assert group in out


def test_publish_with_every_option_and_read_it_back(cli: Cli, destination: str) -> None:
    answer = cli.json(
        "publish",
        f"{destination}/ok",
        '{"order": 42}',
        "--json-body",
        "--method",
        "put",
        "--delay",
        "1h",
        "--retries",
        "2",
        "--retry-delay",
        "1000 * retried",
        "--callback",
        f"{destination}/callback",
        "--failure-callback",
        f"{destination}/failure",
        "--timeout",
        "30s",
        "-H",
        "X-Tenant: acme",
        "--label",
        "cli-test",
    )
    message_id = answer["messageId"]
    message = cli.json("messages", "get", message_id)
    assert message["messageId"] == message_id
    assert message["url"] == f"{destination}/ok"
    assert message["method"] == "PUT"
    assert message["maxRetries"] == 2
    assert message["retryDelayExpression"] == "1000 * retried"
    assert message["callback"] == f"{destination}/callback"
    assert message["failureCallback"] == f"{destination}/failure"
    assert message["header"]["X-Tenant"] == ["acme"]
    assert message["header"]["Content-Type"] == ["application/json"]
    assert message["body"] == '{"order": 42}'
    assert message["label"] == "cli-test"
    assert message["notBefore"] - message["createdAt"] == 3_600_000
    human = cli("messages", "get", message_id).stdout
    for text in (message_id, "PUT", "X-Tenant: acme", "cli-test", '{"order": 42}', "0 of 2"):
        assert text in human

    # Cancel the delayed message; a second cancel of the same message is an API error.
    assert cli.json("messages", "cancel", message_id) == {"cancelled": 1}
    assert cli.json("messages", "get", message_id)["state"] == "CANCELED"
    cli("messages", "cancel", message_id, code=1)


def test_publish_bodies_not_before_and_deduplication(
    cli: Cli, destination: str, tmp_path: Path
) -> None:
    at = int(time.time()) + 7200
    from_stdin = cli.json("publish", f"{destination}/ok", "-", "--not-before", str(at), stdin="raw")
    message = cli.json("messages", "get", from_stdin["messageId"])
    assert message["body"] == "raw" and message["notBefore"] == at * 1000

    body = tmp_path / "body.json"
    body.write_text('{"from": "file"}')
    first = cli.json("publish", f"{destination}/ok", f"@{body}", "-J", "--dedup-id", "d-1")
    again = cli.json("publish", f"{destination}/ok", f"@{body}", "-J", "--dedup-id", "d-1")
    assert again == {"messageId": first["messageId"], "deduplicated": True}
    by_content = [
        cli.json("publish", f"{destination}/ok", "same", "--content-dedup", "--delay", "1h")
        for _ in range(2)
    ]
    assert by_content[1]["messageId"] == by_content[0]["messageId"]
    assert by_content[1]["deduplicated"] is True
    human = cli("publish", f"{destination}/ok", "same", "--content-dedup", "--delay", "1h")
    assert by_content[0]["messageId"] in human.stdout and "yes" in human.stdout

    # Usage errors: not JSON, a bad duration, a bad header, an unknown option.
    cli("publish", f"{destination}/ok", "{not json", "-J", code=2)
    cli("publish", f"{destination}/ok", "--delay", "soon", code=2)
    cli("publish", f"{destination}/ok", "-H", "no colon", code=2)
    cli("publish", f"{destination}/ok", "--no-such-option", code=2)
    # The relay refuses what it cannot take: an API error.
    refused = cli("publish", "not a url or group!", "x", code=1)
    assert "error (400)" in refused.stderr


def test_errors_have_their_exit_codes_in_both_modes(cli: Cli, relay: RelayProcess) -> None:
    """Each exit code once from a real process, as a shell sees it (with what lands on stdout
    and on stderr); the other cases in-process."""
    missing = cli.process("messages", "get", "msg_unknown", code=1)
    assert "error (404)" in missing.stderr and missing.stdout == ""
    as_json = cli.process("messages", "get", "msg_unknown", "--json", code=1)
    assert json.loads(as_json.stderr) == {"error": "message msg_unknown not found", "status": 404}
    assert as_json.stdout == ""
    cli("dlq", "get", "nope", code=1)
    cli("url-groups", "get", "nope", code=1)

    denied = cli.process("logs", code=3, QSTASH_TOKEN="wrong")
    assert "invalid token" in denied.stderr
    assert json.loads(cli("logs", "--json", "--token", "wrong", code=3).stderr)["status"] == 401
    cli("keys", "get", code=3, QSTASH_TOKEN="wrong")

    with socket.socket() as unused:  # bound, never listening: refused, and no one else's
        unused.bind(("127.0.0.1", 0))
        cli.process("logs", "--url", f"http://127.0.0.1:{unused.getsockname()[1]}", code=4)
    cli.process("logs", "--count", "0", code=2)
    cli("dlq", "retry", code=2)  # neither ids nor --all


def test_logs_filters_and_follow(cli: Cli, destination: str) -> None:
    first = cli.json("publish", f"{destination}/ok", "one", "--label", "logs-a")["messageId"]
    cli.wait_state(first, "DELIVERED")
    page = cli.json("logs", "--message-id", first)
    assert [e["state"] for e in reversed(page["events"])] == ["CREATED", "ACTIVE", "DELIVERED"]
    assert page["cursor"] is None
    delivered = cli.json("logs", "--message-id", first, "--state", "delivered")["events"]
    assert [e["state"] for e in delivered] == ["DELIVERED"] and delivered[0][
        "responseStatus"
    ] == 200
    assert {e["messageId"] for e in cli.json("logs", "--label", "logs-a")["events"]} == {first}
    assert cli.json("logs", "--label", "logs-a", "--from", "1h", "--to", "0s")["events"]
    assert not cli.json("logs", "--label", "logs-a", "--to", "1h")["events"]
    two = cli.json("logs", "--count", "2")
    assert len(two["events"]) == 2 and two["cursor"]
    rest = cli.json("logs", "--count", "2", "--cursor", two["cursor"])["events"]
    assert rest and rest[0]["time"] <= two["events"][-1]["time"]
    table = cli("logs", "--message-id", first).stdout
    assert table.splitlines()[0].split() == [
        "Time",
        "Message",
        "ID",
        "State",
        "URL",
        "Status",
        "Detail",
    ]
    assert "DELIVERED" in table and "200" in table and first in table

    # --follow: a live tail, one JSON event per line, until stopped.
    follow = subprocess.Popen(
        [sys.executable, "-m", "relay", "logs", "-f", "--json", "--label", "logs-b", "-n", "5"],
        stdout=subprocess.PIPE,
        text=True,
        env=cli.env,
    )
    try:
        time.sleep(1)  # started and polling
        second = cli.json("publish", f"{destination}/ok", "two", "--label", "logs-b")["messageId"]
        assert follow.stdout is not None
        states = []
        deadline = time.monotonic() + 15
        while "DELIVERED" not in states and time.monotonic() < deadline:
            event = json.loads(follow.stdout.readline())
            assert event["messageId"] == second
            states.append(event["state"])
        assert states == ["CREATED", "ACTIVE", "DELIVERED"]
    finally:
        follow.send_signal(signal.SIGTERM)
        follow.wait(10)
    human = subprocess.Popen(
        [sys.executable, "-m", "relay", "logs", "-f", "--label", "logs-b", "-n", "5"],
        stdout=subprocess.PIPE,
        text=True,
        env=cli.env,
    )
    try:
        assert human.stdout is not None
        lines = [human.stdout.readline() for _ in range(3)]
        assert [line.split()[3] for line in lines] == ["CREATED", "ACTIVE", "DELIVERED"]
        assert all(second in line for line in lines)
    finally:
        human.send_signal(signal.SIGTERM)
        human.wait(10)
    cli("logs", "-f", "--to", "1h", code=2)


def test_dlq_list_get_retry_and_delete(cli: Cli, destination: str) -> None:
    failing = [
        cli.json("publish", f"{destination}/fail/{i}", f"f{i}", "--retries", "0")["messageId"]
        for i in range(4)
    ]
    for message_id in failing:
        cli.wait_state(message_id, "FAILED")
    listed = cli.json("dlq", "list", "--status", "500")
    mine = {m["messageId"]: m for m in listed["messages"] if m["messageId"] in failing}
    assert set(mine) == set(failing)
    assert {m["responseStatus"] for m in mine.values()} == {500}
    one = mine[failing[0]]
    assert (
        cli.json("dlq", "list", "--destination", one["url"])["messages"][0]["dlqId"]
        == (one["dlqId"])
    )
    entry = cli.json("dlq", "get", one["dlqId"])
    assert entry["responseBody"] == "no" and entry["body"] == "f0"
    assert one["dlqId"] in cli("dlq", "list").stdout
    assert "Response status" in cli("dlq", "get", one["dlqId"]).stdout

    # Retry one by id: a new message, gone from the DLQ.
    retried = cli.json("dlq", "retry", one["dlqId"])["responses"]
    assert len(retried) == 1 and retried[0]["messageId"] not in failing
    cli("dlq", "get", one["dlqId"], code=1)
    cli.wait_state(retried[0]["messageId"], "FAILED")  # /fail fails again

    # Delete: one unknown id is an error; --all with a filter deletes every match.
    cli("dlq", "delete", "no-such-dlq-id", code=1)
    second = mine[failing[1]]["dlqId"]
    human = cli("dlq", "delete", second)
    assert "deleted 1 DLQ entry" in human.stdout
    cli("dlq", "delete", "--all", "--destination", mine[failing[2]]["url"], code=1)  # asks: no
    deleted = cli.json("dlq", "delete", "--all", "--yes", "--destination", mine[failing[2]]["url"])
    assert deleted == {"deleted": 1}
    rest = [m["dlqId"] for m in cli.json("dlq", "list")["messages"]]
    assert mine[failing[3]]["dlqId"] in rest and second not in rest
    before = {m["dlqId"] for m in cli.json("dlq", "list", "--status", "500")["messages"]}
    retried_all = cli("dlq", "retry", "--all", "--status", "500")
    assert f"retried {len(before)} DLQ entries" in retried_all.stderr
    assert not before & {m["dlqId"] for m in cli.json("dlq", "list")["messages"]}


def test_url_groups(cli: Cli, destination: str) -> None:
    group = cli.json(
        "url-groups",
        "add",
        "cli-group",
        f"{destination}/ok/a",
        "--named",
        "b",
        f"{destination}/ok/b",
    )
    assert group["name"] == "cli-group"
    assert group["endpoints"] == [
        {"url": f"{destination}/ok/a"},
        {"url": f"{destination}/ok/b", "name": "b"},
    ]
    assert "cli-group" in [g["name"] for g in cli.json("url-groups", "list")]
    listing = cli("url-groups", "list").stdout
    assert "cli-group" in listing and "Endpoints" in listing
    shown = cli("url-groups", "get", "cli-group").stdout
    assert f"{destination}/ok/b" in shown and "b" in shown

    fanned = cli.json("publish", "cli-group", "to all")
    assert sorted(m["url"] for m in fanned) == [f"{destination}/ok/a", f"{destination}/ok/b"]

    assert cli.json("url-groups", "remove", "cli-group", "--endpoint-name", "b") == {"removed": 1}
    assert [e["url"] for e in cli.json("url-groups", "get", "cli-group")["endpoints"]] == [
        f"{destination}/ok/a"
    ]
    cli("url-groups", "add", "cli-group", code=2)
    assert "deleted URL group cli-group" in cli("url-groups", "delete", "cli-group").stdout
    cli("url-groups", "delete", "cli-group", code=1)


def test_many_messages_cancelled_in_bulk(cli: Cli, destination: str) -> None:
    ids = [
        cli.json("publish", f"{destination}/ok", str(i), "--delay", "1h")["messageId"]
        for i in range(3)
    ]
    assert cli.json("messages", "cancel", *ids, "msg_unknown") == {"cancelled": 3}
    assert "cancelled 0 of 3" in cli("messages", "cancel", *ids).stdout


def test_keys_get_and_rotate(cli: Cli, relay: RelayProcess) -> None:
    keys = cli.json("keys", "get")
    assert keys == {
        "current": relay.env["QSTASH_CURRENT_SIGNING_KEY"],
        "next": relay.env["QSTASH_NEXT_SIGNING_KEY"],
    }
    assert f"QSTASH_NEXT_SIGNING_KEY={keys['next']}" in cli("keys", "get").stdout
    cli("keys", "rotate", code=1)  # asks first; no answer on stdin
    rotated = cli.json("keys", "rotate", "--yes")
    assert rotated["current"] == keys["next"] and rotated["next"] != keys["next"]
    assert cli.json("keys", "get") == rotated
    human = cli("keys", "rotate", stdin="y\n").stdout
    assert f"QSTASH_CURRENT_SIGNING_KEY={rotated['next']}" in human


def test_schedules(cli: Cli, destination: str) -> None:
    created = cli.json(
        "schedules",
        "create",
        f"{destination}/ok",
        "0 9 * * 1-5",
        '{"kind": "daily"}',
        "-J",
        "--schedule-id",
        "cli-daily",
        "--retries",
        "1",
        "-H",
        "X-Report: daily",
    )
    assert created == {"scheduleId": "cli-daily"}
    schedule = cli.json("schedules", "get", "cli-daily")
    assert schedule["cron"] == "0 9 * * 1-5" and schedule["destination"] == f"{destination}/ok"
    assert schedule["retries"] == 1 and schedule["body"] == '{"kind": "daily"}'
    assert schedule["header"]["X-Report"] == ["daily"]
    assert schedule["nextScheduleTime"] > time.time() * 1000
    other = cli("schedules", "create", f"{destination}/ok", "*/5 * * * *").stdout.strip()
    listed = cli("schedules", "list").stdout
    assert "cli-daily" in listed and other in listed and "0 9 * * 1-5" in listed
    assert {"cli-daily", other} <= {s["scheduleId"] for s in cli.json("schedules", "list")}

    assert cli.json("schedules", "pause", "cli-daily") == {
        "scheduleId": "cli-daily",
        "paused": True,
    }
    assert cli.json("schedules", "get", "cli-daily")["paused"] is True
    assert "resumed schedule cli-daily" in cli("schedules", "resume", "cli-daily").stdout
    assert re.search(r"Paused\s+no", cli("schedules", "get", "cli-daily").stdout)
    cli("schedules", "delete", "cli-daily")
    cli("schedules", "delete", other, "--json")
    cli("schedules", "get", "cli-daily", code=1)
    cli("schedules", "create", f"{destination}/ok", "not a cron", code=1)


def test_queues(cli: Cli) -> None:
    queue = cli.json("queues", "upsert", "cli-q", "--parallelism", "2")
    assert queue["name"] == "cli-q" and queue["parallelism"] == 2 and not queue["paused"]
    assert cli.json("queues", "pause", "cli-q")["paused"] is True
    listing = cli("queues", "list").stdout
    assert "cli-q" in listing and "Parallelism" in listing
    assert cli.json("queues", "resume", "cli-q")["paused"] is False
    assert "cli-q" in cli("queues", "get", "cli-q").stdout
    assert "deleted queue cli-q" in cli("queues", "delete", "cli-q").stdout
    cli("queues", "get", "cli-q", code=1)
    cli("queues", "upsert", "cli-q", "--parallelism", "0", code=2)
