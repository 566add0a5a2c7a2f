"""The query service's ASGI wrappers, around FastAPI's app (``rag.serving.app`` installs them):

- ``SearchFastPath``: ``POST /v1/search`` answered without FastAPI's routing, dependency solving and second
  validation, for a valid JSON request from an admitted client (anything else goes on to the route);
- ``Metrics``: counts and times every request by route template (the outermost wrapper);
- the body guard (``install_body_guard``): every request body bounded in size and time, and read only once
  the request's key is admitted (``rag.serving.limits.BodyGuard``).
"""

import time
from typing import Callable

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.routing import Match

from rag.serving.auth import Denied
from rag.serving.limits import BodyGuard, replay, replay_message
from rag.serving.schema import SearchRequest
from rag.serving.service import (
    Service,
    ServiceError,
    denied,
    internal_error_response,
    service_error_response,
)

#: the routes that read a body, and the scope their key needs: checked before the body is read
_BODY_ROUTES = {("POST", "/v1/search"): "search", ("POST", "/v1/search/batch"): "search"}


def install_body_guard(app: FastAPI, service: Service) -> None:
    """Every request body bounded (``serve.max_body_bytes``, ``serve.body_timeout``), and read only once
    the request's key is admitted: a client without one costs the service its headers, never its body."""

    def refuse_early(scope, headers: dict[bytes, bytes]) -> Response | None:
        needs = _BODY_ROUTES.get((scope["method"], scope["path"]))
        if needs is None:
            return None
        try:
            service.admit(_text(headers.get(b"authorization")), _text(headers.get(b"x-api-key")), needs)
        except Denied as exc:
            return service_error_response(service, denied(exc))
        return None

    def error(status: int, kind: str, message: str) -> Response:
        return service_error_response(service, ServiceError(status, kind, message))

    serve = service.settings.serve
    app.add_middleware(BodyGuard, limit=serve.body_limit, timeout=serve.body_timeout, refuse_early=refuse_early,
                       error=error)


def install_search_fast_path(app: FastAPI, service: Service, answer: Callable) -> None:
    """``SearchFastPath`` in front of the app's ``POST /v1/search`` route; ``answer`` is what that route awaits."""
    route = next(r for r in app.routes if getattr(r, "path", None) == "/v1/search")
    app.add_middleware(SearchFastPath, service=service, answer=answer, route=route)


def install_metrics(app: FastAPI, service: Service) -> None:
    """``Metrics`` around everything installed so far: install it last, so it counts the fast path's answers."""
    app.add_middleware(Metrics, service=service, routes=app.routes)


def _route_label(scope, routes: list) -> str:
    """The route template a request matched, for the metrics' ``route`` label.

    FastAPI's router records only its own routes in the scope; for the rest (``/openapi.json``, the docs'
    assets under a mount) the first route matching the request's path and method is looked up here, as
    the router found it. "unmatched": no route (a 404).
    """
    route = scope.get("route")
    if route is not None:
        return getattr(route, "path", "unmatched")
    request = {"type": "http", "path": scope["path"], "root_path": scope.get("root_path", ""),
               "method": scope["method"]}
    for candidate in routes:
        match, _ = candidate.matches(request)
        if match is Match.FULL:
            return getattr(candidate, "path_format", None) or getattr(candidate, "path", "unmatched")
    return "unmatched"


class Metrics:
    """Counts and times every request by route template: a plain ASGI wrapper, no task per request."""

    def __init__(self, app, service: Service, routes: list) -> None:
        self.app, self.service, self.routes = app, service, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]
        # The routers below rewrite the scope's path and root_path on the way into a mount: keep the request's.
        asked = {"path": scope["path"], "root_path": scope.get("root_path", ""), "method": scope["method"]}

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = _route_label({**asked, "route": scope.get("route")}, self.routes)
            self.service.telemetry.requests.labels(path, str(status[0])).inc()
            self.service.telemetry.latency.labels(path).observe(time.perf_counter() - started)


class SearchFastPath:
    """``POST /v1/search`` without FastAPI's routing, dependency solving and second validation.

    Those cost the event loop ~0.6 ms of CPU a search, which every other request in the process waited
    out. This wrapper answers a request that FastAPI's route would answer the same way: a JSON body
    that ``SearchRequest`` accepts, from a client the keys admit. Anything else (another content type,
    bad JSON, a field that fails validation, a missing or refused key) goes on to the route with its
    body, so its errors stay those the route documents.
    """

    def __init__(self, app, service: Service, answer: Callable, route) -> None:
        self.app, self.service, self.answer, self.route = app, service, answer, route

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/search":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first of repeated headers, as the route reads them
        if headers.get(b"content-type", b"").split(b";")[0].strip().lower() != b"application/json":
            await self.app(scope, receive, send)
            return
        body, rest = await _read_body(receive)
        request = self._admit(headers, body)
        if request is None:
            await self.app(scope, replay(body, rest), send)
            return
        scope["route"] = self.route  # for the metrics' route label
        try:
            response = await self.answer(request)
        except ServiceError as exc:
            response = service_error_response(self.service, exc)
        except Exception:
            response = internal_error_response(self.service, "POST", "/v1/search")
        await response(scope, rest, send)

    def _admit(self, headers: dict[bytes, bytes], body: bytes) -> SearchRequest | None:
        """The request, when it is valid and its key may search; None for the route to answer."""
        try:
            request = SearchRequest.model_validate_json(body)
            self.service.admit(_text(headers.get(b"authorization")), _text(headers.get(b"x-api-key")), "search")
        except (ValueError, Denied):  # pydantic's ValidationError is a ValueError
            return None
        return request


async def _read_body(receive) -> tuple[bytes, Callable]:
    """The whole request body, and the receive channel for what follows it (a disconnect)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: let the route see it
            return b"".join(chunks), replay_message(message, receive)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), receive


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
