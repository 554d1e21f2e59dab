"""``lmforge study domain``: domain only, general only, mixed or continued, at equal compute.

The question of the seed's small-and-domain-model chapter, answered on the user's corpus
and budget: train on the domain text only, mix it with general text (BloombergGPT: 51%
financial, 49% public; Wu et al. 2023, Sec. 2), or continue a general model on the domain?
Every arm gets the same run: the planner sizes the first arm for ``budget``
(`lmforge.train.budget`: a FLOP budget, or a time budget turned into FLOPs by timing this
machine), and every other arm copies that resolved run (shape, tokens, batch, learning
rate, schedule, seed); only the data differs.

- ``general`` and ``domain``: shares 0 and 1; ``mix-S``: share S of the tokens from the
  domain (a weighted mixture, `lmforge.data.mixture`);
- ``continued``: a general run of (1 - f) of the steps (``general-part``), continued on the
  domain for the other f (``--init-from``, its own warmup and cosine), so its compute is
  the others' too.

All arms share one tokenizer (``--tokenizer``: the one trained on the general text, the
domain text or their mix, `lmforge.study.fertility`) and one set of shards holding both
sources, so each is evaluated on the same held-out tokens: the validation split of each
source (`lmforge.evaluate.run_eval.evaluate_run`, what ``lmforge eval RUN`` prints), plus
``--eval-domain`` / ``--eval-general`` files. Bits per byte make the tokenizers comparable.

    OUT/study.json   settings, tokenizers and their bytes per token, every arm's numbers
    OUT/study.csv    one row per arm
    OUT/study.png    domain against general bits per byte, the shares joined as a frontier
    OUT/tokenizers/  general.json, domain.json, mix.json
    OUT/data/        the shards (both sources, one tokenizer)
    OUT/runs/ARM/    every run directory

The runs go through `lmforge.scaling.runner.run_all` (as ``lmforge scaling sweep``): killed
at any point, the same command continues; finished arms are read back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.dirlock import DirectoryLock
from lmforge.errors import UserError, check_choice
from lmforge.fileio import write_atomic
from lmforge.plan.units import parse_budget
from lmforge.scaling.runner import Stopped, keep_settings, run_all, state_of
from lmforge.study.fertility import TOKENIZERS
from lmforge.train.config import RunConfig, load_config

DEFAULT_SHARES = (0.0, 0.25, 0.51, 0.75, 1.0)
EVAL_TOKENS = 1 << 16  # validation tokens per source, the same for every arm
HELD_OUT_BYTES = 1_000_000  # held-out text per source for the bytes-per-token table, at most
SETTINGS = ("domain", "general", "budget", "shares", "continue_fraction", "tokenizer", "vocab_size", "seq_len",
            "style", "seed")


@dataclass
class Arm:
    name: str
    share: float | None  # share of tokens from the domain (None: continued pretraining)
    flops: float  # planned compute (continued: both parts)
    steps: int
    bits_per_byte: dict[str, float]  # text name -> bits per byte
    loss: dict[str, float]  # text name -> nats per token
    run_dir: Path
    parts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "share": self.share, "flops": self.flops, "steps": self.steps,
                "bits_per_byte": self.bits_per_byte, "loss": self.loss, "run_dir": str(self.run_dir),
                "parts": self.parts}


@dataclass
class StudyResult:
    out: Path
    arms: list[Arm]
    fertility: dict[str, dict[str, float]]
    tokenizer: str
    weight: float
    best: str | None
    stopped: Stopped | None = None
    texts: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        return 0 if self.stopped is None else self.stopped.exit_code


def parse_shares(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0,0.25,0.51,0.75,1"`` -> sorted unique shares in [0, 1]; UserError otherwise."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    shares = []
    for part in parts:
        try:
            share = float(part)
        except (TypeError, ValueError):
            raise UserError("cannot read a --shares value as a number", part,
                            "pass e.g. --shares 0,0.25,0.51,1") from None
        if not math.isfinite(share) or not 0.0 <= share <= 1.0:
            raise UserError("--shares are the domain's share of the tokens, in [0, 1]", share,
                            "pass e.g. --shares 0,0.25,0.51,0.75,1")
        shares.append(round(share, 6))
    if not shares:
        raise UserError("--shares is empty", text, "pass e.g. --shares 0,0.51,1")
    return tuple(sorted(set(shares)))


def arm_name(share: float) -> str:
    if share == 0.0:
        return "general"
    if share == 1.0:
        return "domain"
    return f"mix-{share:g}"


def _check_sources(domain: str, general: str):
    from lmforge.data.sources import iter_documents, parse_source

    specs = []
    for flag, arg in (("--domain", domain), ("--general", general)):
        spec = parse_source(arg)
        if spec.weight != 1.0:
            raise UserError(f"{flag} takes NAME=PATH without a weight (the shares set the mixture)", arg,
                            "drop the :WEIGHT and pass --shares")
        if next(iter(iter_documents(spec)), None) is None:
            raise UserError(f"{flag} has no text", arg, "pass a UTF-8 text file with content")
        specs.append(spec)
    d, g = specs
    if d.name == g.name:
        raise UserError("the domain and general sources have one name", d.name, "name them: --domain finance=PATH")
    dp, gp = Path(d.location), Path(g.location)
    if dp.exists() and gp.exists() and dp.resolve() == gp.resolve():
        raise UserError("the domain and general sources are the same file", str(dp),
                        "pass different text for --domain and --general")
    return d, g


def _check_budget(budget: str, vocab_size: int, seq_len: int, style: str) -> None:
    """Refuse, before any tokenizer is trained, a budget no runnable model fits: a FLOP budget
    through the planner's own choice (the vocabulary the tokenizers will have), a time budget
    shorter than planning takes."""
    from lmforge.plan.isoflop import best_shape
    from lmforge.train.budget import MIN_SECONDS, load_law

    kind, value = parse_budget(budget, "--budget")
    if kind == "seconds" and value < MIN_SECONDS:
        raise UserError("--budget is too short to plan and train an arm", budget, f"give at least {MIN_SECONDS:g} s")
    if kind == "flops":
        best_shape(value, load_law(None).law, vocab_size=vocab_size, seq_len=seq_len, style=style)


def _source(spec, weight: float) -> str:
    return f"{spec.name}={spec.location}:{weight:g}"


def base_config(out: Path, name: str, domain, general, share: float, *, budget: str, vocab_size: int,
                seq_len: int, style: str, seed: int) -> RunConfig:
    """The first arm: the planner sizes it for ``budget`` on the study's tokenizer and shards."""
    return load_config(None, {
        "name": name, "out_dir": str(out / "runs"), "model.preset": "tiny-gpt2" if style == "gpt2" else "tiny-llama",
        "data.sources": [_source(domain, share), _source(general, 1.0 - share)],
        "data.tokenizer": str(out / "tokenizer.json"), "data.shards": str(out / "data"),
        "data.vocab_size": vocab_size, "data.seq_len": seq_len, "data.max_epochs": 1000.0,
        "train.budget": budget, "train.seed": seed, "train.eval_tokens": EVAL_TOKENS, "train.keep_last": 1,
        "train.log_every": 10,
    })


