"""Benchmark: incremental refresh cost against a full build, on BEIR SciFact (5,183 documents).

Writes each SciFact document as a Markdown file (title as heading, abstract as body), then runs the
real reindex flow (in this process, Prefect's ephemeral API, embedded Qdrant) three times:

1. full build of the folder (the baseline);
2. refresh with nothing changed;
3. refresh after rewriting 1% of the documents (a sentence prepended to each).

It prints each time as a ratio of the full build, the chunks embedded, and checks that the chunks
embedded are exactly the chunks with new text, all of them in changed documents.

    .venv/bin/python bench/refresh_scifact.py [--dataset ../shared/datasets/scifact] [--limit N]

Targets (issue 3): no-change refresh <= 3% of the full build, 1% changed <= 5%.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_corpus(dataset: Path, folder: Path, limit: int | None) -> list[Path]:
    """One Markdown file per SciFact document; returns the paths in corpus order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with (dataset / "corpus.jsonl").open(encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if limit is not None and number >= limit:
                break
            doc = json.loads(line)
            path = folder / f"{doc['_id']}.md"
            path.write_text(f"# {doc.get('title', '').strip()}\n\n{doc['text'].strip()}\n", encoding="utf-8")
            paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "datasets" / "scifact")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N documents (quick runs).")
    parser.add_argument("--changed", type=float, default=0.01, help="Share of documents to change.")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep corpus and store here.")
    args = parser.parse_args()

    from rag.runtime import configure_offline_runtime

    configure_offline_runtime()
    from flows.reindex import reindex
    from rag.config import StoreSettings
    from rag.store import open_store

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ragops-bench-"))
    corpus, store = work / "corpus", work / "store"
    paths = write_corpus(args.dataset, corpus, args.limit)
    print(f"corpus: {len(paths)} documents in {corpus}", flush=True)
    common = {"sources": [str(corpus)], "store": str(store), "alias": "scifact"}

    def timed(label: str, **params) -> tuple[float, dict]:
        start = time.perf_counter()
        summary = reindex(**common, **params)
        seconds = time.perf_counter() - start
        c = summary["counts"]
        print(f"{label}: {seconds:.1f}s, state {summary['state']}, {c['chunks']} chunks, "
              f"{c['chunks_embedded']} embedded, {c['chunks_reused']} reused", flush=True)
        return seconds, summary

    full_s, full = timed("full build")
    none_s, unchanged = timed("no-change refresh")

    rng = random.Random(42)
    changed = rng.sample(paths, max(1, round(len(paths) * args.changed)))
    for path in changed:
        text = path.read_text(encoding="utf-8")
        heading, _, body = text.partition("\n\n")
        path.write_text(f"{heading}\n\nRevised abstract ({path.stem}). {body}", encoding="utf-8")
    some_s, refreshed = timed(f"{len(changed)} changed ({args.changed:.0%}) refresh")

    with open_store(StoreSettings(location=str(store))) as opened:
        old = _hashes_by_doc(opened, full["collection"])
        new = _hashes_by_doc(opened, refreshed["collection"])
    old_hashes = {h for hashes in old.values() for h in hashes}
    new_text = {(doc, h) for doc, hashes in new.items() for h in hashes if h not in old_hashes}
    changed_ids = {f"corpus/{p.name}" for p in changed}
    changed_chunks = sum(len(new[d]) for d in changed_ids)

    print()
    print("| run | seconds | ratio to full build | chunks embedded |")
    print("|---|---|---|---|")
    print(f"| full build ({len(paths)} docs) | {full_s:.1f} | 1.000 | {full['counts']['chunks_embedded']} |")
    print(f"| no-change refresh | {none_s:.1f} | {none_s / full_s:.3f} | {unchanged['counts']['chunks_embedded']} |")
    print(f"| {len(changed)} docs changed | {some_s:.1f} | {some_s / full_s:.3f} | {refreshed['counts']['chunks_embedded']} |")
    print()
    print(f"changed documents now hold {changed_chunks} chunks; {len(new_text)} have text the previous build "
          f"did not hold, all in changed documents: {all(doc in changed_ids for doc, _ in new_text)}; "
          f"embedded == new-text chunks: {refreshed['counts']['chunks_embedded'] == len({h for _, h in new_text})}")
    print(f"targets: no-change <= 3%: {none_s / full_s <= 0.03}; 1% changed <= 5%: {some_s / full_s <= 0.05}")


def _hashes_by_doc(store, collection: str) -> dict[str, list[str]]:
    hashes: dict[str, list[str]] = {}
    for point in store.read_points(collection, list(store.point_ids(collection)), fields=["doc_id", "text_hash"]):
        hashes.setdefault(point.payload["doc_id"], []).append(point.payload["text_hash"])
    return hashes


if __name__ == "__main__":
    main()
