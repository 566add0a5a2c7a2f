"""An OpenAI-compatible chat-completions server on 127.0.0.1 with hand-computable answers to ragas' prompts.

It recognises each ragas prompt by its instruction and answers deterministically:

- answer generation (plain text, no JSON mode): a canned answer; "I don't know." for weather questions;
  a server error (500) for a question containing "boom".
- statement extraction: two statements (not JSON at all for a question containing "garble"); NLI
  verdicts: the first supported, the second not.
- question generation (answer relevancy): the original question back; noncommittal for "I don't know.".
- context precision: a context is useful iff it mentions "capital".
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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
