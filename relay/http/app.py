"""The aiohttp transport: every request goes, untouched, to the shared route table."""

from __future__ import annotations

from aiohttp import web

from relay.http.api import ApiRequest, ApiResponse, handle
from relay.service import RelayService


def create_app(service: RelayService, *, max_request_bytes: int) -> web.Application:
    """An aiohttp application serving the relay API for ``service``.

    One catch-all route: destinations travel unencoded in the path, so routing happens on the
    raw request target in ``relay.http.api``, never on a decoded or normalised path.
    """

    async def entry(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            answer = ApiResponse.json(
                {"error": f"request body is over the limit of {max_request_bytes} bytes"}, 413
            )
        else:
            path, _, query = request.raw_path.partition("?")
            answer = await handle(
                service,
                ApiRequest(
                    method=request.method,
                    path=path,
                    query=query,
                    headers=[(str(k), v) for k, v in request.headers.items()],
                    body=body,
                    remote=request.remote,
                ),
            )
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    app = web.Application(client_max_size=max_request_bytes)
    # Any character, newlines too: aiohttp matches the decoded path, where %0A is one.
    app.router.add_route("*", r"/{tail:[\s\S]*}", entry)
    return app
