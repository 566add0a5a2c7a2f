"""Redaction on a corpus with planted PII: what is left of the planted values, and what it costs retrieval.

Writes the demo corpus plus five documents with planted e-mails, phone numbers, card numbers and IBANs in
several formats (testkit/pii_corpus.py: text, Markdown, an HTML table with mailto links, e-mail headers, a Word
table), then builds it twice with the real CLI, each build with its own store and PREFECT_HOME:

1. unredacted;
2. ``redact: {entities: [EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE], mode: mask}``.

For each: the golden metrics (the demo's golden set, the gate's evaluation), the build's timings, and a
byte search for every planted value (as written, and without separators; UTF-8 and UTF-16) in every file
of its store, of its PREFECT_HOME (flow runs, logs, artifacts) and in its output (stdout, stderr). The
unredacted build is the control: the search finds its values.

``--named``: the demo corpus with full names (10), e-mails, phones, a card and an IBAN planted into five
of its documents, in headings and in text (testkit/pii_corpus.py ``write_named_corpus``), the second build
with ``PERSON`` too. Then, per entity type, the recall of redaction on what the store serves: how many
of the planted occurrences in the unredacted build's chunks (their text, and their section titles) are
gone from the redacted build's.

``--given-names N``: what the given-name recognizer (rag/ingest/redaction.py) adds on real text with no planted
names, to judge its false positives by eye: every document of ../shared/docs-corpus, parsed, and the
titles and abstracts of the first N SciFact documents; each span it finds that spaCy did not tag PERSON.

``--elements``: the named corpus's documents parsed and redacted in-process (no build), element by
element: the planted occurrences left, in headings (Title elements) and in the other elements.

    .venv/bin/python bench/redaction.py [--named] [--workdir DIR] [--json]
    .venv/bin/python bench/redaction.py --elements
    .venv/bin/python bench/redaction.py --given-names 500 [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit.pii_corpus import (  # noqa: E402 - after sys.path gets the repo (run as a script)
    ENTITIES,
    NAMED_DOCUMENTS,
    NAMED_PLANTED,
    PLANTED,
    compact,
    found_in_files,
    write_corpus,
    write_named_corpus,
)

METRICS = ("ndcg@10", "recall@10", "mrr@10", "hit_rate@5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="Keep corpus, stores and outputs here.")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    parser.add_argument("--named", action="store_true", help="Names planted too: recall per entity type.")
    parser.add_argument("--given-names", type=int, metavar="N", help="Given-name spans on real text (N SciFact docs).")
    parser.add_argument("--elements", action="store_true", help="Named corpus, element by element, no build.")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="--given-names: the shared folder.")
    args = parser.parse_args()
    if args.elements:
        _elements(args.workdir or Path(tempfile.mkdtemp(prefix="ragops-redaction-")))
        return
    if args.given_names is not None:
        _given_names(args.given_names, args.shared)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ragops-redaction-"))
    if args.named:
        _named(work, args.json)
        return
    corpus = write_corpus(work / "corpus")
    planted = [value for values in PLANTED.values() for value in values]
    rows = [_build(work, corpus, name, redact, planted)
            for name, redact in (("unredacted", None), ("redacted (mask)", {"entities": ENTITIES, "mode": "mask"}))]
    if args.json:
        print(json.dumps({"planted": len(planted), "runs": rows}))
        return
    documents = sum(1 for _ in corpus.iterdir())
    print(f"{documents} documents ({len(planted)} planted values in 5 of them); golden set: demo/golden.yaml")
    print("| build | " + " | ".join(METRICS) + " | wall s | redact s | values redacted | planted values found "
          "(store / PREFECT_HOME / output) |")
    print("|---|" + "---|" * (len(METRICS) + 4))
    for row in rows:
        found = row["found"]
        print(f"| {row['name']} | " + " | ".join(f"{row['metrics'][m]:.4f}" for m in METRICS)
              + f" | {row['seconds']:.1f} | {row['timings']['redact']:.2f} | {row['redacted']} | "
              f"{found['store']} / {found['prefect_home']} / {found['output']} of {len(planted)} |")


def _named(work: Path, as_json: bool) -> None:
    corpus = write_named_corpus(work / "corpus")
    planted = [value for values in NAMED_PLANTED.values() for value in values]
    entities = ["PERSON", *ENTITIES]
    builds = [_build(work, corpus, name, redact, planted)
              for name, redact in (("unredacted", None), ("redacted", {"entities": entities, "mode": "mask"}))]
    before, after = (_occurrences(work / f"store-{slug}") for slug in ("plain", "redacted"))
    rows = {}
    for entity, values in NAMED_PLANTED.items():
        for position in ("text", "title"):
            total = sum(before[(value, position)] for value in values)
            left = sum(after[(value, position)] for value in values)
            if total:
                rows[f"{entity} {position}"] = {"planted": total, "left": left, "recall": 1 - left / total,
                                                "missed": sorted({v for v in values if after[(v, position)]})}
    if as_json:
        print(json.dumps({"rows": rows, "redacted_by_type": builds[1]["redacted_by_type"],
                          "found": builds[1]["found"]}))
        return
    print("| entity, where | planted occurrences served unredacted | left after redaction | recall | values left |")
    print("|---|---|---|---|---|")
    for key, row in rows.items():
        print(f"| {key} | {row['planted']} | {row['left']} | {row['recall']:.2f} | {', '.join(row['missed'])} |")
    found = builds[1]["found"]
    print(f"redacted build: {builds[1]['redacted_by_type']}; planted values found anywhere (store / PREFECT_HOME / "
          f"output): {found['store']} / {found['prefect_home']} / {found['output']} of {len(planted)}")


def _elements(work: Path) -> None:
    from rag.ingest.parsing import parse_document
    from rag.ingest.redaction import Redactor
    from rag.models import DocumentRef

    folder = write_named_corpus(work / "corpus")
    redactor = Redactor(sorted(NAMED_PLANTED), "mask")
    planted, left = Counter(), Counter()
    for name in NAMED_DOCUMENTS:
        path = folder / name
        ref = DocumentRef(doc_id=f"demo/{name}", source="demo", uri=path.as_uri(), path=path,
                          size=path.stat().st_size, modified=0, signal="-")
        elements = parse_document(ref, max_bytes=1 << 27)
        before = [(e.category, e.text) for e in elements]
        redacted, _ = redactor.redact(elements)
        for (category, text), after in zip(before, redacted):
            where = "heading" if category == "Title" else "text"
            for entity, values in NAMED_PLANTED.items():
                for value in values:
                    planted[(entity, where)] += text.count(value)
                    left[(entity, where)] += after.text.count(value)
    print("| entity, where | planted | left | recall |")
    print("|---|---|---|---|")
    for key in sorted(planted):
        if planted[key]:
            print(f"| {key[0]} {key[1]} | {planted[key]} | {left[key]} | {1 - left[key] / planted[key]:.2f} |")


def _given_names(scifact_docs: int, shared: Path) -> None:
    import itertools

    from rag.errors import DocumentError
    from rag.ingest.parsing import parse_document
    from rag.ingest.redaction import Redactor
    from rag.models import DocumentRef

    texts = []
    for path in sorted((shared / "docs-corpus").iterdir()):
        ref = DocumentRef(doc_id=f"d/{path.name}", source="d", uri=path.as_uri(), path=path, size=path.stat().st_size,
                          modified=0, signal="-")
        try:
            texts.extend((path.name, e.category, e.text) for e in parse_document(ref, max_bytes=1 << 27))
        except DocumentError:
            pass
    with open(shared / "datasets" / "scifact" / "corpus.jsonl", encoding="utf-8") as lines:
        for line in itertools.islice(lines, scifact_docs):
            doc = json.loads(line)
            texts += [("scifact", "Title", doc["title"]), ("scifact", "NarrativeText", doc["text"])]
    analyzer = Redactor(["PERSON"])._load()[0]
    spacy_spans = added = 0
    for name, category, text in texts:
        if not text.strip():
            continue
        results = analyzer.analyze(text, language="en", entities=["PERSON"])
        by_spacy = [r for r in results if r.recognition_metadata.get("recognizer_name") != "GivenNameRecognizer"]
        spacy_spans += len(by_spacy)
        for r in results:
            if r in by_spacy or any(s.start < r.end and r.start < s.end for s in by_spacy):
                continue
            added += 1
            print(f"{name} {category}: {text[r.start:r.end]!r} in {text[max(0, r.start - 40):r.end + 40]!r}")
    print(f"{len(texts)} elements ({sum(1 for t in texts if t[1] == 'Title')} titles), "
          f"{sum(len(t[2]) for t in texts):,} characters: spaCy PERSON spans {spacy_spans}, "
          f"given-name spans added {added}")


def _occurrences(store_path: Path) -> Counter:
    """(planted value, "text" or "title") -> occurrences in the live build's chunks."""
    from rag.config import StoreSettings
    from rag.store import open_store

    counts: Counter = Counter()
    planted = [value for values in NAMED_PLANTED.values() for value in values]
    with open_store(StoreSettings(location=str(store_path)), create=False) as store:
        live = store.alias_target("demo")
        for point in store.scan_rows(live, fields=["text", "title"]):
            for value in planted:
                counts[(value, "text")] += (point.payload.get("text") or "").count(value)
                counts[(value, "title")] += (point.payload.get("title") or "").count(value)
    return counts


