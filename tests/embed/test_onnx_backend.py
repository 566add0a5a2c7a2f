"""The onnx encoder backend: a local export of the real model, the same vector space as torch float32,
checked on the probe set at load; other spaces (int8, bfloat16) kept apart; builds made with one float32
backend reused and queried with the other."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from rag.config import EmbeddingSettings, Settings
from rag.embed.embedder import load_embedder, load_embedder_for
from rag.embed.onnx import PROBE_TEXTS, SAME_SPACE_COSINE, export_folder
from rag.errors import ModelError
from rag.store.names import cache_table, fingerprint_key

TEXTS = [
    "How do I undo a bad promotion?",
    "Descale the espresso machine every two months, or monthly with hard water.",
    "Replace a bicycle chain once it has stretched by 0.5% (about 1 mm over 20 links).",
    " leading and trailing spaces are stripped, as sentence-transformers does ",
    "x " * 400,  # far past 256 tokens: truncated the same way
]


@pytest.fixture(scope="module")
def torch_embedder():
    return load_embedder(EmbeddingSettings(backend="torch"))


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_embedder(onnx_cache: Path):
    return load_embedder(EmbeddingSettings(backend="onnx", onnx_cache=str(onnx_cache)))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow  # the real model, on torch and exported to onnx
def test_onnx_float32_embeds_as_torch_float32(torch_embedder, onnx_embedder, onnx_cache: Path) -> None:
    ours, reference = onnx_embedder.embed(TEXTS), torch_embedder.embed(TEXTS)

    assert ours.shape == reference.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert _cosines(ours, reference).min() >= SAME_SPACE_COSINE
    fingerprint = onnx_embedder.fingerprint
    assert (fingerprint.backend, fingerprint.dtype, fingerprint.quantization) == ("onnx", "float32", "none")
    assert fingerprint.probe_cosine >= SAME_SPACE_COSINE and fingerprint.space == "reference"
    assert fingerprint.same_space(torch_embedder.fingerprint)
    # one cache table for both: vectors embedded by either are reused by the other
    assert fingerprint_key(fingerprint) == fingerprint_key(torch_embedder.fingerprint)
    assert onnx_embedder.max_tokens == torch_embedder.max_tokens == 254
    export = export_folder(onnx_cache, fingerprint.weights_sha256, "none")
    assert json.loads((export / "export.json").read_text())["weights_sha256"] == fingerprint.weights_sha256
    assert not [p for p in onnx_cache.iterdir() if p.name.startswith(".")]  # no half-written export left


@pytest.mark.slow  # the real model's weights, on torch and exported to onnx
def test_cls_pooling_is_read_from_the_model_folder(cls_model: Path, cls_embedder, onnx_cache: Path) -> None:
    onnx_cls = load_embedder(EmbeddingSettings(model=str(cls_model), backend="onnx", onnx_cache=str(onnx_cache)))

    assert _cosines(onnx_cls.embed(TEXTS), cls_embedder.embed(TEXTS)).min() >= SAME_SPACE_COSINE
    assert onnx_cls.fingerprint.same_space(cls_embedder.fingerprint)


@pytest.mark.slow  # the real model, exported to onnx and quantized
def test_int8_is_its_own_vector_space(torch_embedder, onnx_cache: Path) -> None:
    int8 = load_embedder(EmbeddingSettings(backend="onnx", quantization="int8", onnx_cache=str(onnx_cache)))

    cosines = _cosines(int8.embed(TEXTS), torch_embedder.embed(TEXTS))
    assert 0.9 < cosines.min() < SAME_SPACE_COSINE  # close, but not the same vectors
    assert int8.fingerprint.space == "int8" and int8.fingerprint.probe_cosine < SAME_SPACE_COSINE
    assert not int8.fingerprint.same_space(torch_embedder.fingerprint)
    assert cache_table("docs", int8.fingerprint) != cache_table("docs", torch_embedder.fingerprint)
    # a build made with int8 is queried with int8, whatever backend the caller prefers
    again = load_embedder_for(int8.fingerprint, backend="torch", onnx_cache=str(onnx_cache))
    assert again.fingerprint.backend == "onnx" and again.fingerprint.same_space(int8.fingerprint)


@pytest.mark.slow  # the real model, on torch and exported to onnx
def test_an_export_that_disagrees_with_torch_is_refused(onnx_embedder, onnx_cache: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "cache"
    shutil.copytree(onnx_cache, damaged)
    export = export_folder(damaged, onnx_embedder.fingerprint.weights_sha256, "none")
    reference = np.load(export / "probe.npy")
    np.save(export / "probe.npy", np.roll(reference, 1, axis=0))  # another text's vector for each probe

    with pytest.raises(ModelError, match="disagrees with torch float32 on the probe set") as caught:
        load_embedder(EmbeddingSettings(backend="onnx", onnx_cache=str(damaged)))
    assert str(export) in str(caught.value)
    assert len(reference) == len(PROBE_TEXTS)


def test_a_model_the_onnx_path_cannot_run_says_so(tmp_path: Path) -> None:
    from rag.embed.embedder import resolve_model_path

    model = tmp_path / "with-dense"
    shutil.copytree(resolve_model_path("all-MiniLM-L6-v2"), model)
    modules = json.loads((model / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (model / "modules.json").write_text(json.dumps(modules))

    with pytest.raises(ModelError, match="Dense; set embedding.backend: torch"):
        load_embedder(EmbeddingSettings(model=str(model), backend="onnx", onnx_cache=str(tmp_path / "cache")))
    assert not (tmp_path / "cache").exists()  # refused before any export work


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"backend": "onnx", "dtype": "bfloat16"}, "bfloat16 is a torch dtype"),
        ({"backend": "torch", "quantization": "int8"}, "quantization int8 needs backend: onnx"),
        ({"backend": "onnx", "device": "cuda"}, "runs on the CPU"),
    ],
)
def test_backend_options_that_do_not_go_together_are_config_errors(section: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmbeddingSettings(**section)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_torch_build_is_reused_and_served_by_the_onnx_backend(
    tmp_path: Path, settings: Settings, store_path: Path, onnx_cache: Path
) -> None:
    from flows.reindex import reindex
    from rag.serving import Retriever

    def write(backend: str) -> str:
        path = tmp_path / f"{backend}.yaml"
        data = settings.model_dump(mode="json", exclude_none=True)
        data["embedding"] = {"backend": backend, "onnx_cache": str(onnx_cache)}
        path.write_text(yaml.safe_dump(data))
        return str(path)

    built = reindex(config=write("torch"))
    again = reindex(config=write("onnx"))

    assert built["promoted"] is True, built["reason"]
    assert again["state"] == "unchanged" and again["counts"]["chunks_embedded"] == 0, again
    query = "how do I undo a bad promotion?"
    onnx_settings = EmbeddingSettings(backend="onnx", onnx_cache=str(onnx_cache))
    with Retriever(alias="test", store=str(store_path), embedding=onnx_settings) as retriever:
        served = retriever.search(query, k=3)
        assert retriever._live.embedder.fingerprint.backend == "onnx"
    with Retriever(alias="test", store=str(store_path), embedding=EmbeddingSettings(backend="torch")) as retriever:
        reference = retriever.search(query, k=3)
    assert [h.doc_id for h in served] == [h.doc_id for h in reference]
    assert [h.score for h in served] == pytest.approx([h.score for h in reference], abs=1e-4)


@pytest.mark.slow  # the real model, exported to onnx
def test_passes_of_any_length_come_back_in_input_order_in_both_thread_modes(onnx_cache: Path) -> None:
    """Texts are sorted by length into passes of at most PASS_TOKENS tokens and run in parallel (builds) or
    one at a time on N threads (serving): either way each row is that text's own vector."""
    texts = [f"{'word ' * n}number {n}" for n in (3, 250, 1, 60, 120, 7, 250, 30, 2, 90)] * 3
    settings = EmbeddingSettings(backend="onnx", onnx_cache=str(onnx_cache), batch_size=4)
    throughput, latency = load_embedder(settings), load_embedder(settings, threads=2)
    assert (throughput.encoder.parallel_passes, latency.encoder.parallel_passes) == (os.cpu_count() or 1, 1)
    one_by_one = np.stack([latency.embed([text])[0] for text in texts])

    for embedder in (throughput, latency):
        assert np.allclose(embedder.embed(texts), one_by_one, atol=1e-5)
