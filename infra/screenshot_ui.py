"""Screenshot the Prefect UI's deployments page with ragops' deployments registered (docs/prefect-deployments.png).

Not part of the test run. Needs Debian's chromium (`apt-get install chromium`). It starts a real Prefect
server on 127.0.0.1 and a process worker, registers prefect.yaml, and renders the page in headless Chromium:

    .venv/bin/python infra/screenshot_ui.py [--out docs/prefect-deployments.png]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.prefect_local import ROOT, local_prefect

# Without the background-networking flags Chromium keeps dialling Google on this closed network.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1600,900", "--virtual-time-budget=20000"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "prefect-deployments.png")
    parser.add_argument("--page", default="deployments", help="UI page to capture (path after the host)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="ragops-ui-") as folder:
        with local_prefect(Path(folder) / "prefect") as prefect, prefect.worker():
            prefect.deploy()
            time.sleep(8)  # the worker's first polls mark the pool, and so the deployments, Ready
            url = prefect.api_url.removesuffix("/api") + "/" + args.page
            args.out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={folder}/chromium",
                            f"--screenshot={args.out.resolve()}", url], check=True, capture_output=True, timeout=120)
    print(f"{args.out}: {url}")


if __name__ == "__main__":
    main()
