"""The ``relay`` command: ``relay dev`` for a laptop, ``relay serve`` for production."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from relay import webhooks
from relay.backends.base import Backend
from relay.backends.sqlite import DatabaseInUse, SqliteBackend
from relay.cli_commands import COMMANDS, KEY_COMMANDS
from relay.cli_output import EXIT_CODES_HELP
from relay.config import Settings
from relay.server import EmbeddedRelay
from relay.service import WEBHOOK_KEYS_SETTING, keys_in_force, resolve_credentials
from relay.signing import SigningKeys
from relay.tokens import client_token


def _options(func: Any) -> Any:
    func = click.option("--db", default=None, help="SQLite file (':memory:' keeps nothing).")(func)
    port_help = "Port (default 8080; 0: a free one, printed at start)."
    func = click.option("--port", type=int, default=None, help=port_help)(func)
    func = click.option("--host", default=None, help="Address (default 127.0.0.1).")(func)
    return func


@click.group(
    help="relay: a self-hosted, QStash-compatible HTTP message relay.\n\n" + EXIT_CODES_HELP
)
@click.version_option(package_name="relay")
def main() -> None:
    """relay: a self-hosted, QStash-compatible HTTP message relay."""


@main.command()
@_options
def dev(host: str | None, port: int | None, db: str | None) -> None:
    """Run a development relay with the QStash dev server's credentials; loopback allowed."""
    _run(_settings(host, port, db or ".relay/dev.db"), dev=True)


@main.command()
@_options
@click.option(
    "--allow-private-destinations",
    is_flag=True,
    default=None,
    help="Allow loopback, private and link-local destinations.",
)
def serve(
    host: str | None, port: int | None, db: str | None, allow_private_destinations: bool | None
) -> None:
    """Run a production relay; token and signing keys are generated once per database."""
    settings = _settings(host, port, db)
    if allow_private_destinations:
        settings.allow_private_destinations = True
    _run(settings, dev=False)


@main.command("aws-env")
@click.option("--stack", default="relay", show_default=True, help="CloudFormation stack name.")
@click.option("--region", default=None, help="AWS region (default: the AWS CLI's).")
def aws_env(stack: str, region: str | None) -> None:
    """Print the QSTASH_* lines of a relay stack deployed with `sam deploy`."""
    from relay.aws_runtime import stack_env_lines

    for line in stack_env_lines(stack, region):
        click.echo(line)


def _settings(host: str | None, port: int | None, db: str | None) -> Settings:
    settings = Settings()
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port
    if db is not None:
        settings.db = db
    return settings


def _run(settings: Settings, *, dev: bool) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_serve(settings, dev=dev))
    except OSError as exc:
        click.echo(f"relay: {exc}", err=True)
        sys.exit(1)


async def _serve(settings: Settings, *, dev: bool) -> None:
    relay = EmbeddedRelay(settings, dev=dev)
    await relay.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = relay.service
    host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::") else settings.host
    click.echo(f"relay {'dev' if dev else 'serve'} running at {relay.url} (database {settings.db})")
    click.echo(f"QSTASH_URL=http://{host}:{relay.port}")
    click.echo(f"QSTASH_TOKEN={client_token(service.token)}")
    for line in _key_lines(service.keys):
        click.echo(line)
    sys.stdout.flush()
    await stop.wait()
    click.echo("relay: shutting down")
    await relay.stop()


def _key_lines(keys: SigningKeys) -> list[str]:
    """The signing keys as ready-to-paste settings for receivers."""
    lines = [f"QSTASH_CURRENT_SIGNING_KEY={keys.current}", f"QSTASH_NEXT_SIGNING_KEY={keys.next}"]
    if keys.webhook_secret:
        lines.append(f"RELAY_WEBHOOK_SECRET={keys.webhook_secret}")
    if keys.webhook_keys:
        public = " ".join(webhooks.public_key(k) for k in keys.webhook_keys)
        lines.append(f"RELAY_WEBHOOK_PUBLIC_KEY={public}")
    return lines


