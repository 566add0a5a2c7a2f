"""The query service: a FastAPI app over a Retriever on the alias (``ragops serve`` runs it under uvicorn).

Routes (all under ``/v1`` but ``/metrics``; OpenAPI at ``/openapi.json``, browsable at ``/docs``):

- ``POST /v1/search``, ``POST /v1/search/batch``: hits from one build, which the answer names with its model;
- ``GET /v1/healthz`` (the process is up), ``GET /v1/readyz`` (store reachable, alias resolved, model
  loaded and warmed: 503 until then), ``GET /v1/version``, ``GET /v1/statistics``;
- ``GET /metrics``: Prometheus;
- ``GET /docs`` (Swagger UI) and ``GET /redoc``: the OpenAPI document, browsable, from files installed with
  ragops (``/docs/assets``), never a CDN; they and ``/openapi.json`` need a key when keys are configured.

The Retriever is opened by a background thread when the app starts (``rag.serving.service``), so the
process answers health checks at once and reports ready only once a search would be fast. Every error,
whatever the route, is ``{"error": {"kind", "message"}}``. ``POST /v1/search`` mostly skips FastAPI for a
fast path, and every request is counted and timed, by the ASGI wrappers in ``rag.serving.asgi``. No Prefect
anywhere on this path.
"""


import importlib.util
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Callable

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.config import Settings
from rag.errors import ConfigError, StoreError, VersionError
from rag.index.audit import parse_since, read_trail
from rag.index.freshness import read_freshness
from rag.models import utc_now
from rag.serving.asgi import install_body_guard, install_metrics, install_search_fast_path
from rag.serving.auth import Denied, Key
from rag.serving.retriever import Answer, Retriever
from rag.serving.schema import (
    AuditTrailResponse,
    BatchSearchRequest,
    BatchSearchResponse,
    ErrorResponse,
    Health,
    ModelInfo,
    QueryHits,
    Readiness,
    SearchRequest,
    SearchResponse,
    SourceStatistics,
    StatisticsResponse,
    VersionResponse,
    k_problem,
    query_problem,
)
from rag.serving.service import (
    Service,
    ServiceError,
    denied,
    error_response,
    internal_error_response,
    service_error_response,
)

log = logging.getLogger(__name__)

#: where /docs and /redoc load Swagger UI's and ReDoc's scripts, styles and icon from
DOCS_ASSETS = "/docs/assets"
#: the OpenAPI document (served by a route of ours, which needs a key when keys are configured)
OPENAPI_URL = "/openapi.json"


