"""What the query service's routes share: the ``Service`` (settings, keys, metrics, the Retriever once it
is open) and its errors, ``ServiceError`` and the JSON error responses every route and the ASGI wrappers
(``rag.serving.asgi``) answer with: ``{"error": {"kind", "message"}}``.

The Retriever is opened by a background thread when the service starts, so the process answers health
checks at once and reports ready only once a search would be fast.
"""

import asyncio
import functools
import gc
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from fastapi.responses import JSONResponse

from rag.config import Settings
from rag.errors import RagopsError
from rag.serving.auth import Denied, Key, KeyRing, presented_key
from rag.serving.retriever import Retriever
from rag.serving.telemetry import Telemetry

log = logging.getLogger(__name__)

#: seconds between two attempts to open the Retriever while the store or alias is not there yet
OPEN_RETRY = 2.0
#: seconds a thread holds the GIL before handing it over (Python's default: 0.005)
SWITCH_INTERVAL = 0.0005
#: searches running or waiting for a forward pass at once (Starlette's thread pool also holds 40)
SEARCH_THREADS = 40


class ServiceError(Exception):
    """An error response: its HTTP status, kind and message."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class Service:
    """What the routes share: the settings, the keys, the metrics, and the Retriever once it is open."""

    def __init__(self, settings: Settings, open_retriever: Callable[[], Retriever] | None = None) -> None:
        self.settings = settings
        self.keys = KeyRing(settings.serve)
        self.telemetry = Telemetry()
        self.retriever: Retriever | None = None
        self.not_ready_reason = "starting: opening the store and loading the model"
        self._frozen_at_switch = 0
        self._open_retriever = open_retriever or self._default_retriever
        self._stop = threading.Event()
        self._opener = threading.Thread(target=self._open, name="open-retriever", daemon=True)
        # Searches run on threads of their own, handed over with asyncio's run_in_executor: anyio's
        # to_thread (FastAPI's threadpool) cost ~1 ms more a request, measured in-process.
        self._searchers = ThreadPoolExecutor(max_workers=SEARCH_THREADS, thread_name_prefix="search")

    def _default_retriever(self) -> Retriever:
        serve = self.settings.serve
        return Retriever.from_settings(self.settings, log_queries=True,
                                       passes=serve.passes or max(1, (os.cpu_count() or 1) // serve.workers))

    def start(self) -> None:
        # The event loop, the request threads and the encoder thread share one GIL: hand it over every
        # 0.5 ms rather than Python's 5 ms, or a request waits behind a forward pass for its turn.
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._opener.start()

    def stop(self) -> None:
        self._stop.set()
        self._opener.join(timeout=60)
        self._searchers.shutdown(wait=True, cancel_futures=True)
        if self.retriever is not None:
            self.retriever.close()

    def _open(self) -> None:
        """Open the Retriever (which loads and warms the live build's model); retry while it cannot."""
        while not self._stop.is_set():
            try:
                retriever = self._open_retriever()
            except RagopsError as exc:
                self.not_ready_reason = f"cannot serve yet: {exc}"
                log.warning("%s; retrying in %.0f s", self.not_ready_reason, OPEN_RETRY)
                self._stop.wait(OPEN_RETRY)
                continue
            if self._stop.is_set():
                retriever.close()
                return
            _freeze_what_is_loaded(collect=True)
            self.retriever = retriever
            self.telemetry.ready.set(1)
            self.telemetry.live.info({"version": retriever.version})
            log.info("ready: alias %s -> %s", self.settings.alias, retriever.version)
            return

    async def in_thread(self, function: Callable, *args):
        """``function(*args)`` on a search thread, awaited (the event loop goes on meanwhile)."""
        return await asyncio.get_running_loop().run_in_executor(self._searchers, functools.partial(function, *args))

    def admit(self, authorization: str | None, x_api_key: str | None, scope: str) -> Key | None:
        """The key a request presents, if it may do ``scope`` on the alias.

        Raises:
            Denied: no key where keys are configured (401), or a key without that access (403).
        """
        return self.keys.check(presented_key(authorization, x_api_key), self.settings.alias, scope=scope)

    def ready_retriever(self) -> Retriever:
        """The Retriever, or a 503 naming why the service is not ready."""
        retriever = self.retriever
        if retriever is None:
            raise ServiceError(503, "not_ready", self.not_ready_reason)
        return retriever

    def observe(self, retriever: Retriever) -> None:
        """Bring the gauges up to date with what the Retriever did."""
        if len(retriever.switches) != self._frozen_at_switch:  # a new build (maybe a new model) was loaded
            self._frozen_at_switch = len(retriever.switches)
            _freeze_what_is_loaded(collect=False)
        self.telemetry.swaps.set(len(retriever.switches))
        self.telemetry.live.info({"version": retriever.version})
        if retriever.query_log is not None:
            self.telemetry.query_log_dropped.set(retriever.query_log.dropped)


def _freeze_what_is_loaded(*, collect: bool) -> None:
    """Keep the objects loaded so far (libraries, the model, the store) out of the garbage collector's
    full passes: with them, one pass stops every thread for ~75 ms (measured after the service opened);
    after ``gc.freeze`` it walks only what requests left. ``collect`` first frees what loading left."""
    if collect:
        gc.collect()
    gc.freeze()


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    """The service's one error shape, ``{"error": {"kind", "message"}}``, with its status."""
    return JSONResponse({"error": {"kind": kind, "message": message}}, status_code=status)


def service_error_response(service: Service, exc: ServiceError) -> JSONResponse:
    """``exc`` as a response, counted in the service's errors by its kind."""
    service.telemetry.errors.labels(exc.kind).inc()
    return error_response(exc.status, exc.kind, exc.message)


def internal_error_response(service: Service, method: str, path: str) -> JSONResponse:
    """A 500 for a bug on ``method path``: the traceback goes to the log, never to the client (call it in an
    ``except`` block)."""
    log.exception("internal error on %s %s", method, path)
    service.telemetry.errors.labels("internal").inc()
    return error_response(500, "internal", "internal error; the service's log has the details")


def denied(exc: Denied) -> ServiceError:
    """The error a refused key gets: 401 ``unauthorized`` (no key) or 403 ``forbidden`` (no access)."""
    return ServiceError(exc.status, "unauthorized" if exc.status == 401 else "forbidden", str(exc))
