"""Redaction: the one place that hides what a publisher asked to hide."""

from __future__ import annotations

import base64
import hashlib

from relay.redaction import Redaction, redact


def hidden(value: bytes) -> str:
    return "REDACTED:" + hashlib.sha256(value).hexdigest()


def test_body_text_and_binary() -> None:
    assert redact({"body": "secret"}, "body") == {"body": hidden(b"secret")}
    raw = b"\xff\x00"
    assert redact({"bodyBase64": base64.b64encode(raw).decode()}, "body") == {"body": hidden(raw)}
    assert redact({"body": "kept"}, "header") == {"body": "kept"}


def test_headers_all_or_by_name() -> None:
    data = {"header": {"Authorization": ["a"], "X-Kept": ["1", "2"]}}
    assert redact(dict(data), "header") == {
        "header": {"Authorization": [hidden(b"a")], "X-Kept": [hidden(b"1"), hidden(b"2")]}
    }
    assert redact(dict(data), "header[authorization]") == {
        "header": {"Authorization": [hidden(b"a")], "X-Kept": ["1", "2"]}
    }
    assert redact(dict(data), None) == data


def test_a_redaction_is_the_union_of_its_fields_and_hides_any_shape() -> None:
    redaction = Redaction.of("header[X-Secret]", None) | Redaction.of("body")
    assert redaction.text("out") == hidden(b"out") and redaction.text(None) is None
    assert redaction.text({"a": 1}) == hidden(b'{"a":1}')
    shown = redaction.headers({"x-secret": ["a"], "X-Single": "b", "X-Kept": ["c"]})
    assert shown == {"x-secret": [hidden(b"a")], "X-Single": "b", "X-Kept": ["c"]}
    assert Redaction.of("header").headers({"X-Single": "b"}) == {"X-Single": hidden(b"b")}
    assert not Redaction.of(None, "") and Redaction.of("header[a]")
