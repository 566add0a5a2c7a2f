"""Docs that must match the code."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from rag.config import Settings
from rag.models import BuildSummary, Hit
from testkit.paths import ROOT


def _models_in(annotation) -> list[type[BaseModel]]:
    """Pydantic models inside an annotation (through list[...], Union, Annotated, Optional)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        nested = _models_in(field.annotation)
        if nested:
            suffix = "[]" if typing.get_origin(field.annotation) is list else ""
            for inner in nested:
                paths += [p for p in _paths(inner, f"{prefix}{name}{suffix}.") if p not in paths]
        else:
            paths.append(prefix + name)
    return paths


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [path for path in _paths(Settings) if f"`{path}`" not in text]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_cli_doc_shows_every_json_field() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    for model in (BuildSummary, Hit):
        missing = [name for name in model.model_fields if f'"{name}"' not in text]
        assert not missing, f"docs/cli.md lacks {model.__name__} fields {missing}"


def test_prefect_commands_the_docs_give_run_offline() -> None:
    """`make server|deploy|worker` run Prefect with the offline environment (no telemetry), and the docs
    send operators through them rather than to a bare `prefect worker start`."""
    import re
    import subprocess

    from rag.runtime import OFFLINE_ENVIRONMENT

    telemetry = {"DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED", "HF_HUB_OFFLINE", "SCARF_NO_ANALYTICS"}
    assert telemetry <= set(OFFLINE_ENVIRONMENT)
    # What every recipe's shell sees (the Makefile exports globally): a probe recipe prints it.
    shown = subprocess.run(["make", "-s", "--eval", "probe-env: ; @env", "probe-env"], cwd=ROOT,
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    env = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)
    for name in telemetry:
        assert env.get(name) == OFFLINE_ENVIRONMENT[name], name
    for target in ("server", "deploy", "worker"):
        assert re.search(rf"^{target}:", (ROOT / "Makefile").read_text(), re.M), target
    for doc in ("README.md", "docs/operations.md", "prefect.yaml"):
        text = (ROOT / doc).read_text()
        assert "make worker" in text, doc
        assert not re.search(r"^\s*(RAGOPS_CONFIG=\S+ )?(\.venv/bin/)?prefect worker start", text, re.M), doc
