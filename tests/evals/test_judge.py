"""LLM-judged RAGAS metrics against a stub OpenAI-compatible server with hand-computable verdicts.

The stub recognises each ragas prompt by its instruction and answers deterministically:

- answer generation (plain text, no JSON mode): a canned answer; "I don't know." for weather questions.
- statement extraction: two statements; NLI verdicts: the first supported, the second not
  -> faithfulness 0.5.
- question generation (answer relevancy): the original question back -> cosine 1.0; noncommittal for
  "I don't know." -> 0.
- context precision: a context is useful iff it mentions "capital" -> contexts [useful, not] give
  average precision 1.0, [not, useful] give 0.5.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, Iterator

import pytest

from evals.judge import LLM_METRICS, JudgeSample, judge
from rag.config import LLMSettings
from testkit.stub_llm import StubLLM

pytestmark = pytest.mark.slow

MODEL = "stub-judge-7b"
API_KEY = "sk-test-123"


@pytest.fixture
def stub() -> Iterator[StubLLM]:
    server = StubLLM()
    yield server
    server.close()


def settings(base_url: str, **kwargs: Any) -> LLMSettings:
    return LLMSettings(base_url=base_url, model=MODEL, api_key=API_KEY, timeout=20, **kwargs)


USEFUL = "Paris is the capital of France and its largest city."
NOISE = "Bananas are yellow when they are ripe."


def test_scores_match_the_hand_computed_verdicts(stub: StubLLM, embedder) -> None:
    samples = [
        JudgeSample("with-ref", "What is the capital of France?", [USEFUL, NOISE], reference_answer="Paris."),
        JudgeSample("no-ref", "Which city is the French capital?", [NOISE, USEFUL]),
        JudgeSample("noncommittal", "What will the weather be tomorrow?", [USEFUL]),
        JudgeSample("over-the-limit", "Never judged?", [USEFUL]),
    ]

    scores = judge(samples, settings(stub.base_url, max_queries=3), embedder.embed)

    assert list(scores) == ["with-ref", "no-ref", "noncommittal"]  # max_queries: the first three only
    assert all(list(metrics) == list(LLM_METRICS) for metrics in scores.values())
    assert all(s["faithfulness"] == pytest.approx(0.5) for s in scores.values())  # 1 of 2 statements
    assert scores["with-ref"]["llm_context_precision"] == pytest.approx(1.0)  # verdicts [1, 0]
    assert scores["no-ref"]["llm_context_precision"] == pytest.approx(0.5)  # verdicts [0, 1]: rank-aware
    assert scores["with-ref"]["answer_relevancy"] > 0.99  # the regenerated question is the query
    assert scores["no-ref"]["answer_relevancy"] > 0.99
    assert scores["noncommittal"]["answer_relevancy"] == 0.0

    # Context precision judges against the golden answer when there is one, else the generated answer.
    judged_answers = [data["answer"] for data in stub.ragas_inputs("verify if the context was useful")]
    assert judged_answers.count("Paris.") == 2  # with-ref: one call per context
    assert "Stub answer #1." in judged_answers  # no-ref: the answer the stub generated for it

    assert stub.requests and all(r["path"] == "/v1/chat/completions" for r in stub.requests)
    assert all(r["body"]["model"] == MODEL for r in stub.requests)
    assert all(r["headers"]["Authorization"] == f"Bearer {API_KEY}" for r in stub.requests)
    # ragas prompts ask for JSON mode; the answer itself is free text.
    answers = [r for r in stub.requests if "response_format" not in r["body"]]
    assert len(answers) == 3
    assert all(r["body"]["messages"][0]["role"] == "system" for r in answers)


def test_one_failing_query_does_not_sink_the_others(
    stub: StubLLM, embedder, caplog: pytest.LogCaptureFixture
) -> None:
    samples = [
        JudgeSample("boom", "boom: does the endpoint fail?", [USEFUL, NOISE], reference_answer="Paris."),
        JudgeSample("garble", "garble: malformed statements?", [USEFUL]),
        JudgeSample("fine", "What is the capital of France?", [USEFUL]),
    ]

    with caplog.at_level(logging.WARNING, logger="evals.judge"):
        scores = judge(samples, settings(stub.base_url), embedder.embed)

    # HTTP 500 on the answer: nothing to judge but the contexts against the golden answer.
    assert scores["boom"] == {
        "faithfulness": None, "answer_relevancy": None, "llm_context_precision": pytest.approx(1.0)
    }
    # Malformed JSON from the statement extraction: only faithfulness is lost.
    assert scores["garble"]["faithfulness"] is None
    assert scores["garble"]["answer_relevancy"] > 0.99
    assert scores["garble"]["llm_context_precision"] == pytest.approx(1.0)
    assert scores["fine"] == {
        "faithfulness": 0.5, "answer_relevancy": pytest.approx(1.0, abs=0.01),
        "llm_context_precision": pytest.approx(1.0),
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("boom" in w and "answer generation failed" in w for w in warnings)
    assert any("garble" in w and "faithfulness failed" in w for w in warnings)


def test_unreachable_endpoint_gives_none_quickly(embedder, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    samples = [JudgeSample(f"q{i}", f"Question {i}?", [USEFUL], reference_answer="Paris.") for i in range(5)]

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="evals.judge"):
        scores = judge(samples, settings(f"http://127.0.0.1:{port}/v1"), embedder.embed)

    assert time.monotonic() - started < 30
    assert scores == {f"q{i}": dict.fromkeys(LLM_METRICS) for i in range(5)}
    warnings = [r for r in caplog.records if r.name == "evals.judge" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unusable" in warnings[0].getMessage()


def test_works_when_called_from_a_running_event_loop(stub: StubLLM, embedder) -> None:
    async def caller() -> dict:
        return judge([JudgeSample("q", "What is the capital of France?", [USEFUL])], settings(stub.base_url),
                     embedder.embed)

    scores = asyncio.run(caller())

    assert scores["q"]["faithfulness"] == pytest.approx(0.5)
    assert scores["q"]["llm_context_precision"] == pytest.approx(1.0)
