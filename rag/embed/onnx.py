"""The onnxruntime encoder: the configured model's transformer exported to ONNX once, pooled here.

Why: onnxruntime runs all-MiniLM-L6-v2 faster than sentence-transformers' torch float32 with the same
vectors (cosine 1.00000; ~2.6x on short sentences, ../shared/notes/serving-and-speed.md; on 256-token
texts only once its attention is fused, see ``_fuse``), and it needs no torch at query time, so a
command or a serving process that only queries starts in a fraction of the time. sentence-transformers' own
``backend="onnx"`` needs optimum, which cannot be installed beside transformers 5, so the export is ours and small.

The export is made from the local model folder the first time it is used, into a cache folder keyed
by the folder's weights hash (``rag.embed.embedder.hash_model_folder``) and the quantisation: never
downloaded, never committed, shared by every process of the machine. With it go the torch float32
vectors of a fixed probe set (``PROBE_TEXTS``), computed by sentence-transformers at export time: each
load embeds the probe set again and measures its cosine to them, which is what decides whether the
encoder lives in the same vector space as torch float32 (``SAME_SPACE_COSINE``).

Only models made of Transformer + Pooling (+ Normalize) modules are exported (most sentence-transformers
bi-encoders); others keep ``embedding.backend: torch``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rag.errors import ModelError

log = logging.getLogger(__name__)

#: model types whose exports onnxruntime's BERT optimizer is known here to fuse exactly (MiniLM, BGE, E5,
#: GTE are all "bert"); others are exported unfused
_FUSABLE = {"bert"}
#: vectors that agree with torch float32 at least this well on every probe text are the same space
SAME_SPACE_COSINE = 0.9999

#: bump when the export (opset, graph inputs, file layout) changes: old exports are then made again
EXPORT_FORMAT = 2  # 2: eager attention traced and fused by onnxruntime's transformer optimizer

#: most tokens in one forward pass, padding included (texts x the longest): 512-1,536 measured alike here, 4,096 slower
PASS_TOKENS = 1024

#: a fixed probe set: short and long, queries and passages, punctuation, digits, non-ASCII, and one text
#: past 256 tokens so that truncation is probed too.
PROBE_TEXTS: tuple[str, ...] = (
    "How do I undo a bad promotion?",
    "what is the capital of France",
    "Mitochondria are the powerhouse of the cell.",
    "ERROR 500: upstream timed out after 30 s (request id 7f3a-19c2)",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "東京は日本の首都です。",
    "A",
    "The alias moves to the new build only when its retrieval metrics pass the gate; otherwise the "
    "previous build keeps serving and the new one is kept for inspection.",
    "def reindex(settings):\n    return build(settings.sources, settings.store)\n",
    " ".join(f"Sentence {n} of a long passage about vector indexes, chunking and evaluation." for n in range(40)),
)

_POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
_SUPPORTED_MODULES = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
}


@dataclass(frozen=True)
class _ModelLayout:
    """What sentence-transformers' module files say about how to turn token vectors into one vector."""

    pooling: str  # "mean", "cls" or "max"
    normalize: bool  # a Normalize module follows the pooling
    max_seq_length: int
    do_lower_case: bool
    dimension: int


