"""A small HTTP client for ``ragops serve``, and the one call the framework retrievers make.

Example:
    >>> from rag.serving.client import ServiceClient
    >>> with ServiceClient("http://127.0.0.1:8000", api_key="rk_…") as client:
    ...     answer = client.search("how do I undo a bad promotion?", k=3)
    ...     print(answer.version, [hit.doc_id for hit in answer.hits])
"""

from __future__ import annotations

from typing import Any

import httpx

from rag.models import Hit
from rag.serving.retriever import Retriever
from rag.serving.schema import BatchSearchResponse, SearchFilter, SearchResponse


class ServiceCallError(Exception):
    """The service answered with an error (its ``kind`` and ``message``), or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, error_kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_kind = error_kind


class ServiceClient:
    """Calls ``/v1/search`` and ``/v1/search/batch`` of a running ``ragops serve``."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def search(self, query: str, k: int = 5, *, filter: dict | SearchFilter | None = None,
               version: str | None = None) -> SearchResponse:
        """One query's hits, from the build the service answers with (or the pinned ``version``)."""
        body = {"query": query, "k": k, "filter": _filter_body(filter), "version": version}
        return SearchResponse.model_validate(self._post("/v1/search", body))

    def search_batch(self, queries: list[str], k: int = 5, *, filter: dict | SearchFilter | None = None,
                     version: str | None = None) -> BatchSearchResponse:
        """Several queries, all answered by the same build."""
        body = {"queries": queries, "k": k, "filter": _filter_body(filter), "version": version}
        return BatchSearchResponse.model_validate(self._post("/v1/search/batch", body))

    def _post(self, path: str, body: dict) -> Any:
        try:
            response = self._http.post(path, json={k: v for k, v in body.items() if v is not None})
        except httpx.HTTPError as exc:
            raise ServiceCallError(f"cannot reach the ragops service at {self._http.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"kind": "http", "message": response.text[:300]}
            raise ServiceCallError(f"{path}: {response.status_code} {error.get('kind')}: {error.get('message')}",
                               status=response.status_code, error_kind=error.get("kind"))
        return response.json()


def _filter_body(filter: dict | SearchFilter | None) -> dict | None:
    if isinstance(filter, SearchFilter):
        return filter.model_dump(exclude_none=True)
    return filter


def search_hits(source: Retriever | ServiceClient, query: str, k: int,
                filter: dict | SearchFilter | None = None) -> list[Hit]:
    """Hits of ``query`` from an in-process Retriever or over HTTP, with the same filter either way."""
    if isinstance(source, ServiceClient):
        return source.search(query, k, filter=filter).hits
    parsed = SearchFilter.model_validate(filter) if isinstance(filter, dict) else filter
    return source.answer([query], k, where=parsed.conditions() if parsed else ()).hits[0]
