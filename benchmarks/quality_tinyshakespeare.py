"""Equal wall time against nanoGPT on tinyshakespeare, scored in bits per byte on a held-out tail.

The last 10% of ../shared/corpora/tinyshakespeare.txt (cut at a line break) is held out.

1. nanoGPT: its own ``train.py`` from a checkout (``--nanogpt PATH``; never copied into
   lmforge), with its README's CPU recipe: ``config/train_shakespeare_char.py --device=cpu
   --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12
   --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
   --dropout=0.0`` (plus ``--always_save_checkpoint=True`` so that its final weights are
   the ones scored), character-level, on the first 90% (its val.bin is the held-out tail,
   as its own prepare script would make it). Its wall time is measured.
2. lmforge: ``lmforge train --budget <nanoGPT's seconds>`` on the same first 90%: the
   planner chooses the model and the tokens for that time on this machine.

Both final models are scored on the whole held-out tail: the sum of -log p over every
character (nanoGPT, windows of its 64-character context) or token (lmforge,
``lmforge eval``), divided by ln 2 and the tail's UTF-8 bytes.

    python benchmarks/quality_tinyshakespeare.py --nanogpt /tmp/nanogpt [--out /tmp/vs-nanogpt]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pickle
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
NANOGPT_RECIPE = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                  "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                  "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]


def split(out: Path) -> tuple[str, str]:
    text = CORPUS.read_text(encoding="utf-8")
    cut = text.rfind("\n", 0, int(len(text) * 0.9)) + 1
    (out / "train.txt").write_text(text[:cut], encoding="utf-8")
    (out / "held_out.txt").write_text(text[cut:], encoding="utf-8")
    return text[:cut], text[cut:]


def nanogpt_data(work: Path, train: str, held_out: str) -> dict:
    """data/shakespeare_char as nanoGPT's prepare.py lays it out (uint16 ids, meta.pkl), from our split."""
    chars = sorted(set(train + held_out))
    stoi = {c: i for i, c in enumerate(chars)}
    data = work / "data" / "shakespeare_char"
    data.mkdir(parents=True)
    np.array([stoi[c] for c in train], dtype=np.uint16).tofile(data / "train.bin")
    np.array([stoi[c] for c in held_out], dtype=np.uint16).tofile(data / "val.bin")
    with open(data / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    return stoi


def run_nanogpt(checkout: Path, work: Path) -> float:
    """nanoGPT's train.py in ``work`` (its data/ and out dir there); returns its wall seconds."""
    (work / "configurator.py").symlink_to(checkout / "configurator.py")
    (work / "config").symlink_to(checkout / "config")
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    started = time.perf_counter()
    subprocess.run([sys.executable, str(checkout / "train.py"), *NANOGPT_RECIPE, "--always_save_checkpoint=True",
                    "--out_dir=out"], cwd=work, env=env, check=True, stdout=open(work / "nanogpt.log", "w"),
                   stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def score_nanogpt(checkout: Path, work: Path, held_out: str, stoi: dict) -> dict:
    import torch

    sys.path.insert(0, str(checkout))
    from model import GPT, GPTConfig  # nanoGPT's own model.py, from the checkout

    checkpoint = torch.load(work / "out" / "ckpt.pt", map_location="cpu", weights_only=True)
    with contextlib.redirect_stdout(sys.stderr):  # nanoGPT prints its parameter count; stdout is our JSON
        model = GPT(GPTConfig(**checkpoint["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()}
    model.load_state_dict(state)
    model.eval()
    ids = torch.tensor([stoi[c] for c in held_out], dtype=torch.long)
    block = checkpoint["model_args"]["block_size"]
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, block):  # non-overlapping windows, every character predicted once
            x = ids[start:start + block][None]
            y = ids[start + 1:start + 1 + block][None]
            x = x[:, : y.shape[1]]
            _, loss = model(x, y)
            total += float(loss) * y.shape[1]
            count += y.shape[1]
    n_bytes = len(held_out.encode("utf-8"))
    return {"params": sum(p.numel() for p in model.parameters()), "iters": checkpoint["iter_num"],
            "held_out_chars": count, "held_out_bits_per_byte": total / math.log(2) / n_bytes}


def run_lmforge(out: Path, seconds: float, vocab: int) -> dict:
    started = time.perf_counter()
    command = ["lmforge", "train", "--data", f"shakespeare={out / 'train.txt'}?whole=1", "--budget",
               f"{seconds:.0f}s", "--data.vocab-size", str(vocab), "--data.seq-len", "128", "--data.val-fraction",
               "0", "--data.max-epochs", "1000", "--name", "lmforge", "--out-dir", str(out), "--quiet"]
    subprocess.run(command, check=True, stdout=open(out / "lmforge.log", "w"), stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    held_out = f"held_out={out / 'held_out.txt'}?whole=1"
    held = subprocess.run(["lmforge", "eval", str(out / "lmforge"), "--data", held_out, "--max-tokens", "10000000",
                           "--json"], check=True, capture_output=True, text=True)
    result = json.loads(held.stdout)
    source = result["sources"]["held_out"] if "sources" in result else result["held_out"]
    plan = json.loads((out / "lmforge" / "plan.json").read_text())
    report = json.loads((out / "lmforge" / "report.json").read_text())
    return {"wall_seconds": wall, "train_seconds": report["measured"]["wall_seconds"], "params": plan["params"],
            "tokens": report["measured"]["tokens"], "budget": plan["budget"]["choice"],
            "held_out_tokens": source["tokens"], "held_out_bits_per_byte": source["bits_per_byte"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", required=True, help="a nanoGPT checkout (holds train.py, model.py, config/)")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--out", default="/tmp/vs-nanogpt")
    args = parser.parse_args()
    checkout = Path(args.nanogpt).resolve()
    if not (checkout / "train.py").is_file():
        raise SystemExit(f"not a nanoGPT checkout: {checkout}")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    train, held_out = split(out)
    work = out / "nanogpt"
    work.mkdir()
    stoi = nanogpt_data(work, train, held_out)
    nano_seconds = run_nanogpt(checkout, work)
    nano = {"wall_seconds": nano_seconds, **score_nanogpt(checkout, work, held_out, stoi)}
    ours = run_lmforge(out, nano_seconds, args.vocab)
    print(json.dumps({
        "corpus": "tinyshakespeare.txt, last 10% held out (cut at a line break)",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "nanogpt": {"recipe": " ".join(NANOGPT_RECIPE), **nano},
        "lmforge": ours,
        "bits_per_byte_gain": nano["held_out_bits_per_byte"] - ours["held_out_bits_per_byte"],
        "wall_ratio": ours["wall_seconds"] / nano["wall_seconds"],
    }, indent=2))


if __name__ == "__main__":
    main()
