"""Settings, from arguments or ``RELAY_*`` environment variables."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """How one relay runs. Every field can be set as ``RELAY_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    db: str = ".relay/relay.db"
    # "FULL" survives power loss; "NORMAL" (WAL) survives a process crash and is faster.
    sqlite_synchronous: str = "FULL"

    # Credentials. Unset: `relay dev` uses the QStash dev server's, `relay serve` generates and
    # keeps its own per database.
    token: str | None = None
    current_signing_key: str | None = None
    next_signing_key: str | None = None
    # Standard Webhooks: the `whsec_` secret (unset: `relay dev` uses a fixed dev secret, `relay
    # serve` generates and keeps one per database) and ed25519 `whsk_` keys, space-separated,
    # each signing every delivery (unset: the ones `relay keys add-ed25519` stored).
    webhook_secret: str | None = None
    webhook_ed25519_keys: str | None = None

    # Destinations: loopback, private and link-local addresses are refused unless allowed.
    allow_private_destinations: bool = False

    max_body_bytes: int = 1_048_576
    default_retries: int = 3
    max_retries: int = 20
    max_delay_seconds: int = 365 * 86_400
    # Per-attempt HTTP timeout when the message sets none, and the most it may set.
    default_timeout_seconds: int = 900
    max_timeout_seconds: int = 7_200
    dedup_window_seconds: int = 600
    # Finished messages with their logs, DLQ entries and ended workflow runs are deleted this
    # many days after they finished (relay.retention; on AWS the table's TTL for all but runs).
    retention_days: int = 30
    max_batch_messages: int = 1000
    max_request_bytes: int = 16 * 1_048_576  # a whole request (a batch) on the API
    response_body_limit: int = 65_536  # bytes of a destination's response kept in logs and DLQ

    delivery_concurrency: int = 64
    poll_interval_seconds: float = 1.0
    # The embedded ticker wakes at the next cron fire time, and at least this often (to see
    # schedules changed by another process on a shared backend).
    schedule_tick_seconds: float = 1.0
    # `relay dev` only: run the relay's clock this many seconds from the system clock, to see a
    # cron schedule fire (or a delay end) without waiting. Signatures keep the real time.
    clock_offset_seconds: float = 0.0
    shutdown_grace_seconds: float = 10.0
