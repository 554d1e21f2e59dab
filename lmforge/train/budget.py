"""``train.budget``: the planner sizes the run for a time or a FLOP budget on this machine.

    lmforge train --data corpus.txt --budget 5min [--law law.json]
    lmforge train --data corpus.txt --budget 3e13

For a FLOP budget C the run is the runnable decoder shape with the lowest loss the law
predicts, L(N, D') with D = C / FLOPs per token and D' the effective data when the
corpus repeats (``lmforge.plan.isoflop.best_shape``; Muennighoff et al. 2023, Eq. 5).
For a time budget the FLOPs are what this machine computes in that time for the shape
it runs: a few timed steps of candidate shapes (``lmforge.train.calibrate``) measure
FLOP/s, which grows with the model on a CPU; each candidate gets the tokens its rate
buys (``_time_budget``). The training steps and the final evaluation fill
``SPEED_MARGIN`` of the time left after the planning itself.

The law: ``train.law`` (a law.json from ``lmforge scaling fit``, or a published law by
name), else lmforge's default, fitted with ``lmforge scaling sweep`` on ``builtin:pydocs``
(``DEFAULT_LAW``). A law predicts losses only for the tokenizer it was fitted with: for
another, the shape is still chosen by it, but ``plan.json`` records no predicted loss
unless the law was asked for, and then with a warning.

The resolved run (shape, tokens, batch, learning rate) replaces the budget in
``config.yaml``, so a resumed run is the same run; ``plan.json`` keeps the budget, the
law, the predicted loss and the candidates weighed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import UserError
from lmforge.plan.isoflop import BestShape, best_shape, candidate_shapes, sized_run
from lmforge.plan.laws import LAWS, ScalingLaw, get_law
from lmforge.plan.presets import get_preset
from lmforge.plan.specs import ModelSpec
from lmforge.plan.units import format_count, parse_budget
from lmforge.train.config import RunConfig, with_overrides
from lmforge.train.from_plan import planned_overrides

DEFAULT_LAW = Path(__file__).resolve().parents[1] / "plan" / "pydocs_law.json"
# Training steps and the final evaluation are planned to fill this share of a time budget. The
# calibration times forward, backward and optimizer only; the loop's per-step work besides
# (batch assembly, logging, checkpoints) made runs of models under 1M parameters 13-22% slower
# than calibrated on a 2-core CPU (quickstart 0.87, tinyshakespeare 0.78; BENCHMARKS.md, issue 13).
SPEED_MARGIN = 0.8
CALIBRATION_MICRO_BATCH = 16
MIN_SECONDS = 10.0  # a time budget shorter than this is mostly calibration
MIN_BATCH_SEQUENCES = 8  # the smallest batch a planned run takes (lmforge.train.from_plan)
SHAPE_KEYS = ("n_layers", "n_encoder_layers", "d_model", "n_heads", "n_kv_heads", "d_ff", "context")


@dataclass(frozen=True)
class LawChoice:
    """The law a run is planned with, and whether its losses apply to this run's tokenizer."""

    law: ScalingLaw
    source: str  # "train.law" or "default"
    description: str
    loss_counts: str = "params"  # which parameters the law's N counts
    tokenizer_sha256: str | None = None

    def predicts_for(self, tokenizer_sha256: str) -> bool:
        return self.tokenizer_sha256 is not None and self.tokenizer_sha256 == tokenizer_sha256


def load_law(text: str | None) -> LawChoice:
    """``train.law``: a law.json path, or a published law's name; None: ``DEFAULT_LAW``."""
    from lmforge.plan.fitted import read_law

    if text is None:
        if not DEFAULT_LAW.is_file():  # an install without the file: the published law
            return LawChoice(get_law("epoch"), "default", "Besiroglu et al. 2024 (epoch)")
        law = read_law(DEFAULT_LAW)
        return LawChoice(law, "default", f"lmforge's default law ({DEFAULT_LAW.name}, fitted on builtin:pydocs)",
                         law.n_counts, law.tokenizer_sha256)
    if text.strip().lower() in LAWS:
        law = get_law(text)
        return LawChoice(law, "train.law", f"{law.name} ({law.source})")
    path = Path(text)
    if not path.exists() and not text.endswith(".json"):
        raise UserError("unknown law", text, "pass a law.json from lmforge scaling fit, or one of " + ", ".join(LAWS))
    law = read_law(path)
    return LawChoice(law, "train.law", f"{path} (your fit)", law.n_counts, law.tokenizer_sha256)


