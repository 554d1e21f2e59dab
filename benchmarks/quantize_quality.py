"""Quantization quality: perplexity on held-out tinyshakespeare at each precision, and QAT.

The last 10% of ../shared/corpora/tinyshakespeare.txt (cut at a line break) is held out.
A 4,096-token BPE tokenizer and a GPT-2-style decoder (6 layers, d_model 256, 8 heads,
context 256, tied embeddings; the model of benchmarks/quality_tinyshakespeare.py) are
trained on the rest for a fixed number of steps. Then, each written with
`write_quantized_run` and loaded back with `load_run` (what `lmforge quantize` /
`generate` / `eval` do), scored on every held-out token:

- bf16, int8 (absmax, and MSE scales), int4 group 32 (absmax, MSE) and group 128;
- int4 (group ``--qat-group``, default 32) after quantization-aware training: ``--qat-steps``
  more steps with fake-quantized linears (`lmforge train --init-from RUN --qat int4
  --qat.group-size 32`), then quantized;
- the control: the same steps of ordinary training, then quantized (so that what QAT
  recovers is not just what more training gives).

MSE scales are weighted by the mean squared activations of 32K tokens of the *training*
text (never the held-out text). int8/int4 runs compute in bf16 (PyTorch's fused CPU
weight-only kernels); the "path" field says which kernel each linear used.

    python benchmarks/quantize_quality.py [--steps 400] [--qat-steps 150] [--qat-group 32]
        [--out /tmp/lmforge-quantize] [--reuse-base]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

from lmforge.quantize.convert import make_scheme, model_bytes, quantize_model  # noqa: E402
from lmforge.quantize.modules import Int4Linear, Int8Linear  # noqa: E402
from lmforge.quantize.qat import qat_hook  # noqa: E402
from lmforge.quantize.quality import calibration_stream, evaluate, input_importance  # noqa: E402
from lmforge.quantize.write import write_quantized_run  # noqa: E402
from lmforge.runs import load_run  # noqa: E402
from lmforge.train.config import load_config  # noqa: E402
from lmforge.train.loop import train  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
MODEL = {"model.preset": "tiny-gpt2", "model.n_layers": 6, "model.d_model": 256, "model.n_heads": 8,
         "model.context": 256}
SEQ, BATCH_TOKENS, MICRO = 256, 16 * 256, 16
CALIBRATION_TOKENS = 32_768


def split(out: Path) -> tuple[Path, Path, Path]:
    """train.txt, val.txt (the last 10%), calib.txt (the end of the training text)."""
    text = CORPUS.read_text(encoding="utf-8")
    cut = text.rfind("\n", 0, int(len(text) * 0.9)) + 1
    files = out / "train.txt", out / "val.txt", out / "calib.txt"
    files[0].write_text(text[:cut], encoding="utf-8")
    files[1].write_text(text[cut:], encoding="utf-8")
    files[2].write_text(text[cut - 120_000 : cut], encoding="utf-8")
    return files


def config(out: Path, name: str, steps: int, lr: float, warmup: int, **extra):
    return load_config(None, {
        **MODEL, "name": name, "out_dir": str(out), "data.seq_len": SEQ, "data.val_fraction": 0.0,
        "data.max_epochs": 100.0, "train.batch_tokens": BATCH_TOKENS, "train.micro_batch": MICRO, "train.lr": lr,
        "train.warmup_steps": warmup, "train.max_steps": steps, "train.eval_every": 10**9, "train.ckpt_every": 10**9,
        "train.log_every": 50, **extra})


def paths(model) -> str:
    """Which compute path the quantized linears of a loaded model take with bf16 activations."""
    kinds = set()
    for m in model.modules():
        if isinstance(m, Int8Linear):
            kinds.add("int8 kernel (_weight_int8pack_mm)" if m.kernel else "int8 dequantize + F.linear")
        elif isinstance(m, Int4Linear):
            kinds.add("int4 kernel (_weight_int4pack_mm_for_cpu)" if m.layout == "cpu-int4pack"
                      else "int4 dequantize + F.linear")
    return ", ".join(sorted(kinds)) or "F.linear (no quantized linears)"


def measure(source_dir: Path, label: str, scheme_args: tuple, stream: np.ndarray, out: Path,
            importance: dict | None = None) -> dict:
    source = load_run(source_dir)
    scheme = make_scheme(*scheme_args)
    model = quantize_model(source.model, scheme, importance if scheme.scale_method == "mse" else None)
    target = out / f"q-{source_dir.name}-{label}"
    write_quantized_run(source, model, scheme, target, force=True)
    loaded = load_run(target)
    result = evaluate(loaded.model, loaded, {"held_out": stream})
    return {"label": label, "source": source_dir.name, "file_bytes": (target / "model.safetensors").stat().st_size,
            "memory_bytes": model_bytes(loaded.model), "loss": round(result.loss, 5),
            "perplexity": round(result.perplexity, 4), "bits_per_byte": round(result.bits_per_byte, 5),
            "path": paths(loaded.model)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--qat-steps", type=int, default=150)
    parser.add_argument("--qat-lr", type=float, default=3e-4)
    parser.add_argument("--qat-group", type=int, default=32, choices=[32, 64, 128])
    parser.add_argument("--reuse-base", action="store_true", help="keep OUT/base from an earlier run of this script")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--out", default="/tmp/lmforge-quantize")
    args = parser.parse_args()
    if not CORPUS.exists():
        raise SystemExit(f"corpus not found: {CORPUS} (see ../shared/corpora/README.md)")
    out = Path(args.out)
    if args.reuse_base and (out / "base" / "model.safetensors").is_file():
        for stale in [p for p in out.iterdir() if p.is_dir() and p.name != "base"]:
            shutil.rmtree(stale)
    else:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
    train_file, val_file, calib_file = split(out)
    started = time.perf_counter()
    base = out / "base"
    if not (base / "model.safetensors").is_file():
        with contextlib.redirect_stdout(io.StringIO()):
            train(config(out, "base", args.steps, 2e-3, 50, **{
                "data.sources": [f"shakespeare={train_file}?whole=1"], "data.vocab_size": args.vocab}), quiet=True)
    train_seconds = time.perf_counter() - started
    group = args.qat_group
    qat_label = f"int4-g{group}"
    reuse = {"data.sources": [f"shakespeare={train_file}?whole=1"], "data.tokenizer": str(base / "tokenizer.json"),
             "data.shards": str(base / "data")}
    qat_config = config(out, "qat", args.qat_steps, args.qat_lr, 10, **reuse, **{
        "qat.precision": "int4", "qat.group_size": group})
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        qat = train(qat_config, init_from=base, quiet=True, model_hook=qat_hook(qat_config.qat)).run_dir
        qat_seconds = time.perf_counter() - started
        control = train(config(out, "control", args.qat_steps, args.qat_lr, 10, **reuse), init_from=base,
                        quiet=True).run_dir

    source = load_run(base)
    stream = calibration_stream(source, val_file, 10**8)
    importance = input_importance(source.model, source, {"calib": calibration_stream(source, calib_file,
                                                                                      CALIBRATION_TOKENS)})
    fp32 = evaluate(source.model, source, {"held_out": stream})
    rows = [{"label": "fp32", "source": "base", "file_bytes": (base / "model.safetensors").stat().st_size,
             "memory_bytes": model_bytes(source.model), "loss": round(fp32.loss, 5),
             "perplexity": round(fp32.perplexity, 4), "bits_per_byte": round(fp32.bits_per_byte, 5),
             "path": "F.linear fp32"}]
    for label, scheme_args in [("bf16", ("bf16",)), ("int8", ("int8",)), ("int8-mse", ("int8", None, "mse")),
                               ("int4-g32", ("int4", 32)), ("int4-g32-mse", ("int4", 32, "mse")),
                               ("int4-g128", ("int4", 128))]:
        rows.append(measure(base, label, scheme_args, stream, out, importance))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for run_dir, name in ((qat, "qat"), (control, "control")):
        float_run = load_run(run_dir)
        result = evaluate(float_run.model, float_run, {"held_out": stream})
        rows.append({"label": "fp32", "source": name, "loss": round(result.loss, 5),
                     "perplexity": round(result.perplexity, 4), "bits_per_byte": round(result.bits_per_byte, 5)})
        rows.append(measure(run_dir, qat_label, ("int4", group), stream, out))
        print(json.dumps(rows[-2:]), file=sys.stderr, flush=True)

    def ppl(label: str, source: str = "base") -> float:
        return next(r["perplexity"] for r in rows if r["label"] == label and r["source"] == source)

    base_ppl = ppl("fp32")
    for row in rows:
        row["perplexity_change_vs_base_fp32"] = f"{100 * (row['perplexity'] / base_ppl - 1):+.3f}%"
    ptq_loss = ppl(qat_label) - base_ppl
    control_loss = ppl(qat_label, "control") - ppl("fp32", "control")
    print(json.dumps({
        "benchmark": "quantize_quality",
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "corpus": "tinyshakespeare.txt, last 10% held out",
        "model": f"GPT-2 style, 6 layers, d_model 256, 8 heads, context 256, tied, BPE vocab {args.vocab}",
        "train": {"steps": args.steps, "batch_tokens": BATCH_TOKENS, "seconds": round(train_seconds, 1)},
        "qat": {"steps": args.qat_steps, "lr": args.qat_lr, "group_size": group, "seconds": round(qat_seconds, 1)},
        "held_out_tokens": int(len(stream) - 1),
        "rows": rows,
        "targets": {
            "int8_within_1pct_of_fp32": abs(ppl("int8") / base_ppl - 1) <= 0.01,
            "int8_change": f"{100 * (ppl('int8') / base_ppl - 1):+.3f}%",
            "qat_label": qat_label,
            "ptq_perplexity_loss_of_base": round(ptq_loss, 4),
            "qat_recovered_fraction_vs_base": round((ppl(qat_label) - ppl(qat_label, "qat")) / ptq_loss, 3)
            if ptq_loss > 0 else None,
            "ptq_perplexity_loss_of_control": round(control_loss, 4),
            "qat_perplexity_loss_own_fp32": round(ppl(qat_label, "qat") - ppl("fp32", "qat"), 4),
            "qat_recovered_fraction_vs_control": round(
                (ppl(qat_label, "control") - ppl(qat_label, "qat")) / control_loss, 3) if control_loss > 0 else None,
        },
    }, indent=2))


if __name__ == "__main__":
    main()
