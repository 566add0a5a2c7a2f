"""LLM-judged RAGAS metrics: advisory numbers about answers built from the retrieved contexts.

The retrieval metrics (evals.metrics) gate promotions; these never do. An LLM judge is slow, costs money
and scores vary from run to run, so they are reported next to the gate, not used by it. For each golden
query, one chat-completion call answers the query from its retrieved contexts only; RAGAS then judges:

- ``faithfulness``: share of the answer's statements the contexts support.
- ``answer_relevancy``: cosine between the query and a question the LLM reconstructs from the answer
  (0 when the answer is noncommittal).
- ``llm_context_precision``: average precision of the contexts the LLM finds useful, against the
  golden reference answer when there is one, else against the generated answer.

Any OpenAI-compatible endpoint that supports JSON mode works (``LLMSettings``). Endpoint problems never
reach the caller: a failing query gets ``None`` for the affected metrics, and an endpoint that cannot
be reached stops the run at once with ``None`` everywhere.

RAGAS 0.4.3 wiring, as verified in its source:

- Metric classes are the ``ragas.metrics`` ones (``Faithfulness``, ``AnswerRelevancy``,
  ``LLMContextPrecisionWithReference``/``WithoutReference``). Their prompts accept the instructor-based
  LLM that ``llm_factory(model, provider="openai", client=AsyncOpenAI(...))`` returns (instructor JSON
  mode: ``response_format={"type": "json_object"}``); no LangChain LLM wrapper is needed.
- That LLM yields one generation per call, so ``AnswerRelevancy`` runs with ``strictness=1`` (its default
  of 3 would silently drop to 1 anyway, with a warning per query).
- ``AnswerRelevancy`` calls the legacy ``embed_query``/``embed_documents``: the ``embed`` callable is
  wrapped in a ``ragas.embeddings.BaseRagasEmbeddings`` subclass.
"""

from __future__ import annotations

import asyncio
import logging
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from evals.context_metrics import run_async
from rag.config import LLM_METRICS
from rag.secrets import redact_url

if TYPE_CHECKING:
    from rag.config import LLMSettings

log = logging.getLogger(__name__)

ANSWER_SYSTEM_PROMPT = (
    "Answer the user's question using only the numbered contexts provided. If they do not contain "
    "the answer, say that you do not know. Be concise."
)

Embed = Callable[[list[str]], np.ndarray]
Scores = dict[str, dict[str, float | None]]


@dataclass
class JudgeSample:
    """One golden query with what retrieval returned for it.

    Attributes:
        query_id: Id of the golden query; keys the result.
        query: The query text.
        retrieved_contexts: Texts of the top retrieved chunks, best first.
        reference_answer: The golden answer, when the golden set has one.
    """

    query_id: str
    query: str
    retrieved_contexts: list[str]
    reference_answer: str | None = None


def judge(samples: list[JudgeSample], llm: LLMSettings, embed: Embed) -> Scores:
    """Answer each query from its contexts with the LLM, then score the answers with RAGAS.

    Only the first ``llm.max_queries`` samples are judged. Never raises for endpoint problems: they are
    logged as warnings and the affected metrics are ``None``.

    Args:
        samples: Golden queries with their retrieved contexts.
        llm: The OpenAI-compatible endpoint that answers and judges.
        embed: Texts to L2-normalised float32 vectors, shape (n, d); used by answer relevancy.

    Returns:
        ``{query_id: {metric: score or None}}`` for every judged sample, metrics as in ``LLM_METRICS``.
    """
    samples = samples[: llm.max_queries]
    if not samples:
        return {}
    try:
        return run_async(lambda: _judge_all(samples, llm, embed))
    except Exception as exc:  # advisory metrics must never break an evaluation
        log.warning("LLM-judged metrics failed, reporting none: %s", _describe(exc), exc_info=True)
        return {sample.query_id: dict.fromkeys(LLM_METRICS) for sample in samples}


