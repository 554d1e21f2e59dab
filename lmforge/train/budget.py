"""``train.budget``: the planner sizes the run for a time or a FLOP budget on this machine.

    lmforge train --data corpus.txt --budget 5min [--law law.json]
    lmforge train --data corpus.txt --budget 3e13

For a FLOP budget C the run is the runnable decoder shape with the lowest loss the law
predicts, L(N, D') with D = C / FLOPs per token and D' the effective data when the
corpus repeats (``lmforge.plan.isoflop.best_shape``; Muennighoff et al. 2023, Eq. 5).
For a time budget the FLOPs are what this machine computes in that time for the shape
it runs: a few timed steps of the candidate shape (``lmforge.train.calibrate``) give
its tokens/s; the shape is chosen again for the FLOPs that buys, until the choice is
stable (at most ``ROUNDS`` calibrations). The training steps and the final evaluation
fill ``SPEED_MARGIN`` of the time left after the planning itself.

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

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import UserError
from lmforge.plan.isoflop import BestShape, best_shape, sized_run
from lmforge.plan.laws import LAWS, ScalingLaw, get_law
from lmforge.plan.presets import get_preset
from lmforge.plan.specs import ModelSpec
from lmforge.plan.units import format_count, parse_budget
from lmforge.train.config import RunConfig, with_overrides
from lmforge.train.from_plan import planned_overrides

DEFAULT_LAW = Path(__file__).resolve().parents[1] / "plan" / "pydocs_law.json"
SPEED_MARGIN = 0.9  # logging, the checkpoint and the final weights take the rest of the time
ROUNDS = 3
CALIBRATION_MICRO_BATCH = 16
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
    parse_budget(t.budget, flag("train.budget"))
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
    return "gpt2" if get_preset(config.model.preset).spec.positions == "learned" else "llama"


def unique_train_tokens(data) -> int:
    """Training tokens of the sources that are drawn from (weight > 0)."""
    return sum(len(data.store.tokens(s.name, "train")) for s in data.sources if s.weight > 0)


def plan_budget(config: RunConfig, data, device, precision: str, eval_tokens: int,
                log=print) -> tuple[RunConfig, BudgetPlan]:
    """The run ``config.train.budget`` buys on ``device``: the config with the shape, tokens,
    batch and learning rate filled in (and the budget cleared), and what was decided."""
    from lmforge.train.calibrate import calibrate

    started = time.perf_counter()
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

    def choose(flops: float) -> BestShape:
        return best_shape(flops, law.law, vocab_size=vocab, seq_len=seq_len, style=style, unique_tokens=unique,
                          loss_params=law.loss_counts)

    calibrations: list[dict] = []
    rate = None
    if kind == "flops":
        flops = value
        choice = choose(flops)
    else:
        flops = value * 5e10  # a first guess of this CPU's FLOP/s for a small model; calibrated below
        choice = choose(flops)
        calibrated = choice
        for _ in range(ROUNDS):
            calibrated = choice
            spec = choice.run.spec
            cal = calibrate(spec, seq_len=seq_len, micro_batch=CALIBRATION_MICRO_BATCH, precision=precision,
                            device=device)
            rate = cal.tokens_per_second(1)
            left = value * SPEED_MARGIN - (time.perf_counter() - started) - cal.eval_seconds(eval_tokens)
            if left <= 0:
                raise UserError("the time budget is used up by planning and evaluation", config.train.budget,
                                "give a longer budget (a minute or more)")
            flops = left * rate * choice.run.flops_per_token
            calibrations.append({"params": choice.run.params, "tokens_per_second": rate,
                                 "flop_per_second": rate * choice.run.flops_per_token, "budget_flops": flops})
            again = choose(flops)
            if (again.run.spec.n_decoder_layers, again.run.spec.d_model) == (spec.n_decoder_layers, spec.d_model):
                choice = again
                break
            choice = again
        else:  # not stable after ROUNDS: keep the last calibrated shape, sized for its own speed
            choice = _resize(calibrated, flops)
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


def _resize(choice: BestShape, flops: float) -> BestShape:
    """``choice``'s shape with the tokens ``flops`` buys (when the choice did not settle)."""
    import dataclasses

    spec: ModelSpec = choice.run.spec
    run = sized_run(spec, flops, spec.context)
    return dataclasses.replace(choice, run=run)


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
