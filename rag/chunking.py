"""Cutting parsed documents into chunks the embedding model reads whole.

Two libraries, each for what it does best (docs/architecture.md says more):

1. unstructured's ``chunk_by_title`` groups elements into sections (a heading and what follows it),
   one page at a time, merging tiny sections. It keeps each element's page number and type. It measures in characters: its token mode only knows tiktoken encodings,
   not the embedding model's tokenizer, so we aim it at ~4 characters per token, which fits most
   English prose under the limit.
2. llama-index's ``SentenceSplitter``, given the model's own tokenizer, splits whatever is still over
   ``max_tokens`` (code, tables, dense text) at sentence boundaries. So no chunk is ever truncated by
   the model.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Sequence

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
        """Import and load what the first chunk would (unstructured's chunker, llama-index and its
        sentence tokenizer: ~2-3 s), e.g. on a thread while the first documents parse."""
        from unstructured.chunking.title import chunk_by_title  # noqa: F401

        self.splitter.split_text("Warm up the sentence splitter. " * (self.max_tokens // 2))

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
        """Turn one document's elements into ordered chunks carrying uri, section title and page.

        Chunks without a letter or digit (rules, fences, lone punctuation) are not kept.

        Raises:
            DocumentError: chunking produced no text, or more chunks than ``max_chunks_per_document``
                (stopped as soon as it does, so such a document never holds its chunks in memory).
        """
        from unstructured.chunking.title import chunk_by_title

        try:
            # Page by page: chunk_by_title's combining of small sections ignores multipage_sections
            # and would file page-2 text under page 1.
            sections = [
                section
                for page in _page_runs(elements)
                for section in chunk_by_title(
                    page,
                    max_characters=self.max_tokens * _HARD_CHARS_PER_TOKEN,
                    new_after_n_chars=self.max_tokens * _SOFT_CHARS_PER_TOKEN,
                    combine_text_under_n_chars=min(
                        self.settings.combine_under_chars, self.max_tokens * _SOFT_CHARS_PER_TOKEN
                    ),
                    multipage_sections=False,
                    include_orig_elements=True,
                )
            ]
        except Exception as exc:  # a malformed element tree is this document's problem
            raise DocumentError("chunk", f"{type(exc).__name__}: {exc}"[:300]) from None

        chunks: list[Chunk] = []
        title: str | None = None
        for section in sections:
            title = _section_title(section) or title
            page = getattr(section.metadata, "page_number", None)
            for text, tokens in self._fit(section.text):
                if not has_words(text):
                    continue  # "///", "---", "| |": nothing a query matches, yet they came back as hits
                if len(chunks) == self.settings.max_chunks_per_document:
                    raise DocumentError(
                        "chunk", f"more than {len(chunks):,} chunks (chunking.max_chunks_per_document); a document "
                        "this large is rarely meant to be searched: split it, exclude it, or raise the limit")
                chunks.append(
                    Chunk(
                        doc_id=doc.doc_id,
                        chunk_index=len(chunks),
                        text=text,
                        source_uri=doc.uri,
                        source=doc.source,
                        title=title,
                        page=page,
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
    for element in getattr(section.metadata, "orig_elements", None) or []:
        if element.category == "Title" and element.text.strip():
            return element.text.strip()[:200]
    return None
