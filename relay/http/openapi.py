"""The OpenAPI 3.1 document of the HTTP API, generated from the route table of
``relay.http.api`` and the pydantic models of ``relay.http.schemas`` — never kept by hand.

A route describes itself with ``route(..., summary=, query=, headers=, body=, response=)``; one
registered without them still appears, with its path parameters, any body and any answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter

import relay
from relay.http import schemas

_REF = "#/components/schemas/{model}"
_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
_ESCAPED = re.compile(r"\\([^A-Za-z0-9])")  # \. \- \/: the character itself
_REGEX_LEFT = re.compile(r"[\\()\[\]*+?|^$]")
_ERRORS = "4XX"

RAW_BODY = object()
"""``body=RAW_BODY``: any bytes, delivered as they are (publish)."""


@dataclass(frozen=True, slots=True)
class Doc:
    """What the document says of one route."""

    summary: str | None = None
    query: type[BaseModel] | None = None
    headers: type[BaseModel] | None = None
    body: Any = None  # a type pydantic describes (sent as JSON), RAW_BODY, or None: no body
    body_optional: bool = False  # the body may be left out (ids in the query instead)
    response: Any = None  # a type pydantic describes; None: any answer
    statuses: tuple[int, ...] = (200,)


@dataclass(frozen=True, slots=True)
class Operation:
    """One route as the document sees it."""

    method: str
    pattern: str  # the route's regular expression
    name: str  # the handler's name: the operationId
    description: str | None  # the handler's docstring
    doc: Doc | None  # None: registered without a description
    public: bool  # answered without the token


def path_template(pattern: str) -> str | None:
    """``/v2/dlq/(?P<id>[^/]+)`` → ``/v2/dlq/{id}``; None if the pattern is no plain path."""
    template = _GROUP.sub(lambda m: "{" + m.group(1) + "}", pattern.removesuffix(r"\Z"))
    if _REGEX_LEFT.search(_ESCAPED.sub("", template)):
        return None
    return _ESCAPED.sub(r"\1", template)


def document(operations: Iterable[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``."""
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for op in operations:
        template = path_template(op.pattern)
        if template is None or op.method.lower() in paths.get(template, {}):
            continue  # an earlier route serves this method and path
        operation_id = op.name
        while operation_id in taken:
            operation_id += "_"
        taken.add(operation_id)
        paths.setdefault(template, {})[op.method.lower()] = _operation(
            op, template, operation_id, components
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relay",
            "version": relay.__version__,
            "description": "A self-hostable HTTP message relay, wire-compatible with "
            "Upstash QStash v2.",
        },
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "bearerAuthQuery": {"type": "apiKey", "in": "query", "name": "qstash_token"},
            },
        },
        "security": [{"bearerAuth": []}, {"bearerAuthQuery": []}],
    }


class _Components:
    """``components.schemas``, filled as operations refer to models."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self.schema(schemas.Error)

    def schema(self, annotation: Any) -> dict[str, Any]:
        """A schema for ``annotation``: a $ref for a model, its nested models registered."""
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ not in self.schemas:
                self.schemas[annotation.__name__] = self._model(annotation)
            return {"$ref": _REF.format(model=annotation.__name__)}
        schema = TypeAdapter(annotation).json_schema(ref_template=_REF)
        self.schemas.update(schema.pop("$defs", {}))
        return schema

    def _model(self, model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template=_REF)
        self.schemas.update(schema.pop("$defs", {}))
        return schema

    def parameters(self, model: type[BaseModel], where: str) -> list[dict[str, Any]]:
        """A model's fields as query or header parameters (lists: repeated parameters)."""
        schema = self._model(model)
        required = set(schema.get("required", []))
        return [
            {
                "name": name,
                "in": where,
                "required": name in required,
                "schema": _without_null(prop),
                **({"description": prop["description"]} if "description" in prop else {}),
            }
            for name, prop in schema.get("properties", {}).items()
        ]


def _operation(
    op: Operation, template: str, operation_id: str, components: _Components
) -> dict[str, Any]:
    doc = op.doc or Doc()
    description = (op.description or "").strip()
    summary = doc.summary or description.split("\n\n")[0].replace("\n", " ") or operation_id
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in re.findall(r"{(\w+)}", template)
    ]
    if doc.query is not None:
        parameters += components.parameters(doc.query, "query")
    if doc.headers is not None:
        parameters += components.parameters(doc.headers, "header")
    answer = (
        {"application/json": {"schema": components.schema(doc.response)}}
        if doc.response is not None
        else {"*/*": {"schema": {}}}
    )
    responses: dict[str, Any] = {
        str(status) if doc.response is not None else "2XX": {
            "description": summary,
            "content": answer,
        }
        for status in doc.statuses
    }
    error = {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}}
    responses[_ERRORS] = {
        "description": 'refused: `{"error": ...}` (400 invalid, 401 token, 404 unknown)',
        "content": error if op.doc is not None else {"*/*": {"schema": {}}},
    }
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [_tag(template)],
        "parameters": parameters,
        "responses": responses,
    }
    if description and description != summary:
        operation["description"] = description
    body = _request_body(op, components)
    if body is not None:
        operation["requestBody"] = body
    if op.public:
        operation["security"] = []
    return operation


def _request_body(op: Operation, components: _Components) -> dict[str, Any] | None:
    if op.doc is None:
        if op.method not in ("POST", "PUT", "PATCH"):
            return None
        # Undescribed: whatever JSON the handler may read.
        return {"required": False, "content": {"application/json": {"schema": {}}}}
    body = op.doc.body
    if body is RAW_BODY:
        return {
            "required": False,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "text/plain": {"schema": {"type": "string"}},
                "application/json": {"schema": {}},
            },
        }
    if body is None:
        return None
    return {
        "required": not op.doc.body_optional,
        "content": {"application/json": {"schema": components.schema(body)}},
    }


def _tag(template: str) -> str:
    """The API namespace: ``/v2/dlq/{id}`` → ``dlq``."""
    parts = [p for p in template.split("/") if p and p != "v2" and not p.startswith("{")]
    return parts[0] if parts else "relay"


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without pydantic's ``None`` branch and default: a missing
    parameter is how None is sent."""
    schema = {k: v for k, v in schema.items() if k not in ("default", "title")}
    options = schema.get("anyOf")
    if options is not None:
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) == 1:
            schema.pop("anyOf")
            schema.update(kept[0])
    return schema
