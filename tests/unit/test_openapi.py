"""The OpenAPI document comes from the route table: every route appears, described or not."""

from __future__ import annotations

import re

import pytest

from relay.http import openapi
from relay.http.api import DOCS, PUBLIC, ROUTES, openapi_document
from relay.http.schemas import DlqFilter


@pytest.mark.parametrize(
    ("pattern", "template"),
    [
        (r"/v2/dlq/(?P<id>[^/]+)\Z", "/v2/dlq/{id}"),
        (r"/v2/publish/(?P<destination>.+)\Z", "/v2/publish/{destination}"),
        (r"/v2/schedules/(?P<id>[A-Za-z0-9._%-]+)/pause\Z", "/v2/schedules/{id}/pause"),
        (r"/v2/openapi\.json\Z", "/v2/openapi.json"),
        (r"/v2/(dlq|messages)\Z", None),
    ],
)
def test_path_template(pattern: str, template: str | None) -> None:
    assert openapi.path_template(pattern) == template


def test_every_route_is_in_the_document() -> None:
    document = openapi_document()
    for method, pattern, handler in ROUTES:
        template = openapi.path_template(pattern.pattern)
        if not pattern.pattern.startswith("/v2/"):
            continue  # the console and the probes may use any pattern
        assert template is not None, f"{pattern.pattern}: name every group, (?P<name>...)"
        operation = document["paths"][template][method.lower()]
        assert operation["responses"]["4XX"]
        assert ("security" in operation) == (handler in PUBLIC)
        in_path = [p["name"] for p in operation["parameters"] if p["in"] == "path"]
        assert in_path == re.findall(r"{(\w+)}", template)
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }
    assert document["paths"]["/v2/openapi.json"]["get"]["security"] == []


def test_described_and_undescribed_routes() -> None:
    def handler() -> None:
        """Do a thing.

        At length."""

    bare = openapi.Operation("POST", r"/x/(?P<name>[^/]+)\Z", "bare", handler.__doc__, None, False)
    described = openapi.Operation(
        "GET",
        r"/y\Z",
        "described",
        None,
        openapi.Doc(summary="Listed", query=DlqFilter, response=list[int]),
        True,
    )
    document = openapi.document([bare, described])
    post = document["paths"]["/x/{name}"]["post"]
    assert post["summary"] == "Do a thing." and post["description"].endswith("At length.")
    assert post["responses"]["2XX"]["content"] == {"*/*": {"schema": {}}}
    assert post["requestBody"] == {
        "required": False,
        "content": {"application/json": {"schema": {}}},
    }
    get = document["paths"]["/y"]["get"]
    assert get["security"] == [] and get["summary"] == "Listed"
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"type": "integer"},
    }
    params = {p["name"]: p for p in get["parameters"]}
    assert params["dlqIds"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert params["fromDate"]["schema"]["type"] == "integer"  # no null branch in a parameter
    assert not any(p["required"] for p in params.values())


def test_the_qstash_routes_are_described() -> None:
    described = {handler.__name__ for handler in DOCS}
    assert {"publish", "batch", "cancel_many", "list_events", "list_dlq", "retry_dlq_many"} <= (
        described
    )
