"""API tokens: QStash's shape for clients, the bare and the wrapped form accepted."""

from __future__ import annotations

import base64
import json

from relay import tokens
from relay.protocol import DEV_TOKEN


def test_a_bare_token_is_wrapped_in_qstash_shape() -> None:
    wrapped = tokens.client_token("rly_secret")
    assert json.loads(base64.b64decode(wrapped)) == {"UserID": "relay", "Password": "rly_secret"}
    assert tokens.accepts(wrapped, "rly_secret")
    assert tokens.accepts("rly_secret", "rly_secret")


def test_a_qstash_shaped_token_is_given_as_it_is() -> None:
    assert tokens.client_token(DEV_TOKEN) == DEV_TOKEN
    assert tokens.accepts(DEV_TOKEN, DEV_TOKEN)


def test_anything_else_is_refused() -> None:
    other = tokens.client_token("rly_other")
    not_json = base64.b64encode(b"rly_secret").decode()
    for given in (other, "rly_secre", "", not_json, "%%%", base64.b64encode(b"[1]").decode()):
        assert not tokens.accepts(given, "rly_secret"), given
