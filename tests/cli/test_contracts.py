"""docs/cli.md shows every command's ``--json`` object as ``ragops.contracts`` models it (fast: no model, no Prefect).

For each command's section (``## `ragops reindex ...` ``) the first ```json block is parsed: its top-level
keys must be the model's fields, exactly, and the keys of every nested object it shows must be fields
of the nested model (the docs may leave fields out there, and abbreviate with ``"…"``).
"""

from __future__ import annotations

import json
import re
import typing
from typing import Any

import pytest
from pydantic import BaseModel, RootModel

from rag.models import Hit
from ragops import contracts
from ragops.contracts import ERROR_KINDS, RESPONSES, WITHOUT_JSON, ErrorResponse
from testkit.paths import ROOT

ELLIPSIS = "…"


def sections(text: str) -> dict[str, str]:
    """Each ``## `ragops <command> ...` `` section's text by command name (``bench beir``), and ``errors``."""
    found = {}
    parts = re.split(r"^## ", text, flags=re.M)[1:]
    for part in parts:
        heading, _, body = part.partition("\n")
        if heading.startswith("Errors"):
            found["errors"] = body
            continue
        match = re.match(r"`ragops ((?:[a-z]+ ?)+)", heading)
        if match:
            found[match.group(1).strip()] = body
    return found


def first_json(body: str) -> Any:
    match = re.search(r"```json\n(.*?)\n```", body, flags=re.S)
    assert match, "no ```json block"
    return json.loads(match.group(1))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic models inside an annotation (through list[...], Optional, Union, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def keys_of(model: type[BaseModel]) -> set[str]:
    """The keys of the model's JSON object (aliases where a field has one: ``from``)."""
    if issubclass(model, RootModel):
        model = model.shape_of
    return {field.serialization_alias or field.alias or name for name, field in model.model_fields.items()}


def _fields_by_key(model: type[BaseModel]) -> dict[str, Any]:
    if issubclass(model, RootModel):
        model = model.shape_of
    return {field.serialization_alias or field.alias or name: field for name, field in model.model_fields.items()}


def mismatches(shown: dict, model: type[BaseModel], where: str = "", *, exact: bool = True) -> list[str]:
    """How a JSON object the docs show disagrees with ``model``: keys missing or unknown at the top
    (``exact``), unknown below; nested objects are checked against their field's model."""
    problems = []
    keys, fields = keys_of(model), _fields_by_key(model)
    shown_keys = set(shown) - {ELLIPSIS}
    if exact and shown_keys != keys:
        for key in sorted(keys - shown_keys):
            problems.append(f"{where or model.__name__}: field {key!r} is not in the docs' example")
    for key in sorted(shown_keys - keys):
        problems.append(f"{where or model.__name__}: docs show {key!r}, which {model.__name__} has no field for")
    for key in sorted(shown_keys & keys):
        nested = _models_in(fields[key].annotation)
        values = shown[key] if isinstance(shown[key], list) else [shown[key]]
        for value in values:
            if not isinstance(value, dict) or not nested:
                continue
            inner = min(nested, key=lambda m: len(set(value) - {ELLIPSIS} - keys_of(m)))  # the union's best fit
            problems += mismatches(value, inner, f"{where or model.__name__}.{key}", exact=False)
    return problems


@pytest.fixture(scope="module")
def documented() -> dict[str, str]:
    return sections((ROOT / "docs" / "cli.md").read_text(encoding="utf-8"))


def test_every_command_has_a_contract_and_a_section(documented: dict[str, str]) -> None:
    import typer.main

    from ragops.cli import app

    root = typer.main.get_command(app)
    commands = set()
    for name, command in root.commands.items():
        sub = getattr(command, "commands", None)
        commands |= {f"{name} {inner}" for inner in sub} if sub else {name}
    assert commands == set(RESPONSES) | WITHOUT_JSON
    assert set(documented) - {"errors"} == set(RESPONSES) | WITHOUT_JSON
    for name in WITHOUT_JSON:  # its stdout is another protocol: no --json to promise otherwise
        assert "json_output" not in {param.name for param in root.commands[name].params}


@pytest.mark.parametrize("command", sorted(RESPONSES))
def test_the_docs_example_has_the_models_fields(command: str, documented: dict[str, str]) -> None:
    problems = mismatches(first_json(documented[command]), RESPONSES[command])
    assert not problems, "docs/cli.md disagrees with ragops.contracts:\n" + "\n".join(problems)


def test_the_error_example_and_kinds(documented: dict[str, str]) -> None:
    body = documented["errors"]
    problems = mismatches(first_json(body), ErrorResponse)
    assert not problems, "\n".join(problems)
    listed = re.search(r"`kind` is one of (.*?)\. ", body, flags=re.S)
    assert listed, "the Errors section no longer lists the kinds"
    assert set(re.findall(r"`([a-z_]+)`", listed.group(1))) == ERROR_KINDS


def test_the_check_finds_a_field_the_docs_lack(documented: dict[str, str]) -> None:
    """The comparison can fail: a model with one more field than the docs show is caught."""

    class Grown(contracts.QueryResponse):
        took_ms: float

    class GrownHit(Hit):
        rank: int

    class GrownHits(contracts.QueryResponse):
        hits: list[GrownHit]

    shown = first_json(documented["query"])
    assert mismatches(shown, Grown) == ["Grown: field 'took_ms' is not in the docs' example"]
    assert mismatches(shown, GrownHits) == []  # nested: the docs may leave fields out...
    assert mismatches({**shown, "hits": [{"score": 1.0, "rnk": 1}]}, GrownHits) == [
        "GrownHits.hits: docs show 'rnk', which GrownHit has no field for"  # ...but not show unknown ones
    ]


def test_the_dry_run_example_has_the_models_fields(documented: dict[str, str]) -> None:
    """`reindex --dry-run` prints another object than `reindex`: its own example, in its own subsection."""
    from ragops.contracts import ReindexPlanResponse

    dry_run = documented["reindex"].split("### `--dry-run`", 1)[1]
    assert mismatches(first_json(dry_run), ReindexPlanResponse) == []
