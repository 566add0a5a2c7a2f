"""The audit trail (rag/index/audit.py, `ragops audit`): a build, a failed gate, a forced promotion and a
rollback on the demo corpus are all there, in order, with who and why; entries are only ever added."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.reindex import reindex
from rag.errors import GateFailed
from ragops.cli import app
from testkit.paths import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

runner = CliRunner()


def _config(tmp_path: Path, settings, golden: Path) -> Path:
    data = settings.model_dump(mode="json", exclude_none=True)
    data["evaluation"] = {"golden": str(golden)}
    data["gate"] = {"floors": {"ndcg@10": 0.7, "hit_rate@5": 0.9}}
    path = tmp_path / "ragops.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _audit(config: Path, *extra: str) -> dict:
    done = runner.invoke(app, ["audit", "--config", str(config), "--json", *extra])
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def test_a_build_a_failed_gate_a_forced_promotion_and_a_rollback_are_on_the_trail(
    tmp_path: Path, settings, corpus: Path
) -> None:
    golden = tmp_path / "golden.yaml"
    golden.write_text((ROOT / "demo" / "golden.yaml").read_text())
    config = _config(tmp_path, settings, golden)
    first = reindex(config=str(config))
    assert first["promoted"]

    (corpus / "espresso-machine.html").unlink()  # the golden set still asks for it: the gate must fail
    with pytest.raises(GateFailed) as refused:
        reindex(config=str(config))
    rejected = refused.value.details["summary"]["version"]
    forced = runner.invoke(app, ["promote", rejected, "--force", "--reason", "hotfix: page retired on purpose",
                                 "--config", str(config), "--json"])
    assert forced.exit_code == 0, forced.output
    rolled = runner.invoke(app, ["rollback", "--config", str(config), "--json"])
    assert rolled.exit_code == 0, rolled.output

    events = _audit(config)["events"]
    kinds = [(e["kind"], e["build"].split("__")[-1]) for e in events]
    second = rejected
    assert kinds[:4] == [("build", first["version"]), ("evaluation", first["version"]), ("gate", first["version"]),
                         ("promotion", first["version"])]
    assert ("build", second) in kinds and kinds[-2:] == [("forced_promotion", second), ("rollback", first["version"])]
    gate = next(e for e in events if e["kind"] == "gate" and e["build"].endswith(second))
    assert gate["details"]["passed"] is False and "espresso-machine.html" in gate["why"]
    forced_event, rollback_event = events[-2], events[-1]
    assert forced_event["why"] == "hotfix: page retired on purpose"
    assert forced_event["details"]["replaced"].endswith(first["version"])
    assert rollback_event["why"] == f"rollback from {second}"
    assert {e["by"]["user"] for e in events} == {getpass.getuser()}
    assert all(e["by"]["flow_run"] for e in events if e["kind"] in ("build", "evaluation", "gate"))  # by the flow
    build = events[0]
    assert build["details"]["policy"]["model"]["weights_sha256"] and len(build["details"]["policy_sha256"]) == 64

    later = _audit(config, "--since", rollback_event["at"])["events"]
    assert [e["kind"] for e in later] == ["rollback"]
    text = runner.invoke(app, ["audit", "--config", str(config)])
    assert text.exit_code == 0 and "forced_promotion" in text.output and "hotfix: page retired" in text.output
    bad = runner.invoke(app, ["audit", "--config", str(config), "--since", "last tuesday"])
    assert bad.exit_code == 2 and "neither an ISO 8601 time" in bad.output
