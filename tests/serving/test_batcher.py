"""The query batcher: concurrent callers share forward passes, each gets its own vectors, and an error
reaches only the callers of that pass, never stalls the ones after it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rag.serving.batcher import EncodeBatcher

QUERIES = [f"question number {n}: how do I {'really ' * (n % 5)}roll back the index?" for n in range(16)]


class _Overlap:
    """An embedder that counts how many passes run at once (each made to take at least 20 ms)."""

    def __init__(self, embedder) -> None:
        self.embedder, self.tokenizer = embedder, embedder.tokenizer
        self.running = self.most = 0
        self.lock = threading.Lock()

    def embed(self, texts):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.02)
            return self.embedder.embed(texts)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.slow  # the real model
@pytest.mark.parametrize("lanes", [1, 2])
def test_concurrent_queries_share_passes_and_each_gets_its_own_vector(embedder, lanes: int) -> None:
    counted = _Overlap(embedder)
    batcher = EncodeBatcher(counted, lanes=lanes)
    expected = {text: embedder.embed([text])[0] for text in QUERIES}
    start, results, errors = threading.Barrier(len(QUERIES)), {}, []

    def ask(text: str) -> None:
        start.wait()
        try:
            vectors, tokens = batcher.embed([text])
            results[text] = (vectors, tokens)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(text,), daemon=True) for text in QUERIES]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))

    assert not errors and len(results) == len(QUERIES)
    for text, (vectors, tokens) in results.items():
        assert vectors.shape == (1, 384) and np.allclose(vectors[0], expected[text], atol=1e-5)
        assert tokens == [len(embedder.tokenizer(text, add_special_tokens=False)["input_ids"])]
    # 16 callers released at once while a pass takes milliseconds: they cannot all have gone one by one
    assert batcher.queries == len(QUERIES) and batcher.batches < len(QUERIES)
    assert counted.most == lanes  # passes ran side by side, never more than the lanes


@pytest.mark.slow  # the real model
def test_a_failing_pass_raises_to_its_caller_and_the_next_caller_is_served(embedder) -> None:
    batcher = EncodeBatcher(embedder)
    with pytest.raises(TypeError):  # the tokenizer refuses it
        batcher.embed(["\ud800 a lone surrogate is not text"])

    vectors, _ = batcher.embed(["how do I roll back?"])  # nobody is left leading a dead pass

    assert np.allclose(vectors[0], embedder.embed(["how do I roll back?"])[0], atol=1e-5)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.embed(["after close"])