@dataclass(frozen=True)
class BudgetPlan:
    """What the planner chose for a budget, for plan.json."""

    budget: str
    kind: str  # "seconds" or "flops"
    flops: float
    seconds: float | None  # the time budget, when it is one
    law: str
    law_source: str
    choice: BestShape
    loss_applies: bool  # the law was fitted with this run's tokenizer
    tokens_per_second: float | None  # calibrated, for a time budget
    planning_seconds: float
    calibrations: list[dict] = field(default_factory=list)
    notes: tuple[str, ...] = ()

    @property
    def predicted_loss(self) -> float | None:
        return self.choice.predicted_loss if self.loss_applies else None

    def to_dict(self) -> dict:
        return {"budget": self.budget, "kind": self.kind, "flops": self.flops, "seconds": self.seconds,
                "law": self.law, "law_source": self.law_source, "loss_applies": self.loss_applies,
                "predicted_loss": self.predicted_loss, "tokens_per_second": self.tokens_per_second,
                "planning_seconds": self.planning_seconds, "calibrations": self.calibrations,
                "choice": self.choice.to_dict(), "notes": list(self.notes)}


def check_budget_config(config: RunConfig, flag=lambda key: key) -> None:
    """Refuse what a budget cannot go with: a length of its own, a shape, another family, a
    law that cannot be read. ``flag`` names a key as the user gave it."""
    t = config.train
    kind, value = parse_budget(t.budget, flag("train.budget"))
    if kind == "seconds" and value < MIN_SECONDS:
        raise UserError(f"{flag('train.budget')} is too short to plan and train", t.budget,
                        f"give at least {MIN_SECONDS:g} s (timing the candidate models takes seconds)")
    for key in ("train.max_tokens", "train.max_steps", *(f"model.{k}" for k in SHAPE_KEYS)):
        section, leaf = key.split(".")
        value = getattr(getattr(config, section), leaf)
        if value is not None:
            what = "sizes the run" if section == "train" else "chooses the model's shape"
            raise UserError(f"{flag('train.budget')} {what}; {flag(key)} is set too", value,
                            f"drop {flag(key)} (the preset gives only the style: gpt2 or llama)")
    if get_preset(config.model.preset).spec.family != "decoder":
        raise UserError(f"{flag('train.budget')} plans decoder-only (causal LM) runs", config.model.preset,
                        "use a decoder preset (tiny-gpt2, tiny-llama) or size the run with train.max_tokens")
    load_law(t.law)


def _style(config: RunConfig) -> str:
    return _style_of(get_preset(config.model.preset).spec)


def unique_train_tokens(data) -> int:
    """Training tokens of the sources that are drawn from (weight > 0)."""
    return sum(len(data.store.tokens(s.name, "train")) for s in data.sources if s.weight > 0)


def plan_budget(config: RunConfig, data, device, precision: str, eval_tokens: int,
                log=print, started: float | None = None) -> tuple[RunConfig, BudgetPlan]:
    """The run ``config.train.budget`` buys on ``device``: the config with the shape, tokens,
    batch and learning rate filled in (and the budget cleared), and what was decided.
    ``started``: when the run began (``time.perf_counter()``), so that a time budget also
    pays for the tokenizer and the shards made before planning; default now."""

    started = time.perf_counter() if started is None else started
    check_budget_config(config)
    kind, value = parse_budget(config.train.budget, "train.budget")
    law = load_law(config.train.law)
    tokenizer = data.tokenizer
    applies = law.predicts_for(tokenizer.sha256)
    notes: list[str] = []
    if not applies and law.tokenizer_sha256 is not None and law.source == "train.law":
        log(f"warning: the law {config.train.law} was fitted with another tokenizer "
            f"({law.tokenizer_sha256[:12]}, this run's {tokenizer.sha256[:12]}): its losses do not apply here; "
            "the shape is still chosen by it")
        applies = True  # asked for: predict anyway, said so
        notes.append("law fitted with another tokenizer: the predicted loss is not for this data")
    elif not applies:
        notes.append("the law was not fitted with this run's tokenizer: it chooses the shape, predicts no loss")
    seq_len, vocab, style = config.data.seq_len, tokenizer.vocab_size, _style(config)
    unique = unique_train_tokens(data)

    def choose(flops: float, flops_of=None) -> BestShape:
        return best_shape(flops, law.law, vocab_size=vocab, seq_len=seq_len, style=style, unique_tokens=unique,
                          loss_params=law.loss_counts, flops_of=flops_of)

    calibrations: list[dict] = []
    rate = None
    if kind == "flops":
        flops = value
        choice = choose(flops)
    else:
        choice, rate, calibrations = _time_budget(value, started, choose, seq_len, precision, device, eval_tokens,
                                                  config.train.budget)
        flops = choice.run.budget
    overrides = planned_overrides(choice.run.spec, choice.run.tokens, seq_len)
    overrides.update({"train.budget": None, "train.law": None})
    resolved = with_overrides(config, overrides)
    plan = BudgetPlan(str(config.train.budget), kind, flops, value if kind == "seconds" else None,
                      law.description, law.source, choice, applies, rate, time.perf_counter() - started,
                      calibrations, tuple(notes + list(choice.notes)))
    spec = choice.run.spec
    loss = plan.predicted_loss
    log(f"budget {config.train.budget}: {flops:.3g} FLOP -> {format_count(choice.run.params)} parameters "
        f"({spec.n_decoder_layers} x {spec.d_model}) on {format_count(choice.run.tokens)} tokens "
        f"({choice.run.tokens / choice.run.params:.1f} per parameter), law: {law.description}"
        + (f"; predicted validation loss {loss:.3f}" if loss is not None else ""))
    for note in plan.notes:
        log(f"note: {note}")
    return resolved, plan


