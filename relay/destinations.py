"""Destinations are untrusted input: URL checks at publish, address checks at connect time."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from relay.protocol import BadRequest

MAX_URL_LENGTH = 8192


def is_url(destination: str) -> bool:
    """A destination is a URL when it starts with a scheme; otherwise it names a URL group."""
    return destination.startswith(("http://", "https://"))


def repair_scheme(destination: str) -> str:
    """Undo a proxy's slash merging (``https:/x`` → ``https://x``)."""
    for scheme in ("http:/", "https:/"):
        if destination.startswith(scheme) and not destination.startswith(scheme + "/"):
            return scheme + "/" + destination[len(scheme) :]
    return destination


def _is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def validate_url(url: str, *, allow_private: bool, what: str = "destination") -> str:
    """Return ``url`` if it is an absolute http(s) URL that relay may call; else BadRequest."""
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"invalid {what} url: longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise BadRequest(f"invalid {what} url {url!r}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise BadRequest(f"invalid {what} url {url!r}: must be an absolute http or https URL")
    if any(ch in url for ch in " \r\n\t"):
        raise BadRequest(f"invalid {what} url {url!r}: contains whitespace")
    if not allow_private:
        private = host == "localhost" or host.endswith(".localhost")
        with contextlib.suppress(ValueError):  # a name: checked again when it resolves
            private = private or _is_private(host)
        if private:
            raise BadRequest(
                f"invalid {what} url {url!r}: private, loopback and link-local addresses are "
                "not allowed (set RELAY_ALLOW_PRIVATE_DESTINATIONS=true to allow them)"
            )
    return url


class PublicOnlyResolver(AbstractResolver):
    """Resolves names like aiohttp does, refusing any that lead to a non-public address.

    Checking at connect time, not only at publish, keeps DNS rebinding from reaching the
    relay's own network.
    """

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if not _is_private(r["host"])]
        if not allowed:
            raise OSError(f"{host} resolves only to private addresses, which relay does not call")
        return allowed

    async def close(self) -> None:
        await self._inner.close()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "PublicOnlyResolver()"


def connector_options(allow_private: bool) -> dict[str, Any]:
    """Keyword arguments for aiohttp's TCPConnector that enforce the destination policy."""
    return {} if allow_private else {"resolver": PublicOnlyResolver()}
