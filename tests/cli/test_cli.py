"""The ragops command line: JSON shapes scripts rely on, readable text, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragops.cli import app

runner = CliRunner()


def run(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env=env)


def as_json(result) -> dict:
    assert result.stdout.count("\n") == 1, result.stdout  # exactly one JSON object on stdout
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_reindex_query_status_rollback_as_a_script_would(write_config: Path, store_path: Path, corpus: Path) -> None:
    config = ["--config", str(write_config)]
    planned = as_json(run("reindex", *config, "--dry-run", "--json"))
    assert planned["would_build"] and planned["counts"]["documents_new"] == 6 and not store_path.exists()
    assert planned["full_build"].startswith("there is no store at")
    first = run("reindex", *config, "--json")
    assert first.exit_code == 0, first.output
    first = as_json(first)
    second = as_json(run("reindex", *config, "--full", "--json"))  # nothing changed: --full still builds
    assert second["promoted"] and second["previous"] == first["collection"]
    assert set(second) >= {"alias", "version", "collection", "state", "counts", "failures", "timings",
                           "promoted", "reason", "live", "previous", "deleted"}

    hits = as_json(run("query", "descaling with citric acid", "-k", "2", *config, "--json"))
    assert hits["version"] == second["version"] and len(hits["hits"]) == 2
    top = hits["hits"][0]
    assert top["doc_id"] == "demo/espresso-machine.html"
    assert set(top) == {"score", "doc_id", "source_uri", "chunk_index", "title", "page", "text", "version"}

    status = as_json(run("status", *config, "--json"))
    assert status["live"] == second["collection"]
    assert [v["version"] for v in status["versions"]] == [second["version"], first["version"]]
    assert [v["live"] for v in status["versions"]] == [True, False]
    assert status["versions"][0]["manifest"]["counts"]["chunks"] == status["versions"][0]["points"]

    back = as_json(run("rollback", *config, "--json"))
    assert (back["from"], back["to"]) == (second["collection"], first["collection"])
    after = as_json(run("query", "descaling with citric acid", "-k", "1", *config, "--json"))
    assert after["version"] == first["version"]

    text = run("status", *config)
    assert text.exit_code == 0 and f"-> {first['collection']}" in text.stdout
    text = run("query", "bicycle chain oil", *config)
    assert "demo/bicycle-chain.md" in text.stdout

    for blank in ("", "   "):  # refused as the HTTP service refuses it (422), not answered with any hits
        refused = run("query", blank, *config)
        assert refused.exit_code == 2 and refused.stdout == "", refused.output
        assert "Invalid value for 'TEXT': must not be empty" in refused.stderr

    # The plan of the next refresh, with its reasons; nothing built.
    (corpus / "tyres.md").write_text("# Tyres\n\nRoad tyres want 6 to 8 bar.\n")
    (corpus / "glossary.txt").unlink()
    planned = run("reindex", *config, "--dry-run")
    assert planned.exit_code == 0, planned.output
    assert f"a new build based on {first['collection']}" in planned.stdout
    assert "demo/tyres.md  new" in planned.stdout
    assert "demo/glossary.txt  absent from the complete listing of source 'demo'" in planned.stdout
    assert as_json(run("status", *config, "--json"))["versions"][0]["version"] == second["version"]


def test_missing_source_folder_is_one_line_and_exit_4(tmp_path: Path) -> None:
    result = run("reindex", "--source", str(tmp_path / "nope"), "--store", str(tmp_path / "s"))
    assert result.exit_code == 4
    assert result.stderr.strip() == f"error: source folder {tmp_path / 'nope'} does not exist or is not a folder"
    assert "Traceback" not in result.output


def test_invalid_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "ragops.yaml"
    config.write_text("embedding:\n  batch_size: 0\n")
    result = run("status", "--config", str(config))
    assert result.exit_code == 2
    assert "embedding.batch_size: Input should be greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.output

    as_json_error = run("status", "--config", str(config), "--json")
    error = as_json(as_json_error)["error"]
    assert error["kind"] == "config" and error["exit_code"] == 2


def _empty_store(path: Path) -> Path:
    from rag.config import StoreSettings
    from rag.store import open_store

    with open_store(StoreSettings(location=str(path))):
        pass
    return path


def test_unknown_alias(tmp_path: Path) -> None:
    _empty_store(tmp_path / "s")
    result = run("query", "anything", "--store", str(tmp_path / "s"), "--alias", "ghost")
    assert result.exit_code == 2
    assert "alias 'ghost' does not exist" in result.stderr
    status = as_json(run("status", "--store", str(tmp_path / "s"), "--alias", "ghost", "--json"))
    assert status == {"alias": "ghost", "store": str(tmp_path / "s"), "live": None, "versions": [], "quarantined": []}


def test_no_sources_configured(tmp_path: Path) -> None:
    result = run("reindex", "--store", str(tmp_path / "s"))
    assert result.exit_code == 2
    assert "no sources to index" in result.stderr


def _hold_store(path: Path) -> subprocess.Popen:
    """Another process holding the embedded store open, as a running reindex or app would."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import time; from qdrant_client import QdrantClient; c = QdrantClient(path={str(path)!r}); "
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "ready"
    return holder


