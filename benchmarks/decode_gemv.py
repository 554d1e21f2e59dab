"""How fast one decoding row streams a weight through ``F.linear`` on this CPU, by dtype
and layout: the kernel-level number behind generate_speed.py's roofline fractions.

For fp32 and bf16: 48 distinct (1536, 384) weights (more than the caches hold) are
multiplied in turn by one row, 20 rounds after 3 warm-up rounds; printed as GB/s of weight
read: row-major (``nn.Linear``'s layout), column-major (what `lmforge.generate.layout`
switches to where it measures faster), ``addmm`` of the transposed weight, ``mv``, and for
bf16 an fp32 product of upcast weights.

    python benchmarks/decode_gemv.py
"""

from __future__ import annotations

import json
import time

import torch
import torch.nn.functional as F

WEIGHTS, OUT, IN, ROUNDS = 48, 1536, 384, 20


def gb_per_s(product, weights: list[torch.Tensor], biases: list[torch.Tensor], x: torch.Tensor) -> float:
    for _ in range(3):
        for w, b in zip(weights, biases, strict=True):
            product(x, w, b)
    start = time.perf_counter()
    for _ in range(ROUNDS):
        for w, b in zip(weights, biases, strict=True):
            product(x, w, b)
    seconds = (time.perf_counter() - start) / (ROUNDS * len(weights))
    return round(weights[0].numel() * weights[0].element_size() / seconds / 1e9, 1)


def main() -> None:
    torch.manual_seed(0)
    report = {"shape": [OUT, IN], "weights": WEIGHTS, "threads": torch.get_num_threads(), "gb_per_s": {}}
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            rows = [torch.randn(OUT, IN, dtype=dtype) for _ in range(WEIGHTS)]  # (out, in) row-major
            columns = [w.t().contiguous().t() for w in rows]  # same values, (in, out) in memory
            transposed = [w.t().contiguous() for w in rows]  # (in, out)
            biases = [torch.randn(OUT, dtype=dtype) for _ in range(WEIGHTS)]
            x = torch.randn(1, IN, dtype=dtype)  # one decoding row
            name = str(dtype).removeprefix("torch.")
            out = {"row-major F.linear": gb_per_s(F.linear, rows, biases, x),
                   "column-major F.linear": gb_per_s(F.linear, columns, biases, x),
                   "addmm(b, x, W^T)": gb_per_s(lambda x, w, b: torch.addmm(b, x, w), transposed, biases, x),
                   "mv": gb_per_s(lambda x, w, b: torch.mv(w, x[0]) + b, rows, biases, x)}
            if dtype == torch.bfloat16:
                out["fp32 product of upcast weights"] = gb_per_s(
                    lambda x, w, b: F.linear(x.float(), w.float(), b.float()), rows, biases, x)
            report["gb_per_s"][name] = out
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