# --- keys ------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Show a relay's keys; manage the ed25519 keys of its Standard Webhooks `v1a` signatures.

    \b
    get, rotate: the signing keys of the relay at QSTASH_URL (any backend), through its API.
    The others work on a SQLite database directly.

    \b
    Rotating an ed25519 key without a receiver noticing:
      1. relay keys add-ed25519, and restart the relay: it signs with the old and the new key;
      2. give receivers the new public key;
      3. relay keys remove-ed25519 <old public key>, and restart the relay.
    The database must not be in use by a running relay while a command changes it.
    """


_db_option = click.option("--db", default=None, help="SQLite file (default: as relay serve).")


@keys.command("show")
@_db_option
@click.option("--dev", is_flag=True, help="The keys `relay dev` uses.")
def keys_show(db: str | None, dev: bool) -> None:
    """Print the token and keys of the relay on this database (generated if it has none)."""

    async def show(backend: Backend, settings: Settings) -> list[str]:
        token, keys = await resolve_credentials(settings, backend, dev=dev)
        in_force = await keys_in_force(backend, keys)
        return [f"QSTASH_TOKEN={client_token(token)}", *_key_lines(in_force)]

    default = ".relay/dev.db" if dev else None
    for line in _with_backend(db or default, show):
        click.echo(line)


@keys.command("add-ed25519")
@_db_option
def keys_add(db: str | None) -> None:
    """Make an ed25519 key pair; the relay signs with it too from its next start."""
    secret_key, public_key = webhooks.generate_key_pair()

    async def add(backend: Backend, settings: Settings) -> int:
        stored = await _stored_keys(backend)
        await backend.put_setting(WEBHOOK_KEYS_SETTING, json.dumps([*stored, secret_key]))
        return len(stored) + 1

    count = _with_backend(db, add)
    click.echo(f"RELAY_WEBHOOK_PUBLIC_KEY={public_key}")
    click.echo(f"relay: {count} ed25519 key(s) will sign deliveries after a restart", err=True)


@keys.command("remove-ed25519")
@_db_option
@click.argument("public_key")
def keys_remove(db: str | None, public_key: str) -> None:
    """Stop signing with the ed25519 key whose public key (whpk_…) is given."""

    async def remove(backend: Backend, settings: Settings) -> int:
        stored = await _stored_keys(backend)
        kept = [k for k in stored if webhooks.public_key(k) != public_key.strip()]
        if len(kept) == len(stored):
            raise click.ClickException(f"no stored ed25519 key has the public key {public_key}")
        await backend.put_setting(WEBHOOK_KEYS_SETTING, json.dumps(kept))
        return len(kept)

    count = _with_backend(db, remove)
    click.echo(f"relay: {count} ed25519 key(s) will sign deliveries after a restart", err=True)


@keys.command("generate-ed25519")
def keys_generate() -> None:
    """Print a new ed25519 key pair without storing it (for RELAY_WEBHOOK_ED25519_KEYS)."""
    secret_key, public_key = webhooks.generate_key_pair()
    click.echo(f"RELAY_WEBHOOK_ED25519_KEYS={secret_key}")
    click.echo(f"RELAY_WEBHOOK_PUBLIC_KEY={public_key}")


T = TypeVar("T")


def _with_backend(db: str | None, use: Callable[[Backend, Settings], Awaitable[T]]) -> T:
    settings = _settings(None, None, db)

    async def run() -> T:
        backend = SqliteBackend(settings.db, synchronous=settings.sqlite_synchronous)
        try:
            await backend.open()
        except DatabaseInUse as exc:
            raise click.ClickException(f"{exc}: stop it first") from None
        try:
            return await use(backend, settings)
        finally:
            await backend.close()

    return asyncio.run(run())


async def _stored_keys(backend: Backend) -> list[str]:
    return list(json.loads(await backend.get_setting(WEBHOOK_KEYS_SETTING) or "[]"))


# --- remote commands (relay.cli_commands): a running relay through its API ---------------------

for _command in COMMANDS:
    main.add_command(_command)
for _command in KEY_COMMANDS:
    keys.add_command(_command)
