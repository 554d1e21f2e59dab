"""Scaling laws: predicted loss L(N, D) and the compute-optimal split of C = 6 N D.

Every law answers two questions:

- ``compute_optimal(flops)`` -> ``(N_opt, D_opt)``, the model size (parameters) and the
  training tokens that minimise loss for ``flops`` training FLOPs, with C = 6 N D
  (Kaplan et al. 2020, Eq. 2.1; Hoffmann et al. 2022, Sec. 3.3). ``D_opt`` is always
  ``flops / (6 N_opt)``, so 6 N D equals C to rounding;
- ``loss(n_params, n_tokens)`` -> the predicted final training loss in nats per token,
  or None where the law has no joint form of its own (the 20-tokens-per-parameter rule,
  the Approach-1 fit). ``loss_law`` then names the law whose loss the planner borrows.

Losses are only comparable within one dataset and tokenizer: the Chinchilla family
(Hoffmann et al. 2022; Besiroglu et al. 2024) predicts nats on MassiveText with the
Chinchilla SentencePiece tokenizer; Kaplan et al. (2020) predict nats on WebText2 with
GPT-2's byte-level BPE and count non-embedding parameters only. Neither predicts the
loss of your own corpus and tokenizer; ``lmforge scaling`` fits that.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from lmforge.errors import UserError, check_positive, unknown_name

MAX_FLOPS = 1e29  # above this a compute budget is absurd (~2,500x the largest published runs, ~4e25)
PF_DAY = 1e15 * 86400  # 1 petaflop/s-day = 8.64e19 FLOP (Kaplan et al. 2020, Sec. 1.3)

MASSIVETEXT = "MassiveText, Chinchilla SentencePiece tokenizer (nats/token)"
WEBTEXT2 = "WebText2, GPT-2 BPE, non-embedding N (nats/token; not comparable to MassiveText)"


def _check_flops(flops: float) -> float:
    return check_positive("compute (FLOPs)", flops, upper=MAX_FLOPS)


def _check_params(n_params: float) -> float:
    return check_positive("parameters", n_params, upper=1e16)


def _check_tokens(n_tokens: float) -> float:
    return check_positive("training tokens", n_tokens, upper=1e18)


class ScalingLaw(ABC):
    """A scaling law: compute-optimal (N, D) for C = 6 N D, and optionally L(N, D).

    Subclasses are frozen dataclasses with at least ``name`` and ``source`` fields.
    """

    name: str
    source: str
    loss_dataset: str | None = None  # what ``loss`` is measured on; None if no loss
    loss_law: str | None = None  # law whose loss to borrow when ``loss`` is None

    @abstractmethod
    def _n_opt(self, flops: float) -> float:
        """N_opt(C) without input checks; must not decrease as C grows."""

    def loss(self, n_params: float, n_tokens: float) -> float | None:
        """Predicted loss (nats/token) of N parameters trained on D tokens, or None."""
        _check_params(n_params)
        _check_tokens(n_tokens)
        return None

    def compute_optimal(self, flops: float) -> tuple[float, float]:
        """(N_opt, D_opt) for ``flops`` training FLOPs, with D_opt = C / (6 N_opt)."""
        _check_flops(flops)
        n = self._n_opt(float(flops))
        return n, flops / (6.0 * n)

    def optimal_loss(self, flops: float) -> float | None:
        """Loss at the compute-optimal point for ``flops`` (None without a loss form)."""
        n, d = self.compute_optimal(flops)
        return self.loss(n, d)

    def compute_for_params(self, n_params: float) -> float:
        """The compute C at which a model of ``n_params`` is compute-optimal.

        The inverse of N_opt(C), as in Hoffmann et al. (2022), Table 3 ("FLOPs ... needed
        to train compute-optimal models" of a given size); the tokens are C / (6 N).
        """
        _check_params(n_params)
        return self._invert(lambda c: self._n_opt(c), n_params)

    def compute_for_tokens(self, n_tokens: float) -> float:
        """The compute C whose compute-optimal run trains on ``n_tokens`` tokens."""
        _check_tokens(n_tokens)
        return self._invert(lambda c: c / (6.0 * self._n_opt(c)), n_tokens)

    @staticmethod
    def _invert(f, target: float) -> float:
        """C with f(C) = target for a non-decreasing f, by bisection on log C."""
        lo, hi = math.log(1e-20), math.log(1e60)
        log_target = math.log(target)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if math.log(f(math.exp(mid))) < log_target:
                lo = mid
            else:
                hi = mid
        return math.exp(0.5 * (lo + hi))

    def to_dict(self) -> dict:
        """JSON-serializable description: name, kind, source and constants."""
        out = {"kind": type(self).__name__}
        out.update(asdict(self))  # type: ignore[call-overload]
        return out


@dataclass(frozen=True)
class ParametricLaw(ScalingLaw):
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Sec. 3.3, Eq. 2).

    Compute-optimal under C = 6 N D (Hoffmann et al. 2022, Eq. 4):
    N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b, with G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta / (alpha + beta), b = alpha / (alpha + beta).

    N counts all parameters including embeddings (Hoffmann et al. 2022, Sec. 3); losses
    are nats/token on MassiveText with the Chinchilla tokenizer.
    """

    name: str
    source: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    loss_dataset: str | None = MASSIVETEXT
    loss_law: str | None = None

    @property
    def a(self) -> float:
        """Exponent of N_opt ~ C^a: beta / (alpha + beta) (Hoffmann et al. 2022, Eq. 4)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt ~ C^b: alpha / (alpha + beta) (Hoffmann et al. 2022, Eq. 4)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """G = (alpha A / (beta B))^(1 / (alpha + beta)) (Hoffmann et al. 2022, Eq. 4)."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def _n_opt(self, flops: float) -> float:
        return self.G * (flops / 6.0) ** self.a

    def loss(self, n_params: float, n_tokens: float) -> float:
        """E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Eq. 2 and Eq. 10)."""
        _check_params(n_params)
        _check_tokens(n_tokens)
        return self.E + self.A / n_params**self.alpha + self.B / n_tokens**self.beta

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update(a=self.a, b=self.b, G=self.G)
        return out


@dataclass(frozen=True)
class KaplanLaw(ScalingLaw):
    """Kaplan et al. (2020), "Scaling Laws for Neural Language Models".

    - L(N) = (N_c / N)^alpha_N, N_c = 8.8e13 non-embedding parameters, alpha_N = 0.076
      (Eq. 1.1, Table 5);
    - L(D) = (D_c / D)^alpha_D, D_c = 5.4e13 tokens, alpha_D = 0.095 (Eq. 1.2, Table 5);
    - L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D (Eq. 1.5);
    - L(C_min) = (C_c / C_min)^alpha_C, C_c = 3.1e8 PF-days, alpha_C = 0.050 (Eq. 1.3);
    - N_opt = 1.3e9 * C_min^0.73 parameters, C_min in PF-days (Sec. 1.2 after Eq. 1.8;
      Appendix A, Table 6). D_opt here is C / (6 N_opt) (C = 6 N D, Sec. 2.1), not Table 6's
      separate fit D_opt = 2e10 * C_min^0.27 tokens, so that 6 N D = C holds exactly.

    The constants are in Appendix A, Table 5; 1 PF-day = 8.64e19 FLOP (Sec. 1.3).

    N is non-embedding parameters; losses are nats/token on WebText2 with GPT-2's BPE
    tokenizer, NOT comparable with the Chinchilla family's MassiveText losses.
    """

    name: str
    source: str
    N_c: float = 8.8e13
    alpha_N: float = 0.076
    D_c: float = 5.4e13
    alpha_D: float = 0.095
    C_c_pf_days: float = 3.1e8
    alpha_C: float = 0.050
    n_opt_coefficient: float = 1.3e9
    n_opt_exponent: float = 0.73
    loss_dataset: str | None = WEBTEXT2
    loss_law: str | None = None

    def loss_params(self, n_params: float) -> float:
        """L(N) = (N_c / N)^alpha_N, data unlimited (Kaplan et al. 2020, Eq. 1.1)."""
        _check_params(n_params)
        return (self.N_c / n_params) ** self.alpha_N

    def loss_tokens(self, n_tokens: float) -> float:
        """L(D) = (D_c / D)^alpha_D, model large enough (Kaplan et al. 2020, Eq. 1.2)."""
        _check_tokens(n_tokens)
        return (self.D_c / n_tokens) ** self.alpha_D

    def loss_compute(self, flops: float) -> float:
        """L(C_min) = (C_c / C_min)^alpha_C with C in PF-days (Kaplan et al. 2020, Eq. 1.3)."""
        _check_flops(flops)
        return (self.C_c_pf_days / (flops / PF_DAY)) ** self.alpha_C

    def loss(self, n_params: float, n_tokens: float) -> float:
        """L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan et al. 2020, Eq. 1.5)."""
        _check_params(n_params)
        _check_tokens(n_tokens)
        return ((self.N_c / n_params) ** (self.alpha_N / self.alpha_D) + self.D_c / n_tokens) ** self.alpha_D

    def _n_opt(self, flops: float) -> float:
        """N_opt = 1.3e9 * (C / 1 PF-day)^0.73 (Kaplan et al. 2020, Appendix A, Table 6)."""
        return self.n_opt_coefficient * (flops / PF_DAY) ** self.n_opt_exponent


@dataclass(frozen=True)
class TokensPerParamRule(ScalingLaw):
    """A fixed number of training tokens per parameter: D = r N, so N = sqrt(C / (6 r)).

    With r = 20 this is the rule of thumb read off Hoffmann et al. (2022): Chinchilla,
    70B parameters on 1.4T tokens (Sec. 4), and Table 3 (1B -> 20.2B tokens, 10B -> 205.1B).
    It has no loss of its own: the planner borrows ``loss_law``'s L(N, D).
    """

    name: str
    source: str
    ratio: float = 20.0
    loss_dataset: str | None = None
    loss_law: str | None = "chinchilla"

    def _n_opt(self, flops: float) -> float:
        return math.sqrt(flops / (6.0 * self.ratio))


@dataclass(frozen=True)
class PowerLawAllocation(ScalingLaw):
    """N_opt = k C^a fitted to compute-optimal runs; D_opt = C / (6 N_opt).

    Used for Hoffmann et al. (2022) Approach 1 (Sec. 3.1, Table 3) and for users' own
    fits. No loss of its own: the planner borrows ``loss_law``'s L(N, D).
    """

    name: str
    source: str
    coefficient: float
    exponent: float
    loss_dataset: str | None = None
    loss_law: str | None = "chinchilla"

    def _n_opt(self, flops: float) -> float:
        return self.coefficient * flops**self.exponent


def fit_power_law(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of y = k x^a on log y = log k + a log x; returns (k, a).

    Ordinary least squares in log-log space, as Hoffmann et al. (2022, Sec. 3.1) fit
    N_opt ~ C^a. Pure Python; raises UserError for fewer than two points, unequal
    lengths, non-positive values, or all x equal.
    """
    xs, ys = list(xs), list(ys)
    if len(xs) != len(ys):
        raise UserError("x and y have different lengths", f"{len(xs)} vs {len(ys)}", "pass one y for each x")
    if len(xs) < 2:
        raise UserError("a power-law fit needs at least two points", len(xs), "pass two or more (x, y) pairs")
    for x, y in zip(xs, ys, strict=True):
        check_positive("x of a power-law fit", x)
        check_positive("y of a power-law fit", y)
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((u - mx) ** 2 for u in lx)
    if sxx == 0:
        raise UserError("all x of a power-law fit are equal", xs[0], "pass points that span a range of x")
    sxy = sum((u - mx) * (v - my) for u, v in zip(lx, ly, strict=True))
    exponent = sxy / sxx
    return math.exp(my - exponent * mx), exponent


# Hoffmann et al. (2022), Table 3 (Approach 1 projections): (parameters, FLOPs, tokens).
CHINCHILLA_TABLE3: tuple[tuple[float, float, float], ...] = (
    (400e6, 1.92e19, 8.0e9),
    (1e9, 1.21e20, 20.2e9),
    (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12),
    (175e9, 3.85e24, 3.7e12),
    (280e9, 9.90e24, 5.9e12),
    (520e9, 3.43e25, 11.0e12),
    (1e12, 1.27e26, 21.2e12),
    (10e12, 1.30e28, 216.2e12),
)


def _approach1() -> PowerLawAllocation:
    k, a = fit_power_law([row[1] for row in CHINCHILLA_TABLE3], [row[0] for row in CHINCHILLA_TABLE3])
    return PowerLawAllocation(
        name="approach1",
        source="Hoffmann et al. 2022, Sec. 3.1 (Approach 1), N_opt = k C^a fitted to Table 3; Table 2 gives a = 0.50",
        coefficient=k,
        exponent=a,
    )


CHINCHILLA = ParametricLaw(
    name="chinchilla",
    source="Hoffmann et al. 2022, Approach 3, Eq. 10 (rounded published constants) and Eq. 4",
    E=1.69,
    A=406.4,
    B=410.7,
    alpha=0.34,
    beta=0.28,
)

# The TeX source of Hoffmann et al. (2022) holds less rounded exponents than Eq. 10 prints
# (Besiroglu et al. 2024, arXiv:2404.10102 v2, abstract and Sec. 4); these values are the
# ones Pearce & Song (2024, arXiv:2406.12907, released analysis code) use as the "Chinchilla
# specification". They reproduce the paper's own Approach-3 statements that the rounded
# ones do not: a = 0.46, b = 0.54 (Table 2) and N_opt ~ 40B at Gopher's 5.76e23 FLOPs (Fig. 4).
CHINCHILLA_UNROUNDED = ParametricLaw(
    name="chinchilla-unrounded",
    source=(
        "Hoffmann et al. 2022 Approach 3 from the paper's TeX source (E=1.6934, alpha=0.3392, beta=0.2849), "
        "as discussed by Besiroglu et al. 2024 (arXiv:2404.10102) and used by Pearce & Song 2024 "
        "(arXiv:2406.12907); Eq. 4 for the optimum"
    ),
    E=1.6934,
    A=406.4,
    B=410.7,
    alpha=0.3392,
    beta=0.2849,
)

EPOCH = ParametricLaw(
    name="epoch",
    source="Besiroglu et al. 2024 (Epoch AI), arXiv:2404.10102, refit of Approach 3 (Eq. 2 form); Eq. 4 optimum",
    E=1.8172,
    A=482.01,
    B=2085.43,
    alpha=0.3478,
    beta=0.3658,
)

KAPLAN = KaplanLaw(
    name="kaplan",
    source="Kaplan et al. 2020, Eq. 1.1-1.3 and 1.5; Appendix A Tables 5-6 (N_opt = 1.3e9 C^0.73 PF-days)",
)

TWENTY_X = TokensPerParamRule(
    name="20x",
    source="Rule of thumb from Hoffmann et al. 2022 (Chinchilla 70B on 1.4T tokens, Sec. 4; Table 3): D = 20 N",
)

APPROACH1 = _approach1()

LAWS: dict[str, ScalingLaw] = {
    law.name: law for law in (CHINCHILLA, CHINCHILLA_UNROUNDED, EPOCH, TWENTY_X, APPROACH1, KAPLAN)
}


def get_law(name: str) -> ScalingLaw:
    """The law called ``name`` (case-insensitive); UserError with near names otherwise."""
    key = str(name).strip().lower()
    if key in LAWS:
        return LAWS[key]
    raise unknown_name("scaling law", name, LAWS)


def loss_of(law: ScalingLaw, n_params: float, n_tokens: float) -> tuple[float | None, str | None, str | None]:
    """(loss, name of the law that gave it, its dataset) for ``law`` at (N, D).

    A law without its own L(N, D) borrows ``law.loss_law``'s (the Chinchilla fit for the
    20x rule and Approach 1).
    """
    value = law.loss(n_params, n_tokens)
    if value is not None:
        return value, law.name, law.loss_dataset
    if law.loss_law is None:
        return None, None, None
    lender = get_law(law.loss_law)
    return lender.loss(n_params, n_tokens), lender.name, lender.loss_dataset
