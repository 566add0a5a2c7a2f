"""Compare: reStructuredText read by docutils (rag/ingest/rst.py) against pandoc + unstructured (the path before it).

Parses each .rst file given (or found under a folder given) in this process both ways, with
``pipeline.text_parser`` builtin (docutils) and unstructured (``partition``: pandoc to HTML in a subprocess,
then unstructured's HTML partitioner), chunks both with the real Chunker (the packaged all-MiniLM-L6-v2's
tokenizer, default chunking settings) and prints: parse time per document each way, chunk counts, how
often the section titles agree (the same titles in the same order), how close the texts are (words in
common, in order), and a few differences.

    .venv/bin/python bench/rst.py /tmp/peps/peps [--limit 0] [--show 5] [--cache /tmp/rst-cache.json]

``--cache`` keeps pandoc + unstructured's results (chunks, titles and parse time, per file content) in a
JSON file, so that a second run re-parses only with docutils; the times it prints for that path are
those measured when the cache was filled.

The PEPs: ``git --git-dir=<mirror of python/peps> archive HEAD peps | tar -x -C /tmp/peps`` (never commit them).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.parse_compare import _ref  # noqa: E402 - after sys.path gets the repo (run as a script)

WAYS = {"docutils": "builtin", "pandoc+unstructured": "unstructured"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help=".rst files, or folders holding them.")
    parser.add_argument("--limit", type=int, default=0, help="The first N files only (0: all).")
    parser.add_argument("--show", type=int, default=5, help="Documents whose differences are printed.")
    parser.add_argument("--cache", type=Path, help="A JSON file keeping pandoc + unstructured's results.")
    args = parser.parse_args()
    cache = json.loads(args.cache.read_text()) if args.cache and args.cache.exists() else {}

    from rag.runtime import configure_offline_runtime

    configure_offline_runtime()
    from rag.config import ChunkingSettings, EmbeddingSettings
    from rag.embed.embedder import load_embedder
    from rag.errors import DocumentError
    from rag.ingest.chunking import Chunker
    from rag.ingest.parsing import parse_document, warm_up

    paths = sorted(p for path in args.paths for p in ([path] if path.is_file() else path.rglob("*.rst")))
    paths = paths[: args.limit or None]
    embedder = load_embedder(EmbeddingSettings())
    chunker = Chunker(ChunkingSettings(), embedder.tokenizer, embedder.max_tokens)
    warm_up()  # the sentence model and docutils load here, not inside the first document's time
    print(f"{len(paths)} .rst files; chunker max_tokens {chunker.max_tokens}", flush=True)

    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    counts: dict[str, list[int]] = {way: [] for way in WAYS}
    failed: dict[str, list[str]] = {way: [] for way in WAYS}
    same_titles = same_text = 0
    similarity: list[float] = []
    title_pairs = [0, 0, 0]  # titles in both, only pandoc's, only docutils'
    differing, title_diffs = [], []
    for number, path in enumerate(paths, 1):
        ref = _ref(path)
        chunks, titles = {}, {}
        key = hashlib.sha256(path.read_bytes()).hexdigest()
        for way, text_parser in WAYS.items():
            if way in cache.get(key, {}):
                took, chunks[way], titles[way], reason = cache[key][way]
                chunks[way] = [tuple(chunk) for chunk in chunks[way]]
                seconds[way].append(took)
                failed[way] += [f"{path.name}: {reason}"] if reason else []
                continue
            start = time.perf_counter()
            try:
                elements = parse_document(ref, max_bytes=10**9, text_parser=text_parser)
            except DocumentError as error:
                seconds[way].append(time.perf_counter() - start)
                failed[way].append(f"{path.name}: {error.reason}")
                chunks[way], titles[way] = [], []
                cache.setdefault(key, {})[way] = [seconds[way][-1], [], [], error.reason]
                continue
            seconds[way].append(time.perf_counter() - start)
            titles[way] = [" ".join(e.text.split()) for e in elements if e.category == "Title"]
            chunks[way] = [(c.title, c.text) for c in chunker.chunk(ref, elements)]
            if way == "pandoc+unstructured":
                cache.setdefault(key, {})[way] = [seconds[way][-1], chunks[way], titles[way], None]
        for way in WAYS:
            counts[way].append(len(chunks[way]))
        ours, theirs = chunks["docutils"], chunks["pandoc+unstructured"]
        same_titles += titles["docutils"] == titles["pandoc+unstructured"]
        same_text += [t for _, t in ours] == [t for _, t in theirs]
        ratio = _word_similarity(" ".join(t for _, t in theirs), " ".join(t for _, t in ours))
        similarity.append(ratio)
        both = set(titles["docutils"]) & set(titles["pandoc+unstructured"])
        title_pairs[0] += len(both)
        title_pairs[1] += len(set(titles["pandoc+unstructured"]) - both)
        title_pairs[2] += len(set(titles["docutils"]) - both)
        if titles["docutils"] != titles["pandoc+unstructured"] or ratio < 0.98:
            differing.append((ratio, path, titles, theirs, ours))
        if titles["docutils"] != titles["pandoc+unstructured"]:
            title_diffs.append((path, titles))
        if number % 100 == 0:
            print(f"  {number}/{len(paths)}", flush=True)

    total = len(paths)
    for way in WAYS:
        times = [s * 1000 for s in seconds[way]]
        print(f"parse {way:>20}: {statistics.mean(times):8.1f} ms/doc mean, {statistics.median(times):8.1f} median, "
              f"{max(times):8.1f} max, {sum(times) / 1000:7.1f} s in all; {sum(counts[way])} chunks "
              f"({statistics.mean(counts[way]):.1f}/doc); {len(failed[way])} failed")
    ratio = sum(seconds["pandoc+unstructured"]) / max(sum(seconds["docutils"]), 1e-9)
    print(f"docutils is {ratio:.1f}x faster")
    print(f"same section titles in the same order: {same_titles}/{total} ({same_titles / total:.1%}); "
          f"titles in both {title_pairs[0]}, only pandoc+unstructured's {title_pairs[1]}, "
          f"only docutils' {title_pairs[2]}")
    print(f"identical chunk texts: {same_text}/{total}; words in common, in order (difflib ratio over words): "
          f"mean {statistics.mean(similarity):.3f}, median {statistics.median(similarity):.3f}, "
          f"min {min(similarity):.3f}; documents >= 0.95: {sum(r >= 0.95 for r in similarity)}/{total}")
    for way in WAYS:
        for line in failed[way][:5]:
            print(f"failed ({way}): {line}")
    if args.cache:
        args.cache.write_text(json.dumps(cache))
    print(f"\n{len(title_diffs)} documents whose section titles differ (-pandoc+unstructured +docutils):")
    for path, titles in title_diffs:
        changes = [line for line in difflib.unified_diff(titles["pandoc+unstructured"], titles["docutils"],
                                                         lineterm="", n=0) if line[:1] in "+-" and line[:3] not in ("---", "+++")]
        print(f"  {path.name}: {'; '.join(change[:80] for change in changes[:6])}"
              + (f"; and {len(changes) - 6} more" if len(changes) > 6 else ""))
    differing.sort(key=lambda item: item[0])
    for ratio, path, titles, theirs, ours in differing[: args.show]:
        print(f"\n--- {path.name}: word similarity {ratio:.3f}; {len(theirs)} chunks pandoc+unstructured, "
              f"{len(ours)} docutils")
        for line in difflib.unified_diff(titles["pandoc+unstructured"], titles["docutils"], "titles pandoc",
                                         "titles docutils", lineterm="", n=0):
            print("  " + line[:200])
        for line in _word_diff(" ".join(t for _, t in theirs), " ".join(t for _, t in ours))[:8]:
            print("  " + line)


def _word_similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio()


def _word_diff(a: str, b: str) -> list[str]:
    """The first differing runs of words: ``-pandoc`` / ``+docutils``."""
    first, second = a.split(), b.split()
    lines = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, first, second, autojunk=False).get_opcodes():
        if tag != "equal":
            lines.append(f"-{' '.join(first[i1:i2])[:150]!r} +{' '.join(second[j1:j2])[:150]!r}")
    return lines


if __name__ == "__main__":
    main()
