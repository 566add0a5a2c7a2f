"""Where documents come from: the source kinds (a ``Source`` is one of them, told apart by ``kind``), and what
personal data a source redacts before anything of its documents is embedded or stored."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, field_validator, model_validator

from rag.config.base import Duration, Section

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


class RedactSettings(Section):
    """Personal data replaced before anything of a source's documents is embedded or stored (rag/ingest/redaction.py)."""

    entities: list[str] = Field(
        min_length=1,
        description="Presidio entity types to redact, e.g. [EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE]. "
        "PERSON, LOCATION, NRP, ORGANIZATION and DATE_TIME run spaCy's named-entity recognizer (~30x slower) "
        "and are best effort: what it does not recognise stays (recall measured in docs/benchmarks.md).",
    )
    mode: Literal["mask", "hash"] = Field(
        "mask",
        description="mask: the type (<EMAIL_ADDRESS>). hash: the type and a keyed hash of the value "
        "(<EMAIL_ADDRESS:1f0c...>), equal values alike.",
    )
    key_env: str = Field(
        "PII_REDACTION_KEY",
        description="Environment variable holding the key of mode hash (never in this file). Changing the key "
        "re-processes the source's documents. Not a RAGOPS_* name: those are read as settings.",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
    )

    @field_validator("key_env")
    @classmethod
    def _not_a_setting(cls, name: str) -> str:
        if name.upper().startswith("RAGOPS_"):
            raise ValueError(f"{name}: RAGOPS_* variables are read as settings; name the key's variable otherwise")
        return name

    @field_validator("entities")
    @classmethod
    def _known_entities(cls, entities: list[str]) -> list[str]:
        names = [name.strip().upper() for name in entities]
        unknown = [name for name in names if name not in SUPPORTED_ENTITIES]
        if unknown:
            raise ValueError(f"unknown entity types {unknown}; supported: {', '.join(sorted(SUPPORTED_ENTITIES))}")
        return sorted(set(names))


class _Source(Section):
    name: str = Field(
        "",
        description="Stable name of the source, used as the prefix of document ids. "
        "Defaults to the folder's name (or the bucket's).",
        pattern=r"^[A-Za-z0-9._-]*$",
    )
    include: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Glob patterns (fnmatch, `*` crosses folders) a relative path must match to be indexed.",
    )
    exclude: list[str] = Field(
        default_factory=lambda: [".*", "*/.*", "*~"],
        description="Glob patterns that drop a file even when it matches `include`. Default: hidden files.",
    )
    max_staleness: Duration | None = Field(
        None,
        description="Longest the live index may lag behind this source (e.g. 30m, 6h, 2d). Unset: no limit. "
        "A refresh that ends with the source staler than this fails.",
    )
    redact: RedactSettings | None = Field(
        None,
        description="Redact personal data (Presidio) after parsing, before chunking, embedding and storage. "
        "Unset: no redaction. Changing it re-processes this source's documents.",
    )


class FolderSource(_Source):
    """A local folder, walked recursively."""

    kind: Literal["folder"] = Field("folder", description="Source type: folder.")
    path: Path = Field(description="Folder to index, walked recursively.")
    follow_symlinks: bool = Field(
        False,
        description="Follow symbolic links (to files and to folders) whose target stays inside `path`. "
        "Links that leave it are never followed. Skipped links are listed in the run's notes.",
    )

    @model_validator(mode="after")
    def _default_name(self) -> FolderSource:
        if not self.name:
            # Bypass validate_assignment recursion by writing the field directly.
            object.__setattr__(self, "name", self.path.name or "root")
        return self

    @property
    def uri(self) -> str:
        """The source's address as shown in summaries and manifests."""
        return self.path.resolve().as_uri()


class S3Source(_Source):
    """Objects under a prefix of an S3 bucket (AWS or any S3-compatible endpoint)."""

    kind: Literal["s3"] = Field("s3", description="Source type: s3.")
    url: str = Field(description="s3://bucket/prefix to index (the prefix may be empty).", pattern=r"^s3://[^/]+")
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, SeaweedFS, R2…). Unset: AWS, from the region."
    )
    region: str | None = Field(None, description="Region. Unset: the AWS credential chain's default.")
    profile: str | None = Field(None, description="Named profile from ~/.aws/config. Unset: the default chain.")
    max_attempts: int = Field(
        6, ge=1, le=20, description="Attempts per request; throttling, 5xx and timeouts are retried with backoff."
    )
    read_timeout: float = Field(
        60.0, gt=0, le=3600, description="Seconds to wait for a response's bytes before the attempt counts as failed."
    )

    @property
    def bucket(self) -> str:
        """Bucket name from ``url``."""
        return self.url[len("s3://") :].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """Key prefix from ``url`` ("" for the whole bucket)."""
        parts = self.url[len("s3://") :].split("/", 1)
        return parts[1] if len(parts) > 1 else ""

    @model_validator(mode="after")
    def _default_name(self) -> S3Source:
        if not self.name:
            object.__setattr__(self, "name", self.bucket)
        return self

    @property
    def uri(self) -> str:
        """The source's address as shown in summaries and manifests."""
        return self.url


def _infer_source_kind(value: Any) -> Any:
    """Let users omit ``kind``: a ``url`` of s3://… is an S3 source, a ``path`` a folder."""
    if isinstance(value, dict) and "kind" not in value:
        if str(value.get("url", "")).startswith("s3://"):
            return {**value, "kind": "s3"}
        if "path" in value:
            return {**value, "kind": "folder"}
    return value


Source = Annotated[Union[FolderSource, S3Source], Field(discriminator="kind"), BeforeValidator(_infer_source_kind)]


def source_from_cli(value: str) -> dict[str, str]:
    """A ``--source`` value: ``s3://bucket/prefix`` or a folder."""
    if value.startswith("s3://"):
        return {"url": value}
    return {"path": str(Path(value).expanduser().resolve())}
