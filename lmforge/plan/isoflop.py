"""Runs sized by compute: the IsoFLOP grid of a sweep, and the best shape for a budget.

Both count compute as the run will spend it: tokens x training FLOPs per token of the
actual shape, 6N + 12 L H Q T with N the non-embedding parameters plus the output layer
(Chowdhery et al. 2022, PaLM, App. B; ``plan.flops.palm_flops_per_token``), so a
model's tokens for a budget C are D = C / FLOPs per token, not C / (6 N_total).

- ``isoflop_grid``: Hoffmann et al. (2022), Sec. 3.2 (Approach 2): for each budget,
  model sizes spaced evenly in log N around the 20-tokens-per-parameter optimum
  N0 = sqrt(C / 120), each a runnable shape (``plan.shapes.shape_for_params``) trained
  on exactly its budget.
- ``best_shape``: the runnable shape whose predicted loss L(N, D) is lowest for a budget
  under a law (the user's fitted law, or a published one). When D exceeds the unique
  tokens U of the data, the law sees the effective data of Muennighoff et al. (2023),
  Eq. 5: D' = U + U R* (1 - exp(-R / R*)), R = D / U - 1 repetitions, R* = 15.4; so the
  choice moves to a bigger model on fewer repeated tokens where data is short.

Pure Python (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lmforge.errors import UserError, check_positive, check_whole
from lmforge.plan.flops import palm_flops_per_token
from lmforge.plan.laws import ScalingLaw
from lmforge.plan.shapes import shape_for_params
from lmforge.plan.specs import ModelSpec, param_counts
from lmforge.plan.units import format_count

TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022: the grid's centre, N0 = sqrt(C / (6 x 20))
R_STAR = 15.4  # Muennighoff et al. 2023, Sec. 3.1 / Eq. 5: repeated tokens' decay constant
MIN_SIZES = 3  # a parabola in log N needs three sizes


@dataclass(frozen=True)
class SizedRun:
    """A shape and the tokens that spend ``budget`` FLOPs on it."""

    budget: float  # FLOPs the run is sized for
    spec: ModelSpec
    tokens: int  # D = budget / flops_per_token
    flops_per_token: float
    target_params: float  # the size asked for (the shape's count is near it)

    @property
    def params(self) -> int:
        return param_counts(self.spec).total

    @property
    def non_embedding_params(self) -> int:
        return param_counts(self.spec).non_embedding

    @property
    def name(self) -> str:
        return f"C{self.budget:.3g}-N{format_count(self.params)}".replace("+", "")  # C1.2e12-N424K


def _check_shape_args(vocab_size: int, seq_len: int) -> None:
    check_whole("vocab_size", vocab_size, upper=10**7)
    check_whole("seq_len", seq_len, upper=10**6)


def sized_run(spec: ModelSpec, budget: float, seq_len: int, target_params: float | None = None) -> SizedRun:
    """``spec`` trained on ``budget`` FLOPs: D = C / (6N + 12 L H Q T) tokens."""
    per_token = palm_flops_per_token(spec, seq_len)
    return SizedRun(budget, spec, max(1, int(budget / per_token)), per_token,
                    target_params if target_params is not None else param_counts(spec).total)


def smallest_params(vocab_size: int, seq_len: int, style: str = "gpt2") -> int:
    """Parameters of the narrowest runnable shape (one layer, d_model 32) at this vocabulary."""
    lo, hi = 1e3, 1e9
    for _ in range(60):  # bisection on log N for the smallest count shape_for_params accepts
        mid = math.sqrt(lo * hi)
        try:
            shape_for_params(mid, style=style, vocab_size=vocab_size, context=seq_len)
            hi = mid
        except UserError:
            lo = mid
    return param_counts(shape_for_params(hi, style=style, vocab_size=vocab_size, context=seq_len)).total


def isoflop_grid(budgets: Sequence[float], *, sizes: int = 5, spread: float = 4.0, vocab_size: int,
                 seq_len: int, style: str = "gpt2") -> list[SizedRun]:
    """For each budget C, ``sizes`` models at N0 x spread^t, t evenly spaced in [-1, 1],
    N0 = sqrt(C / 120) (20 tokens per parameter), each trained on D = C / FLOPs per token.

    Sizes below the smallest runnable shape of this vocabulary are left out; two targets
    that give one shape run once. A budget left with fewer than three sizes is refused
    (a parabola needs three), naming the budget that would do.
    """
    budgets = [check_positive("budget (FLOPs)", float(c), upper=1e26) for c in budgets]
    if not budgets:
        raise UserError("no compute budgets", "[]", "pass --budgets 1e12,3e12,1e13")
    if len(set(budgets)) != len(budgets):
        raise UserError("a budget is given twice", ",".join(f"{c:g}" for c in budgets), "give each budget once")
    check_whole("sizes", sizes, upper=50)
    if sizes < MIN_SIZES:
        raise UserError("an IsoFLOP curve needs at least three sizes", sizes, "pass --sizes 3 or more (5 is usual)")
    check_positive("spread", spread, upper=1e3)
    if spread <= 1:
        raise UserError("spread must be above 1 (the largest size over the centre)", spread, "pass e.g. --spread 4")
    _check_shape_args(vocab_size, seq_len)
    floor = smallest_params(vocab_size, seq_len, style)
    runs: list[SizedRun] = []
    for budget in sorted(budgets):
        centre = math.sqrt(budget / (6 * TOKENS_PER_PARAM))
        seen: set[tuple] = set()
        row: list[SizedRun] = []
        for i in range(sizes):
            target = centre * spread ** (2 * i / (sizes - 1) - 1)
            if target < floor:
                continue
            spec = shape_for_params(target, style=style, vocab_size=vocab_size, context=seq_len)
            key = (spec.n_decoder_layers, spec.d_model)
            if key in seen:
                continue
            seen.add(key)
            run = sized_run(spec, budget, seq_len, target)
            if run.tokens >= seq_len:
                row.append(run)
        if len(row) < MIN_SIZES:
            need = (floor * spread ** (2 * (MIN_SIZES - 1) / (sizes - 1) - 1)) ** 2 * 6 * TOKENS_PER_PARAM
            raise UserError(
                "budget too small for the smallest runnable models",
                f"{budget:.3g} FLOP: {len(row)} of {sizes} sizes fit, the smallest model has {format_count(floor)} "
                f"parameters with a {vocab_size:,}-token vocabulary",
                f"give budgets of at least {need:.2g} FLOP, or a smaller vocabulary",
            )
        runs.extend(row)
    return runs


def effective_tokens(tokens: float, unique_tokens: float | None, r_star: float = R_STAR) -> float:
    """D' = U + U R* (1 - exp(-R / R*)), R = D / U - 1 (Muennighoff et al. 2023, Eq. 5);
    D itself when the data is not repeated (D <= U) or U is unknown."""
    if unique_tokens is None or tokens <= unique_tokens:
        return float(tokens)
    repeats = tokens / unique_tokens - 1.0
    return unique_tokens + unique_tokens * r_star * (1.0 - math.exp(-repeats / r_star))


@dataclass(frozen=True)
class BestShape:
    """The lowest-loss runnable shape for a budget under a law."""

    run: SizedRun
    predicted_loss: float | None
    effective_tokens: float
    epochs: float | None  # D / U, when U is known
    law: str
    candidates: int
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return {
            "budget_flops": self.run.budget, "params": self.run.params,
            "non_embedding_params": self.run.non_embedding_params, "tokens": self.run.tokens,
            "tokens_per_param": self.run.tokens / self.run.params, "flops_per_token": self.run.flops_per_token,
            "n_layers": self.run.spec.n_decoder_layers, "d_model": self.run.spec.d_model,
            "n_heads": self.run.spec.n_heads, "predicted_loss": self.predicted_loss,
            "effective_tokens": self.effective_tokens, "epochs": self.epochs, "law": self.law,
            "candidates": self.candidates, "notes": list(self.notes),
        }


def candidate_shapes(vocab_size: int, seq_len: int, style: str, lo: float, hi: float, per_decade: int = 20) -> list:
    """Distinct runnable shapes for targets spaced 10^(1/per_decade) apart from lo to hi."""
    shapes, seen = [], set()
    n = lo
    while n <= hi * 1.0001:
        try:
            spec = shape_for_params(n, style=style, vocab_size=vocab_size, context=seq_len)
        except UserError:
            spec = None
        if spec is not None and (spec.n_decoder_layers, spec.d_model) not in seen:
            seen.add((spec.n_decoder_layers, spec.d_model))
            shapes.append(spec)
        n *= 10 ** (1 / per_decade)
    return shapes


def best_shape(budget: float, law: ScalingLaw, *, vocab_size: int, seq_len: int, style: str = "gpt2",
               unique_tokens: float | None = None, loss_params: str = "params",
               flops_of: Callable[[ModelSpec], float] | None = None) -> BestShape:
    """The runnable shape with the lowest L(N, D') for ``budget`` FLOPs under ``law``.

    Candidates span 1/30 to 30 times the 20x optimum (at least the smallest runnable
    shape); each is trained on D = budget / FLOPs per token; D' is the effective data of
    repeated tokens (``effective_tokens``). ``loss_params``: which count the law's N is
    (``params`` total, as Chinchilla; ``non_embedding_params``, as Kaplan). A law without a
    loss of its own picks its own compute-optimal N (nearest runnable shape).
    """
    check_positive("budget (FLOPs)", budget, upper=1e26)
    _check_shape_args(vocab_size, seq_len)
    floor = smallest_params(vocab_size, seq_len, style)
    centre = math.sqrt(budget / (6 * TOKENS_PER_PARAM))
    shapes = candidate_shapes(vocab_size, seq_len, style, max(floor, centre / 30), max(floor * 1.5, centre * 30))
    runs = [sized_run(spec, budget if flops_of is None else flops_of(spec), seq_len) for spec in shapes]
    runs = [r for r in runs if r.tokens >= seq_len]
    if not runs:
        raise UserError(
            "budget too small for the smallest runnable model",
            f"{budget:.3g} FLOP buys fewer than {seq_len} tokens of a {format_count(floor)}-parameter model",
            f"raise the budget above {floor * 6 * seq_len * 4:.2g} FLOP or use a smaller vocabulary than {vocab_size}",
        )
    notes: list[str] = []

    def loss(run: SizedRun) -> float | None:
        n = run.params if loss_params == "params" else run.non_embedding_params
        return law.loss(n, effective_tokens(run.tokens, unique_tokens))

    if law.loss(1e6, 1e6) is None:
        target, _ = law.compute_optimal(budget)
        chosen = min(runs, key=lambda r: abs(math.log(r.params / target)))
        notes.append(f"{law.name} has no L(N, D): its compute-optimal size, the nearest runnable shape")
        predicted = None
    else:
        chosen = min(runs, key=lambda r: loss(r))
        predicted = loss(chosen)
    d_eff = effective_tokens(chosen.tokens, unique_tokens)
    epochs = chosen.tokens / unique_tokens if unique_tokens else None
    if epochs is not None and epochs > 1:
        notes.append(f"the data repeats {epochs:.1f} times: the law sees {format_count(d_eff)} effective tokens "
                     f"of {format_count(chosen.tokens)} (Muennighoff et al. 2023, R* = {R_STAR:g})")
        if epochs > 4:
            notes.append("more than 4 epochs: repeated tokens are worth much less than new ones; add data")
    if chosen is runs[0] and chosen.params <= floor * 1.01:
        notes.append("the smallest runnable shape: a larger budget or a smaller vocabulary would allow a better split")
    return BestShape(chosen, predicted, d_eff, epochs, law.name, len(runs), tuple(notes))
