"""What a running build reports: each batch's report, the build's running totals, and the progress line.

- ``BatchReport``: what indexing one batch (or carrying some documents) did; ``BuildProgress`` folds
  the reports into the build's counts, failures and stage timings (the manifest's, at the end).
- ``Pulse`` counts documents and chunks where the work happens, ``Throughput`` turns them into a line
  (done against the plan, rate, time left) at a steady cadence, and ``reporting`` prints it from a
  thread while batches run, so a long batch still shows progress.
- ``timed`` adds a block's wall time to a stage's timing.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from pydantic import BaseModel, Field

from rag.models import Counts, DocumentRecord, Failure, StageTimings


class BatchReport(BaseModel):
    """What indexing one batch did."""

    records: list[DocumentRecord] = Field(default_factory=list)
    failures: list[Failure] = Field(default_factory=list)
    chunks: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    touched: int = Field(0, description="Changed documents whose parsed text was the base's: kept as they were.")
    timings: StageTimings = Field(default_factory=StageTimings)



class Throughput:
    """Work done against the plan, its rate and the time left, as a progress line at a steady cadence.

    Args:
        documents: documents the run has to parse (the plan's work).
        every: seconds between two lines (the first and the last batch always get one).
        clock: the time source (``time.monotonic``).
    """

    def __init__(self, documents: int, *, every: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.documents, self.every, self.clock = documents, every, clock
        self.started = self.last = clock()
        self.lines = 0

    def line(self, documents_done: int, chunks_done: int) -> str | None:
        """The progress line for this point, or None when the last one is too recent to print another."""
        now = self.clock()
        finished = documents_done >= self.documents
        if self.lines and not finished and now - self.last < self.every:
            return None
        self.last, self.lines = now, self.lines + 1
        elapsed = max(now - self.started, 1e-9)
        rate = documents_done / elapsed
        text = (f"{documents_done}/{self.documents} documents ({documents_done / max(self.documents, 1):.0%}), "
                f"{chunks_done} chunks embedded, {rate:.1f} documents/s, {chunks_done / elapsed:.1f} chunks/s")
        if finished:
            return f"{text}, done in {_duration(elapsed)}"
        left = (self.documents - documents_done) / rate if rate > 0 else None
        return f"{text}, about {_duration(left)} left" if left is not None else text


class Pulse:
    """Work done so far, counted where it happens: documents as they are prepared (on the flow's thread)
    and chunks as they are embedded (on the encoder's thread, in slices of
    ``rag.index.batches.EMBED_SLICE`` texts). A reporter reads it between batches too, so a long batch
    (one huge document, a slow parser) still shows progress. Plain ints: one writer each, and a reader that only prints them."""

    def __init__(self) -> None:
        self.documents = 0
        self.chunks = 0



@contextmanager
def reporting(meter: Throughput, pulse: Pulse, report: Callable[[str], None], *, tick: float = 1.0) -> Iterator[None]:
    """While the block runs, a thread reports ``meter``'s line for ``pulse`` at the meter's cadence."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(tick):
            if not pulse.documents:
                continue
            line = meter.line(min(pulse.documents, meter.documents - 1), pulse.chunks)  # the last line is the caller's
            if line is not None:
                report(line)

    watcher = threading.Thread(target=watch, name="ragops-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class BuildProgress(BaseModel):
    """Running totals of a build."""

    counts: Counts = Field(default_factory=Counts)
    failures: list[Failure] = Field(default_factory=list)
    timings: StageTimings = Field(default_factory=StageTimings)
    redacted: dict[str, dict[str, int]] = Field(default_factory=dict, description="Redaction counts per document.")

    def add(self, report: BatchReport) -> None:
        """Fold a batch's report into the totals."""
        self.counts.documents_indexed += sum(1 for r in report.records if r.chunks)
        self.counts.documents_failed += sum(1 for r in report.records if r.quarantine)
        self.counts.chunks += report.chunks
        self.counts.chunks_embedded += report.chunks_embedded
        self.counts.chunks_reused += report.chunks_reused
        # Planned as changed (the signal moved); parsing showed the same text: a touch, not a change.
        self.counts.documents_touched += report.touched
        self.counts.documents_changed -= report.touched
        for record in report.records:
            if record.redacted and record.chunks:
                self.redacted[record.doc_id] = record.redacted
                self.counts.documents_redacted += 1
                for entity, count in record.redacted.items():
                    self.counts.redacted[entity] = self.counts.redacted.get(entity, 0) + count
        self.failures.extend(report.failures)
        for stage in ("fetch", "parse", "redact", "chunk", "embed", "write", "reuse"):
            setattr(self.timings, stage, getattr(self.timings, stage) + getattr(report.timings, stage))



@contextmanager
def timed(timings: StageTimings, stage: str) -> Iterator[None]:
    """Add the wall time the ``with`` block takes to ``timings``' ``stage`` (raised or not)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        setattr(timings, stage, getattr(timings, stage) + time.perf_counter() - start)
