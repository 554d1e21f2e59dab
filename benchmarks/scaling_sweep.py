"""A real scaling sweep on this CPU, its fit, and a held-out run the law must predict.

1. ``lmforge scaling sweep`` (an IsoFLOP grid: 4 budgets x up to 5 sizes) on ``--data``;
2. ``lmforge scaling fit`` (Approach 3 with bootstrap, Approach 2) and ``scaling plot``;
3. ``lmforge train --budget <3x the largest budget> --law law.json`` on the sweep's tokenizer
   and shards: the planner picks the shape from the law, the law predicts its validation
   loss (plan.json), the run measures it (report.json). Target: within 0.05 nats.

Every step is the command users run; the sweep continues if it was started before (the
same command skips finished runs). Prints JSON.

    python benchmarks/scaling_sweep.py --data builtin:pydocs --budgets 3e11,6e11,1.2e12,2.5e12 \\
        --out /tmp/sweeps/pydocs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path


def lmforge(*argv: str, log: Path) -> float:
    started = time.perf_counter()
    with log.open("a") as out:
        subprocess.run(["lmforge", *argv], check=True, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="builtin:pydocs")
    parser.add_argument("--budgets", default="3e11,6e11,1.2e12,2.5e12")
    parser.add_argument("--vocab-size", default="1024")
    parser.add_argument("--seq-len", default="128")
    parser.add_argument("--held-out-factor", type=float, default=3.0)
    parser.add_argument("--out", default="/tmp/sweeps/pydocs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "benchmark.log"
    grid = ["--vocab-size", args.vocab_size, "--seq-len", args.seq_len]
    sweep_s = lmforge("scaling", "sweep", "--data", args.data, "--budgets", args.budgets, *grid, "--out", str(out),
                      "--quiet", log=log)
    fit_s = lmforge("scaling", "fit", str(out / "sweep.csv"), "--out", str(out / "law.json"), log=log)
    lmforge("scaling", "plot", str(out / "sweep.csv"), "--law", str(out / "law.json"), "--out", str(out / "plot.png"),
            log=log)
    budget = args.held_out_factor * max(float(b) for b in args.budgets.split(","))
    held = out / "held-out"
    if not (held / "report.json").exists():
        lmforge("train", "--data", args.data, "--budget", f"{budget:g}", "--law", str(out / "law.json"),
                "--data.tokenizer", str(out / "tokenizer.json"), "--data.shards", str(out / "data"),
                "--data.vocab-size", args.vocab_size, "--data.seq-len", args.seq_len, "--data.max-epochs", "1000",
                "--train.eval-tokens", str(1 << 17), "--name", "held-out", "--out-dir", str(out), "--quiet", log=log)
    plan = json.loads((held / "plan.json").read_text())
    report = json.loads((held / "report.json").read_text())
    law = json.loads((out / "law.json").read_text())
    compare = report["compare"]["loss"]
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "data": args.data, "budgets": args.budgets, "sweep_seconds_this_call": sweep_s, "fit_seconds": fit_s,
        "runs": sum(1 for _ in (out / "sweep.csv").open()) - 1,
        "law": {k: law["constants"][k] for k in ("E", "A", "B", "alpha", "beta")}, "ci95": law.get("ci95"),
        "held_out": {"budget_flops": budget, "params": plan["params"], "tokens": report["measured"]["tokens"],
                     "predicted_loss": compare["predicted"], "measured_loss": compare["measured"],
                     "error_nats": compare.get("error"), "seconds": report["measured"]["wall_seconds"]},
    }, indent=2))


if __name__ == "__main__":
    main()
