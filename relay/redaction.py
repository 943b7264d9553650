"""The one rule of ``Upstash-Redact-Fields`` for every view relay gives (the message, log and
DLQ answers of relay.http.render, the workflow logs and DLQ, the console): ``body`` hides a
body, ``header`` every header, ``header[<Name>]`` that one; a hidden value reads
``REDACTED:<sha256 hex of the value>``, as QStash shows it. Fields are canonical
(relay.protocol.parse_redact_fields). Only views redact: what is delivered stays as sent."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from relay import protocol as p

PLACEHOLDER = "REDACTED:"


def hidden(value: bytes) -> str:
    """The placeholder shown instead of ``value``."""
    return PLACEHOLDER + hashlib.sha256(value).hexdigest()


@dataclass(frozen=True, slots=True)
class Redaction:
    """What a view hides of one message (or run): its body, all headers, or named ones."""

    body: bool = False
    all_headers: bool = False
    names: frozenset[str] = field(default_factory=frozenset)  # lower-cased

    @classmethod
    def of(cls, *fields: str | None) -> Redaction:
        """The union of canonical ``Upstash-Redact-Fields`` values (None: nothing)."""
        wanted = [f for value in fields if value for f in value.split(",")]
        return cls(
            body="body" in wanted,
            all_headers="header" in wanted,
            names=frozenset(
                f[len("header[") : -1].lower() for f in wanted if f.startswith("header[")
            ),
        )

    def __or__(self, other: Redaction) -> Redaction:
        return Redaction(
            self.body or other.body,
            self.all_headers or other.all_headers,
            self.names | other.names,
        )

    def __bool__(self) -> bool:
        return self.body or self.all_headers or bool(self.names)

    def hides_header(self, name: str) -> bool:
        """Whether the header ``name`` (any case) is hidden."""
        return self.all_headers or name.lower() in self.names

    def text(self, value: Any) -> Any:
        """A body-like value (text, bytes or JSON) as shown: its placeholder under ``body``."""
        if not self.body or value is None:
            return value
        if isinstance(value, str):
            return hidden(value.encode())
        if isinstance(value, bytes):
            return hidden(value)
        return hidden(p.compact_json(value))

    def headers(self, headers: Any) -> Any:
        """A header map (name → values, or name → value) as shown: hidden values replaced."""
        if not isinstance(headers, dict) or not (self.all_headers or self.names):
            return headers
        return {
            name: self._header_value(values) if self.hides_header(str(name)) else values
            for name, values in headers.items()
        }

    @staticmethod
    def _header_value(values: Any) -> Any:
        if isinstance(values, list):
            return [hidden(str(v).encode()) for v in values]
        return hidden(str(values).encode())


def redact(data: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """``data`` (a message or log entry as the API shows it) with the ``Upstash-Redact-Fields``
    ``fields`` names hidden: ``body`` (also ``bodyBase64``, shown as ``body``), ``header``
    (every value of ``header``) or ``header[<Name>]``."""
    redaction = Redaction.of(fields)
    if not redaction:
        return data
    if redaction.body:
        if (text := data.pop("body", None)) is not None:
            data["body"] = redaction.text(text)
        elif (encoded := data.pop("bodyBase64", None)) is not None:
            data["body"] = redaction.text(base64.b64decode(encoded))
    if "header" in data:
        data["header"] = redaction.headers(data["header"])
    return data
