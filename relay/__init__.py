"""relay: a self-hostable HTTP message-push relay, wire-compatible with Upstash QStash v2."""

from __future__ import annotations

__version__ = "0.1.0"