QDRANT_LOCAL = {"RAGOPS_STORE__ENGINE": "qdrant"}  # local mode admits one process; Edge admits many


def test_locked_store(tmp_path: Path) -> None:
    path = tmp_path / "s"
    holder = _hold_store(path)
    try:
        result = run("status", "--store", str(path), "--json", env=QDRANT_LOCAL)
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 4
    assert as_json(result)["error"]["kind"] == "store_locked"


def test_missing_model_path(corpus: Path, tmp_path: Path) -> None:
    result = run("reindex", "--source", str(corpus), "--store", str(tmp_path / "s"),
                 env={"RAGOPS_EMBEDDING__MODEL": str(tmp_path / "no-model")})
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: model path {tmp_path / 'no-model'} does not exist")
    assert "Traceback" not in result.output


def test_reindex_into_a_locked_store(corpus: Path, tmp_path: Path) -> None:
    path = tmp_path / "s"
    holder = _hold_store(path)
    try:
        result = run("reindex", "--source", str(corpus), "--store", str(path), env=QDRANT_LOCAL)
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 4
    assert "is in use by another ragops process" in result.stderr
    assert "Traceback" not in result.output


def test_rollback_without_alias(tmp_path: Path) -> None:
    _empty_store(tmp_path / "s")
    result = run("rollback", "--store", str(tmp_path / "s"), "--alias", "kb")
    assert result.exit_code == 2
    assert "alias 'kb' does not exist" in result.stderr


def test_help_and_version() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("reindex", "query", "status", "rollback", "config"):
        assert command in result.stdout
    assert run("--version").stdout.startswith("ragops ")
    assert "--source" in run("reindex", "--help").stdout


HELP_COMMANDS = [[], ["reindex"], ["query"], ["serve"], ["mcp"], ["status"], ["audit"], ["freshness"], ["rollback"],
                 ["unlock"], ["promote"], ["migrate"], ["eval"], ["drift"], ["config"], ["bench"], ["bench", "beir"]]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "ragops")
def test_help_is_wrapped_once_and_flags_take_no_value(command: list[str]) -> None:
    """A docstring's own line breaks are not kept inside a re-wrapped paragraph (lines ending in the middle of
    the width, then going on), and a flag (--json, --full) shows no value type such as <bool>."""
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output, result.output
    lines = result.output.splitlines()
    width = max(map(len, lines))
    description = lines[1:next(i for i, line in enumerate(lines) if line.strip() in ("Options:", "Arguments:"))]
    for line, following in zip(description, description[1:]):
        if line.strip() and following.strip():  # within a paragraph: the next word did not fit on this line
            assert len(line) + 1 + len(following.split()[0]) > width, f"ragged wrap:\n{result.output}"