def default_cache_dir() -> Path:
    """Where exports are cached when ``embedding.onnx_cache`` is unset: $XDG_CACHE_HOME/ragops/onnx."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ragops" / "onnx"


def read_layout(model_path: Path) -> _ModelLayout:
    """Read modules.json, the pooling config and sentence_bert_config.json of a model folder.

    Raises:
        ModelError: the model has modules the ONNX path does not run (Dense, custom code), or an
            unsupported pooling mode.
    """
    modules_file = model_path / "modules.json"
    if not modules_file.is_file():
        raise ModelError(f"{model_path} has no modules.json; the onnx backend needs a sentence-transformers folder")
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    kinds = {m.get("type") for m in modules}
    unsupported = sorted(k for k in kinds if k not in _SUPPORTED_MODULES)
    if unsupported:
        raise ModelError(
            f"the onnx backend runs Transformer + Pooling (+ Normalize) models; {model_path} also has "
            f"{', '.join(unsupported)}; set embedding.backend: torch"
        )
    pooling_module = next((m for m in modules if m.get("type") == "sentence_transformers.models.Pooling"), None)
    if pooling_module is None:
        raise ModelError(f"{model_path} has no Pooling module; set embedding.backend: torch")
    pooling_config = json.loads((model_path / pooling_module["path"] / "config.json").read_text(encoding="utf-8"))
    chosen = [key for key, on in pooling_config.items() if key.startswith("pooling_mode_") and on is True]
    if len(chosen) != 1 or chosen[0] not in _POOLING_MODES:
        raise ModelError(
            f"the onnx backend pools by exactly one of {', '.join(_POOLING_MODES)}; {model_path} asks for "
            f"{', '.join(chosen) or 'none'}; set embedding.backend: torch"
        )
    bert_config_file = model_path / "sentence_bert_config.json"
    bert_config = json.loads(bert_config_file.read_text(encoding="utf-8")) if bert_config_file.is_file() else {}
    if not bert_config.get("max_seq_length"):
        raise ModelError(f"{model_path} does not declare max_seq_length in sentence_bert_config.json")
    return _ModelLayout(
        pooling=_POOLING_MODES[chosen[0]],
        normalize="sentence_transformers.models.Normalize" in kinds,
        max_seq_length=int(bert_config["max_seq_length"]),
        do_lower_case=bool(bert_config.get("do_lower_case", False)),
        dimension=int(pooling_config["word_embedding_dimension"]),
    )


def export_folder(cache_dir: Path, weights_sha256: str, quantization: str) -> Path:
    """The cache folder of one model's export (one per weights hash and quantisation)."""
    return cache_dir / f"{weights_sha256[:24]}-{quantization}-v{EXPORT_FORMAT}"


def ensure_export(model_path: Path, weights_sha256: str, quantization: str, cache_dir: Path) -> Path:
    """Export the model's transformer to ONNX unless the cache already holds it; returns its folder.

    The export is written to a temporary folder beside the final one and renamed into place, so a
    killed export leaves nothing that looks complete and two processes exporting at once both end
    with the same files.

    Raises:
        ModelError: torch could not export the model, or the cache folder is not writable.
    """
    target = export_folder(cache_dir, weights_sha256, quantization)
    if (target / "export.json").is_file():
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
    except OSError as exc:
        raise ModelError(
            f"cannot write the onnx export cache at {cache_dir} ({exc.strerror}); set embedding.onnx_cache "
            "to a writable folder"
        ) from None
    try:
        started = time.perf_counter()
        log.info("exporting %s to ONNX (%s) into %s, once for this model", model_path, quantization, target)
        _export(model_path, work, quantization)
        (work / "export.json").write_text(json.dumps({
            "format": EXPORT_FORMAT, "weights_sha256": weights_sha256, "quantization": quantization,
            "model_path": str(model_path), "seconds": round(time.perf_counter() - started, 1),
        }, indent=2))
        try:
            os.rename(work, target)
        except OSError:
            if not (target / "export.json").is_file():  # not a concurrent export that won the race
                raise
    except ModelError:
        raise
    except Exception as exc:  # torch.onnx raises many types; all mean "this model does not export"
        raise ModelError(f"cannot export {model_path} to ONNX: {' '.join(str(exc).split())[:300]}; "
                         "set embedding.backend: torch") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _export(model_path: Path, work: Path, quantization: str) -> None:
    import warnings

    import transformers

    transformers.utils.logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about the model's Python branches are noise here
        _trace(model_path, work, quantization)


