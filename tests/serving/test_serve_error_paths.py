"""The query service's error paths and what it serves to whom, on real `ragops serve` processes on this
machine: a body JSON cannot parse answers in the documented error shape; with keys, the API docs need
one; without keys beyond loopback, the audit trail stays closed and the warning says so.

No store is needed: every answer here comes before a search would (the service keeps retrying to open
the store it is given, and answers meanwhile).
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from testkit.helpers import free_port, stop, wait_ready
from testkit.helpers import service_error as _error

RAGOPS = str(Path(sys.executable).parent / "ragops")
KEY = "rk_error_paths_test_key"


@contextmanager
def _serving(folder: Path, *args: str, key: str | None = None) -> Iterator[tuple[str, Path]]:
    """`ragops serve` on a store folder that does not exist; yields its URL on 127.0.0.1 and its stderr file."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAGOPS_")}
    if key:
        env["RAGOPS_SERVE__API_KEY"] = key
    stderr = folder / f"serve-{port}.stderr"
    with open(stderr, "w") as sink:
        process = subprocess.Popen([RAGOPS, "serve", "--store", str(folder / "no-store"), "--port", str(port), *args],
                                   env=env, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        yield wait_ready(port, process, route="/v1/healthz"), stderr
    finally:
        stop(process)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A service that requires a key (``RAGOPS_SERVE__API_KEY``), on 127.0.0.1."""
    with _serving(tmp_path_factory.mktemp("keyed"), key=KEY) as (url, _):
        yield url


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_with_keys_the_api_docs_need_a_key(keyed: str, path: str) -> None:
    assert "Bearer" in _error(httpx.get(keyed + path, timeout=30), 401, "unauthorized")
    _error(httpx.get(keyed + path, headers={"X-API-Key": "rk_wrong"}, timeout=30), 401, "unauthorized")
    admitted = httpx.get(keyed + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert admitted.status_code == 200, admitted.text
    if path == "/openapi.json":
        assert "/v1/search" in admitted.json()["paths"]


def test_the_docs_assets_need_no_key(keyed: str) -> None:
    """Swagger UI's and ReDoc's own files: the same in every installation, nothing of this service."""
    assert httpx.get(f"{keyed}/docs/assets/favicon.png", timeout=30).status_code == 200


@pytest.mark.parametrize(("route", "body", "why"), [
    ("/v1/search", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("/v1/search", b'{"query": "x", "filter": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001, "nested too deeply"),
    ("/v1/search/batch", b'{"queries": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested too deeply"),
    ("/v1/search", b'{"query": "caf\xe9"}', "not UTF-8"),  # Latin-1, not UTF-8
])
@pytest.mark.parametrize("content_type", ["application/json", "application/ld+json"])
def test_a_body_json_cannot_parse_is_a_422_in_the_error_shape(keyed: str, route: str, body: bytes, why: str,
                                                              content_type: str) -> None:
    response = httpx.post(keyed + route, content=body, timeout=30,
                          headers={"content-type": content_type, "X-API-Key": KEY})
    assert _error(response, 422, "invalid_request") == f"body: not valid JSON ({why})"


def test_without_keys_beyond_loopback_the_audit_trail_is_closed_and_the_warning_says_so(tmp_path: Path) -> None:
    with _serving(tmp_path, "--host", "0.0.0.0") as (url, stderr):
        message = _error(httpx.get(f"{url}/v1/audit", timeout=30), 403, "forbidden")
        assert "0.0.0.0" in message and "'audit' scope" in message and "ragops audit" in message, message
        assert httpx.get(f"{url}/docs", timeout=30).status_code == 200  # no keys: the rest stays open
        _error(httpx.post(f"{url}/v1/search", json={"query": "q"}, timeout=30), 503, "not_ready")
    warning = stderr.read_text().splitlines()[0]
    assert warning.startswith("warning: serving on 0.0.0.0 with no API key"), warning
    assert "/v1/audit" in warning and "stays closed" in warning, warning


def test_without_keys_on_loopback_the_audit_trail_is_open(tmp_path: Path) -> None:
    with _serving(tmp_path) as (url, stderr):
        _error(httpx.get(f"{url}/v1/audit", timeout=30), 503, "not_ready")  # admitted; no store to read yet
    assert "warning" not in stderr.read_text().splitlines()[0]
