"""`ragops serve` as an application meets it: a real uvicorn server on 127.0.0.1, queried over HTTP.

One store with three builds of the demo corpus (the live one, the one before it, and one kept beside them
that the int8 model embedded: another vector space), one server process with two API keys, and the routes
tried as a client would: search, batch, filters, a pinned version, auth, every kind of bad input,
readiness, metrics, and following a rollback made by another process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from rag.serving.auth import hash_key
from testkit.helpers import free_port
from testkit.helpers import service_error as _error
from testkit.paths import DEMO_CORPUS

pytestmark = pytest.mark.slow

RAGOPS = str(Path(sys.executable).parent / "ragops")
KEY, OTHER_ALIAS_KEY = "rk_test_key_for_every_alias", "rk_test_key_for_another_alias"
AUDIT_KEY = "rk_test_key_for_the_audit_trail"
QUESTION = "how do I undo a bad promotion?"


def _wait_for_port(url: str, process: subprocess.Popen, timeout: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else "server exited"
        try:
            return httpx.get(f"{url}/v1/readyz", timeout=5)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server never listened")


def _wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/v1/readyz", timeout=5).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError("the server never became ready")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, prefect_harness):
    """Three builds of the demo corpus, and `ragops serve` on them; yields what the tests need."""
    from flows.reindex import reindex

    root = tmp_path_factory.mktemp("serve")
    corpus = root / "corpus"
    shutil.copytree(DEMO_CORPUS, corpus)
    config = root / "ragops.yaml"
    settings = {
        "alias": "docs",
        "sources": [{"path": str(corpus), "name": "demo"}],
        "store": {"location": str(root / "store")},
        "chunking": {"max_tokens": 96},
        "serve": {"max_k": 20, "max_query_chars": 600, "max_batch": 4, "follow_every": 1.0,
                  "api_keys": [{"id": "app", "sha256": hash_key(KEY)},
                               {"id": "other", "sha256": hash_key(OTHER_ALIAS_KEY), "aliases": ["other"]},
                               {"id": "auditor", "sha256": hash_key(AUDIT_KEY), "scopes": ["audit"]}]},
    }
    config.write_text(yaml.safe_dump(settings))
    first = reindex(config=str(config))["version"]
    (corpus / "glossary.txt").write_text((corpus / "glossary.txt").read_text() + "\nRollback: the alias goes back.\n")
    second = reindex(config=str(config))["version"]
    int8_config = root / "int8.yaml"  # the same documents in the int8 model's vector space, kept, never live
    int8_config.write_text(yaml.safe_dump({**settings, "embedding": {"quantization": "int8"}}))
    int8 = reindex(config=str(int8_config), promote=False)["version"]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_HOME": str(root / "prefect")}
    process = subprocess.Popen([RAGOPS, "serve", "--config", str(config), "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first_readyz = _wait_for_port(url, process)
        first_healthz = httpx.get(f"{url}/v1/healthz", timeout=5)
        _wait_ready(url)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
            yield {"url": url, "client": client, "config": config, "env": env, "first": first, "second": second,
                   "int8": int8,
                   "first_readyz": first_readyz, "first_healthz": first_healthz, "process": process}
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        assert KEY not in stderr and OTHER_ALIAS_KEY not in stderr and AUDIT_KEY not in stderr  # never logged


def test_not_ready_until_the_model_is_warm_then_ready_with_the_live_version(served) -> None:
    assert served["first_healthz"].status_code == 200
    first = served["first_readyz"]
    assert first.status_code == 503 and first.json()["ready"] is False and first.json()["reason"], first.text
    ready = httpx.get(f"{served['url']}/v1/readyz").json()
    assert ready == {"ready": True, "version": served["second"], "reason": None}


def test_search_names_its_build_and_model_and_returns_the_fields_an_app_needs(served) -> None:
    body = served["client"].post("/v1/search", json={"query": QUESTION, "k": 3}).json()
    assert body["version"] == served["second"] and body["alias"] == "docs" and body["truncated"] is False
    assert body["model"]["name"] == "all-MiniLM-L6-v2" and body["model"]["dimension"] == 384
    assert len(body["hits"]) == 3 and all(hit["version"] == served["second"] for hit in body["hits"])
    scores = [hit["score"] for hit in body["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert body["hits"][0]["doc_id"] == "demo/operations-handbook.pdf", body["hits"][0]
    assert {"doc_id", "source_uri", "title", "page", "chunk_index", "text"} <= set(body["hits"][0])


def test_filters_keep_only_matching_chunks(served) -> None:
    client = served["client"]

    def hits(filter: dict) -> list[dict]:
        response = client.post("/v1/search", json={"query": QUESTION, "k": 20, "filter": filter})
        assert response.status_code == 200, response.text
        return response.json()["hits"]

    glossary = hits({"doc_id": "demo/glossary.txt"})
    assert glossary and {h["doc_id"] for h in glossary} == {"demo/glossary.txt"}
    by_prefix = hits({"doc_id_prefix": "demo/index-"})
    assert by_prefix and {h["doc_id"] for h in by_prefix} == {"demo/index-freshness.html"}
    pages = hits({"doc_id": "demo/operations-handbook.pdf", "page": {"gte": 2, "lte": 2}})
    assert pages and {h["page"] for h in pages} == {2}
    assert hits({"source": "nowhere"}) == []
    everything = client.post("/v1/search", json={"query": QUESTION, "k": 20}).json()["hits"]
    assert hits({"source": ["demo", "nowhere"]}) == everything and len(everything) > len(glossary)
    message = _error(client.post("/v1/search", json={"query": QUESTION, "filter": {"text": "x"}}), 422,
                     "invalid_request")
    assert "filter.text" in message


def test_a_pinned_version_answers_from_that_build_and_an_unknown_one_is_404(served) -> None:
    client = served["client"]
    pinned = client.post("/v1/search", json={"query": QUESTION, "version": served["first"]}).json()
    assert pinned["version"] == served["first"] and all(h["version"] == served["first"] for h in pinned["hits"])
    # Each answer names the vector space its build lives in: int8 and float32 builds of one model differ.
    live = client.post("/v1/search", json={"query": QUESTION}).json()
    int8 = client.post("/v1/search", json={"query": QUESTION, "version": served["int8"]}).json()
    assert int8["version"] == served["int8"]
    assert {k: int8["model"][k] for k in ("dtype", "quantization", "backend", "space")} == {
        "dtype": "float32", "quantization": "int8", "backend": "onnx", "space": "int8"}
    assert (live["model"]["quantization"], live["model"]["space"]) == ("none", "reference")
    assert int8["model"]["weights_sha256"] == live["model"]["weights_sha256"]
    message = _error(client.post("/v1/search", json={"query": QUESTION, "version": "19990101-000000"}), 404,
                     "unknown_version")
    assert "19990101-000000" in message and "ragops status" in message


def test_batch_answers_every_query_from_one_build(served) -> None:
    queries = [QUESTION, "what is a golden set?", "espresso machine descaling"]
    body = served["client"].post("/v1/search/batch", json={"queries": queries, "k": 2}).json()
    assert [r["query"] for r in body["results"]] == queries and body["version"] == served["second"]
    assert all(len(r["hits"]) == 2 and {h["version"] for h in r["hits"]} == {body["version"]} for r in body["results"])
    single = served["client"].post("/v1/search", json={"query": queries[2], "k": 2}).json()
    assert [h["doc_id"] for h in body["results"][2]["hits"]] == [h["doc_id"] for h in single["hits"]]


def test_api_keys_none_wrong_other_alias_and_right(served) -> None:
    url, query = served["url"], {"query": QUESTION}
    assert "Bearer" in _error(httpx.post(f"{url}/v1/search", json=query), 401, "unauthorized")
    _error(httpx.post(f"{url}/v1/search", json=query, headers={"Authorization": "Bearer rk_wrong"}), 401,
           "unauthorized")
    message = _error(httpx.post(f"{url}/v1/search", json=query, headers={"X-API-Key": OTHER_ALIAS_KEY}), 403,
                     "forbidden")
    assert "'other'" in message and OTHER_ALIAS_KEY not in message
    assert httpx.post(f"{url}/v1/search", json=query, headers={"X-API-Key": KEY}).status_code == 200
    _error(httpx.get(f"{url}/v1/version"), 401, "unauthorized")
    assert httpx.get(f"{url}/v1/healthz").status_code == 200  # probes need no key


def test_the_audit_trail_needs_a_key_with_the_audit_scope(served) -> None:
    url = served["url"]
    assert "'audit' scope" in _error(served["client"].get("/v1/audit"), 403, "forbidden")  # a search key
    _error(httpx.get(f"{url}/v1/audit"), 401, "unauthorized")
    assert "'search' scope" in _error(httpx.post(f"{url}/v1/search", json={"query": QUESTION},
                                                 headers={"X-API-Key": AUDIT_KEY}), 403, "forbidden")
    trail = httpx.get(f"{url}/v1/audit", headers={"X-API-Key": AUDIT_KEY}).json()
    builds = [e["build"] for e in trail["events"] if e["kind"] == "build"]
    assert trail["alias"] == "docs"
    assert [b.split("__")[-1] for b in builds] == [served["first"], served["second"], served["int8"]]
    promotions = [e for e in trail["events"] if e["kind"] == "promotion"]
    assert promotions[-1]["build"].endswith(served["second"]) and promotions[-1]["by"]["user"]
    later = httpx.get(f"{url}/v1/audit", params={"since": promotions[-1]["at"]},
                      headers={"X-API-Key": AUDIT_KEY}).json()["events"]
    assert promotions[-1] in later and all(e["at"] >= promotions[-1]["at"] for e in later)
    _error(httpx.get(f"{url}/v1/audit", params={"since": "soon"}, headers={"X-API-Key": AUDIT_KEY}), 422,
           "invalid_request")


@pytest.mark.parametrize(("body", "field"), [
    ({"query": ""}, "query"),
    ({"query": "   "}, "query"),
    ({"query": QUESTION, "k": 0}, "k"),
    ({"query": QUESTION, "k": 21}, "k"),
    ({"query": "x" * 601}, "query"),
    ({"k": 3}, "query"),
    ({"query": QUESTION, "surprise": 1}, "surprise"),
])
def test_bad_input_is_a_422_naming_the_field(served, body: dict, field: str) -> None:
    message = _error(served["client"].post("/v1/search", json=body), 422, "invalid_request")
    assert message.startswith(field), message
    assert "x" * 100 not in message  # the input is not echoed back


def test_bad_batches_and_a_query_the_model_reads_only_in_part(served) -> None:
    client = served["client"]
    message = _error(client.post("/v1/search/batch", json={"queries": ["a"] * 5}), 422, "invalid_request")
    assert "max_batch" in message
    assert _error(client.post("/v1/search/batch", json={"queries": ["ok", ""]}), 422,
                  "invalid_request").startswith("queries[1]")
    broken = client.post("/v1/search", content=b'{"query": "abc", "k": 3', headers={"content-type": "application/json"})
    assert _error(broken, 422, "invalid_request") == "body: not valid JSON (at character 23)"
    surrogate = client.post("/v1/search", content=b'{"query": "rollback \\ud800"}',  # valid JSON, not text
                            headers={"content-type": "application/json"})
    assert "lone surrogate" in _error(surrogate, 422, "invalid_request")
    long = "a " * 290  # 580 characters (under the limit) but 290 tokens: the model reads 254 of them
    assert client.post("/v1/search", json={"query": long}).json()["truncated"] is True


def test_the_search_fast_path_answers_as_the_route_does(served) -> None:
    """A plain JSON search skips FastAPI's routing (rag.serving.asgi.SearchFastPath); other content types
    reach the route. Both give the same answer, and what the route refuses stays refused."""
    client, body = served["client"], {"query": QUESTION, "k": 3, "filter": {"source": "demo"}}
    fast = client.post("/v1/search", json=body)
    routed = client.post("/v1/search", json=body, headers={"content-type": "application/ld+json"})
    assert fast.status_code == routed.status_code == 200
    assert fast.json() == routed.json() and fast.headers["content-type"] == routed.headers["content-type"]
    refused = client.post("/v1/search", json=body, headers={"content-type": "text/plain"})
    assert _error(refused, 422, "invalid_request").startswith("body: Input should be a valid dictionary")


def test_version_and_statistics_describe_the_live_build_and_its_sources(served) -> None:
    client = served["client"]
    version = client.get("/v1/version").json()
    assert version["version"] == served["second"] and version["promoted_by"] == "reindex"
    assert version["documents"] == 6 and version["chunks"] > 6 and version["sources"] == ["demo"]
    assert version["model"]["name"] == "all-MiniLM-L6-v2" and version["model"]["space"] == "reference"
    statistics = client.get("/v1/statistics").json()
    (demo,) = statistics["sources"]
    assert demo["name"] == "demo" and demo["documents"] == 6 and demo["quarantined"] == 0
    assert demo["last_complete_listing_at"] and demo["staleness_seconds"] is not None


def test_metrics_count_requests_and_name_the_live_version(served) -> None:
    served["client"].post("/v1/search", json={"query": QUESTION})
    text = httpx.get(f"{served['url']}/metrics").text
    assert 'ragops_requests_total{route="/v1/search",status="200"}' in text
    assert "ragops_request_seconds_bucket" in text and 'ragops_errors_total{kind="invalid_request"}' in text
    assert f'ragops_live_info{{version="{served["second"]}"}} 1.0' in text


def test_queries_reach_the_query_log_the_drift_check_reads(served) -> None:
    from rag.config import StoreSettings
    from rag.serving.querylog import QueryLog
    from rag.store import open_store

    for question in ("query log one", "query log two", "query log three"):
        served["client"].post("/v1/search", json={"query": question})
    location = yaml.safe_load(served["config"].read_text())["store"]["location"]
    deadline = time.monotonic() + 10
    while True:  # written by the service's background thread, a moment after the answers
        with open_store(StoreSettings(location=location), create=False) as store:
            manifest = store.read_manifest(store.alias_target("docs"))
            logged = len(QueryLog(store, "docs", manifest.model).read())
        if logged >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert logged >= 3


def test_binding_beyond_loopback_without_a_key_warns(tmp_path: Path) -> None:
    process = subprocess.Popen([RAGOPS, "serve", "--store", str(tmp_path / "none"), "--host", "0.0.0.0", "--port",
                                str(free_port())], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stderr.readline()
    finally:
        process.kill()
        process.wait()
    assert first.startswith("warning: serving on 0.0.0.0 with no API key"), first


def test_the_openapi_document_has_examples(served) -> None:
    spec = served["client"].get("/openapi.json").json()  # keys are configured: the document needs one
    assert {"/v1/search", "/v1/search/batch", "/v1/readyz", "/v1/version", "/v1/statistics"} <= set(spec["paths"])
    assert spec["components"]["schemas"]["SearchRequest"]["examples"]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_load_everything_from_the_service_itself(served, page: str) -> None:
    """ragops runs with no network: the docs pages must not load Swagger UI or ReDoc from a CDN (a blank
    page offline). Every script, style, icon and the OpenAPI document come from the service, and the
    metrics name each by its route rather than "unmatched"."""
    html = served["client"].get(page).text  # keys are configured: the pages need one
    assert not re.search(r"(?:https?:)?//[\w-]+\.[\w.-]+", html), html  # no other host, CDN or fonts
    referenced = re.findall(r'(?:src|href|spec-url)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert len(referenced) >= 3, html  # a script, the icon, the OpenAPI document (and Swagger UI's style)
    for url in referenced:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        assert served["client"].get(url).status_code == 200, url
    metrics = httpx.get(f"{served['url']}/metrics").text
    for route in (page, "/openapi.json", "/docs/assets/{path}"):
        assert f'ragops_requests_total{{route="{route}",status="200"}}' in metrics, metrics
    assert 'route="unmatched",status="200"' not in metrics


def test_llamaindex_and_langchain_retrievers_return_the_alias_hits_in_process_and_over_http(served) -> None:
    from rag.serving import Retriever
    from rag.serving.client import ServiceClient
    from rag.serving.langchain import RagopsRetriever as LangChainRetriever
    from rag.serving.llamaindex import RagopsRetriever as LlamaIndexRetriever

    store = yaml.safe_load(served["config"].read_text())["store"]["location"]
    with ServiceClient(served["url"], api_key=KEY) as http, Retriever("docs", store=store) as local:
        expected = [(h.doc_id, h.chunk_index) for h in http.search(QUESTION, k=3).hits]
        for source in (http, local):
            nodes = LlamaIndexRetriever(source, k=3).retrieve(QUESTION)
            assert [(n.node.metadata["doc_id"], n.node.metadata["chunk_index"]) for n in nodes] == expected
            assert {n.node.metadata["version"] for n in nodes} == {served["second"]} and nodes[0].node.text
            docs = LangChainRetriever(source=source, k=3, filter={"source": "demo"}).invoke(QUESTION)
            assert [(d.metadata["doc_id"], d.metadata["chunk_index"]) for d in docs] == expected
            assert docs[0].page_content and docs[0].metadata["score"] > 0


def test_the_mcp_server_answers_search_and_status_over_stdio(served) -> None:
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    async def session_calls() -> tuple[list[str], dict, dict, list]:
        params = StdioServerParameters(command=RAGOPS, args=["mcp", "--config", str(served["config"])],
                                       env=served["env"])
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            tools = [tool.name for tool in (await session.list_tools()).tools]
            found = await session.call_tool("search", {"query": QUESTION, "k": 2})
            status = await session.call_tool("status", {})
            refused = [await session.call_tool("search", arguments) for arguments in ({"query": "  "},
                                                                                       {"query": QUESTION, "k": 0})]
            return tools, json.loads(found.content[0].text), json.loads(status.content[0].text), refused

    tools, found, status, refused = anyio.run(session_calls)
    assert {"search", "status"} <= set(tools)
    assert found["version"] == served["second"] and len(found["hits"]) == 2
    assert found["hits"][0]["doc_id"] == "demo/operations-handbook.pdf"
    assert status["version"] == served["second"] and served["first"] in status["kept_versions"]
    for answer in (found, status):  # the vector space, as the HTTP answers show it
        assert answer["model"] == "all-MiniLM-L6-v2"
        assert {"dtype": "float32", "quantization": "none", "space": "reference"}.items() <= answer["model_info"].items()
    # A refused call tells the agent why, in the words HTTP's 422 uses (not only the server's stderr).
    assert all(result.is_error for result in refused)
    assert "query: must not be empty" in refused[0].content[0].text
    assert "k: 0 is outside 1..20 (serve.max_k)" in refused[1].content[0].text


def test_status_names_each_builds_precision_in_an_aligned_table(served) -> None:
    """An int8 build is not shown as float32, and the MODEL column lines up with its header."""
    done = subprocess.run([RAGOPS, "status", "--config", str(served["config"])], env=served["env"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    header, *rows = [line for line in done.stdout.splitlines() if line.startswith("  ") and "MiniLM" in line
                     or "MODEL" in line]
    rows = {row.split()[0]: row for row in rows}
    assert "all-MiniLM-L6-v2 (int8, " in rows[served["int8"]], done.stdout
    assert "all-MiniLM-L6-v2 (float32, " in rows[served["second"]] and "(float32, " in rows[served["first"]]
    for column in ("MODEL", "CREATED"):
        starts = {header.index(column)} | {row.index("all-MiniLM") if column == "MODEL" else
                                            row.index(" 20", row.index(")")) + 1 for row in rows.values()}
        assert len(starts) == 1, f"{column} is not aligned:\n{done.stdout}"


def test_follows_a_rollback_made_by_another_process(served) -> None:
    """Last in this module: it moves the alias."""
    done = subprocess.run([RAGOPS, "rollback", "--config", str(served["config"]), "--json"], env=served["env"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    moved = time.monotonic()
    while served["client"].get("/v1/version").json()["version"] != served["first"]:
        assert time.monotonic() - moved < 5, "the service did not follow the rollback"
        time.sleep(0.1)
    body = served["client"].post("/v1/search", json={"query": QUESTION}).json()
    assert body["version"] == served["first"] and {h["version"] for h in body["hits"]} == {served["first"]}
    assert "ragops_swaps 1.0" in httpx.get(f"{served['url']}/metrics").text


def test_no_prefect_on_the_serving_path() -> None:
    code = ("import sys; from rag.config import Settings; from rag.serving.app import create_app; "
            "create_app(Settings()); import rag.serving.mcp, rag.serving.client; "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'prefect'], 'prefect imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
