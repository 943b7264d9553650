"""`relay serve`: its own credentials per database, kept across restarts, its token in QStash's
shape (bare or wrapped both accepted); private destinations refused; a clean exit on SIGTERM;
`--port 0` on a free port it prints, a port in use an exit 1 that says so."""

from __future__ import annotations

import base64
import errno
import json
import subprocess
import sys
from pathlib import Path

import aiohttp

from relay.protocol import DEV_TOKEN, DEV_WEBHOOK_SECRET
from tests.e2e.process import RelayProcess, listening_socket


async def test_serve_credentials_policy_and_shutdown(tmp_path: Path) -> None:
    db = tmp_path / "prod.db"
    first = RelayProcess(db, command="serve").start()
    try:
        env = first.env
        assert env["QSTASH_TOKEN"] != DEV_TOKEN and len(env["QSTASH_TOKEN"]) > 30
        assert env["QSTASH_CURRENT_SIGNING_KEY"].startswith("sig_")
        assert env["QSTASH_CURRENT_SIGNING_KEY"] != env["QSTASH_NEXT_SIGNING_KEY"]
        assert env["RELAY_WEBHOOK_SECRET"].startswith("whsec_")
        assert env["RELAY_WEBHOOK_SECRET"] != DEV_WEBHOOK_SECRET
        headers = {"Authorization": f"Bearer {env['QSTASH_TOKEN']}"}
        async with aiohttp.ClientSession() as session:
            for url in ("http://127.0.0.1:9/x", "http://169.254.169.254/", "http://10.0.0.8/"):
                async with session.post(
                    f"{first.url}/v2/publish/{url}", data="x", headers=headers
                ) as response:
                    assert response.status == 400
                    assert "private" in (await response.json())["error"]
            async with session.post(
                f"{first.url}/v2/publish/https://example.com/",
                data="x",
                headers={"Authorization": f"Bearer {DEV_TOKEN}"},
            ) as response:
                assert response.status == 401
            # The printed token is QStash-shaped (createWebhook reads its UserID); the bare
            # token inside it is accepted too, a wrapped wrong password is not.
            shape = json.loads(base64.b64decode(env["QSTASH_TOKEN"]))
            assert shape["UserID"] and shape["Password"] != env["QSTASH_TOKEN"]
            wrong = base64.b64encode(json.dumps({**shape, "Password": "x"}).encode()).decode()
            for token, status in (
                (shape["Password"], 200),
                (env["QSTASH_TOKEN"], 200),
                (wrong, 401),
            ):
                async with session.get(
                    f"{first.url}/v2/keys", headers={"Authorization": f"Bearer {token}"}
                ) as response:
                    assert response.status == status
    finally:
        assert first.stop() == 0  # SIGTERM: a clean exit
    assert any("shutting down" in line for line in first.output)
    second = RelayProcess(db, command="serve").start()
    try:
        assert second.env == {**env, "QSTASH_URL": f"http://localhost:{second.port}"}
    finally:
        assert second.stop() == 0


async def test_port_zero_and_a_port_in_use(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "zero.db", command="serve").start()  # `--port 0`
    try:
        assert relay.port > 0
        assert relay.env["QSTASH_URL"] == f"http://localhost:{relay.port}"
        headers = {"Authorization": f"Bearer {relay.env['QSTASH_TOKEN']}"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{relay.url}/v2/keys", headers=headers) as response,
        ):
            assert response.status == 200
    finally:
        assert relay.stop() == 0
    with listening_socket() as taken:
        port = str(taken.getsockname()[1])
        command = ["serve", "--port", port, "--db", str(tmp_path / "taken.db")]
        failed = subprocess.run(
            [sys.executable, "-m", "relay", *command], capture_output=True, text=True, timeout=30
        )
    assert failed.returncode == 1 and failed.stdout == ""
    # One line, nothing left open (no "Unclosed client session" after it).
    [line] = failed.stderr.splitlines()
    assert line.startswith(f"relay: [Errno {errno.EADDRINUSE}]") and port in line, line
