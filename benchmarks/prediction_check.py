"""Are lmforge's predictions predictions? ``lmforge quickstart --minutes M`` run as a user
runs it (a fresh process, an empty machine cache), timed from the outside; then its
``plan.json`` (written before step 1) beside its ``report.json`` (measured): tokens/s,
training seconds, precision, and the whole command's wall time against the announced
minutes. Targets (issue 11): tokens/s within 20%, wall time within 25% of --minutes.

    python benchmarks/prediction_check.py [--minutes 2] [--runs 1]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/prediction_check.py   # an AVX2 CPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402


def quickstart(minutes: float) -> dict:
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "LMFORGE_CACHE_DIR": str(Path(root) / "cache")}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lmforge", "quickstart", "--minutes", str(minutes), "--out-dir",
                        str(Path(root) / "runs"), "--quiet"], env=env, check=True, capture_output=True)
        wall = time.perf_counter() - start
        run = Path(root) / "runs" / "quickstart"
        plan = json.loads((run / "plan.json").read_text())
        report = json.loads((run / "report.json").read_text())
    compare = report["compare"]
    return {
        "precision": plan["precision"]["precision"], "precision_reason": plan["precision"]["reason"],
        "predicted_tokens_per_s": round(compare["tokens_per_second"]["predicted"]),
        "measured_tokens_per_s": round(compare["tokens_per_second"]["measured"]),
        "measured_over_predicted": round(compare["tokens_per_second"]["ratio"], 3),
        "predicted_train_seconds": round(compare["seconds"]["predicted"], 1),
        "measured_train_seconds": round(compare["seconds"]["measured"], 1),
        "wall_seconds": round(wall, 1), "announced_seconds": minutes * 60,
        "wall_over_announced": round(wall / (minutes * 60), 3),
        "mfu_predicted": round(compare["mfu"]["predicted"], 3), "mfu_measured": round(compare["mfu"]["measured"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    results = [quickstart(args.minutes) for _ in range(args.runs)]
    print(json.dumps({"benchmark": "prediction_check", "date": datetime.date.today().isoformat(),
                      "machine": machine(probe=False),  # each run's own probe: its precision_reason
                      "kernel_caps": {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")},
                      "minutes": args.minutes, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
