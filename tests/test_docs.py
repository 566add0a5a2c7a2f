"""Docs that must match the code."""

from __future__ import annotations

from pydantic import BaseModel

from rag.config import Settings
from rag.models import BuildSummary, Hit
from tests.conftest import ROOT


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            suffix = "[]" if getattr(annotation, "__origin__", None) is list else ""
            paths += _paths(inner, f"{prefix}{name}{suffix}.")
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
