"""Destination policy: URL checks at publish, address checks when connecting."""

from __future__ import annotations

import pytest

from relay.destinations import PublicOnlyResolver, repair_scheme, validate_url
from relay.protocol import BadRequest


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:8080/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.5.4/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://api.localhost/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_private_destinations_refused_unless_allowed(url: str) -> None:
    with pytest.raises(BadRequest, match="private"):
        validate_url(url, allow_private=False)
    assert validate_url(url, allow_private=True) == url


@pytest.mark.parametrize(
    "url", ["ftp://x.com/", "http://", "https:///p", "http://exa mple.com/", "http://x.com:99999/"]
)
def test_malformed_urls(url: str) -> None:
    with pytest.raises(BadRequest, match="url"):
        validate_url(url, allow_private=True)


def test_public_urls_pass() -> None:
    assert validate_url("https://example.com/a?b=1", allow_private=False)
    assert validate_url("http://8.8.8.8/", allow_private=False)


def test_repair_merged_slashes() -> None:
    assert repair_scheme("https:/example.com/x") == "https://example.com/x"
    assert repair_scheme("http://example.com") == "http://example.com"


async def test_resolver_refuses_names_that_lead_to_loopback() -> None:
    resolver = PublicOnlyResolver()
    try:
        with pytest.raises(OSError, match="private"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
