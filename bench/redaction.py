"""Redaction on a corpus with planted PII: what is left of the planted values, and what it costs retrieval.

Writes the demo corpus plus five documents with planted e-mails, phone numbers, card numbers and IBANs in
several formats (tests/pii_corpus.py: text, Markdown, an HTML table with mailto links, e-mail headers, a Word
table), then builds it twice with the real CLI, each build with its own store and PREFECT_HOME:

1. unredacted;
2. ``redact: {entities: [EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE], mode: mask}``.

For each: the golden metrics (the demo's golden set, the gate's evaluation), the build's timings, and a
byte search for every planted value (as written, and without separators; UTF-8 and UTF-16) in every file
of its store, of its PREFECT_HOME (flow runs, logs, artifacts) and in its output (stdout, stderr). The
unredacted build is the control: the search finds its values.

    .venv/bin/python bench/redaction.py [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pii_corpus import ENTITIES, PLANTED, compact, found_in_files, write_corpus  # noqa: E402

METRICS = ("ndcg@10", "recall@10", "mrr@10", "hit_rate@5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="Keep corpus, stores and outputs here.")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ragops-redaction-"))
    corpus = write_corpus(work / "corpus")
    planted = [value for values in PLANTED.values() for value in values]
    rows = [_build(work, corpus, name, redact, planted)
            for name, redact in (("unredacted", None), ("redacted (mask)", {"entities": ENTITIES, "mode": "mask"}))]
    if args.json:
        print(json.dumps({"planted": len(planted), "runs": rows}))
        return
    documents = sum(1 for _ in corpus.iterdir())
    print(f"{documents} documents ({len(planted)} planted values in 5 of them); golden set: demo/golden.yaml")
    print("| build | " + " | ".join(METRICS) + " | wall s | redact s | values redacted | planted values found "
          "(store / PREFECT_HOME / output) |")
    print("|---|" + "---|" * (len(METRICS) + 4))
    for row in rows:
        found = row["found"]
        print(f"| {row['name']} | " + " | ".join(f"{row['metrics'][m]:.4f}" for m in METRICS)
              + f" | {row['seconds']:.1f} | {row['timings']['redact']:.2f} | {row['redacted']} | "
              f"{found['store']} / {found['prefect_home']} / {found['output']} of {len(planted)} |")


def _build(work: Path, corpus: Path, name: str, redact: dict | None, planted: list[str]) -> dict:
    import yaml

    slug = "redacted" if redact else "plain"
    settings = yaml.safe_load((ROOT / "demo" / "ragops.yaml").read_text())
    settings["sources"] = [{"name": "demo", "path": str(corpus), **({"redact": redact} if redact else {})}]
    settings["store"]["location"] = str(work / f"store-{slug}")
    settings["evaluation"]["golden"] = str(ROOT / "demo" / "golden.yaml")
    config = work / f"{slug}.yaml"
    config.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "PREFECT_HOME": str(work / f"prefect-{slug}")}
    started = time.perf_counter()
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "ragops"), "reindex", "--json", "--config", str(config)],
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: reindex failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    return {
        "name": name, "seconds": seconds, "timings": summary["timings"],
        "metrics": {m: summary["evaluation"]["metrics"][m] for m in METRICS},
        "redacted": sum(summary["counts"]["redacted"].values()), "redacted_by_type": summary["counts"]["redacted"],
        "found": {
            "store": len({v for _, v in found_in_files([work / f"store-{slug}"], planted)}),
            "prefect_home": len({v for _, v in found_in_files([work / f"prefect-{slug}"], planted)}),
            "output": sum(1 for v in planted if v in done.stdout + done.stderr or compact(v) in done.stdout + done.stderr),
        },
    }


if __name__ == "__main__":
    main()
