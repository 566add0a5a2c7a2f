"""Serving beside the scheduled operation on the embedded store: a Retriever in this process keeps
answering while other processes (the `ragops` command, as an operator runs it) reindex, roll back, and
promote a build of another model. It follows each move, and no answer mixes builds or models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from rag.config import StoreSettings
from rag.serving import Retriever
from rag.store import IndexStore

pytestmark = pytest.mark.slow

RAGOPS = str(Path(sys.executable).parent / "ragops")
QUESTION = "how do I undo a bad promotion?"
FOLLOW_EVERY = 2.0


def _ragops(*args: str, home: Path) -> dict:
    env = {**os.environ, "PREFECT_HOME": str(home)}
    done = subprocess.run([RAGOPS, *args, "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _moved_at(location: str, alias: str) -> float:
    """When the alias last moved, from the live build's promotion record."""
    with IndexStore.open(StoreSettings(location=location)) as store:
        manifest = store.read_manifest(store.alias_target(alias))
    return manifest.promotions[-1].at.timestamp()


def test_a_retriever_answers_throughout_and_follows_every_move(
    write_config: Path, settings, corpus: Path, cls_model: Path, tmp_path: Path
) -> None:
    home = tmp_path / "prefect"
    location = settings.store.location
    first = _ragops("reindex", "--config", str(write_config), home=home)["version"]

    answers: list[tuple[float, list[str], tuple[str, float]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    retriever = Retriever(alias="test", store=settings.store, follow_every=FOLLOW_EVERY)

    def ask() -> None:
        while not stop.is_set():
            try:
                hits = retriever.search(QUESTION, k=3)
                answers.append((time.time(), [h.version for h in hits], (hits[0].doc_id, round(hits[0].score, 5))))
            except BaseException as exc:  # every error counts: the promise is zero
                errors.append(exc)
            time.sleep(0.02)

    asker = threading.Thread(target=ask)
    asker.start()
    moves = []
    try:
        glossary = corpus / "glossary.txt"
        glossary.write_text(glossary.read_text() + "\nRollback: the alias goes back.\n")
        second = _ragops("reindex", "--config", str(write_config), home=home)
        assert second["promoted"], second["reason"]
        moves.append((second["version"], _moved_at(location, "test"), False))
        _ragops("rollback", "--config", str(write_config), home=home)
        moves.append((first, _moved_at(location, "test"), False))
        other = write_config.with_name("other-model.yaml")
        data = yaml.safe_load(write_config.read_text())
        other.write_text(yaml.safe_dump({**data, "embedding": {"model": str(cls_model)}}))
        third = _ragops("reindex", "--config", str(other), "--no-promote", home=home)["version"]
        _ragops("promote", third, "--config", str(other), "--force", "--reason", "another model", home=home)
        moves.append((third, _moved_at(location, "test"), True))
        deadline = time.time() + 30
        while (not answers or answers[-1][1][0] != third) and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1)
    finally:
        stop.set()
        asker.join()
        retriever.close()

    assert not errors, errors[:3]
    assert all(len(set(versions)) == 1 for _, versions, _ in answers)  # one build per answer
    served = [answers[0][1][0]]
    for _, versions, _ in answers:
        if versions[0] != served[-1]:
            served.append(versions[0])
    assert served == [first, second["version"], first, third]
    # The same question on the same build and model always gets the same best hit: an answer that used
    # the other model's vectors on a build, or mixed builds, would differ.
    by_version: dict[str, set] = {}
    for _, versions, top in answers:
        by_version.setdefault(versions[0], set()).add(top)
    assert all(len(tops) == 1 for tops in by_version.values()), by_version
    assert [s.version for s in retriever.switches] == served[1:]
    for (version, moved_at, new_model), switch in zip(moves, retriever.switches):
        first_answer = next(t for t, versions, _ in answers if versions[0] == version and t >= moved_at)
        print(f"{version} {'(new model) ' if new_model else ''}noticed {switch.noticed_at - moved_at:.2f} s "
              f"after the move, served {first_answer - moved_at:.2f} s after it")
        # The move is noticed at the next read of the alias, up to one interval later; the build (and
        # a new model) is opened and warmed before the first answer comes from it.
        assert switch.noticed_at - moved_at <= FOLLOW_EVERY + 0.5, (version, switch)
        assert first_answer - moved_at <= FOLLOW_EVERY + (15 if new_model else 1.5), (version, first_answer)
