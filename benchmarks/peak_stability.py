"""Does the measured peak hold? ``lmforge env --remeasure --json`` in RUNS fresh processes,
each with an empty cache: the fp32 and bf16 matmul peaks and the bf16 probe, their
medians and spread (max / min - 1). Target (issue 11): five runs within 10% on a quiet
machine; the decision (fast bf16 or not) the same every time.

    python benchmarks/peak_stability.py [--runs 5]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/peak_stability.py   # an AVX2 CPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def one_run() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "LMFORGE_CACHE_DIR": cache}
        env.pop("LMFORGE_CPU_BF16", None)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lmforge", "env", "--remeasure", "--json"], env=env,
                              capture_output=True, text=True, check=True)
        info = json.loads(done.stdout)
        info["seconds"] = time.perf_counter() - start
        return info


def spread(values: list[float]) -> dict:
    return {"median_gflops": round(statistics.median(values) / 1e9, 1),
            "all_gflops": [round(v / 1e9, 1) for v in values],
            "spread": round(max(values) / min(values) - 1, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    cpu = runs[0]["cpu"]
    print(json.dumps({
        "benchmark": "peak_stability", "date": datetime.date.today().isoformat(),
        "machine": f"{cpu['model']}, {cpu['cores']} cores, {cpu['capability']}, torch {runs[0]['torch']}, "
                   f"{runs[0]['threads']} threads",
        "kernel_caps": {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")},
        "runs": args.runs,
        "native_bf16_every_run": [r["cpu"]["native_bf16"] for r in runs],
        "matmul_peak_fp32": spread([r["cpu"]["matmul_peak_flops"]["fp32"] for r in runs]),
        "matmul_peak_bf16": spread([r["cpu"]["matmul_peak_flops"]["bf16"] for r in runs]),
        "probe_fp32": spread([r["cpu"]["probe_fp32_flops"] for r in runs]),
        "probe_bf16": spread([r["cpu"]["probe_bf16_flops"] for r in runs]),
        "seconds_per_run_median": round(statistics.median(r["seconds"] for r in runs), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