def _time_budget(seconds: float, started: float, choose, seq_len: int, precision: str, device, eval_tokens: int,
                 text: str) -> tuple[BestShape, float, list[dict]]:
    """The shape with the lowest predicted loss for what this machine computes in ``seconds``.

    FLOP/s depends on the shape (a small model's matmuls use the CPU poorly), so it is
    measured: a few timed steps of the shape the law would pick at a first-guess rate, and
    (for budgets of a minute or more) of shapes 4x smaller and larger; between them FLOP/s
    is interpolated in log N (held constant outside). Each candidate then gets the tokens
    its own rate buys in the time left; the best one is timed too if it was not, and its
    tokens follow its own measurement.
    """
    from lmforge.train.calibrate import calibrate

    measured: dict[int, tuple[float, float]] = {}  # params -> (tokens/s, eval seconds)
    calibrations: list[dict] = []

    def time_it(run) -> tuple[float, float]:
        if run.params not in measured:
            cal = calibrate(run.spec, seq_len=seq_len, micro_batch=CALIBRATION_MICRO_BATCH, precision=precision,
                            device=device)
            measured[run.params] = (cal.tokens_per_second(1), cal.eval_seconds(eval_tokens))
            calibrations.append({"params": run.params, "n_layers": run.spec.n_decoder_layers,
                                 "d_model": run.spec.d_model, "tokens_per_second": measured[run.params][0],
                                 "flop_per_second": measured[run.params][0] * run.flops_per_token})
        return measured[run.params]

    def left(eval_seconds: float) -> float:
        remaining = seconds * SPEED_MARGIN - (time.perf_counter() - started) - eval_seconds
        if remaining <= 0:
            raise UserError("the time budget is used up by planning and evaluation", text,
                            "give a longer budget (a minute or more)")
        return remaining

    guess = choose(seconds * 5e10)  # a first guess of a CPU's FLOP/s for a small model
    probes = [guess.run]
    if seconds >= 60:
        for factor in (0.25, 4.0):
            target = guess.run.params * factor
            shapes = candidate_shapes(guess.run.spec.vocab_size, seq_len, _style_of(guess.run.spec), target / 1.3,
                                      target * 1.3)
            if shapes:
                probes.append(sized_run(shapes[len(shapes) // 2], guess.run.budget, seq_len))
    for run in probes:
        time_it(run)
    eval_seconds = max(e for _, e in measured.values())
    points = sorted((math.log(c["params"]), c["flop_per_second"]) for c in calibrations)

    def flop_rate(spec: ModelSpec) -> float:
        from lmforge.plan.specs import param_counts

        x = math.log(param_counts(spec).total)
        if x <= points[0][0]:
            return points[0][1]
        for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
            if x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return points[-1][1]

    remaining = left(eval_seconds)
    choice = choose(seconds * 5e10, flops_of=lambda spec: remaining * flop_rate(spec))
    rate, eval_seconds = time_it(choice.run)  # the chosen shape's own speed
    flops = left(eval_seconds) * rate * choice.run.flops_per_token
    choice = dataclasses.replace(choice, run=sized_run(choice.run.spec, flops, seq_len))
    if choice.run.tokens < MIN_BATCH_SEQUENCES * seq_len:
        raise UserError("the time budget is too short to train a step", f"{text}: {choice.run.tokens:,} tokens",
                        "give a longer budget (a minute or more)")
    return choice, rate, calibrations


def _style_of(spec: ModelSpec) -> str:
    return "gpt2" if spec.positions == "learned" else "llama"


def predicted_loss_of(config: RunConfig, spec: ModelSpec, tokens: int, tokenizer_sha256: str,
                      unique_tokens: int | None) -> tuple[float | None, str]:
    """plan.json's loss for a run not sized by a budget: L(N, D') under ``train.law`` or the
    default law, when that law was fitted with this tokenizer (or asked for); else None."""
    from lmforge.plan.isoflop import effective_tokens
    from lmforge.plan.specs import param_counts

    if spec.family != "decoder":
        return None, "no law: the laws here are fitted to causal language models"
    law = load_law(config.train.law)
    if not law.predicts_for(tokenizer_sha256) and law.source != "train.law":
        return None, "no law fitted with this tokenizer (fit one: lmforge scaling sweep, then scaling fit)"
    counts = param_counts(spec)
    n = counts.total if law.loss_counts == "params" else counts.non_embedding
    value = law.law.loss(n, effective_tokens(tokens, unique_tokens))
    if value is None or not math.isfinite(value):
        return None, f"{law.description} has no L(N, D)"
    return value, law.description
