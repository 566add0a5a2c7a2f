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
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from evals.judge import LLM_METRICS, JudgeSample, judge
from rag.config import LLMSettings

pytestmark = pytest.mark.slow

MODEL = "stub-judge-7b"
API_KEY = "sk-test-123"


class StubLLM:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 that records every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._questions: dict[str, str] = {}  # answer it gave -> question it answered
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub._lock:
                    stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                status, content = stub.reply(body)
                if status != 200:
                    self._send(status, {"error": {"message": content, "type": "server_error"}})
                    return
                self._send(
                    200,
                    {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                    },
                )

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reply(self, body: dict[str, Any]) -> tuple[int, str]:
        """(HTTP status, message content) for one chat-completion request."""
        text = "\n".join(str(message.get("content", "")) for message in body["messages"])
        json_mode = (body.get("response_format") or {}).get("type") == "json_object"
        if not json_mode:  # our answer-generation call: plain text
            question = text.rsplit("Question:", 1)[1].strip()
            if "boom" in question:
                return 500, "the model crashed"
            with self._lock:
                answer = "I don't know." if "weather" in question else f"Stub answer #{len(self._questions)}."
                self._questions[answer] = question
            return 200, answer
        data = ragas_input(text)
        if "fully understandable statements" in text:
            if "garble" in data["question"]:
                return 200, "this is not JSON at all"
            return 200, json.dumps({"statements": ["Statement one.", "Statement two."]})
        if "judge the faithfulness of a series of statements" in text:
            verdicts = [
                {"statement": s, "reason": "stub", "verdict": 1 if i == 0 else 0}
                for i, s in enumerate(data["statements"])
            ]
            return 200, json.dumps({"statements": verdicts})
        if "Generate a question for the given answer" in text:
            response = data["response"]
            return 200, json.dumps(
                {"question": self._questions[response], "noncommittal": int("don't know" in response)}
            )
        if "verify if the context was useful" in text:
            return 200, json.dumps({"reason": "stub", "verdict": int("capital" in data["context"])})
        return 400, "unknown prompt"

    def ragas_inputs(self, instruction: str) -> list[dict[str, Any]]:
        """The ragas input objects of the recorded requests whose prompt contains ``instruction``."""
        prompts = ["\n".join(m["content"] for m in r["body"]["messages"]) for r in self.requests]
        return [ragas_input(prompt) for prompt in prompts if instruction in prompt]


def ragas_input(prompt: str) -> dict[str, Any]:
    """The input object of a ragas prompt, which ends with: ``input: {json}\\nOutput: ``."""
    return json.loads(prompt.rsplit("\ninput: ", 1)[1].rsplit("\nOutput:", 1)[0])


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
