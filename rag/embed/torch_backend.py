"""The torch encoder: sentence-transformers on torch, the reference for any model and device.

Every vector space is defined against it: an onnx export counts as the same space only when it agrees
with it on the probe set (``rag.embed.onnx``). Importing torch and sentence-transformers costs seconds,
so they are imported when a model is loaded, never with this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from rag.errors import ModelError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class TorchEncoder:
    """A loaded sentence-transformers model: ``encode`` returns its vectors, not normalised (the
    ``Embedder`` normalises in float32)."""

    #: sentence-transformers shares one tokenizer between calls, which two threads must not use at once
    reentrant = False

    def __init__(self, model: SentenceTransformer) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        self.dimension = int(model.get_embedding_dimension() or 0)
        self.max_seq_length = int(model.max_seq_length or 0)

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """Embed ``texts``, ``batch_size`` at a time."""
        return self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                 normalize_embeddings=False, show_progress_bar=False)


def load_torch_encoder(path: Path, *, device: str, dtype: str, threads: int | None) -> TorchEncoder:
    """Load the sentence-transformers model in ``path`` (local files only) on ``device``.

    Args:
        dtype: "bfloat16" loads the weights in bfloat16 (faster on CPUs that have it; a vector space of
            its own); anything else keeps float32.
        threads: torch's threads for this process (None: torch's default, every core).

    Raises:
        ModelError: the folder is not a loadable sentence-transformers model, or it does not declare
            its embedding dimension and max_seq_length.
    """
    try:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()  # a bar per load would clutter run logs
        if threads:
            torch.set_num_threads(threads)
        model_kwargs = {"dtype": torch.bfloat16} if dtype == "bfloat16" else {}
        model = SentenceTransformer(str(path), device=device, local_files_only=True, model_kwargs=model_kwargs)
    except Exception as exc:  # sentence-transformers raises many types for "not a model here"
        raise _not_a_model(path, exc) from None
    encoder = TorchEncoder(model)
    if not encoder.dimension or not encoder.max_seq_length:
        raise ModelError(f"model at {path} does not declare its embedding dimension and max_seq_length")
    return encoder


def _not_a_model(path: Path, exc: Exception) -> ModelError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelError(
        f"cannot load a sentence-transformers model from {path}: {first_line[:300]}; "
        "point embedding.model at a folder saved with SentenceTransformer.save()"
    )