def _trace(model_path: Path, work: Path, quantization: str) -> None:
    import torch
    from sentence_transformers import SentenceTransformer


    reference = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    probe = reference.encode(list(PROBE_TEXTS), batch_size=len(PROBE_TEXTS), convert_to_numpy=True,
                             normalize_embeddings=False, show_progress_bar=False)
    np.save(work / "probe.npy", np.asarray(probe, dtype=np.float32))
    transformer = reference[0].auto_model.eval()
    _use_eager_attention(transformer)
    inputs = reference.preprocess(["a short text", "a somewhat longer text to give the batch some padding"])
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in inputs]

    class _LastHiddenState(torch.nn.Module):
        # Keyword arguments: under transformers 5 a positional third input lands on `use_cache`.
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, tensors)), return_dict=True).last_hidden_state

    fp32 = work / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(
            _LastHiddenState(transformer), tuple(inputs[name] for name in names), str(fp32),
            input_names=names, output_names=["last_hidden_state"], opset_version=17, dynamo=False,
            dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in names},
                          "last_hidden_state": {0: "batch", 1: "sequence"}},
        )
    if quantization == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = work / "model.int8.onnx"
        quantize_dynamic(str(fp32), str(quantized), per_channel=True, weight_type=QuantType.QInt8)
        os.replace(quantized, fp32)
    else:
        _fuse(fp32, transformer.config)


def _use_eager_attention(transformer) -> None:
    """Trace attention as plain matrix products: the pattern onnxruntime fuses into one Attention op
    (transformers' default SDPA attention traces into a graph it does not recognise)."""
    try:
        transformer.set_attn_implementation("eager")
    except (AttributeError, ValueError):
        transformer.config._attn_implementation = "eager"


def _fuse(model: Path, config) -> None:
    """Fuse a BERT-family export's attention, layer norms and GELU with onnxruntime's transformer
    optimizer (measured ~2x faster on 256-token texts, same vectors: the probe check still decides).
    Other architectures, or a fusion that fails, keep the plain export."""
    if getattr(config, "model_type", None) not in _FUSABLE:
        return
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        optimized = optimize_model(str(model), model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size)
        fused = model.with_name("model.fused.onnx")
        optimized.save_model_to_file(str(fused))
    except Exception as exc:  # an optimisation, never a reason to fail the export
        log.warning("could not fuse the ONNX export (%s); using it unfused", exc)
        return
    os.replace(fused, model)


def _load_tokenizer(model_path: Path):
    """The model's tokenizer class as its tokenizer_config.json names it, without AutoTokenizer: that
    imports transformers' model configuration and with it torch (~3 s), which a query does not need."""
    import transformers

    config_file = model_path / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    name = str(config.get("tokenizer_class") or "PreTrainedTokenizerFast")
    try:
        cls = getattr(transformers, name)
    except (AttributeError, ImportError):
        cls = transformers.PreTrainedTokenizerFast
    return cls.from_pretrained(str(model_path), local_files_only=True)


