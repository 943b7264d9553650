"""relay.receiver.django: the receiver contract on a Django project served by a real WSGI server
thread (CSRF middleware on), an async view among them; and a real delivery replayed through
Django's test client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import clear_url_caches, path

from relay.receiver import Delivery, NonRetryable, RetryLater
from relay.receiver.django import verify_signature
from tests.conftest import Api
from tests.conftest import Receiver as Recorder
from tests.receiver.harness import (
    JSON,
    NOT_SHIPPABLE,
    ORDER_BODY,
    RETRY_SECONDS,
    AppState,
    AppUnderTest,
    OrderPlaced,
    Proxy,
    ReceiverContract,
    wsgi_server,
)

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="relay-tests",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()

urlpatterns: list[Any] = []  # this module is the ROOT_URLCONF; `install` fills it per test


def install(state: AppState) -> None:
    """Route this module's URLs to views guarded with ``state``'s receivers."""
    receiver = state.receiver

    def record(request: HttpRequest, delivery: Delivery[Any]) -> HttpResponse:
        return HttpResponse(state.record(request.path, request.headers, delivery))

    @verify_signature(receiver=receiver, model=OrderPlaced)
    def orders(request: HttpRequest, delivery: Delivery[OrderPlaced]) -> HttpResponse:
        return record(request, delivery)

    @verify_signature(receiver=receiver)
    async def other(request: HttpRequest, delivery: Delivery[Any]) -> HttpResponse:
        return record(request, delivery)

    @verify_signature(receiver=state.strangers)
    def strangers(request: HttpRequest, delivery: Delivery[Any]) -> HttpResponse:
        return record(request, delivery)

    @verify_signature(receiver=receiver)
    def retry(request: HttpRequest, delivery: Delivery[Any]) -> HttpResponse:
        raise RetryLater(RETRY_SECONDS, "warehouse busy")

    @verify_signature(receiver=receiver)
    async def fail(request: HttpRequest, delivery: Delivery[Any]) -> HttpResponse:
        raise NonRetryable(NOT_SHIPPABLE)

    @verify_signature(receiver=receiver, trust_forwarded=True)
    def proxied(request: HttpRequest, delivery: Delivery[Any]) -> HttpResponse:
        return record(request, delivery)

    @verify_signature(receiver=receiver, public_url=state.public_url)
    def public(request: HttpRequest, delivery: Delivery[Any]) -> HttpResponse:
        return record(request, delivery)

    views = {
        "orders": orders,
        "other": other,
        "strangers": strangers,
        "retry": retry,
        "fail": fail,
        "proxied": proxied,
        "public": public,
    }
    urlpatterns[:] = [path(name, view) for name, view in views.items()]
    clear_url_caches()


class TestDjango(ReceiverContract):
    @pytest.fixture
    def app(self, state: AppState, proxy: Proxy) -> Iterator[AppUnderTest]:
        install(state)
        with wsgi_server(WSGIHandler()) as base:
            proxy.target = base
            yield AppUnderTest(base, state)


async def test_django_test_client_accepts_a_captured_delivery(
    state: AppState, api: Api, receiver: Recorder
) -> None:
    # The relay delivers to a recording server; the same request then goes through Django's
    # test client, addressed to the host the token was made for.
    install(state)
    await api.publish(receiver.url("/orders"), ORDER_BODY, JSON)
    [delivery] = await receiver.wait_for(1, "/orders")
    headers = {
        k: v for k, v in delivery.headers.items() if k.lower() not in ("host", "content-length")
    }
    client = Client(headers={"host": receiver.base.removeprefix("http://")})
    response = client.post(
        "/orders", ORDER_BODY, content_type=JSON["Content-Type"], headers=headers
    )
    assert response.status_code == 200, response.content
    [handled] = state.handled
    assert handled.delivery.data == OrderPlaced(order_id=42, sku="kettle")
    again = client.post("/orders", ORDER_BODY, content_type=JSON["Content-Type"], headers=headers)
    assert again.status_code == 401
    assert again.json()["error"].startswith("replayed request: jti ")
