"""Compare: plain text and Markdown parsed by rag.ingest.text (builtin) against unstructured.partition.

Writes the first N SciFact documents as bench/refresh_scifact.py does (``# {title}\\n\\n{text}\\n``),
parses each in this process with ``pipeline.text_parser`` builtin and unstructured, chunks both with
the real Chunker (the packaged all-MiniLM-L6-v2's tokenizer, default chunking settings), and reports
how many documents give identical chunks (texts, and texts with their section titles), what differs
in a few that do not, and parse time per document each way. Files given as arguments (.txt, .md) are
compared instead of SciFact.

    .venv/bin/python bench/parse_compare.py [--limit 500] [--dataset ../shared/datasets/scifact] [--show 5]
    .venv/bin/python bench/parse_compare.py ../shared/docs-corpus/*.txt ../shared/docs-corpus/*.md
"""

from __future__ import annotations

import argparse
import difflib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARSERS = ("builtin", "unstructured")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="Compare these files instead of SciFact.")
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "datasets" / "scifact")
    parser.add_argument("--limit", type=int, default=500, help="The first N SciFact documents.")
    parser.add_argument("--show", type=int, default=5, help="Documents whose differences are printed.")
    args = parser.parse_args()

    from rag.runtime import configure_offline_runtime

    configure_offline_runtime()
    from bench.refresh_scifact import write_corpus
    from rag.config import ChunkingSettings, EmbeddingSettings
    from rag.embed.embedder import load_embedder
    from rag.errors import DocumentError
    from rag.ingest.chunking import Chunker
    from rag.ingest.parsing import parse_document, warm_up

    embedder = load_embedder(EmbeddingSettings())
    chunker = Chunker(ChunkingSettings(), embedder.tokenizer, embedder.max_tokens)
    warm_up()  # the sentence model loads here, not inside the first document's time

    with tempfile.TemporaryDirectory(prefix="ragops-parse-compare-") as work:
        paths = [p.resolve() for p in args.files] or write_corpus(args.dataset, Path(work) / "corpus", args.limit)
        print(f"{len(paths)} documents ({'given files' if args.files else args.dataset}); "
              f"chunker max_tokens {chunker.max_tokens}", flush=True)
        seconds = {name: [] for name in PARSERS}
        same_text = same_titled = same_elements = 0
        differing: list[tuple[Path, list, list]] = []
        for path in paths:
            ref = _ref(path)
            chunks = {}
            elements = {}
            for name in PARSERS:
                start = time.perf_counter()
                try:
                    elements[name] = parse_document(ref, max_bytes=10**9, text_parser=name)
                except DocumentError as error:
                    elements[name] = [f"DocumentError({error.stage}): {error.reason}"]
                    chunks[name] = elements[name]
                    seconds[name].append(time.perf_counter() - start)
                    continue
                seconds[name].append(time.perf_counter() - start)
                chunks[name] = [(c.title, c.text) for c in chunker.chunk(ref, elements[name])]
            builtin, unstructured = chunks["builtin"], chunks["unstructured"]
            same_titled += builtin == unstructured
            same_text += [_text(c) for c in builtin] == [_text(c) for c in unstructured]
            same_elements += _described(elements["builtin"]) == _described(elements["unstructured"])
            if builtin != unstructured:
                differing.append((path, unstructured, builtin))

    total = len(paths)
    print(f"identical chunk texts: {same_text}/{total} ({same_text / total:.1%}); "
          f"identical chunk texts and titles: {same_titled}/{total} ({same_titled / total:.1%}); "
          f"identical elements (category, text, depth): {same_elements}/{total}")
    for name in PARSERS:
        times = [s * 1000 for s in seconds[name]]
        print(f"parse {name:>12}: {statistics.mean(times):7.2f} ms/doc mean, {statistics.median(times):7.2f} median, "
              f"{max(times):8.1f} max, {sum(times) / 1000:6.1f} s in all")
    ratio = sum(seconds["unstructured"]) / max(sum(seconds["builtin"]), 1e-9)
    print(f"builtin is {ratio:.1f}x faster")
    for path, unstructured, builtin in differing[: args.show]:
        print(f"\n--- {path.name}: {len(unstructured)} chunks with unstructured, {len(builtin)} with builtin")
        lines = difflib.unified_diff([_line(c) for c in unstructured], [_line(c) for c in builtin],
                                     "unstructured", "builtin", lineterm="", n=0)
        for line in lines:
            print(line[:300])


def _ref(path: Path):
    from rag.models import DocumentRef

    stat = path.stat()
    return DocumentRef(doc_id=f"compare/{path.name}", source="compare", uri=path.as_uri(), path=path,
                       size=stat.st_size, modified=stat.st_mtime, signal=f"{stat.st_size}:{stat.st_mtime}")


def _text(chunk) -> str:
    return chunk[1] if isinstance(chunk, tuple) else chunk


def _line(chunk) -> str:
    if not isinstance(chunk, tuple):
        return chunk
    title, text = chunk
    return f"[{title}] {text!r}"


def _described(elements: list) -> list:
    return [e if isinstance(e, str) else (e.category, e.text, e.metadata.category_depth) for e in elements]


if __name__ == "__main__":
    main()
