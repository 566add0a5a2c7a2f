"""Secrets stay secret: API keys pass through the environment as typed, and no message, log line,
configuration dump or Prefect record shows a key or a URL's password."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag.config import Settings
from rag.errors import ConfigError, SourceError
from rag.secrets import mask, redact_url
from testkit.paths import ROOT

SECRET = "s3cr3t"
# Values YAML would read as something else: a tag, a reserved indicator, an alias, a directive, an
# anchor, block scalars, a number, a boolean, null, a mapping, a comment.
YAML_LOOKALIKES = [f"!{SECRET}", f"@{SECRET}", f"*{SECRET}", f"%{SECRET}", f"&{SECRET}", f"|{SECRET}",
                   f">{SECRET}", "1234567890", "true", "null", f"{SECRET}: x", f"{SECRET} #x"]
STORE_URL = f"http://user:{SECRET}@127.0.0.1:9/"  # nothing listens on port 9: fails at once


def ragops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a child process, with the (RAGOPS_-free) test environment plus ``env``."""
    return subprocess.run([sys.executable, "-m", "ragops", *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})


def assert_hidden(result: subprocess.CompletedProcess, *secrets: str) -> None:
    for secret in secrets or (SECRET,):
        assert secret not in result.stdout and secret not in result.stderr, result.stdout + result.stderr


# --- 1. environment values of secret fields are verbatim strings -------------------------------------


def test_secret_fields_are_found_in_the_model() -> None:
    from rag.config import secret_paths

    assert secret_paths() == {("store", "api_key"), ("evaluation", "llm", "api_key"), ("serve", "api_key")}


@pytest.mark.parametrize("key", YAML_LOOKALIKES)
def test_any_api_key_passes_through_the_environment_as_typed(key: str) -> None:
    settings = Settings.load(environ={
        "RAGOPS_STORE__API_KEY": key,
        "RAGOPS_EVALUATION__LLM__API_KEY": key,
        "RAGOPS_EVALUATION__LLM__BASE_URL": "http://127.0.0.1:8000/v1",
        "RAGOPS_EVALUATION__LLM__MODEL": "m",
    })
    assert settings.store.api_key.get_secret_value() == key
    assert settings.evaluation.llm.api_key.get_secret_value() == key


def test_other_variables_are_still_yaml() -> None:
    settings = Settings.load(environ={"RAGOPS_EMBEDDING__BATCH_SIZE": "64", "RAGOPS_EVALUATION__K_VALUES": "[1, 10]"})
    assert settings.embedding.batch_size == 64 and settings.evaluation.k_values == [1, 10]


# --- 2. messages never contain a secret ---------------------------------------------------------------


def test_an_unparsable_variable_is_named_not_echoed() -> None:
    # A misspelt secret's name is not a secret field, so it is parsed as YAML, and fails.
    with pytest.raises(ConfigError) as error:
        Settings.load(environ={"RAGOPS_STORE__APIKEY": f"*{SECRET}"})
    assert "RAGOPS_STORE__APIKEY" in str(error.value) and SECRET not in str(error.value)


def test_a_validation_message_masks_the_secret_wherever_it_is_echoed() -> None:
    # Contrived on purpose: whichever field's message quotes the value, the secret is masked.
    with pytest.raises(ConfigError) as error:
        Settings.load(environ={"RAGOPS_STORE__API_KEY": f"docs-{SECRET}",
                               "RAGOPS_SOURCES": f"[{{path: a, name: docs-{SECRET}}}, {{path: b, name: docs-{SECRET}}}]"})
    assert "two sources are named '***'" in str(error.value) and SECRET not in str(error.value)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (f"  api_key: !{SECRET}-tag", "line 2, column 12: could not determine a constructor for the tag (not shown)"),
        (f"  api_key: *{SECRET}", "line 2, column 12: found undefined alias (not shown)"),
        (f"  api_key: {SECRET}: x", "line 2, column 18: mapping values are not allowed here"),
    ],
)
def test_a_yaml_syntax_error_shows_where_not_the_line(tmp_path: Path, line: str, problem: str) -> None:
    file = tmp_path / "ragops.yaml"
    file.write_text(f"store:\n{line}\n")
    with pytest.raises(ConfigError) as error:
        Settings.load(file, environ={})
    assert str(error.value) == f"config file {file} is not valid YAML: {problem}"


