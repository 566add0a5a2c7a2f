"""S3 sources against a real S3-compatible server (SeaweedFS from PyPI) on 127.0.0.1, plus a stub that
injects throttling to prove the retries."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from connectors import list_documents
from connectors.s3 import fetch_s3, list_s3, local_name
from rag.config import S3Source
from rag.errors import SourceError
from testkit.helpers import ACCESS_KEY, SECRET_KEY, WEED, assert_same_index, doc_ids, snapshot
from testkit.paths import DEMO_CORPUS

pytestmark = pytest.mark.slow  # a real S3 server (SeaweedFS) or a retrying stub server


def _source(endpoint: str, bucket: str, prefix: str = "docs/", **extra) -> S3Source:
    return S3Source(url=f"s3://{bucket}/{prefix}", endpoint_url=endpoint, name="s3docs", **extra)


def _upload_demo(client, bucket: str, prefix: str = "docs/") -> None:
    for path in sorted(DEMO_CORPUS.iterdir()):
        client.upload_file(str(path), bucket, prefix + path.name)


def test_listing_uses_etags_globs_and_pages(bucket, s3_endpoint: str) -> None:
    client, name = bucket
    for key in ("docs/a.md", "docs/sub/b.html", "docs/skip.tmp", "docs/folder/", "other/c.md"):
        client.put_object(Bucket=name, Key=key, Body=b"" if key.endswith("/") else f"# {key}\n".encode())

    source = _source(s3_endpoint, name, exclude=["*.tmp"])
    refs = list(list_s3(source, page_size=1))  # one object per page: pagination must be followed

    assert [r.doc_id for r in refs] == ["s3docs/a.md", "s3docs/sub/b.html"]
    head = client.head_object(Bucket=name, Key="docs/a.md")
    assert refs[0].signal == "etag:" + head["ETag"].strip('"')
    assert refs[0].uri == f"s3://{name}/docs/a.md" and refs[0].size == len(b"# docs/a.md\n")


def test_hostile_keys_never_leave_the_fetch_folder(bucket, s3_endpoint: str, tmp_path: Path) -> None:
    """Keys that look like paths out (``..``, absolute-looking), very long ones and control characters
    are fetched to files inside the fetch folder, one per key, with their own bytes."""
    client, name = bucket
    keys = ["docs/../escape.md", "docs/a/../../b.md", "docs//etc/passwd", "docs/..", "docs/n" + "n" * 900 + ".md",
            "docs/line\nbreak.txt", "docs/dup.md", "docs/x/dup.md"]
    stored = []
    for n, key in enumerate(keys):
        try:
            client.put_object(Bucket=name, Key=key, Body=f"# Object {n}\n".encode())
            stored.append(key)
        except Exception:  # a server may refuse a key; the rest still make the point
            pass
    assert len(stored) >= 4, stored  # SeaweedFS refuses the ".." and 900-character keys; AWS takes them
    for key in keys:  # so the names those would get are checked here
        assert "/" not in local_name(key) and ".." not in local_name(key) and len(local_name(key)) <= 64
    assert len({local_name(key) for key in keys}) == len(keys)
    source = _source(s3_endpoint, name)
    folder = tmp_path / "outer" / "fetch"
    folder.mkdir(parents=True)
    fetched = {ref.uri: fetch_s3(source, ref, folder) for ref in list_s3(source)}

    assert len(fetched) == len(stored)
    for uri, path in fetched.items():
        assert path.resolve().parent == folder.resolve() and len(path.name) <= 64, (uri, path)
    assert len(set(fetched.values())) == len(fetched)  # dup.md twice: two files
    assert sorted(p.name for p in (tmp_path / "outer").iterdir()) == ["fetch"]  # nothing written beside it
    assert sorted(p.read_text() for p in fetched.values()) == sorted(
        client.get_object(Bucket=name, Key=uri.split("/", 3)[3])["Body"].read().decode() for uri in fetched)


def test_auth_failures_and_missing_buckets_are_clear(bucket, s3_endpoint: str, monkeypatch) -> None:
    _, name = bucket
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(SourceError, match=r"the credentials were refused \(SignatureDoesNotMatch\)"):
        list_documents(_source(s3_endpoint, name))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    with pytest.raises(SourceError, match="bucket 'no-such-bucket-x' does not exist"):
        list_documents(_source(s3_endpoint, "no-such-bucket-x"))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(SourceError, match="no AWS credentials found"):
        list_documents(_source(s3_endpoint, name))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_s3_changes_produce_exactly_the_expected_index(bucket, s3_endpoint: str, tmp_path: Path) -> None:
    from flows.reindex import reindex

    client, name = bucket
    _upload_demo(client, name)
    config = _config(tmp_path, s3_endpoint, name, tmp_path / "store")
    first = reindex(config=str(config))
    assert first["counts"]["documents_new"] == 6 and first["promoted"]

    client.put_object(Bucket=name, Key="docs/bicycle-chain.md",
                      Body=(DEMO_CORPUS / "bicycle-chain.md").read_bytes() + b"\n## Storage\n\nKeep it dry.\n")
    client.delete_object(Bucket=name, Key="docs/glossary.txt")
    client.copy_object(Bucket=name, Key="docs/kitchen/espresso.html",
                       CopySource={"Bucket": name, "Key": "docs/espresso-machine.html"})
    client.delete_object(Bucket=name, Key="docs/espresso-machine.html")  # a rename
    client.put_object(Bucket=name, Key="docs/tyres.md", Body=b"# Tyre pressure\n\nRoad tyres want 6 to 8 bar.\n")
    client.upload_file(str(DEMO_CORPUS / "index-freshness.html"), name, "docs/index-freshness.html")  # same bytes

    second = reindex(config=str(config))

    counts = second["counts"]
    assert (counts["documents_new"], counts["documents_changed"], counts["documents_unchanged"],
            counts["documents_deleted"]) == (2, 1, 3, 2)
    served = snapshot(tmp_path / "store", "kb")
    assert "s3docs/kitchen/espresso.html" in doc_ids(served) and "s3docs/glossary.txt" not in doc_ids(served)
    assert all(p["source_uri"].startswith(f"s3://{name}/docs/") for p, _ in served.values())
    clean = _config(tmp_path / "clean", s3_endpoint, name, tmp_path / "clean-store")
    reindex(config=str(clean))
    assert_same_index(served, snapshot(tmp_path / "clean-store", "kb"))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_failing_s3_listing_deletes_nothing(bucket, s3_endpoint: str, tmp_path: Path, corpus: Path,
                                               monkeypatch) -> None:
    from flows.reindex import reindex

    client, name = bucket
    _upload_demo(client, name)
    config = _config(tmp_path, s3_endpoint, name, tmp_path / "store", extra_sources=[{"path": str(corpus)}])
    reindex(config=str(config))
    before = doc_ids(snapshot(tmp_path / "store", "kb"))

    (corpus / "new-note.md").write_text("# Note\n\nA new note in the folder.\n")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rotated-and-wrong")
    run = reindex(config=str(config))

    assert run["counts"]["documents_deleted"] == 0 and run["counts"]["documents_new"] == 1
    assert any("s3docs" in note and "kept its 6 documents" in note for note in run["notes"])
    assert doc_ids(snapshot(tmp_path / "store", "kb")) == before | {"corpus/new-note.md"}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_cli_takes_an_s3_url_as_source(bucket, s3_endpoint: str, tmp_path: Path, monkeypatch) -> None:
    from ragops.cli import app

    client, name = bucket
    _upload_demo(client, name, prefix="kb/")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)  # the standard AWS variable for the endpoint
    result = CliRunner().invoke(
        app, ["reindex", "--source", f"s3://{name}/kb/", "--store", str(tmp_path / "s"), "--alias", "kb", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"]["documents_indexed"] == 6 and summary["promoted"]
    assert all(s["kind"] == "s3" for s in summary["sources"])


class _Throttling(BaseHTTPRequestHandler):
    """Answers ListObjectsV2 with 503 SlowDown a few times, then with one object."""

    failures_left = 0
    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            self.send_response(503)
        else:
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/'
                b'2006-03-01/"><Name>bkt</Name><Prefix></Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys>'
                b"<IsTruncated>false</IsTruncated><Contents><Key>a.md</Key><LastModified>2026-01-01T00:00:00.000Z"
                b"</LastModified><ETag>&quot;abc123&quot;</ETag><Size>5</Size><StorageClass>STANDARD</StorageClass>"
                b"</Contents></ListBucketResult>"
            )
            self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def throttling_endpoint(monkeypatch) -> Iterator[type[_Throttling]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Throttling)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Throttling.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    yield _Throttling
    server.shutdown()


def test_throttling_is_retried_with_backoff_then_reported(throttling_endpoint) -> None:
    handler = throttling_endpoint
    handler.failures_left, handler.requests = 2, 0
    source = S3Source(url="s3://bkt", endpoint_url=handler.endpoint, region="us-east-1", max_attempts=4)
    refs = list_documents(source).refs
    assert [r.doc_id for r in refs] == ["bkt/a.md"] and refs[0].signal == "etag:abc123"
    assert handler.requests == 3  # two 503s retried, then success

    handler.failures_left, handler.requests = 100, 0
    with pytest.raises(SourceError, match="SlowDown") as error:
        list_documents(source.model_copy(update={"max_attempts": 2}))
    assert error.value.transient and handler.requests == 2


def _config(folder: Path, endpoint: str, bucket: str, store: Path, extra_sources: list | None = None) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ragops.yaml"
    path.write_text(yaml.safe_dump({
        "alias": "kb",
        "store": {"location": str(store)},
        "sources": [{"url": f"s3://{bucket}/docs/", "endpoint_url": endpoint, "name": "s3docs"}]
        + (extra_sources or []),
        "chunking": {"max_tokens": 96},
    }))
    return path


def test_weed_binary_ships_with_the_dev_install() -> None:
    assert shutil.which("weed") or WEED.exists()
