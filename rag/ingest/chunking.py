"""Cutting parsed documents into chunks the embedding model reads whole.

Two libraries, each for what it does best (docs/architecture.md says more):

1. unstructured's ``chunk_by_title`` groups elements into sections (a heading and what follows it),
   one page at a time, merging tiny sections. It keeps each element's page number and type. It measures
   in characters: its token mode only knows tiktoken encodings, not the embedding model's tokenizer, so
   we aim it at ~4 characters per token, which fits most English prose under the limit.
2. llama-index's ``SentenceSplitter``, given the model's own tokenizer, splits whatever is still over
   ``max_tokens`` (code, tables, dense text) at sentence boundaries. So no chunk is ever truncated by
   the model.

The first step (``title_sections``) runs in the parsing sandbox's child process (rag/ingest/sandbox.py), under
the same CPU-time and memory bounds as the parse: its cost grows with the document, and unstructured
splits an oversized element by copying what is left after each cut, which is quadratic (a 45 MB one-line
file stalled a run for 24 minutes). So an oversized element is cut here instead, in one linear pass, at
the places unstructured's splitter would cut it. The second step
(``Chunker.fit``) runs in the build's process with the model's tokenizer: its sections are at most a few
thousand characters each, and their number is checked against ``max_chunks_per_document`` before any is
tokenized, so its work is bounded whatever the document.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING, NamedTuple, Sequence

from rag.config import ChunkingSettings
from rag.errors import ConfigError, DocumentError
from rag.models import Chunk, DocumentRef

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
    from unstructured.documents.elements import Element

log = logging.getLogger(__name__)

# Characters per token aimed at by the title chunker before the token-exact split (see module doc).
# MiniLM's WordPiece averages ~4.5 characters per token on English prose.
_SOFT_CHARS_PER_TOKEN = 4
_HARD_CHARS_PER_TOKEN = 5
#: the title chunker's text-splitting separators, in its order of preference (its default)
_SEPARATORS = ("\n", " ")
_NON_SPACE = re.compile(r"\S")


class SectionOptions(NamedTuple):
    """The title chunker's sizes, in characters (``Chunker.section_options``): what the sandbox's child
    needs to cut a document into sections."""

    max_characters: int
    new_after_n_chars: int
    combine_text_under_n_chars: int


class Section(NamedTuple):
    """A section of a document: its text (usually under ``max_characters``), the title it falls under
    (the nearest one before it) and its page."""

    text: str
    title: str | None
    page: int | None


class Chunker:
    """Chunks documents to at most ``max_tokens`` tokens of a given tokenizer."""

    def __init__(self, settings: ChunkingSettings, tokenizer: PreTrainedTokenizerBase, model_max_tokens: int):
        """
        Args:
            settings: chunking settings; ``max_tokens`` unset means the model's limit.
            tokenizer: the embedding model's Hugging Face tokenizer.
            model_max_tokens: the most tokens the model reads without truncating.

        Raises:
            ConfigError: ``max_tokens`` is larger than the model can read.
        """
        max_tokens = settings.max_tokens or model_max_tokens
        if max_tokens > model_max_tokens:
            raise ConfigError(
                f"chunking.max_tokens={max_tokens} exceeds what the model reads ({model_max_tokens} tokens "
                "after its special tokens); chunks would be truncated. Lower chunking.max_tokens"
            )
        self.settings = settings
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer
        self._splitter = None
        self._splitter_lock = threading.Lock()
        self._counter = _private_copy(tokenizer)

    def __getstate__(self) -> dict:
        # Sent to Dask workers: a lock does not pickle; each copy gets its own.
        return {**self.__dict__, "_splitter_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _splitter_lock=threading.Lock())

    def warm_up(self) -> None:
        """Import and load what fitting the first sections would (llama-index and its sentence
        tokenizer: ~2-3 s), e.g. on a thread while the first documents parse."""
        self.splitter.split_text("Warm up the sentence splitter. " * (self.max_tokens // 2))

    @property
    def section_options(self) -> SectionOptions:
        """The title chunker's sizes for this model and these settings (``title_sections``)."""
        soft = self.max_tokens * _SOFT_CHARS_PER_TOKEN
        return SectionOptions(max_characters=self.max_tokens * _HARD_CHARS_PER_TOKEN, new_after_n_chars=soft,
                              combine_text_under_n_chars=min(self.settings.combine_under_chars, soft))

    def describe(self) -> dict:
        """The settings that decide chunk boundaries, for the build manifest."""
        return {
            "method": "unstructured.chunk_by_title + llama_index SentenceSplitter (model tokenizer)",
            "max_tokens": self.max_tokens,
            "overlap_tokens": self.settings.overlap_tokens,
            "combine_under_chars": self.settings.combine_under_chars,
            "multipage_sections": False,
            "wordless_chunks": "dropped",
        }

    def chunk(self, doc: DocumentRef, elements: Sequence[Element]) -> list[Chunk]:
        """Turn one document's elements into ordered chunks carrying uri, section title and page, in this
        process (a build cuts the sections in the parsing sandbox instead: ``title_sections``, ``fit``).

        Raises:
            DocumentError: as ``title_sections`` and ``fit`` do.
        """
        return self.fit(doc, title_sections(elements, self.section_options))

    def fit(self, doc: DocumentRef, sections: Sequence[Section]) -> list[Chunk]:
        """The chunks of a document's sections: each section, cut to at most ``max_tokens`` tokens where
        it is longer, in order. Chunks without a letter or digit (rules, fences, lone punctuation) are
        not kept.

        Raises:
            DocumentError: no text is left, or the document makes more chunks than
                ``max_chunks_per_document`` (told before anything is tokenized when its sections alone
                are more, so such a document never holds its chunks in memory).
        """
        limit = self.settings.max_chunks_per_document
        # Each section with a word makes a chunk at least: too many of them is known without tokenizing.
        if sum(1 for section in sections if has_words(section.text)) > limit:
            raise _too_many_chunks(limit)
        chunks: list[Chunk] = []
        for section in sections:
            for text, tokens in self._fit(section.text):
                if not has_words(text):
                    continue  # "///", "---", "| |": nothing a query matches, yet they came back as hits
                if len(chunks) == limit:
                    raise _too_many_chunks(limit)
                chunks.append(
                    Chunk(
                        doc_id=doc.doc_id,
                        chunk_index=len(chunks),
                        text=text,
                        source_uri=doc.uri,
                        source=doc.source,
                        title=section.title,
                        page=section.page,
                        tokens=tokens,
                    )
                )
        if not chunks:
            raise DocumentError("chunk", "no words left after chunking (only punctuation, rules or markup)")
        return chunks

    def _fit(self, text: str) -> list[tuple[str, int]]:
        """Split ``text`` into pieces of at most max_tokens tokens (usually it is one piece), each with
        its token count."""
        text = text.strip()
        if not text:
            return []
        tokens = len(self.tokenize(text))
        if tokens <= self.max_tokens:
            return [(text, tokens)]
        pieces = [piece.strip() for piece in self.splitter.split_text(text) if piece.strip()]
        return [p for piece in pieces for p in self._hard_cut(piece)]

    def _hard_cut(self, text: str) -> list[tuple[str, int]]:
        # SentenceSplitter can overshoot by a token or two when it joins sub-sentence splits;
        # cut those at exact token boundaries rather than let the model truncate them.
        ids = self.tokenize(text)
        if len(ids) <= self.max_tokens:
            return [(text, len(ids))]
        windows = range(0, len(ids), self.max_tokens)
        pieces = [self.tokenizer.decode(ids[i : i + self.max_tokens]).strip() for i in windows]
        return [(piece, len(self.tokenize(piece))) for piece in pieces]

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` in the model's vocabulary, special tokens excluded."""
        if self._counter is not None:
            return self._counter.encode(text, add_special_tokens=False).ids
        return self.tokenizer.encode(text, add_special_tokens=False, verbose=False)

    @property
    def splitter(self):
        """llama-index SentenceSplitter measuring in the model's tokens (built on first use)."""
        with self._splitter_lock:
            if self._splitter is None:
                from llama_index.core.node_parser import SentenceSplitter

                self._splitter = SentenceSplitter(
                    chunk_size=self.max_tokens,
                    chunk_overlap=self.settings.overlap_tokens,
                    tokenizer=self.tokenize,
                )
        return self._splitter


def title_sections(elements: Sequence[Element], options: SectionOptions) -> list[Section]:
    """A document's sections: its elements grouped by unstructured's ``chunk_by_title`` (page by page),
    each with the title it falls under. Linear in the document's length.

    An element over ``max_characters`` (a Table excepted) is a run of sections of its own in
    ``chunk_by_title`` too, cut by its text splitter; that splitter copies the remainder at each cut
    (quadratic), so such an element is cut here instead, at the same places (``split_text``).

    Raises:
        DocumentError: the element tree is malformed.
    """
    from unstructured.chunking.title import chunk_by_title

    sections: list[Section] = []
    title: str | None = None
    try:
        # Page by page: chunk_by_title's combining of small sections ignores multipage_sections
        # and would file page-2 text under page 1.
        for page in _page_runs(elements):
            for run, text in _oversized_apart(page, options.max_characters):
                if text is not None:  # one oversized element, and its text as the title chunker sees it
                    title = _section_title_of(run) or title
                    number = getattr(run[0].metadata, "page_number", None)
                    sections += [Section(piece, title, number) for piece in split_text(text, options.max_characters)]
                    continue
                for section in chunk_by_title(
                    run,
                    max_characters=options.max_characters,
                    new_after_n_chars=options.new_after_n_chars,
                    combine_text_under_n_chars=options.combine_text_under_n_chars,
                    multipage_sections=False,
                    include_orig_elements=True,
                ):
                    title = _section_title(section) or title
                    sections.append(Section(section.text, title, getattr(section.metadata, "page_number", None)))
    except Exception as exc:  # a malformed element tree is this document's problem
        raise DocumentError("chunk", f"{type(exc).__name__}: {exc}"[:300]) from None
    return sections


def _oversized_apart(elements: Sequence[Element], max_characters: int) -> list[tuple[list[Element], str | None]]:
    """Consecutive elements, each oversized one in a run of its own with its text as ``chunk_by_title``
    measures and splits it (whitespace collapsed, except in code); other runs with None."""
    from unstructured.documents.elements import CodeSnippet

    runs: list[tuple[list[Element], str | None]] = [([], None)]
    for element in elements:
        text = element.text or ""
        if len(text) > max_characters and element.category != "Table":  # a Table has a splitter of its own
            text = text if isinstance(element, CodeSnippet) else " ".join(text.split())
            if len(text) > max_characters:
                runs += [([element], text), ([], None)]
                continue
        runs[-1][0].append(element)
    return [(run, text) for run, text in runs if run]


def split_text(text: str, max_characters: int) -> list[str]:
    """``text`` cut into pieces of at most ``max_characters``, at the last newline within reach, else the
    last space, else anywhere: the cuts unstructured's text splitter makes (without overlap), in one pass.

    unstructured copies the remainder after every cut (quadratic); this moves a cursor along the text,
    so each search spans at most ``max_characters`` and each character is copied once.
    """
    pieces: list[str] = []
    start, end = 0, len(text)
    while end - start > max_characters:
        for separator in _SEPARATORS:
            # Its splitter looks for the separator from 1 character in to max_characters (inclusive).
            cut = text.rfind(separator, start + 1, start + max_characters + len(separator))
            piece = text[start:cut].rstrip() if cut >= 0 else ""
            if piece:
                rest = cut + len(separator)
                break
        else:
            piece, rest = text[start : start + max_characters].rstrip(), start + max_characters
        if piece:
            pieces.append(piece)
        found = _NON_SPACE.search(text, rest)  # the remainder starts at its first non-space
        start = found.start() if found else end
    if start < end:
        pieces.append(text[start:])
    return pieces


def _too_many_chunks(limit: int) -> DocumentError:
    return DocumentError("chunk", f"more than {limit:,} chunks (chunking.max_chunks_per_document); a document this "
                         "large is rarely meant to be searched: split it, exclude it, or raise the limit")


def has_words(text: str) -> bool:
    """Whether ``text`` has a word: a letter or a digit, in any script."""
    return any(char.isalnum() for char in text)


def _private_copy(tokenizer: PreTrainedTokenizerBase):
    """The Rust tokenizer behind a Hugging Face fast tokenizer, as a copy of our own (None for a slow one).

    Why: the splitter counts tokens hundreds of times per document, and the Rust tokenizer does it ~3x
    faster than the Hugging Face wrapper, with the same ids. And why a copy: the wrapper sets padding and
    truncation on its Rust tokenizer at every call, and the encoder embeds on another thread meanwhile
    (the torch backend shares this tokenizer); a copy with neither set is used by this chunker alone.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    counter = Tokenizer.from_str(backend.to_str())
    counter.no_padding()
    counter.no_truncation()
    return counter


def _page_runs(elements: Sequence[Element]) -> list[list[Element]]:
    """Consecutive elements grouped by page number (one group for unpaged formats)."""
    runs: list[list[Element]] = []
    page = object()
    for element in elements:
        number = getattr(element.metadata, "page_number", None)
        if not runs or number != page:
            runs.append([])
            page = number
        runs[-1].append(element)
    return runs


def _section_title(section: Element) -> str | None:
    return _section_title_of(getattr(section.metadata, "orig_elements", None) or [])


def _section_title_of(elements: Sequence[Element]) -> str | None:
    for element in elements:
        if element.category == "Title" and element.text.strip():
            return element.text.strip()[:200]
    return None
