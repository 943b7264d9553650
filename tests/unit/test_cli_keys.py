"""`relay keys` and the webhook half of `resolve_credentials`: the per-database webhook secret,
the fixed dev secret, and ed25519 keys added, rotated and removed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from relay import webhooks
from relay.backends.sqlite import SqliteBackend
from relay.cli import main
from relay.config import Settings
from relay.protocol import DEV_WEBHOOK_SECRET
from relay.service import RelayService, keys_in_force, resolve_credentials
from relay.signing import SigningKeys


def _lines(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


async def _keys(db: Path, *, dev: bool = False, **settings: str) -> SigningKeys:
    backend = SqliteBackend(db)
    await backend.open()
    try:
        _, keys = await resolve_credentials(Settings(db=str(db), **settings), backend, dev=dev)
        return keys
    finally:
        await backend.close()


async def test_serve_keeps_one_webhook_secret_per_database(tmp_path: Path) -> None:
    first = await _keys(tmp_path / "a.db")
    assert first.webhook_secret is not None and first.webhook_secret.startswith("whsec_")
    assert (await _keys(tmp_path / "a.db")).webhook_secret == first.webhook_secret
    assert (await _keys(tmp_path / "b.db")).webhook_secret != first.webhook_secret
    explicit = webhooks.generate_secret()
    assert (await _keys(tmp_path / "a.db", webhook_secret=explicit)).webhook_secret == explicit


async def test_dev_uses_the_documented_dev_secret(tmp_path: Path) -> None:
    assert (await _keys(tmp_path / "dev.db", dev=True)).webhook_secret == DEV_WEBHOOK_SECRET


async def test_a_malformed_ed25519_key_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whsk_"):
        await _keys(tmp_path / "a.db", webhook_ed25519_keys="whpk_notasecret")


def test_keys_commands_rotate_an_ed25519_key(tmp_path: Path) -> None:
    db = str(tmp_path / "relay.db")
    runner = CliRunner()
    added = runner.invoke(main, ["keys", "add-ed25519", "--db", db])
    assert added.exit_code == 0, added.output
    old = _lines(added.stdout)["RELAY_WEBHOOK_PUBLIC_KEY"]
    new = _lines(runner.invoke(main, ["keys", "add-ed25519", "--db", db]).stdout)[
        "RELAY_WEBHOOK_PUBLIC_KEY"
    ]
    shown = _lines(runner.invoke(main, ["keys", "show", "--db", db]).stdout)
    assert shown["RELAY_WEBHOOK_PUBLIC_KEY"] == f"{old} {new}"  # both sign during the switch
    assert shown["RELAY_WEBHOOK_SECRET"].startswith("whsec_")
    assert shown["QSTASH_CURRENT_SIGNING_KEY"].startswith("sig_")

    removed = runner.invoke(main, ["keys", "remove-ed25519", "--db", db, old])
    assert removed.exit_code == 0, removed.output
    shown = _lines(runner.invoke(main, ["keys", "show", "--db", db]).stdout)
    assert shown["RELAY_WEBHOOK_PUBLIC_KEY"] == new

    unknown = runner.invoke(main, ["keys", "remove-ed25519", "--db", db, old])
    assert unknown.exit_code != 0 and "no stored ed25519 key" in unknown.output


def test_keys_show_dev(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["keys", "show", "--dev", "--db", str(tmp_path / "d.db")])
    assert _lines(result.stdout)["RELAY_WEBHOOK_SECRET"] == DEV_WEBHOOK_SECRET


def test_generate_prints_a_pair_and_stores_nothing() -> None:
    result = CliRunner().invoke(main, ["keys", "generate-ed25519"])
    lines = _lines(result.stdout)
    secret_key = lines["RELAY_WEBHOOK_ED25519_KEYS"]
    assert webhooks.public_key(secret_key) == lines["RELAY_WEBHOOK_PUBLIC_KEY"]


def test_a_rotation_survives_a_restart_until_the_initial_keys_change(tmp_path: Path) -> None:
    db = tmp_path / "a.db"

    async def rotate_from_two_processes() -> SigningKeys:
        backend = SqliteBackend(db)
        await backend.open()
        try:
            _, initial = await resolve_credentials(Settings(db=str(db)), backend, dev=True)
            service = RelayService(backend, Settings(db=str(db)), keys=initial, token="t")
            rotated = await service.rotate_keys()
            # another process on the same store (a later start, another Lambda container)
            later = RelayService(backend, Settings(db=str(db)), keys=initial, token="t")
            assert later.keys == initial and await later.load_keys() == rotated
            assert (await later.rotate_keys()).current == rotated.next
            assert await service.load_keys() == later.keys
            # explicit keys replace the initial pair: the old pair's rotation no longer applies
            explicit = Settings(db=str(db), current_signing_key="sig_a", next_signing_key="sig_b")
            _, chosen = await resolve_credentials(explicit, backend, dev=True)
            assert await keys_in_force(backend, chosen) == chosen
            return later.keys
        finally:
            await backend.close()

    in_force = asyncio.run(rotate_from_two_processes())
    result = CliRunner().invoke(main, ["keys", "show", "--dev", "--db", str(db)])
    assert _lines(result.stdout)["QSTASH_CURRENT_SIGNING_KEY"] == in_force.current