def copy_of(resolved: RunConfig, name: str, domain, general, share: float, *, steps: int | None = None) -> RunConfig:
    """Another arm: the resolved run with other data (and, for a part of the continued arm,
    ``steps`` of the schedule with its own 5% warmup)."""
    data = dataclasses.replace(resolved.data, sources=[_source(domain, share), _source(general, 1.0 - share)])
    train = resolved.train
    if steps is not None:
        train = dataclasses.replace(train, max_tokens=None, max_steps=steps, eval_every=steps,
                                    warmup_steps=max(1, min(100, steps // 20)), ckpt_every=max(1, steps))
    return dataclasses.replace(resolved, name=name, data=data, train=train)


def _planned(run_dir: Path) -> tuple[float, int]:
    plan = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    return float(plan["total_flops"]), int(plan["total_steps"])


def held_out_texts(store, tokenizer, names: Sequence[str], max_bytes: int = HELD_OUT_BYTES) -> dict[str, list[str]]:
    """Each source's validation split as text (its documents, decoded), up to ``max_bytes``."""
    out = {}
    for name in names:
        ids = store.tokens(name, "val").tolist()
        docs, current, size = [], [], 0
        for t in ids:
            if t == tokenizer.eos_id:
                if current:
                    text = tokenizer.decode(current)
                    docs.append(text)
                    size += len(text.encode("utf-8"))
                    current = []
                if size >= max_bytes:
                    break
            else:
                current.append(t)
        if current and size < max_bytes:
            docs.append(tokenizer.decode(current))
        out[name] = docs
    return out


def _evaluate(run_dir: Path, extra: dict[str, str]) -> tuple[dict[str, float], dict[str, float]]:
    from lmforge.evaluate.run_eval import evaluate_run

    results = evaluate_run(run_dir, max_tokens=EVAL_TOKENS)
    if extra:
        results.update({k: v for k, v in evaluate_run(run_dir, [f"{n}={p}" for n, p in extra.items()],
                                                      max_tokens=EVAL_TOKENS).items() if k != "all"})
    results.pop("all", None)
    return ({n: r.bits_per_byte for n, r in results.items()}, {n: r.loss for n, r in results.items()})


def best_arm(arms: Sequence[Arm], domain: str, general: str, weight: float) -> str | None:
    """The arm with the lowest weight x domain + (1 - weight) x general bits per byte."""
    scored = [(weight * a.bits_per_byte[domain] + (1 - weight) * a.bits_per_byte[general], a.name) for a in arms
              if domain in a.bits_per_byte and general in a.bits_per_byte]
    return min(scored)[1] if scored else None


def study(domain: str, general: str, out: str | Path, *, budget: str = "5min",
          shares: str | Sequence[float] = DEFAULT_SHARES, continue_fraction: float = 0.25, tokenizer: str = "mix",
          vocab_size: int = 1024, seq_len: int = 128, style: str = "gpt2", seed: int = 0, weight: float = 0.5,
          eval_domain: str | None = None, eval_general: str | None = None, quiet: bool = False,
          log: Callable[[str], None] = print) -> StudyResult:
    """Run (or continue) the domain study into ``out``; see the module docstring."""
    from lmforge.data.shards import open_shards, prepare
    from lmforge.study.fertility import fertility, study_tokenizers
    from lmforge.study.plot import write_outputs

    share_list = parse_shares(shares)
    check_choice("--tokenizer", tokenizer, TOKENIZERS)
    check_choice("--style", style, ("gpt2", "llama"))
    _check_budget(str(budget), vocab_size, seq_len, style)
    if not (isinstance(continue_fraction, int | float) and 0.0 <= continue_fraction < 1.0):
        raise UserError("--continue-fraction is the continued arm's share of the steps, in [0, 1)",
                        continue_fraction, "pass e.g. --continue-fraction 0.25, or 0 to leave the arm out")
    if not (isinstance(weight, int | float) and 0.0 <= weight <= 1.0):
        raise UserError("--weight is the domain's weight in the ranking, in [0, 1]", weight, "pass e.g. --weight 0.5")
    d_spec, g_spec = _check_sources(domain, general)
    extra = {}
    for flag, path, name in (("--eval-domain", eval_domain, f"{d_spec.name}-eval"),
                             ("--eval-general", eval_general, f"{g_spec.name}-eval")):
        if path is not None:
            if not Path(path).is_file() or Path(path).stat().st_size == 0:
                raise UserError(f"{flag} is not a text file with content", path, "pass a UTF-8 text file")
            extra[name] = str(path)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError("--out names a file", str(out), "pass a directory for the study")
    settings = {"domain": domain, "general": general, "budget": str(budget), "shares": list(share_list),
                "continue_fraction": continue_fraction, "tokenizer": tokenizer, "vocab_size": vocab_size,
                "seq_len": seq_len, "style": style, "seed": seed}
    keep_settings(out / "study.json", settings, SETTINGS, "study", section="settings")  # written first, below
    out.mkdir(parents=True, exist_ok=True)
    lock = DirectoryLock(out).acquire()
    try:
        tokenizers = study_tokenizers(out / "tokenizers", d_spec, g_spec, vocab_size, log)
        chosen = tokenizers[tokenizer]
        if not (out / "tokenizer.json").is_file():
            chosen.save(out / "tokenizer.json")
        prepare([d_spec, g_spec], chosen, out / "data", seed=seed)
        store = open_shards(out / "data", chosen)
        texts = held_out_texts(store, chosen, [d_spec.name, g_spec.name])
        for name, path in extra.items():
            texts[name] = [Path(path).read_text(encoding="utf-8", errors="replace")[:HELD_OUT_BYTES]]
        if not (out / "study.json").is_file():  # the settings, for a continued study to keep
            write_atomic(out / "study.json", json.dumps({"settings": settings, "arms": []}, indent=2) + "\n")
        bpt = fertility(tokenizers, texts)
        for kind, row in bpt.items():
            log(f"tokenizer {kind}: " + ", ".join(f"{v:.2f} bytes/token on {n}" for n, v in row.items()))
        names = [arm_name(s) for s in share_list]
        first_name, first_share = names[0], share_list[0]
        first_dir = out / "runs" / first_name
        if state_of(first_dir) != "new" and (first_dir / "config.yaml").is_file():
            first = load_config(first_dir / "config.yaml")  # the resolved run, as the planner left it
        else:
            first = base_config(out, first_name, d_spec, g_spec, first_share, budget=str(budget),
                                vocab_size=vocab_size, seq_len=seq_len, style=style, seed=seed)
        log(f"study: {len(share_list)} shares{' + continued pretraining' if continue_fraction else ''} in {out}; "
            "the first arm plans the run")
        done = run_all([first], [1.0], description="study (planning arm)", quiet=quiet, log=log)
        if isinstance(done, Stopped):
            return StudyResult(out, [], bpt, tokenizer, weight, None, done)
        resolved = load_config(first_dir / "config.yaml")
        flops, steps = _planned(first_dir)
        configs, starts = [], []
        for name, share in zip(names[1:], share_list[1:], strict=True):
            configs.append(copy_of(resolved, name, d_spec, g_spec, share))
            starts.append(None)
        continued = continue_fraction > 0
        if continued:
            later = max(1, min(steps - 1, round(continue_fraction * steps)))
            configs.append(copy_of(resolved, "general-part", d_spec, g_spec, 0.0, steps=steps - later))
            configs.append(copy_of(resolved, "continued", d_spec, g_spec, 1.0, steps=later))
            starts += [None, out / "runs" / "general-part"]
        cost = [flops] * (len(configs) - 2 * continued) + ([flops * (1 - later / steps), flops * later / steps]
                                                           if continued else [])
        done = run_all(configs, cost, description="study", quiet=quiet, log=log, init_from=starts)
        if isinstance(done, Stopped):
            return StudyResult(out, [], bpt, tokenizer, weight, None, done)
        arms = []
        for name, share in zip(names, share_list, strict=True):
            run_dir = out / "runs" / name
            f, s = _planned(run_dir)
            bits, loss = _evaluate(run_dir, extra)
            arms.append(Arm(name, share, f, s, bits, loss, run_dir))
        if continued:
            part, cont = out / "runs" / "general-part", out / "runs" / "continued"
            (f1, s1), (f2, s2) = _planned(part), _planned(cont)
            bits, loss = _evaluate(cont, extra)
            arms.append(Arm("continued", None, f1 + f2, s1 + s2, bits, loss, cont, ["general-part", "continued"]))
        best = best_arm(arms, d_spec.name, g_spec.name, weight)
        result = StudyResult(out, arms, bpt, tokenizer, weight, best, None, tuple(texts))
        write_outputs(result, settings, d_spec.name, g_spec.name, chosen)
        return result
    finally:
        lock.release()