async def _judge_all(samples: list[JudgeSample], llm: LLMSettings, embed: Embed) -> Scores:
    # Imported here: ragas takes seconds to import, and callers without an LLM never need it.
    import openai
    from ragas.dataset_schema import SingleTurnSample
    from ragas.llms import llm_factory

    with warnings.catch_warnings():
        # 0.4.3 deprecates these imports in favour of ragas.metrics.collections (see the module docstring).
        warnings.simplefilter("ignore", DeprecationWarning)
        from ragas.metrics import (
            AnswerRelevancy,
            Faithfulness,
            LLMContextPrecisionWithoutReference,
            LLMContextPrecisionWithReference,
        )

    client = openai.AsyncOpenAI(
        base_url=llm.base_url, api_key=llm.api_key.get_secret_value(), timeout=float(llm.timeout)
    )
    # Errors that will not go away for the next query: stop instead of failing (or timing out) N times.
    fatal = (
        openai.APIConnectionError,  # also timeouts; raised after the client's own retries
        openai.AuthenticationError,
        openai.PermissionDeniedError,
        openai.NotFoundError,  # typically an unknown model name
    )
    try:
        judge_llm = llm_factory(llm.model, provider="openai", client=client)
        faithfulness = Faithfulness(llm=judge_llm)
        relevancy = AnswerRelevancy(llm=judge_llm, embeddings=_ragas_embeddings(embed), strictness=1)
        precision_ref = LLMContextPrecisionWithReference(llm=judge_llm)
        precision_answer = LLMContextPrecisionWithoutReference(llm=judge_llm)

        results: Scores = {}
        for index, sample in enumerate(samples):
            try:
                response = await _answer(client, llm.model, sample)
            except fatal as exc:
                log.warning(
                    "LLM endpoint %s unusable (%s); no LLM-judged metrics for the %d remaining queries",
                    redact_url(llm.base_url), _describe(exc), len(samples) - index,
                )
                for rest in samples[index:]:
                    results[rest.query_id] = dict.fromkeys(LLM_METRICS)
                break
            except Exception as exc:
                log.warning("query %s: answer generation failed: %s", sample.query_id, _describe(exc))
                response = None

            row = SingleTurnSample(
                user_input=sample.query,
                response=response,
                retrieved_contexts=sample.retrieved_contexts,
                reference=sample.reference_answer,
            )
            if sample.reference_answer:
                precision = _score(precision_ref, row, sample.query_id, "llm_context_precision")
            elif response is not None:
                precision = _score(precision_answer, row, sample.query_id, "llm_context_precision")
            else:
                precision = _none()
            if response is None:  # faithfulness and relevancy judge the answer: nothing to judge
                faith, relevance = _none(), _none()
            else:
                faith = _score(faithfulness, row, sample.query_id, "faithfulness")
                relevance = _score(relevancy, row, sample.query_id, "answer_relevancy")
            # The three judges are independent: let the endpoint work on them concurrently.
            scores = await asyncio.gather(faith, relevance, precision)
            results[sample.query_id] = dict(zip(LLM_METRICS, scores))
        return results
    finally:
        await client.close()


async def _answer(client: Any, model: str, sample: JudgeSample) -> str:
    """The LLM's answer to the query, from the retrieved contexts only."""
    contexts = "\n\n".join(f"[{i}] {text}" for i, text in enumerate(sample.retrieved_contexts, start=1))
    completion = await client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": ANSWER_SYSTEM_PROMPT},
            {"role": "user", "content": f"Contexts:\n{contexts}\n\nQuestion: {sample.query}"},
        ],
        temperature=0,
    )
    text = completion.choices[0].message.content if completion.choices else None
    if not text or not text.strip():
        raise ValueError("the endpoint returned an empty answer")
    return text.strip()


async def _score(metric: Any, row: Any, query_id: str, name: str) -> float | None:
    """One metric on one sample; ``None`` (and a warning) when it fails or is undefined."""
    try:
        value = await metric.single_turn_ascore(row)
    except Exception as exc:
        log.warning("query %s: %s failed: %s", query_id, name, _describe(exc))
        return None
    value = float(value)
    if not math.isfinite(value):  # e.g. faithfulness of an answer with no statements
        log.warning("query %s: %s is undefined (NaN)", query_id, name)
        return None
    return value


async def _none() -> None:
    return None


def _ragas_embeddings(embed: Embed) -> Any:
    """Wrap ``embed`` in the (legacy) embeddings interface that ``AnswerRelevancy`` calls."""
    from ragas.embeddings import BaseRagasEmbeddings

    class CallableEmbeddings(BaseRagasEmbeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return np.asarray(embed(list(texts)), dtype=np.float32).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            return self.embed_documents(texts)

        async def aembed_query(self, text: str) -> list[float]:
            return self.embed_query(text)

    return CallableEmbeddings()


def _describe(exc: BaseException) -> str:
    # HTTP client errors may quote the request URL, credentials included.
    return redact_url(f"{type(exc).__name__}: {exc}".splitlines()[0])[:300]
