"""Golden sets: the queries an alias must keep answering, and the documents that answer them.

A golden set is a YAML or JSONL file (format and examples in docs/evaluation.md). Each entry has:

- ``query`` (required): the question, as users ask it;
- ``relevant`` (required): the documents that answer it, as document ids (``handbook/ops.pdf``) or
  source URIs (``file:///srv/handbook/ops.pdf``, ``s3://bucket/key``). A list means grade 1 each; a
  mapping gives graded relevance (``{handbook/ops.pdf: 2, handbook/faq.md: 1}``; 0 = judged not relevant);
- ``id`` (optional, default ``q1``, ``q2``… by position): a stable name for per-query rows;
- ``reference_contexts`` (optional): passages a good retrieval returns, for RAGAS' text-based metrics;
- ``reference_answer`` (optional): the expected answer, for the LLM-judged metrics.

``load_golden_set`` reads and validates a file; ``resolve_qrels`` maps its documents onto a build's
document table, and refuses a set that names documents the build does not hold.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rag.errors import ConfigError, GoldenSetError
from rag.models import DocumentRecord


class GoldenQuery(BaseModel):
    """One golden query and its judged documents."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    query: str = Field(min_length=1)
    relevant: dict[str, int] = Field(description="Document id or URI -> graded relevance (>= 1 is relevant).")
    reference_contexts: list[str] | None = None
    reference_answer: str | None = None

    @field_validator("relevant", mode="before")
    @classmethod
    def _grades(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return {str(doc): 1 for doc in value}
        return value

    @field_validator("relevant")
    @classmethod
    def _some_relevant(cls, value: dict[str, int]) -> dict[str, int]:
        if any(grade < 0 for grade in value.values()):
            raise ValueError("grades must be 0 (not relevant) or more")
        if not any(grade >= 1 for grade in value.values()):
            raise ValueError("needs at least one document with grade 1 or more")
        return value


class GoldenSet(BaseModel):
    """A validated golden set, with the file it came from and a hash of its content."""

    path: str
    sha256: str
    queries: list[GoldenQuery]


def load_golden_set(path: Path | str) -> GoldenSet:
    """Read and validate a golden set (``.yaml``/``.yml`` or ``.jsonl``).

    Raises:
        GoldenSetError: the file is missing, unreadable, empty, or an entry is malformed; the message
            names the entry (and line, for JSONL) and the field.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GoldenSetError(f"golden set {file} does not exist; set evaluation.golden or pass --golden FILE") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldenSetError(f"cannot read golden set {file}: {exc}") from None

    if file.suffix.lower() == ".jsonl":
        entries = _jsonl_entries(file, text)
    elif file.suffix.lower() in (".yaml", ".yml"):
        entries = _yaml_entries(file, text)
    else:
        raise GoldenSetError(f"golden set {file}: unknown format {file.suffix!r}; use .yaml, .yml or .jsonl")
    if not entries:
        raise GoldenSetError(f"golden set {file} holds no queries")

    queries: list[GoldenQuery] = []
    seen: set[str] = set()
    for position, (where, entry) in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise GoldenSetError(f"golden set {file}, {where}: expected a mapping with `query` and `relevant`")
        entry = {"id": f"q{position}", **entry}
        entry["id"] = str(entry["id"])
        try:
            query = GoldenQuery.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: "
                + ("unknown field (allowed: id, query, relevant, reference_contexts, reference_answer)"
                   if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, "))
                for e in exc.errors()
            )
            raise GoldenSetError(f"golden set {file}, {where} (id {entry['id']!r}): {problems}") from None
        if query.id in seen:
            raise GoldenSetError(f"golden set {file}, {where}: id {query.id!r} is used twice; ids must be unique")
        seen.add(query.id)
        queries.append(query)
    return GoldenSet(path=str(file), sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), queries=queries)


def configured_golden_set(path: Path | str | None, *, required: bool = False) -> GoldenSet | None:
    """The golden set ``evaluation.golden`` names, read and validated; None when none is configured.

    Raises:
        ConfigError: ``required`` and no golden set is configured.
        GoldenSetError: the file cannot be read or is malformed.
    """
    if path is None:
        if required:
            raise ConfigError("no golden set: set evaluation.golden in ragops.yaml or pass --golden FILE")
        return None
    return load_golden_set(path)


def resolve_qrels(
    golden: GoldenSet, records: Mapping[str, DocumentRecord], *, strict: bool = True
) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Map each query's documents (ids or URIs) to the build's document ids.

    Args:
        records: the build's document table (``IndexStore.read_records``).
        strict: raise when a relevant document is not served by the build. Unset (drift checks), such
            a document stays in the judgements under its golden name, so it counts as missed.

    Returns:
        (qrels: query id -> {doc id: grade}, names of relevant documents the build does not serve).

    Raises:
        GoldenSetError: (strict) a relevant document is unknown to the build, or quarantined in it.
    """
    by_uri = {record.uri: doc_id for doc_id, record in records.items()}
    qrels: dict[str, dict[str, int]] = {}
    missing: list[str] = []
    for query in golden.queries:
        judged: dict[str, int] = {}
        for name, grade in query.relevant.items():
            doc_id = name if name in records else by_uri.get(name, name)
            record = records.get(doc_id)
            if grade >= 1 and (record is None or not record.chunks):
                why = "quarantined: " + record.quarantine.reason if record and record.quarantine else "not in the index"
                missing.append(f"{name} (query {query.id}: {why})")
            judged[doc_id] = max(grade, judged.get(doc_id, 0))
        qrels[query.id] = judged
    if missing and strict:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise GoldenSetError(
            f"golden set {golden.path} names {len(missing)} relevant document(s) the build does not serve: "
            f"{shown}. Use document ids as `ragops status` and `ragops query` show them (<source>/<path>) or "
            "source URIs, and fix or drop entries for documents that were removed"
        )
    return qrels, missing


def _jsonl_entries(file: Path, text: str) -> list[tuple[str, Any]]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise GoldenSetError(f"golden set {file}, line {number}: not valid JSON ({exc.msg})") from None
    return entries


def _yaml_entries(file: Path, text: str) -> list[tuple[str, Any]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GoldenSetError(f"golden set {file} is not valid YAML: {' '.join(str(exc).split())}") from None
    if isinstance(data, dict):
        unknown = set(data) - {"queries", "name", "description"}
        if unknown or "queries" not in data:
            raise GoldenSetError(
                f"golden set {file}: expected a list of queries, or a mapping with `queries:` "
                f"(and optionally `name`, `description`), not keys {sorted(data)}"
            )
        data = data["queries"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise GoldenSetError(f"golden set {file}: expected a list of queries, not {type(data).__name__}")
    return [(f"query {n}", entry) for n, entry in enumerate(data, start=1)]
