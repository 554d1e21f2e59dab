"""`lmforge scaling sweep`: an IsoFLOP grid of small runs on your data, resumable.

Hoffmann et al. (2022), Sec. 3.2 (Approach 2): for each compute budget C, models of
several sizes spaced evenly in log N around the 20-tokens-per-parameter optimum, each
trained on exactly C FLOPs (``lmforge.plan.isoflop.isoflop_grid``), with the learning
rate and cosine schedule of a planned run of its own length (``planned_overrides``).
All runs share one tokenizer (``OUT/tokenizer.json``) and one set of shards
(``OUT/data``), so their validation losses are on the same held-out tokens.

    OUT/sweep.json   tokenizer and data hashes, the grid's settings
    OUT/sweep.csv    one row per finished run (``lmforge.scaling.points``), rewritten after each
    OUT/runs/NAME/   every run directory, kept

The runs go through ``lmforge.scaling.runner.run_all``: killed at any point, the same
command continues (finished runs are read back, a half-done run resumes from its checkpoint).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.dirlock import DirectoryLock
from lmforge.errors import UserError, check_positive
from lmforge.fileio import write_atomic
from lmforge.plan.isoflop import SizedRun, isoflop_grid
from lmforge.scaling.points import SweepPoint, write_sweep_csv
from lmforge.scaling.runner import Finished, Stopped, keep_settings, run_all
from lmforge.train.config import RunConfig, load_config

EVAL_TOKENS = 1 << 17  # validation tokens per source for every run (the same tokens for all)
SETTINGS = ("sources", "vocab_size", "seq_len", "style", "seed")  # what a continued sweep must keep


@dataclass(frozen=True)
class SweepResult:
    out: Path
    csv: Path
    runs: list[Finished]
    stopped: Stopped | None

    @property
    def exit_code(self) -> int:
        return 0 if self.stopped is None else self.stopped.exit_code


def run_config(run: SizedRun, out: Path, sources: Sequence[str], *, vocab_size: int, seq_len: int,
               seed: int) -> RunConfig:
    """The training config of one grid point: the planned run on the sweep's tokenizer and shards."""
    from lmforge.train.from_plan import planned_overrides

    overrides = planned_overrides(run.spec, run.tokens, seq_len)
    steps = int(overrides["train.eval_every"])
    return load_config(None, {
        **overrides, "name": run.name, "out_dir": str(out / "runs"), "data.sources": list(sources),
        "data.tokenizer": str(out / "tokenizer.json"), "data.shards": str(out / "data"),
        "data.vocab_size": vocab_size, "data.max_epochs": 1000.0, "train.eval_tokens": EVAL_TOKENS,
        "train.seed": seed, "train.ckpt_every": max(20, steps // 5), "train.keep_last": 1, "train.log_every": 10,
    })


def _meta(out: Path, sources: Sequence[str], settings: dict, tokenizer, budgets: Sequence[float],
          sizes: int, spread: float) -> dict:
    import hashlib

    from lmforge.data.sources import input_fingerprint, parse_source

    prints = [input_fingerprint(parse_source(s)) for s in sources]
    return {
        **settings, "budgets": sorted(float(c) for c in budgets), "sizes": sizes, "spread": spread,
        "tokenizer": {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size, "path": "tokenizer.json"},
        "data": {"sources": list(sources), "sha256": hashlib.sha256("\n".join(prints).encode()).hexdigest()},
    }


def _tokenizer(out: Path, sources, vocab_size: int, log: Callable[[str], None]):
    from lmforge.data.tokenizer import Tokenizer, bytes_per_token, train_tokenizer
    from lmforge.train.data_setup import sample_texts

    path = out / "tokenizer.json"
    if path.is_file():
        return Tokenizer.load(path)
    tokenizer = train_tokenizer(sample_texts(sources, 50_000_000), vocab_size)
    tokenizer.save(path)
    ratio = bytes_per_token(tokenizer, sample_texts(sources, 2_000_000))
    log(f"tokenizer: {tokenizer.vocab_size:,} tokens, {ratio:.2f} bytes per token on the training text")
    return tokenizer


def _point(run: SizedRun, finished: Finished) -> SweepPoint:
    return SweepPoint(run=run.name, budget_flops=run.budget, params=run.params,
                      non_embedding_params=run.non_embedding_params, tokens=finished.tokens,
                      flops=finished.tokens * run.flops_per_token, loss=finished.loss,
                      bits_per_byte=finished.bits_per_byte, seconds=round(finished.seconds, 2))


def sweep(sources: Sequence[str], budgets: Sequence[float], out: str | Path, *, sizes: int = 5, spread: float = 4.0,
          vocab_size: int = 1024, seq_len: int = 128, style: str = "gpt2", seed: int = 0, quiet: bool = False,
          log: Callable[[str], None] = print) -> SweepResult:
    """Train the IsoFLOP grid of ``budgets`` x ``sizes`` on ``sources``; write sweep.csv."""
    from lmforge.data.shards import open_shards, prepare
    from lmforge.data.sources import parse_source

    if not sources:
        raise UserError("no data for the sweep", "[]", "pass --data PATH (or builtin:pydocs)")
    specs = [parse_source(s) for s in sources]
    check_positive("seq_len", seq_len, upper=1e6)
    grid = isoflop_grid(budgets, sizes=sizes, spread=spread, vocab_size=vocab_size, seq_len=seq_len, style=style)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError("--out names a file", str(out), "pass a directory for the sweep")
    settings = {"sources": list(sources), "vocab_size": vocab_size, "seq_len": seq_len, "style": style, "seed": seed}
    keep_settings(out / "sweep.json", settings, SETTINGS, "sweep")
    lock = DirectoryLock(out).acquire()
    try:
        tokenizer = _tokenizer(out, specs, vocab_size, log)
        prepare(specs, tokenizer, out / "data", seed=seed)
        store = open_shards(out / "data", tokenizer)
        unique = sum(len(store.tokens(s.name, "train")) for s in specs if s.weight > 0)
        meta = _meta(out, sources, settings, tokenizer, budgets, sizes, spread)
        write_atomic(out / "sweep.json", json.dumps({**meta, "unique_train_tokens": unique}, indent=2))
        configs = [run_config(r, out, sources, vocab_size=vocab_size, seq_len=seq_len, seed=seed) for r in grid]
        csv = out / "sweep.csv"
        done: dict[str, SweepPoint] = {}
        by_name = {r.name: r for r in grid}
        log(f"sweep: {len(grid)} runs ({len(budgets)} budgets, up to {sizes} sizes each) in {out}")

        def record(config: RunConfig, finished: Finished) -> None:
            done[config.name] = _point(by_name[config.name], finished)
            write_sweep_csv(csv, [done[r.name] for r in grid if r.name in done])

        results = run_all(configs, [r.budget for r in grid], description="sweep", on_finished=record,
                          quiet=quiet, log=log)
    finally:
        lock.release()
    if isinstance(results, Stopped):
        return SweepResult(out, csv, [], results)
    return SweepResult(out, csv, results, None)
