"""The one typed configuration of ragops (``Settings``), its sections, source kinds and metric names.

Load it once at an entry point (CLI callback, a flow's first line) with ``Settings.load`` (flags >
``RAGOPS_*`` environment variables > the YAML file > defaults) and pass sections down: domain code never
reads environment variables. The room imports only the kernel (``rag.errors``, ``rag.secrets``).

Modules, each importing only those listed before it:

- ``base.py``: ``Section``, what every section is made of (unknown keys are errors), and ``Duration``;
- ``metrics.py``: the one list of metric names, ``PRIMARY_METRIC`` and the headline metrics renderers show;
- ``sources.py``: the source kinds (``FolderSource``, ``S3Source``, the ``Source`` union by ``kind``) and
  per-source redaction (``RedactSettings``, the PII entities it supports);
- ``loading.py``: how settings load: YAML file, ``RAGOPS_*`` variables, flags, relative paths, secret
  values kept out of messages, one line per problem;
- ``settings.py``: ``Settings`` and its sections (store, embedding, chunking, pipeline, evaluation, LLM,
  gate, drift, serve).
"""

from __future__ import annotations

from rag.config.base import Duration, Section
from rag.config.loading import DEFAULT_CONFIG_FILE, ENV_CONFIG_FILE, ENV_PREFIX, config_file
from rag.config.metrics import (
    DETAIL_METRICS,
    HEADLINE_METRICS,
    IR_METRICS,
    LLM_METRICS,
    PRIMARY_METRIC,
    RAGAS_METRICS,
    REPORT_METRICS,
    check_metric_name,
)
from rag.config.settings import (
    BODY_ALLOWANCE,
    DEFAULT_MODEL,
    JSON_BYTES_PER_CHAR,
    ApiKey,
    ChunkingSettings,
    DriftSettings,
    EmbeddingSettings,
    EvaluationSettings,
    GateSettings,
    LLMSettings,
    PipelineSettings,
    ServeSettings,
    Settings,
    StoreSettings,
    secret_paths,
)
from rag.config.sources import (
    NER_ENTITIES,
    PATTERN_ENTITIES,
    SUPPORTED_ENTITIES,
    FolderSource,
    RedactSettings,
    S3Source,
    Source,
    source_from_cli,
)

__all__ = [
    "BODY_ALLOWANCE", "DEFAULT_CONFIG_FILE", "DEFAULT_MODEL", "DETAIL_METRICS", "ENV_CONFIG_FILE", "ENV_PREFIX",
    "HEADLINE_METRICS", "IR_METRICS", "JSON_BYTES_PER_CHAR", "LLM_METRICS", "NER_ENTITIES", "PATTERN_ENTITIES",
    "PRIMARY_METRIC", "RAGAS_METRICS", "REPORT_METRICS", "SUPPORTED_ENTITIES",
    "ApiKey", "ChunkingSettings", "DriftSettings", "Duration", "EmbeddingSettings", "EvaluationSettings",
    "FolderSource", "GateSettings", "LLMSettings", "PipelineSettings", "RedactSettings", "S3Source", "Section",
    "ServeSettings", "Settings", "Source", "StoreSettings",
    "check_metric_name", "config_file", "secret_paths", "source_from_cli",
]
