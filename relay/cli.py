"""The ``relay`` command: ``relay dev`` for a laptop, ``relay serve`` for production."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

import click

from relay.config import Settings
from relay.server import EmbeddedRelay


def _options(func: Any) -> Any:
    func = click.option("--db", default=None, help="SQLite file (':memory:' keeps nothing).")(func)
    func = click.option("--port", type=int, default=None, help="Port (default 8080).")(func)
    func = click.option("--host", default=None, help="Address (default 127.0.0.1).")(func)
    return func


@click.group()
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
    click.echo(f"QSTASH_TOKEN={service.token}")
    click.echo(f"QSTASH_CURRENT_SIGNING_KEY={service.keys.current}")
    click.echo(f"QSTASH_NEXT_SIGNING_KEY={service.keys.next}")
    sys.stdout.flush()
    await stop.wait()
    click.echo("relay: shutting down")
    await relay.stop()
