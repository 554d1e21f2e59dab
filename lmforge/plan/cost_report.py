"""Everything `lmforge cost` answers for one model on one kind of GPU.

Pretraining (``cost.pretraining_cost_for``, 6ND), fine-tuning full and LoRA
(``cost.tuning_cost``), inference at batch 1 and a larger batch
(``serving.inference_cost``) and hosting per month (``serving.hosting_cost``).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.plan.allocate import TOKENS_PER_PARAM
from lmforge.plan.cost import ComputeCost, TuningCost, pretraining_cost_for, tuning_cost
from lmforge.plan.hardware import parse_cluster
from lmforge.plan.resolve import ResolvedModel
from lmforge.plan.serving import HostingCost, InferenceCost, hosting_cost, inference_cost
from lmforge.plan.specs import param_counts
from lmforge.plan.units import parse_count


@dataclass(frozen=True)
class CostReport:
    model: str
    note: str | None
    n_params: int
    tokens_assumed: bool  # True: pretraining tokens = 20 per parameter
    pretraining: ComputeCost
    tuning: tuple[TuningCost, ...]  # full, LoRA
    inference: tuple[InferenceCost, ...]  # batch 1, then the larger batch
    hosting: HostingCost

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "note": self.note,
            "n_params": self.n_params,
            "tokens_assumed": self.tokens_assumed,
            "pretraining": self.pretraining.to_dict(),
            "tuning": [t.to_dict() for t in self.tuning],
            "inference": [i.to_dict() for i in self.inference],
            "hosting": self.hosting.to_dict(),
        }


def cost_report(
    model: ResolvedModel,
    *,
    tokens: str | float | None = None,
    gpus: str = "8xH100",
    mfu: float = 0.4,
    price_per_hour: float | None = None,
    tune_tokens: str | float = 1e9,
    lora_rank: int = 16,
    batch: int = 8,
    prompt_tokens: int = 512,
    new_tokens: int = 256,
    precision: str = "bf16",
) -> CostReport:
    """All four costs; ``tokens`` defaults to 20 per parameter (Hoffmann et al. 2022)."""
    spec = model.spec
    n_params = param_counts(spec).total
    cluster = parse_cluster(gpus)
    n_tokens = TOKENS_PER_PARAM * n_params if tokens is None else parse_count(tokens, "--tokens", upper=1e18)
    tune = parse_count(tune_tokens, "--tune-tokens", upper=1e18)
    generated = new_tokens if spec.has_decoder else 0
    serve = dict(prompt_tokens=prompt_tokens, new_tokens=generated, precision=precision, mfu=mfu,
                 price_per_hour=price_per_hour)
    inference = [inference_cost(spec, cluster.gpu, batch=1, **serve)]
    if batch != 1:
        inference.append(inference_cost(spec, cluster.gpu, batch=batch, **serve))
    return CostReport(
        model=model.name,
        note=model.note,
        n_params=n_params,
        tokens_assumed=tokens is None,
        pretraining=pretraining_cost_for(n_params, n_tokens, cluster, mfu, price_per_hour),
        tuning=tuple(
            tuning_cost(spec, tune, cluster, method=method, lora_rank=lora_rank, mfu=mfu, price_per_hour=price_per_hour)
            for method in ("full", "lora")
        ),
        inference=tuple(inference),
        hosting=hosting_cost(spec, cluster.gpu, precision=precision, batch=batch, price_per_hour=price_per_hour),
    )
