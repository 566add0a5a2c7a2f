"""The embed room: texts to vectors, with a model loaded from a local folder (never from a hub).

- ``embedder``: the ``Embedder`` facade, which every caller uses: ``load_embedder`` resolves the
  configured model (a packaged model or a folder), loads it with the configured backend and
  fingerprints it; ``load_embedder_for`` loads the model a build records and checks it is the same one;
- ``torch_backend``: sentence-transformers on torch, the reference encoder;
- ``onnx``: onnxruntime on a local ONNX export of the model, checked against torch on a probe set.

A new backend is a module here with an encoder (``embedder.Encoder``) and a branch in ``load_embedder``.
The backends are imported when a model is loaded, so ``import rag.embed`` loads neither torch nor
onnxruntime.
"""

from __future__ import annotations

from rag.embed.embedder import (
    PACKAGED_MODELS,
    Embedder,
    Encoder,
    embed_in_worker,
    hash_model_folder,
    load_embedder,
    load_embedder_for,
    resolve_model_path,
)

__all__ = [
    "PACKAGED_MODELS", "Embedder", "Encoder", "embed_in_worker", "hash_model_folder", "load_embedder",
    "load_embedder_for", "resolve_model_path",
]
