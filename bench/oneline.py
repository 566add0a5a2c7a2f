"""Benchmark: cutting a large one-line text into sections, unstructured's way against rag/ingest/chunking.py's.

A one-line .txt (a log or an export written without line breaks) is one element of n characters. Before,
the build ran unstructured's ``chunk_by_title`` on it in its own process: its text splitter copies what
is left of the element after each cut, ~n^2 / (2 x max_characters) characters in all (a 45 MB file
stalled a run for 24 minutes). Now ``rag.ingest.chunking.title_sections`` cuts such an element itself, in one
pass, at the same places, in the parsing sandbox's child (rag/ingest/sandbox.py).

For each size: the text is written to a file and parsed once with the builtin reader; then, each timed
in CPU seconds of this process:

- ``before``: ``chunk_by_title`` as the Chunker called it (default settings, the packaged model's
  254 tokens: max_characters 1,270), with the characters its splitter was handed counted (its work);
- ``after``: ``title_sections`` on the same elements, and the two compared section by section;
- ``sandbox``: ``ParseSandbox.sections`` (wall seconds: pickling to the child and back included);
- ``fit``: ``Chunker.fit`` of those sections (the build's process), or its refusal past
  ``chunking.max_chunks_per_document`` (20,000), which it tells before tokenizing anything.

    .venv/bin/python bench/oneline.py [--sizes 4,8,16,45] [--before-up-to 16] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = "the retention policy keeps quarterly backups of every archive for seven years "


def cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def one_line(characters: int) -> str:
    return (WORDS * (characters // len(WORDS) + 1))[:characters].strip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,8,16,45", help="Comma-separated sizes in MB.")
    parser.add_argument("--before-up-to", type=float, default=16.0,
                        help="Run unstructured's way only up to this size (MB): it is quadratic.")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from rag.runtime import configure_offline_runtime

    configure_offline_runtime()
    from unstructured.chunking.title import chunk_by_title

    from rag.config import ChunkingSettings, EmbeddingSettings, PipelineSettings
    from rag.embed.embedder import load_embedder
    from rag.errors import DocumentError
    from rag.ingest.chunking import Chunker, title_sections
    from rag.ingest.sandbox import ParseSandbox
    from rag.ingest.text import parse_text_file
    from rag.models import DocumentRef

    embedder = load_embedder(EmbeddingSettings())
    chunker = Chunker(ChunkingSettings(), embedder.tokenizer, embedder.max_tokens)
    options = chunker.section_options
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ragops-oneline-"))
    print(f"max_characters {options.max_characters}; rows: size, elements, sections, CPU seconds before "
          "(characters handed to unstructured's splitter), after, sandbox wall, fit")
    with ParseSandbox(PipelineSettings()) as sandbox:
        sandbox.start(groups={"builtin", "chunking"})
        for mb in [float(size) for size in args.sizes.split(",")]:
            path = work / f"oneline-{mb:g}mb.txt"
            path.write_text(one_line(int(mb * 1_000_000)))
            elements = parse_text_file(path)
            before, handed = "-", "-"
            if mb <= args.before_up_to:
                counted = [0]

                def watch(frame, event, arg, counted=counted) -> None:
                    if event == "call" and frame.f_code.co_name == "_split_from_maxlen":
                        counted[0] += len(frame.f_locals["s"])

                started = cpu()
                sys.setprofile(watch)
                theirs = chunk_by_title(elements, max_characters=options.max_characters,
                                        new_after_n_chars=options.new_after_n_chars,
                                        combine_text_under_n_chars=options.combine_text_under_n_chars,
                                        multipage_sections=False, include_orig_elements=True)
                sys.setprofile(None)
                before, handed = f"{cpu() - started:.2f}", f"{counted[0]:,}"
            started = cpu()
            sections = title_sections(elements, options)
            after = cpu() - started
            if mb <= args.before_up_to:
                assert [s.text for s in sections] == [c.text for c in theirs], "sections differ"
            started = time.perf_counter()
            in_child = sandbox.sections(elements, options)
            in_sandbox = time.perf_counter() - started
            assert in_child == sections
            ref = DocumentRef(doc_id="bench/oneline.txt", source="bench", uri=path.as_uri(), path=path,
                              size=path.stat().st_size, modified=0, signal="1")
            started = cpu()
            try:
                fitted = f"{len(chunker.fit(ref, sections)):,} chunks"
            except DocumentError as exc:
                fitted = f"refused ({exc.reason[:40]}...)"
            fit = cpu() - started
            print(f"{mb:g} MB | {len(elements)} | {len(sections):,} | {before} ({handed}) | {after:.2f} | "
                  f"{in_sandbox:.2f} | {fit:.2f} s, {fitted}", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
