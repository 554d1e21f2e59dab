"""Wall time of the planning verbs (plan, memory, cost, advise), end to end.

Each command runs as a fresh `python -m lmforge ...` process (interpreter start-up
included, as a user sees it), alternating commands, REPEATS times each; prints the
median and max per command as JSON. Target (issue 2): every verb under 0.5 s wall.

    python benchmarks/planner_latency.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

COMMANDS = [
    ["plan", "--flops", "5.76e23"],
    ["plan", "--gpus", "64xH100", "--days", "14", "--mfu", "0.4"],
    ["plan", "--compare"],
    ["memory", "llama-2-7b", "--gpus", "8xH100"],
    ["memory", "--params", "500B"],
    ["cost", "llama-2-7b", "--tokens", "2T", "--gpus", "64xH100"],
    ["advise", "--task", "summarization", "--budget", "1e21"],
]
TARGET_S = 0.5


def machine() -> str:
    """CPU model, core count and Python version, for BENCHMARKS.md."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    times: dict[str, list[float]] = {" ".join(c): [] for c in COMMANDS}
    for _ in range(args.repeats):
        for command in COMMANDS:  # alternate commands so drift hits all alike
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "lmforge", *command], capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"lmforge {' '.join(command)} failed:\n{done.stderr}")
            times[" ".join(command)].append(elapsed)
    results = {
        name: {"median_s": round(statistics.median(t), 4), "max_s": round(max(t), 4), "under_target": max(t) < TARGET_S}
        for name, t in times.items()
    }
    print(json.dumps({
        "machine": machine(),
        "repeats": args.repeats,
        "target_s": TARGET_S,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
