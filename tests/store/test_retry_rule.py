"""The one retry rule: only errors ragops marked transient are retried (no model, no Prefect run)."""

from __future__ import annotations

import httpx
import pytest
from qdrant_client.http.exceptions import UnexpectedResponse

from rag.config import StoreSettings
from rag.errors import SourceError, StoreError, is_transient
from rag.store import open_store
from rag.store.qdrant import store_errors


def _raised(exc: BaseException) -> StoreError:
    with pytest.raises(StoreError) as error, store_errors("reading"):
        raise exc
    return error.value


@pytest.mark.parametrize("status, transient", [(429, True), (503, True), (400, False), (401, False), (404, False)])
def test_a_server_answer_is_transient_only_when_it_says_later(status: int, transient: bool) -> None:
    error = _raised(UnexpectedResponse(status, "x", b"", httpx.Headers()))
    assert is_transient(error) is transient


def test_network_failures_are_transient_and_bugs_are_not() -> None:
    assert is_transient(_raised(httpx.ConnectError("refused")))
    assert not is_transient(_raised(OSError(28, "No space left on device")))
    with pytest.raises(TypeError), store_errors("reading"):  # a bug in our call is not a store error
        raise TypeError("unhashable type: 'list'")
    assert not is_transient(ValueError("a bug outside ragops"))
    assert not is_transient(SourceError("bucket does not exist"))


def test_an_unreachable_server_is_transient() -> None:
    with pytest.raises(StoreError) as error, open_store(StoreSettings(location="http://127.0.0.1:9", timeout=2)):
        pass
    assert is_transient(error.value)
