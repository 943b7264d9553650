"""The console's HTTP rules through the shared route table (what both transports serve): no
Bearer token needed or accepted in place of the session, the log-in cookie, CSRF, headers."""

from __future__ import annotations

import re

import pytest

from relay.http.api import ApiRequest, ApiResponse, handle
from relay.http.lambda_adapter import handle_event
from relay.server import EmbeddedRelay
from relay.service import PublishRequest

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def call(
    relay: EmbeddedRelay,
    method: str,
    path: str,
    *,
    cookie: str | None = None,
    form: str = "",
    headers: list[tuple[str, str]] | None = None,
) -> ApiResponse:
    path, _, query = path.partition("?")
    sent = list(headers or [])
    if cookie:
        sent.append(("Cookie", cookie))
    if form:
        sent.append(("Content-Type", "application/x-www-form-urlencoded"))
    return await handle(relay.service, ApiRequest(method, path, query, sent, form.encode()))


async def log_in(relay: EmbeddedRelay) -> tuple[str, str]:
    """The session cookie and the CSRF token a browser would hold after logging in."""
    answer = await call(relay, "POST", "/console/login", form=f"token={relay.service.token}")
    assert answer.status == 303
    cookie = answer.headers["Set-Cookie"].split(";")[0]
    page = await call(relay, "GET", "/console/keys", cookie=cookie)
    found = re.search(r'name="csrf" value="([^"]+)"', page.body.decode())
    assert found is not None
    return cookie, found[1]


async def test_every_console_path_asks_for_the_log_in(relay: EmbeddedRelay) -> None:
    bearer = [("Authorization", f"Bearer {relay.service.token}")]
    for path in (
        "/console/",
        "/console/messages",
        "/console/messages/msg_x",
        "/console/dlq",
        "/console/workflows",
        "/console/workflows/wfr_x",
        "/console/keys",
        "/console/url-groups",
        "/console/schedules",
        "/console/queues",
        "/console/flow-control",
        "/console/figures",
        "/console/static/console.js",
        "/console/static/htmx-2.0.11.min.js",
        "/console/nothing-here",
    ):
        # the API token is not a console session
        answer = await call(relay, "GET", path, headers=bearer)
        assert answer.status == 303, path
        assert answer.headers["Location"].startswith("/console/login"), path
    answer = await call(relay, "GET", "/console/messages?state=FAILED")
    assert (
        answer.headers["Location"] == "/console/login?next=%2Fconsole%2Fmessages%3Fstate%3DFAILED"
    )
    answer = await call(relay, "POST", "/console/keys/rotate", form="confirm=rotate")
    assert answer.status == 303 and answer.headers["Location"] == "/console/login"
    # an htmx poll is told to load the log-in page rather than swap it into a table
    htmx = [("HX-Request", "true"), ("HX-Current-URL", "http://x/console/messages?url=a")]
    answer = await call(relay, "GET", "/console/messages/rows", headers=htmx)
    assert answer.status == 401
    assert answer.headers["HX-Redirect"] == "/console/login?next=%2Fconsole%2Fmessages%3Furl%3Da"


async def test_log_in_sets_a_strict_http_only_cookie(relay: EmbeddedRelay) -> None:
    token = relay.service.token
    answer = await call(
        relay, "POST", "/console/login", form=f"token={token}&next=%2Fconsole%2Fdlq"
    )
    assert answer.status == 303 and answer.headers["Location"] == "/console/dlq"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie
    behind_tls = await call(
        relay,
        "POST",
        "/console/login",
        form=f"token={token}",
        headers=[("X-Forwarded-Proto", "https")],
    )
    assert behind_tls.headers["Set-Cookie"].endswith("; Secure")
    # somewhere else than the console is not a place to return to
    elsewhere = await call(relay, "POST", "/console/login", form=f"token={token}&next=//evil.test")
    assert elsewhere.headers["Location"] == "/console/"


async def test_a_wrong_token_gets_no_session(relay: EmbeddedRelay) -> None:
    answer = await call(relay, "POST", "/console/login", form="token=nope")
    assert answer.status == 401 and "Set-Cookie" not in answer.headers
    assert b"not this relay&#39;s token" in answer.body


async def test_pages_and_headers_with_a_session(relay: EmbeddedRelay) -> None:
    cookie, _ = await log_in(relay)
    for path in (
        "/console/",
        "/console/messages",
        "/console/dlq",
        "/console/workflows",
        "/console/url-groups",
        "/console/schedules",
        "/console/queues",
        "/console/flow-control",
        "/console/keys",
    ):
        answer = await call(relay, "GET", path, cookie=cookie)
        assert answer.status == 200, path
        assert answer.headers["Content-Type"].startswith("text/html")
        assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Cache-Control"] == "no-store"
        assert b"<script>" not in answer.body  # no inline script: the CSP would block it
    js = await call(relay, "GET", "/console/static/htmx-2.0.11.min.js", cookie=cookie)
    assert js.status == 200 and js.headers["Content-Type"].startswith("text/javascript")
    assert "immutable" in js.headers["Cache-Control"]
    for missing in ("/console/static/README.md", "/console/static/nope.js", "/console/nope"):
        assert (await call(relay, "GET", missing, cookie=cookie)).status == 404, missing
    unknown = await call(relay, "GET", "/console/messages/msg_unknown", cookie=cookie)
    assert unknown.status == 404 and b"msg_unknown not found" in unknown.body