@pytest.mark.slow  # the CLI in child processes
def test_cli_errors_never_echo_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "ragops.yaml"
    config.write_text(f"store:\n  api_key: !{SECRET}\n")
    for args in (["status", "--config", str(config)], ["status", "--config", str(config), "--json"]):
        result = ragops(*args)
        assert result.returncode == 2 and "line 2, column 12" in result.stdout + result.stderr
        assert_hidden(result)
    result = ragops("status", "--json", env={"RAGOPS_STORE__APIKEY": f"!{SECRET}"})
    assert result.returncode == 2 and json.loads(result.stdout)["error"]["kind"] == "config"
    assert_hidden(result)


# --- 3. URLs with credentials are redacted wherever they are shown -------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://user:pass@qdrant:6333", "http://user:***@qdrant:6333"),
        ("https://:token@host/v1", "https://:***@host/v1"),
        ("http://u:p@ss/w@rd@h:1/x", "http://u:***@h:1/x"),  # raw @ and / in a password: hidden whole
        ('reach "http://u:p@h:9/b?x=1" failed', 'reach "http://u:***@h:9/b?x=1" failed'),
        ("http://qdrant:6333", "http://qdrant:6333"),
        ("http://user@host", "http://user@host"),
        ("/data/qdrant", "/data/qdrant"),
    ],
)
def test_redact_url(text: str, shown: str) -> None:
    assert redact_url(text) == shown


def test_mask_hides_known_secrets_and_url_passwords() -> None:
    assert mask(f"key {SECRET}x at http://a:b@h", [SECRET, f"{SECRET}x", None, ""]) == "key *** at http://a:***@h"


@pytest.mark.slow  # the CLI in child processes
def test_status_does_not_show_the_store_password() -> None:
    for args in (["--json"], []):
        result = ragops("status", "--store", STORE_URL, *args)
        assert result.returncode == 4
        assert "http://user:***@127.0.0.1:9/" in result.stdout + result.stderr
        assert_hidden(result)


