"""The Lambda transport: an API Gateway HTTP API event (payload format 2.0, which a Lambda
function URL sends too) becomes an ``ApiRequest``; the ``ApiResponse`` becomes the proxy result.
Routing and every rule stay in ``relay.http.api``."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from relay.http.api import ApiRequest, ApiResponse, handle
from relay.service import RelayService

Event = Mapping[str, Any]
ProxyResult = dict[str, Any]

# Content types answered as plain text; anything else goes back base64-encoded.
_TEXT_TYPES = ("application/json", "text/", "application/xml", "application/javascript")


def request_from_event(event: Event) -> ApiRequest:
    """The request an HTTP API / function URL event carries.

    ``rawPath`` and ``rawQueryString`` are used, never ``queryStringParameters``: the official
    SDKs put the destination URL unencoded in the path, so its own query string lands in ours
    and only the raw form keeps it intact.
    """
    context = event.get("requestContext") or {}
    http = context.get("http") or {}
    path = str(event.get("rawPath") or http.get("path") or "/")
    stage = context.get("stage")
    # A named stage (not `$default`) prefixes the path; the routes know nothing of stages.
    if stage and stage != "$default" and path.startswith(f"/{stage}/"):
        path = path[len(stage) + 1 :]
    headers = [(str(k), str(v)) for k, v in (event.get("headers") or {}).items()]
    if event.get("cookies"):
        # Payload 2.0 moves cookies out of the headers; give them back as one Cookie header.
        headers.append(("cookie", "; ".join(event["cookies"])))
    raw_body = event.get("body") or ""
    body = (
        base64.b64decode(raw_body)
        if event.get("isBase64Encoded")
        else str(raw_body).encode("utf-8")
    )
    return ApiRequest(
        method=str(http.get("method") or "GET").upper(),
        path=path,
        query=str(event.get("rawQueryString") or ""),
        headers=headers,
        body=body,
        remote=http.get("sourceIp"),
    )


def result_from_response(response: ApiResponse) -> ProxyResult:
    """The proxy result API Gateway (or the function URL) turns into the HTTP response."""
    content_type = next(
        (v for k, v in response.headers.items() if k.lower() == "content-type"), ""
    ).lower()
    headers = dict(response.headers)
    result: ProxyResult = {"statusCode": response.status, "headers": headers}
    cookie = headers.pop("Set-Cookie", None)
    if cookie is not None:
        # Payload 2.0 returns cookies in their own field, as it receives them.
        result["cookies"] = [cookie]
    if content_type.startswith(_TEXT_TYPES):
        try:
            result["body"] = response.body.decode("utf-8")
            result["isBase64Encoded"] = False
            return result
        except UnicodeDecodeError:
            pass
    result["body"] = base64.b64encode(response.body).decode("ascii")
    result["isBase64Encoded"] = True
    return result


async def handle_event(
    service: RelayService, event: Event, *, max_request_bytes: int
) -> ProxyResult:
    """Answer one HTTP API / function URL event through the shared route table."""
    request = request_from_event(event)
    if len(request.body) > max_request_bytes:
        answer = ApiResponse.json(
            {"error": f"request body is over the limit of {max_request_bytes} bytes"}, 413
        )
    else:
        answer = await handle(service, request)
    return result_from_response(answer)