async def test_actions_need_the_csrf_token(relay: EmbeddedRelay) -> None:
    cookie, csrf = await log_in(relay)
    before = relay.service.keys
    for form, headers in (
        ("confirm=rotate", []),
        ("confirm=rotate&csrf=wrong", []),
        ("confirm=rotate", [("X-CSRF-Token", "wrong")]),
    ):
        answer = await call(
            relay, "POST", "/console/keys/rotate", cookie=cookie, form=form, headers=headers
        )
        assert answer.status == 403, form
        assert b"CSRF" in answer.body
    assert relay.service.keys == before
    # the session's own token works as a form field and as htmx's header
    answer = await call(
        relay, "POST", "/console/keys/rotate", cookie=cookie, form=f"confirm=rotate&csrf={csrf}"
    )
    assert answer.status == 303 and answer.headers["Location"] == "/console/keys?done=rotated"
    assert relay.service.keys.current == before.next
    answer = await call(
        relay,
        "POST",
        "/console/keys/rotate",
        cookie=cookie,
        form="confirm=rotate",
        headers=[("X-CSRF-Token", csrf)],
    )
    assert answer.status == 303
    # rotation needs its confirmation
    answer = await call(relay, "POST", "/console/keys/rotate", cookie=cookie, form=f"csrf={csrf}")
    assert answer.status == 400


async def test_log_out_ends_the_browser_session(relay: EmbeddedRelay) -> None:
    cookie, csrf = await log_in(relay)
    answer = await call(relay, "POST", "/console/logout", cookie=cookie, form=f"csrf={csrf}")
    assert answer.status == 303 and "Max-Age=0" in answer.headers["Set-Cookie"]


async def test_the_lambda_transport_serves_the_console(relay: EmbeddedRelay) -> None:
    """The AWS API function answers the console like `relay dev` does."""

    def event(method: str, path: str, **extra: object) -> dict[str, object]:
        return {
            "rawPath": path,
            "rawQueryString": "",
            "headers": {"x-forwarded-proto": "https"},
            "requestContext": {"http": {"method": method, "sourceIp": "203.0.113.9"}},
            **extra,
        }

    service = relay.service
    limit = 1 << 20
    answer = await handle_event(service, event("GET", "/console/"), max_request_bytes=limit)
    assert answer["statusCode"] == 303 and answer["headers"]["Location"] == "/console/login"
    login = event(
        "POST",
        "/console/login",
        body=f"token={service.token}",
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-forwarded-proto": "https",
        },
    )
    answer = await handle_event(service, login, max_request_bytes=limit)
    [cookie] = answer["cookies"]
    assert answer["statusCode"] == 303 and cookie.endswith("; Secure")
    page = event("GET", "/console/messages", cookies=[cookie.split(";")[0]])
    answer = await handle_event(service, page, max_request_bytes=limit)
    assert answer["statusCode"] == 200 and "<table" in answer["body"]


async def test_message_page_hides_redacted_fields(relay: EmbeddedRelay) -> None:
    cookie, _ = await log_in(relay)
    _, answer = await relay.service.publish(
        PublishRequest(
            destination="http://127.0.0.1:9/secret",
            headers=[
                ("Upstash-Redact-Fields", "body,header[X-Secret]"),
                ("Upstash-Forward-X-Secret", "hunter2"),
                ("Upstash-Forward-X-Plain", "visible"),
                ("Upstash-Delay", "1h"),
            ],
            body=b"card 4242",
        )
    )
    page = await call(relay, "GET", f"/console/messages/{answer['messageId']}", cookie=cookie)
    assert page.status == 200
    assert b"hunter2" not in page.body and b"card 4242" not in page.body
    assert b"REDACTED:" in page.body and b"visible" in page.body


async def test_workflow_run_page_hides_redacted_fields(relay: EmbeddedRelay) -> None:
    cookie, _ = await log_in(relay)
    url = "http://127.0.0.1:9/wf"
    run = [
        ("Upstash-Workflow-RunId", "wfr_secret"),
        ("Upstash-Workflow-Url", url),
        ("Upstash-Delay", "1h"),
    ]
    init = [("Upstash-Workflow-Init", "true"), ("Upstash-Redact-Fields", "body"), *run]
    await relay.service.publish(PublishRequest(url, init, b'{"card":"4242 init"}'))
    step = b'{"stepId":1,"stepName":"charge","stepType":"Run","out":"\\"paid 4242\\""}'
    await relay.service.publish(
        PublishRequest(url, [("Upstash-Workflow-Init", "false"), *run], step)
    )
    page = await call(relay, "GET", "/console/workflows/wfr_secret", cookie=cookie)
    assert page.status == 200
    assert b"charge" in page.body and b"REDACTED:" in page.body
    assert b"4242" not in page.body