def create_app(settings: Settings, *, open_retriever: Callable[[], Retriever] | None = None) -> FastAPI:
    """The query service for ``settings.alias`` (``serve`` settings: limits, keys, threads)."""
    service = Service(settings, open_retriever)
    serve = settings.serve

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        service.stop()

    app = FastAPI(
        title="ragops query service",
        version="1",
        summary=f"Search the promoted build of alias {settings.alias!r}.",
        description="Every answer comes from exactly one build, named with the model that embedded it. "
        "Errors are `{\"error\": {\"kind\", \"message\"}}`.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: blank offline (_install_docs)
        redoc_url=None,
        openapi_url=None,  # FastAPI's route takes no key (_install_docs)
        responses={422: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
                   413: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    )
    app.state.service = service
    _install_error_handlers(app, service)

    def requires(scope: str | None) -> Callable:
        """The dependency that admits a request whose key may do ``scope`` on the alias (None: any scope)."""

        async def authorized(  # async: a dependency this cheap is not worth a hop to the threadpool
            authorization: Annotated[str | None, Header(description="`Bearer <API key>`")] = None,
            x_api_key: Annotated[str | None, Header(description="The API key")] = None,
        ) -> Key | None:
            try:
                return service.admit(authorization, x_api_key, scope)
            except Denied as exc:
                raise denied(exc) from None

        return authorized

    authorized, audit_authorized = requires("search"), requires("audit")

    def check_query(text: str, field: str) -> None:
        if problem := query_problem(text, serve):
            raise ServiceError(422, "invalid_request", f"{field}: {problem}")

    def check_k(k: int) -> None:
        if problem := k_problem(k, serve):
            raise ServiceError(422, "invalid_request", f"k: {problem}")

    def run(texts: list[str], body) -> Answer:
        retriever = service.ready_retriever()
        try:
            answer = retriever.answer(texts, body.k, where=body.filter.conditions() if body.filter else (),
                                      version=body.version)
        except VersionError as exc:
            raise ServiceError(404, "unknown_version", str(exc)) from None
        except StoreError as exc:
            raise ServiceError(503, "store", str(exc)) from None
        service.observe(retriever)
        return answer

    async def answer_search(body: SearchRequest) -> Response:
        check_query(body.query, "query")
        check_k(body.k)
        answer = await service.in_thread(run, [body.query], body)
        return _json(SearchResponse(alias=settings.alias, version=answer.version,
                                    model=ModelInfo.of(answer.manifest.model), query=body.query,
                                    truncated=answer.truncated[0], hits=answer.hits[0]))

    @app.post("/v1/search", response_model=SearchResponse, tags=["search"])
    async def search(body: SearchRequest, key: Annotated[Key | None, Depends(authorized)]) -> Response:
        """The `k` chunks nearest to the query in the live build (or the pinned `version`), best first."""
        return await answer_search(body)

    @app.post("/v1/search/batch", response_model=BatchSearchResponse, tags=["search"])
    async def search_batch(body: BatchSearchRequest, key: Annotated[Key | None, Depends(authorized)]) -> Response:
        """Several queries at once, all answered by the same build."""
        if len(body.queries) > serve.max_batch:
            raise ServiceError(422, "invalid_request", f"queries: {len(body.queries)} queries, over the limit of "
                               f"{serve.max_batch} (serve.max_batch)")
        for index, text in enumerate(body.queries):
            check_query(text, f"queries[{index}]")
        check_k(body.k)
        answer = await service.in_thread(run, body.queries, body)
        results = [QueryHits(query=q, truncated=t, hits=h)
                   for q, t, h in zip(body.queries, answer.truncated, answer.hits)]
        return _json(BatchSearchResponse(alias=settings.alias, version=answer.version,
                                         model=ModelInfo.of(answer.manifest.model), results=results))

    @app.get("/v1/healthz", response_model=Health, tags=["operations"])
    def healthz() -> Health:
        """The process is up (liveness)."""
        return Health(status="ok")

    @app.get("/v1/readyz", response_model=Readiness, tags=["operations"],
             responses={503: {"model": Readiness}})
    def readyz() -> Response:
        """Ready to answer fast: store reachable, alias resolved, model loaded and warmed (readiness)."""
        retriever = service.retriever
        if retriever is None:
            body = Readiness(ready=False, reason=service.not_ready_reason)
            return JSONResponse(body.model_dump(mode="json"), status_code=503)
        return JSONResponse(Readiness(ready=True, version=retriever.version).model_dump(mode="json"))

    @app.get("/v1/version", response_model=VersionResponse, tags=["operations"])
    def version(key: Annotated[Key | None, Depends(authorized)]) -> VersionResponse:
        """The build answering now: its manifest's summary, when it was promoted, and its gate's figures."""
        retriever = service.ready_retriever()
        manifest = retriever.manifest
        last = manifest.promotions[-1] if manifest.promotions else None
        return VersionResponse(
            alias=settings.alias, version=manifest.version, collection=manifest.collection,
            model=ModelInfo.of(manifest.model), created_at=manifest.created_at,
            promoted_at=last.at if last else None, promoted_by=last.by if last else None,
            documents=manifest.counts.documents_indexed, chunks=manifest.counts.chunks,
            sources=[str(source.get("name", "")) for source in manifest.sources],
            gate_passed=manifest.gate.passed if manifest.gate else None,
            metrics=manifest.evaluation.metrics if manifest.evaluation else {},
        )

    @app.get("/v1/statistics", response_model=StatisticsResponse, tags=["operations"])
    def statistics(key: Annotated[Key | None, Depends(authorized)]) -> StatisticsResponse:
        """Every source of the alias: documents, last complete listing, last indexed, staleness, quarantined."""
        retriever = service.ready_retriever()
        with retriever.reading() as store:
            assessed = read_freshness(store, settings.alias, settings.sources, utc_now())
        return StatisticsResponse(alias=settings.alias, version=retriever.version, sources=[
            SourceStatistics(
                name=a.state.name, kind=a.state.kind, uri=a.state.uri, documents=a.state.documents,
                quarantined=a.state.quarantined, last_complete_listing_at=a.state.last_complete_listing_at,
                last_indexed_at=a.state.last_sync_at, staleness_seconds=a.staleness_seconds,
                max_staleness_seconds=a.max_staleness_seconds, breach=a.breach,
            ) for a in assessed])

    @app.get("/v1/audit", response_model=AuditTrailResponse, tags=["operations"])
    def audit_trail(key: Annotated[Key | None, Depends(audit_authorized)],
                    since: str | None = Query(None, description="ISO 8601 time, or an age: 30m, 12h, 7d.")
                    ) -> AuditTrailResponse:
        """The alias's audit trail, oldest first: builds, evaluations, gate verdicts, approvals, promotions,
        rollbacks, retention deletes, drift checks, each with when, by whom and why. Needs a key with the
        `audit` scope when keys are configured."""
        try:
            start = parse_since(since) if since else None
        except ConfigError as exc:
            raise ServiceError(422, "invalid_request", f"since: {exc}") from None
        retriever = service.ready_retriever()
        with retriever.reading() as store:
            events = read_trail(store, settings.alias, since=start)
        return AuditTrailResponse(alias=settings.alias, since=start.isoformat() if start else None, events=events)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics: requests, latency, errors, the live version, swaps."""
        if service.retriever is not None:
            service.observe(service.retriever)
        return Response(service.telemetry.exposition(), media_type="text/plain; version=0.0.4")

    _install_docs(app, requires(None))
    install_search_fast_path(app, service, answer_search)
    install_body_guard(app, service)
    install_metrics(app, service)  # added last, so it is the outer one: it counts the fast path's answers too
    return app


def app_from_environment() -> FastAPI:
    """The app for the settings in the environment (``RAGOPS_CONFIG``, ``RAGOPS_*``): what each uvicorn
    worker of ``ragops serve`` builds."""
    return create_app(Settings.load())


def _json(body) -> Response:
    """A body already built from validated parts, serialized once (FastAPI would validate it again)."""
    return Response(body.model_dump_json(), media_type="application/json")


def _install_error_handlers(app: FastAPI, service: Service) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(service, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the field and the rule, never echo the input (a query may be 100 KB, or private).
        problems = []
        for error in exc.errors():
            if error.get("type") == "json_invalid":  # its loc is the character position
                at = error.get("loc", ("body", "?"))[-1]
                problems.append(f"body: not valid JSON (at character {at})")
                continue
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
        service.telemetry.errors.labels("invalid_request").inc()
        return error_response(422, "invalid_request", "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body that json.loads cannot read for another reason than its syntax (nested
        # deeper than Python's recursion limit, not UTF-8) with a bare 400 {"detail"}: bad JSON, as a 422.
        if exc.status_code == 400 and isinstance(exc.__cause__, (RecursionError, UnicodeDecodeError)):
            why = "nested too deeply" if isinstance(exc.__cause__, RecursionError) else "not UTF-8"
            service.telemetry.errors.labels("invalid_request").inc()
            return error_response(422, "invalid_request", f"body: not valid JSON ({why})")
        kind = "invalid_request" if exc.status_code < 500 else "internal"
        service.telemetry.errors.labels(kind).inc()
        return error_response(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error_response(404, "not_found", f"no route {request.method} {request.url.path}; see /docs")

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception) -> JSONResponse:
        return error_response(405, "invalid_request", f"{request.method} is not allowed on {request.url.path}")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return internal_error_response(service, request.method, request.url.path)


def _docs_assets() -> Path:
    """The folder of Swagger UI's and ReDoc's files that the fastapi-offline package installs (found without
    importing it)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise ConfigError("the fastapi-offline package (Swagger UI and ReDoc for /docs) is not installed: "
                          "reinstall ragops with its dependencies (make install)")
    return Path(spec.origin).parent / "static"


def _install_docs(app: FastAPI, authorized: Callable) -> None:
    """``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``, with the pages' scripts, styles and icon
    served by the app itself.

    FastAPI's own pages load them from cdn.jsdelivr.net and show a blank page without a network, which
    ragops runs without. The document and the pages need a key (``authorized``, any scope) when keys are
    configured: they name the alias and every route. The assets need none: they are the fastapi-offline
    package's files, the same everywhere.
    """
    app.mount(DOCS_ASSETS, StaticFiles(directory=_docs_assets()), name="docs-assets")
    admitted = [Depends(authorized)]

    def local(request: Request, path: str) -> str:
        return request.scope.get("root_path", "").rstrip("/") + path  # behind a proxy's path prefix too

    @app.get(OPENAPI_URL, include_in_schema=False, dependencies=admitted)
    async def openapi(request: Request) -> JSONResponse:
        root = local(request, "")
        if root and app.root_path_in_servers and root not in {server.get("url") for server in app.servers}:
            app.servers.insert(0, {"url": root})  # as FastAPI's own route does
            app.openapi_schema = None
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=admitted)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=local(request, OPENAPI_URL), title=f"{app.title} - Swagger UI",
            swagger_js_url=local(request, f"{DOCS_ASSETS}/swagger-ui-bundle.js"),
            swagger_css_url=local(request, f"{DOCS_ASSETS}/swagger-ui.css"),
            swagger_favicon_url=local(request, f"{DOCS_ASSETS}/favicon.png"),
        )

    @app.get("/redoc", include_in_schema=False, dependencies=admitted)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=local(request, OPENAPI_URL), title=f"{app.title} - ReDoc",
            redoc_js_url=local(request, f"{DOCS_ASSETS}/redoc.standalone.js"),
            redoc_favicon_url=local(request, f"{DOCS_ASSETS}/favicon.png"), with_google_fonts=False,
        )