class OnnxEncoder:
    """An onnxruntime session over an exported transformer, with the model's tokenizer and pooling.

    ``encode`` returns the pooled (and, when the model has a Normalize module, unit-length) vectors that
    sentence-transformers' ``encode`` returns for the same texts.

    How it runs, and why (measured on SciFact chunks, docs/benchmarks.md): texts are tokenized once and
    sorted by length, then cut into forward passes of at most ``PASS_TOKENS`` tokens, padding included;
    small passes of texts of one length waste little on padding and stay in the CPU's caches, ~1.4x the
    texts per second of fixed passes of 32.

    ``threads`` None (throughput, for builds): one single-threaded pass per core at once, instead of one
    pass on all cores: a pass split over threads waits for its slowest thread, so every other process
    on the machine (a build's parser, its store writes, a query service) slowed the whole encoder; a
    single-threaded pass only loses the core it is on. ``threads`` N (latency, for serving): a call's
    passes run one after another on N threads, on the caller's thread; several threads may call at
    once (the query batcher runs ``serve.passes`` of them), since onnxruntime's ``run`` is thread-safe.
    """

    #: onnxruntime's ``run`` is thread-safe, and ``encode`` tokenizes under its own lock
    reentrant = True

    def __init__(self, model_path: Path, export: Path, *, threads: int | None = None) -> None:
        import onnxruntime

        self.layout = read_layout(model_path)
        #: passes run at once, and threads per pass (see the class's docstring)
        self.parallel_passes, intra = (max(1, os.cpu_count() or 1), 1) if threads is None else (1, threads)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(
            str(export / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        #: for callers (the chunker counts tokens with it); ``encode`` has its own: a Hugging Face fast
        #: tokenizer changes its padding and truncation state on every call, so two threads must not share one
        self.tokenizer = _load_tokenizer(model_path)
        self._tokenizer = _load_tokenizer(model_path)
        self._tokenizing = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.probe_reference = np.load(export / "probe.npy")

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embed ``texts`` (at most ``batch_size`` per forward pass); the result is in the input order."""
        out = np.empty((len(texts), self.layout.dimension), dtype=np.float32)
        if not texts:
            return out
        feeds = self._passes(texts, batch_size)
        if self.parallel_passes == 1 or len(feeds) == 1:
            for rows, feed, mask in feeds:
                out[rows] = self._run(feed, mask)
            return out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.parallel_passes, thread_name_prefix="onnx-pass")
        for (rows, _, _), vectors in zip(feeds, self._pool.map(lambda f: self._run(f[1], f[2]), feeds)):
            out[rows] = vectors
        return out

    def probe_cosine(self) -> float:
        """Smallest cosine, over the probe set, between this encoder's vectors and torch float32's."""
        ours = self.encode(list(PROBE_TEXTS), batch_size=len(PROBE_TEXTS))
        ref = self.probe_reference
        cosines = np.sum(ours * ref, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
        return float(np.min(cosines))

    def _passes(self, texts: Sequence[str], batch_size: int) -> list[tuple[list[int], dict, np.ndarray]]:
        """Tokenize ``texts`` and group them, longest first, into padded forward passes: (rows, feed, mask)."""
        # As sentence-transformers' Transformer.tokenize: strip, optionally lower-case, truncate at max_seq_length.
        cleaned = [str(t).strip() for t in texts]
        if self.layout.do_lower_case:
            cleaned = [t.lower() for t in cleaned]
        with self._tokenizing:
            ids = self._tokenizer(cleaned, truncation="longest_first", max_length=self.layout.max_seq_length)["input_ids"]
            order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
            groups: list[list[int]] = []
            for index in order:  # longest first: a group's first text sets its padded length
                group = groups[-1] if groups else None
                if group is None or len(group) >= batch_size or (len(group) + 1) * len(ids[group[0]]) > PASS_TOKENS:
                    groups.append([index])
                else:
                    group.append(index)
            passes = []
            for group in groups:
                padded = self._tokenizer.pad({"input_ids": [ids[i] for i in group]}, padding=True, return_tensors="np")
                tokens = padded["input_ids"].astype(np.int64)
                mask = padded["attention_mask"].astype(np.int64)
                feed = {"input_ids": tokens, "attention_mask": mask, "token_type_ids": np.zeros_like(tokens)}
                passes.append((group, {name: feed[name] for name in self.input_names}, mask))
        return passes

    def _run(self, feed: dict, attention_mask: np.ndarray) -> np.ndarray:
        (tokens,) = self.session.run(["last_hidden_state"], feed)
        mask = attention_mask.astype(np.float32)[:, :, None]
        if self.layout.pooling == "mean":
            pooled = (tokens * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        elif self.layout.pooling == "cls":
            pooled = tokens[:, 0]
        else:  # max, padding excluded as sentence-transformers does
            pooled = np.where(mask > 0, tokens, -1e9).max(axis=1)
        if self.layout.normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)
