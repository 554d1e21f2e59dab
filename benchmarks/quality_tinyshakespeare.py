"""Validation bits per byte on tinyshakespeare after a fixed training time on this machine.

The last 10% of ../shared/corpora/tinyshakespeare.txt (cut at a line break) is held
out; a byte-level BPE tokenizer and a small GPT-2-style decoder are trained on the rest
for MINUTES of wall-clock time (the token budget is fixed up front from a short timed
run, so the learning-rate schedule completes); then `lmforge eval` measures bits per
byte on the held-out part. Bits per byte do not depend on the tokenizer, so the number
compares with character-level results (nanoGPT's char model on this data, and others).

    python benchmarks/quality_tinyshakespeare.py [--minutes 5] [--out /tmp/lmforge-shakespeare]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from lmforge.evaluate.run_eval import evaluate_run
from lmforge.models.build import build_model
from lmforge.plan.specs import ModelSpec
from lmforge.train.calibrate import calibrate
from lmforge.train.config import load_config
from lmforge.train.loop import train
from lmforge.train.precision import choose_precision

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
MODEL = {"model.preset": "tiny-gpt2", "model.n_layers": 6, "model.d_model": 256, "model.n_heads": 8,
         "model.context": 256}
SEQ, BATCH_TOKENS, MICRO = 256, 16 * 256, 16


def split(out: Path) -> tuple[Path, Path]:
    text = CORPUS.read_text(encoding="utf-8")
    cut = text.rfind("\n", 0, int(len(text) * 0.9)) + 1
    train_file, val_file = out / "train.txt", out / "val.txt"
    train_file.write_text(text[:cut], encoding="utf-8")
    val_file.write_text(text[cut:], encoding="utf-8")
    return train_file, val_file


def tokens_for(minutes: float, vocab: int) -> int:
    """Size the run from a few timed steps in the precision the run will pick: 80% of the
    time for training."""
    spec = ModelSpec(n_decoder_layers=6, d_model=256, n_heads=8, vocab_size=vocab, context=256)
    precision = choose_precision("auto", torch.device("cpu")).precision
    speed = calibrate(spec, seq_len=SEQ, micro_batch=MICRO, precision=precision)
    return int(minutes * 60 * 0.8 * speed.tokens_per_second(BATCH_TOKENS // (SEQ * MICRO)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--out", default="/tmp/lmforge-shakespeare")
    args = parser.parse_args()
    if not CORPUS.exists():
        raise SystemExit(f"corpus not found: {CORPUS} (see ../shared/corpora/README.md)")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    train_file, val_file = split(out)
    tokens = tokens_for(args.minutes, args.vocab)
    config = load_config(None, {
        **MODEL, "name": "run", "out_dir": str(out), "data.sources": [f"shakespeare={train_file}?whole=1"],
        "data.vocab_size": args.vocab, "data.seq_len": SEQ, "data.val_fraction": 0.0, "data.max_epochs": 100.0,
        "train.batch_tokens": BATCH_TOKENS, "train.micro_batch": MICRO, "train.lr": 2e-3, "train.warmup_steps": 50,
        "train.max_tokens": str(tokens), "train.max_time": args.minutes * 60, "train.eval_every": 10**9,
        "train.ckpt_every": 10**9, "train.log_every": 50,
    })
    started = time.perf_counter()
    result = train(config, quiet=True)
    seconds = time.perf_counter() - started
    held_out = evaluate_run(result.run_dir, [f"held_out={val_file}?whole=1"], max_tokens=10**7)["held_out"]
    print(json.dumps({
        "corpus": "tinyshakespeare.txt, last 10% held out",
        "model": f"GPT-2 style, 6 layers, d_model 256, 8 heads, context 256, BPE vocab {args.vocab}",
        "params": sum(p.numel() for p in build_model(ModelSpec(n_decoder_layers=6, d_model=256, n_heads=8,
                                                               vocab_size=args.vocab, context=256)).parameters()),
        "train_seconds": round(seconds, 1), "tokens": result.tokens, "steps": result.steps,
        "stopped_by": result.stopped_by, "tokens_per_s": round(result.tokens_per_second),
        "held_out_tokens": held_out.tokens, "held_out_loss_nats_per_token": round(held_out.loss, 4),
        "held_out_bits_per_byte": round(held_out.bits_per_byte, 4),
    }, indent=2))


if __name__ == "__main__":
    main()