@pytest.mark.slow  # the CLI in child processes
def test_config_command_masks_keys_and_url_passwords(tmp_path: Path) -> None:
    config = tmp_path / "ragops.yaml"
    config.write_text(f"sources:\n  - url: s3://bucket/docs\n    endpoint_url: http://minio:{SECRET}-s3@127.0.0.1:9000\n")
    env = {"RAGOPS_STORE__API_KEY": f"!{SECRET}-key", "RAGOPS_EVALUATION__LLM__BASE_URL": f"http://u:{SECRET}-llm@llm/v1",
           "RAGOPS_EVALUATION__LLM__MODEL": "m", "RAGOPS_EVALUATION__LLM__API_KEY": f"{SECRET}-llm-key"}
    shown = ragops("config", "--config", str(config), "--store", STORE_URL, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    settings = json.loads(shown.stdout)
    assert settings["store"] == {**settings["store"], "location": "http://user:***@127.0.0.1:9/", "api_key": "**********"}
    assert settings["sources"][0]["endpoint_url"] == "http://minio:***@127.0.0.1:9000"
    assert settings["evaluation"]["llm"]["base_url"] == "http://u:***@llm/v1"
    assert_hidden(shown)
    text = ragops("config", "--config", str(config), "--store", STORE_URL, env=env)
    assert text.returncode == 0 and "location: http://user:***@127.0.0.1:9/" in text.stdout
    assert_hidden(text)


def test_s3_errors_do_not_show_the_endpoint_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.s3 import list_s3
    from rag.config import S3Source

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    source = S3Source(url="s3://bucket/docs", endpoint_url=f"http://minio:{SECRET}@127.0.0.1:9", region="us-east-1",
                      max_attempts=1)
    with pytest.raises(SourceError) as error:
        list(list_s3(source))
    # botocore quotes the URL it could not reach; both it and ours are redacted
    assert str(error.value).count("http://minio:***@127.0.0.1:9") == 2 and SECRET not in str(error.value)


@pytest.mark.slow
def test_an_unusable_llm_endpoint_is_logged_without_its_password(caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np

    from evals.judge import JudgeSample, judge
    from rag.config import LLMSettings

    llm = LLMSettings(base_url=f"http://user:{SECRET}@127.0.0.1:9/v1", model="m", api_key="sk-test", timeout=5)
    with caplog.at_level(logging.WARNING, logger="evals.judge"):
        judge([JudgeSample("q", "Question?", ["context"], reference_answer="A.")], llm,
              lambda texts: np.zeros((len(texts), 4), dtype=np.float32))
    logged = [r.getMessage() for r in caplog.records if r.name == "evals.judge"]
    assert any("http://user:***@127.0.0.1:9/v1 unusable" in line for line in logged), logged
    assert not any(SECRET in line for line in logged)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_store_password_never_reaches_prefect(corpus: Path) -> None:
    """The CLI's reindex runs the flow in this process; Prefect keeps its parameters, state and logs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler
    from typer.testing import CliRunner

    from ragops.cli import app

    result = CliRunner().invoke(app, ["reindex", "--source", str(corpus), "--store", STORE_URL,
                                      "--alias", "secrets-check", "--json"])
    assert result.exit_code == 4, result.output
    assert SECRET not in result.output
    assert "RAGOPS_STORE__LOCATION" not in os.environ  # the run's environment was put back
    APILogHandler().flush()

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["reindex-secrets-check"])))
        assert len(runs) == 1
        run = runs[0]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    assert run.state.is_failed() and "127.0.0.1:9" in run.state.message
    assert SECRET not in json.dumps(run.parameters) and SECRET not in run.state.message
    assert logs and not [log.message for log in logs if SECRET in log.message]


@pytest.mark.slow
def test_no_secret_anywhere_after_a_reindex_an_eval_and_the_reporting_commands(tmp_path: Path) -> None:
    """Every kind of secret set at once (the Qdrant API key, the LLM judge's key and its URL password,
    the service's key), then the commands a user runs: none of the values is in any command's output
    (--json and text, stdout and stderr), nor in any byte of the store's folder (manifests, audit
    trail, tables) or of PREFECT_HOME (flow run parameters, logs, artifacts)."""
    import shutil

    import yaml

    demo = ROOT / "demo"
    shutil.copytree(demo / "corpus", tmp_path / "corpus")
    shutil.copy(demo / "golden.yaml", tmp_path / "golden.yaml")
    settings = yaml.safe_load((demo / "ragops.yaml").read_text())
    settings["store"]["location"] = "store"
    settings["evaluation"]["llm"] = {"base_url": "http://judge:jUdGePaSs-77@127.0.0.1:9/v1", "model": "m",
                                     "timeout": 3, "max_queries": 2}
    (tmp_path / "ragops.yaml").write_text(yaml.safe_dump(settings))
    secrets = {"RAGOPS_STORE__API_KEY": "qDrAnTkEy-11", "RAGOPS_EVALUATION__LLM__API_KEY": "sk-jUdGeKeY-22",
               "RAGOPS_SERVE__API_KEY": "rk_sErViCeKeY-33"}
    env = {"PREFECT_HOME": str(tmp_path / "prefect"), **secrets}
    config = ["--config", str(tmp_path / "ragops.yaml")]
    outputs = []
    for command in (["reindex", "--json"], ["eval", "--json"], ["eval"], ["status", "--json"], ["status"],
                    ["audit", "--json"], ["config", "--json"], ["config"], ["query", "--json", "rollback"]):
        done = ragops(*command, *config, env=env)
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
        outputs.append((command, done.stdout + done.stderr))
    values = [*secrets.values(), "jUdGePaSs-77"]
    for command, text in outputs:
        assert not [v for v in values if v in text], command
    assert "***" in dict((tuple(c), t) for c, t in outputs)[("config",)]  # masked, not merely absent
    leaks = [(path, value) for folder in (tmp_path / "store", tmp_path / "prefect") for path in folder.rglob("*")
             if path.is_file() for value in values if value.encode() in path.read_bytes()]
    assert not leaks, leaks
