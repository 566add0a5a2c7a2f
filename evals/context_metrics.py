"""RAGAS' context metrics that need no LLM, scored per query with RAGAS' own metric classes.

- ``id_context_recall`` (``IDBasedContextRecall``): share of the relevant documents among the top
  ``context_k`` retrieved documents.
- ``id_context_precision`` (``IDBasedContextPrecision``): share of the top ``context_k`` retrieved
  documents that are relevant. Set-based, not rank-aware (nDCG and MRR cover rank).
- ``nonllm_context_recall`` (``NonLLMContextRecall``): share of the golden ``reference_contexts`` that
  some retrieved chunk matches (normalised Levenshtein similarity > 0.5).
- ``nonllm_context_precision`` (``NonLLMContextPrecisionWithReference``): average precision of the
  retrieved chunks, a chunk counting as relevant when it matches a reference context (>= 0.5).

The text metrics run only for queries whose golden entry has ``reference_contexts``; they compare whole
strings, so reference contexts should be passages about as long as a chunk, not single sentences.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Coroutine, TypeVar

from rag.config import RAGAS_METRICS

T = TypeVar("T")


@dataclass
class ContextSample:
    """What RAGAS needs of one query."""

    retrieved_ids: list[str]  # top context_k documents, best first
    reference_ids: list[str]  # relevant documents (grade >= 1)
    retrieved_texts: list[str]  # top context_k chunk texts, best first
    reference_texts: list[str] | None  # golden reference_contexts, if any


def score_contexts(samples: list[ContextSample]) -> list[dict[str, float | None]]:
    """Every context metric for every sample; None where a metric does not apply (no reference texts)."""
    from ragas import SingleTurnSample
    from ragas.metrics import (
        IDBasedContextPrecision,
        IDBasedContextRecall,
        NonLLMContextPrecisionWithReference,
        NonLLMContextRecall,
    )

    id_recall, id_precision = IDBasedContextRecall(), IDBasedContextPrecision()
    text_recall, text_precision = NonLLMContextRecall(), NonLLMContextPrecisionWithReference()

    async def one(sample: ContextSample) -> dict[str, float | None]:
        scores: dict[str, float | None] = dict.fromkeys(RAGAS_METRICS)
        if sample.retrieved_ids:
            ids = SingleTurnSample(
                retrieved_context_ids=sample.retrieved_ids, reference_context_ids=sample.reference_ids
            )
            scores["id_context_recall"] = _number(await id_recall.single_turn_ascore(ids))
            scores["id_context_precision"] = _number(await id_precision.single_turn_ascore(ids))
        else:  # nothing retrieved: RAGAS returns NaN for precision; for a gate that is a plain miss
            scores["id_context_recall"] = scores["id_context_precision"] = 0.0
        if sample.reference_texts:
            if sample.retrieved_texts:
                texts = SingleTurnSample(
                    retrieved_contexts=sample.retrieved_texts, reference_contexts=sample.reference_texts
                )
                scores["nonllm_context_recall"] = _number(await text_recall.single_turn_ascore(texts))
                scores["nonllm_context_precision"] = _number(await text_precision.single_turn_ascore(texts))
            else:
                scores["nonllm_context_recall"] = scores["nonllm_context_precision"] = 0.0
        return scores

    async def every() -> list[dict[str, float | None]]:
        return list(await asyncio.gather(*(one(sample) for sample in samples)))

    return run_async(every)


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(max_workers=1) as pool:  # a loop is running here (Prefect, notebooks)
        return pool.submit(lambda: asyncio.run(make())).result()


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
