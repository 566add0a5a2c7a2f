"""Docs that must match the code."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from rag.config import Settings
from rag.models import BuildSummary, Hit
from tests.conftest import ROOT


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
