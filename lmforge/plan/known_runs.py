"""Published pretraining runs, and how each scaling law judges their split of compute.

For each run: C = 6 N D (Kaplan et al. 2020, Sec. 2.1), each law's compute-optimal
(N, D) for that C, the tokens per parameter actually used vs the law's, how under-trained
the run is (optimal tokens / actual tokens; > 1 means fewer tokens than optimal), and
the loss each law predicts for the actual (N, D). Chinchilla Approach 3 with the rounded
published constants (Hoffmann et al. 2022, Eq. 10) is the main law.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lmforge.errors import UserError
from lmforge.plan.laws import LAWS, ScalingLaw, get_law, loss_of

# The headline law of `plan --compare`: the 20 tokens/parameter rule. Chinchilla's
# rounded Eq. 10 constants would call Chinchilla itself 2.15x under-trained, an artefact
# of the rounding (Besiroglu et al. 2024); every law is still compared side by side.
MAIN_LAW = "20x"
TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022: Chinchilla, 70B parameters on 1.4T tokens (Sec. 4.1)


@dataclass(frozen=True)
class KnownRun:
    """A published pretraining run: total parameters and training tokens, with the source."""

    name: str
    n_params: float
    n_tokens: float
    source: str

    @property
    def flops(self) -> float:
        """C = 6 N D (Kaplan et al. 2020, Sec. 2.1)."""
        return 6.0 * self.n_params * self.n_tokens

    def to_dict(self) -> dict:
        return {"name": self.name, "n_params": self.n_params, "n_tokens": self.n_tokens, "source": self.source}


KNOWN_RUNS: tuple[KnownRun, ...] = (
    KnownRun("Chinchilla", 70e9, 1.4e12, "Hoffmann et al. 2022, arXiv:2203.15556, Table 1 and Sec. 4.1"),
    KnownRun("LLaMA-65B", 65.2e9, 1.4e12, "Touvron et al. 2023, arXiv:2302.13971, Table 2 (65.2B params, 1.4T tokens)"),
    KnownRun("GPT-3", 175e9, 300e9, "Brown et al. 2020, arXiv:2005.14165, Sec. 2.2 and Table D.1 (300B tokens)"),
    KnownRun("OPT-175B", 175e9, 180e9, "Zhang et al. 2022, arXiv:2205.01068, pre-training corpus of about 180B tokens"),
    KnownRun("BLOOM-176B", 176e9, 366e9, "BigScience (Le Scao et al. 2022), arXiv:2211.05100: 176B, 366B tokens"),
    KnownRun("BloombergGPT", 50.6e9, 569e9, "Wu et al. 2023, arXiv:2303.17564: 50.6B params trained on 569B tokens"),
)


@dataclass(frozen=True)
class LawVerdict:
    """One law's view of one run at the run's own compute."""

    law: str
    optimal_n_params: float
    optimal_n_tokens: float
    optimal_tokens_per_param: float
    undertrained: float  # optimal tokens / actual tokens (> 1: trained on too few tokens)
    oversized: float  # actual N / optimal N (> 1: model larger than optimal)
    predicted_loss: float | None  # for the actual (N, D), nats/token on loss_dataset
    loss_law: str | None
    loss_dataset: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class KnownRunComparison:
    """A known run against every law; ``main`` is the Chinchilla (rounded) verdict."""

    run: str
    n_params: float
    n_tokens: float
    flops: float
    tokens_per_param: float
    source: str
    verdicts: tuple[LawVerdict, ...]
    main_law: str = MAIN_LAW

    @property
    def twenty_x_tokens(self) -> float:
        """Compute-optimal tokens for the run's OWN size by the rule of thumb: D = 20 N
        (Hoffmann et al. 2022, Sec. 4.1 and Table 3: Chinchilla 70B on 1.4T tokens). Unlike
        the verdicts, which split the run's compute C = 6 N D anew, this keeps N fixed."""
        return TOKENS_PER_PARAM * self.n_params

    @property
    def main(self) -> LawVerdict | None:
        """The verdict of ``main_law`` (None if that law was not compared)."""
        return next((v for v in self.verdicts if v.law == self.main_law), None)

    def verdict(self, law: str) -> LawVerdict:
        """The verdict of ``law``; UserError if it was not compared."""
        for v in self.verdicts:
            if v.law == law:
                return v
        raise UserError("law not in this comparison", law, "choose one of " + ", ".join(v.law for v in self.verdicts))

    def to_dict(self) -> dict:
        return {
            "run": self.run,
            "n_params": self.n_params,
            "n_tokens": self.n_tokens,
            "flops": self.flops,
            "tokens_per_param": self.tokens_per_param,
            "twenty_x_tokens": self.twenty_x_tokens,
            "source": self.source,
            "main_law": self.main_law,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


def _verdict(run: KnownRun, name: str | ScalingLaw) -> LawVerdict:
    law = name if isinstance(name, ScalingLaw) else get_law(name)
    n_opt, d_opt = law.compute_optimal(run.flops)
    loss, loss_law, dataset = loss_of(law, run.n_params, run.n_tokens)
    return LawVerdict(
        law=law.name,
        optimal_n_params=n_opt,
        optimal_n_tokens=d_opt,
        optimal_tokens_per_param=d_opt / n_opt,
        undertrained=d_opt / run.n_tokens,
        oversized=run.n_params / n_opt,
        predicted_loss=loss,
        loss_law=loss_law,
        loss_dataset=dataset,
    )


def compare_known(laws: list[str] | None = None, runs: tuple[KnownRun, ...] = KNOWN_RUNS, *,
                  extra_laws: tuple[ScalingLaw, ...] = ()) -> list[KnownRunComparison]:
    """Every run in ``runs`` judged by every law in ``laws`` (default: all of LAWS), then
    by each of ``extra_laws`` (law objects, e.g. the user's fitted law).

    At each run's own C = 6 N D, a law's compute-optimal (N_opt, D_opt) gives
    ``undertrained`` = D_opt / D and ``oversized`` = N / N_opt (equal to each other, since
    both splits spend the same C). Losses: see ``laws.loss_of`` (Kaplan's is on WebText2).
    """
    names: list[str | ScalingLaw] = list(LAWS) if laws is None else [get_law(n).name for n in laws]
    names += list(extra_laws)
    return [
        KnownRunComparison(
            run=run.name,
            n_params=run.n_params,
            n_tokens=run.n_tokens,
            flops=run.flops,
            tokens_per_param=run.n_tokens / run.n_params,
            source=run.source,
            verdicts=tuple(_verdict(run, name) for name in names),
        )
        for run in runs
    ]