def test_config_command_shows_effective_settings(tmp_path: Path) -> None:
    result = run("config", "--store", "http://qdrant:6333", "--alias", "kb", "--json",
                 env={"RAGOPS_STORE__API_KEY": "secret-key"})
    shown = as_json(result)
    assert shown["store"]["location"] == "http://qdrant:6333" and shown["alias"] == "kb"
    assert "secret-key" not in result.stdout


def test_a_malformed_golden_set_stops_a_reindex_before_any_work(corpus: Path, tmp_path: Path) -> None:
    golden = tmp_path / "golden.yaml"
    golden.write_text("- query: how do I roll back?\n")  # no `relevant`
    result = run("reindex", "--source", str(corpus), "--store", str(tmp_path / "s"), "--golden", str(golden), "--json")
    assert result.exit_code == 2
    error = as_json(result)["error"]
    assert error["kind"] == "golden_set" and "relevant: Field required" in error["message"]
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())  # nothing was built
    missing = run("eval", "--golden", str(tmp_path / "nope.yaml"), "--store", str(tmp_path / "s"))
    assert missing.exit_code == 2 and "nope.yaml does not exist" in missing.output


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_first_build_scored_on_the_golden_set_does_not_say_there_was_none(tmp_path: Path) -> None:
    """No floors are set (the default) and a first build has no live build for max_drop: the gate held it
    to its sanity checks only, but it was scored on the --golden set, and the verdict must say so."""
    from testkit.helpers import write_notes

    write_notes(tmp_path / "corpus", 2)
    golden = tmp_path / "golden.yaml"
    golden.write_text("queries:\n  - {id: q, query: 'what is note number 1?', relevant: [corpus/note-001.md]}\n")
    result = run("reindex", "--source", str(tmp_path / "corpus"), "--alias", "g", "--store", str(tmp_path / "s"),
                 "--golden", str(golden))
    assert result.exit_code == 0, result.output
    assert "no golden set" not in result.output, result.output
    assert "none on metrics: the golden set was scored, but a first build meets gate.floors only" in result.output


def test_a_command_line_that_does_not_parse_is_one_json_object_under_json() -> None:
    """The real console script: click's usage errors become the error object (kind usage, exit 2)."""
    script = str(Path(sys.executable).with_name("ragops"))
    result = subprocess.run([script, "query", "-k", "0", "x", "--json"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 2, result.stderr
    assert result.stdout.count("\n") == 1, result.stdout
    error = json.loads(result.stdout)["error"]
    assert set(error) == {"kind", "message", "exit_code"}
    assert error["kind"] == "usage" and error["exit_code"] == 2
    assert "'-k' / '--top-k'" in error["message"]

    plain = subprocess.run([script, "query", "-k", "0", "x"], capture_output=True, text=True, timeout=900)
    assert plain.returncode == 2 and plain.stdout == ""
    assert "Usage: ragops query" in plain.stderr and "--top-k" in plain.stderr

    empty = subprocess.run([script, "query", "", "--json"], capture_output=True, text=True, timeout=900)
    assert empty.returncode == 2 and json.loads(empty.stdout) == {"error": {
        "kind": "usage", "message": "Invalid value for 'TEXT': must not be empty", "exit_code": 2}}

    for ok in (["--help"], ["--version"], ["status", "--help", "--json"]):
        shown = subprocess.run([script, *ok], capture_output=True, text=True, timeout=900)
        assert shown.returncode == 0 and shown.stdout.strip(), (ok, shown.stderr)


def test_a_bad_store_location_is_refused_and_no_empty_store_is_made(tmp_path: Path) -> None:
    result = run("status", "--store", "ftp://example.com/store", "--json")
    assert result.exit_code == 2 and as_json(result)["error"]["kind"] == "config"
    assert "neither a folder nor an http(s):// URL" in as_json(result)["error"]["message"]
    typo = tmp_path / "stroe"
    for command in (["status"], ["query", "anything"], ["rollback", "--alias", "kb"], ["freshness"]):
        result = run(*command, "--store", str(typo))
        assert result.exit_code == 2, (command, result.output)
        assert f"no store at {typo}" in result.stderr, (command, result.stderr)
    assert not typo.exists()  # nothing was created by reading
