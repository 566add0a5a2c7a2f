"""ragops' domain, one room (a sub-package) per kind of work; the full map is docs/architecture.md.

Rooms, lowest floor first:

- kernel (floor 0): ``errors``, ``models``, ``secrets``, ``failpoints``, ``runtime``, ``listing``; leaf modules
  of plain types and helpers, directly in this package;
- ``rag.config`` (1): the one typed configuration (``Settings``), its sections, sources and metric names;
- ``rag.store`` (2): builds, manifests, aliases and tables behind ``IndexStore``; ``open_store`` picks the backend;
- ``rag.embed`` (2): the embedding model from a local folder, its backends (onnx, torch) and fingerprint;
- ``rag.ingest`` (2): a fetched file to chunks: parsing in a bounded sandbox, redaction, chunking;
- ``rag.index`` (3): an alias's builds: plan, build, promote and roll back, retention, cache, freshness, audit;
- ``rag.serving`` (4): the live build to applications: ``Retriever``, the HTTP service, MCP, clients.

Above this package: ``connectors`` (5), ``evals`` (5), ``flows`` (6), ``ragops`` (7).

Rules: a module imports only its own room and lower floors; rooms on one floor (store, embed, ingest;
connectors, evals) do not import each other; connectors import only the kernel and ``rag.config``; no
import circles; nothing here imports Prefect at module level, opens a client or loads a model at import
time. ``python -m tools.imports`` checks the rules; this module imports nothing.
"""