def _build(work: Path, corpus: Path, name: str, redact: dict | None, planted: list[str]) -> dict:
    import yaml

    slug = "redacted" if redact else "plain"
    settings = yaml.safe_load((ROOT / "demo" / "ragops.yaml").read_text())
    settings["sources"] = [{"name": "demo", "path": str(corpus), **({"redact": redact} if redact else {})}]
    settings["store"]["location"] = str(work / f"store-{slug}")
    settings["evaluation"]["golden"] = str(ROOT / "demo" / "golden.yaml")
    config = work / f"{slug}.yaml"
    config.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "PREFECT_HOME": str(work / f"prefect-{slug}")}
    started = time.perf_counter()
    # Run from the work folder: `-m` would import the ragops of the current folder before PYTHONPATH's.
    done = subprocess.run([sys.executable, "-m", "ragops", "reindex", "--json", "--config", str(config)],
                          capture_output=True, text=True, env=env, cwd=work)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: reindex failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    return {
        "name": name, "seconds": seconds, "timings": summary["timings"],
        "metrics": {m: summary["evaluation"]["metrics"][m] for m in METRICS},
        "redacted": sum(summary["counts"]["redacted"].values()), "redacted_by_type": summary["counts"]["redacted"],
        "found": {
            "store": len({v for _, v in found_in_files([work / f"store-{slug}"], planted)}),
            "prefect_home": len({v for _, v in found_in_files([work / f"prefect-{slug}"], planted)}),
            "output": sum(1 for v in planted if v in done.stdout + done.stderr or compact(v) in done.stdout + done.stderr),
        },
    }


if __name__ == "__main__":
    main()
