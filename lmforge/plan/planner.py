"""Everything `lmforge plan` answers for a budget, law by law.

For each scaling law: the compute-optimal N and D (``allocate``), the loss it predicts,
a runnable shape of N parameters (``shapes``), the training time and cost on the
cluster (``cost.pretraining_cost``), and the memory per GPU under the least sharding
that fits (``memory.least_sharding``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lmforge.errors import UserError
from lmforge.plan.allocate import Allocation, Budget, allocate
from lmforge.plan.cost import ComputeCost, pretraining_cost
from lmforge.plan.hardware import Cluster, get_gpu
from lmforge.plan.laws import ScalingLaw
from lmforge.plan.memory import TrainingMemory, least_sharding, training_memory, zero3_gpus_needed
from lmforge.plan.shapes import shape_for_params
from lmforge.plan.specs import ModelSpec

DEFAULT_CLUSTER = Cluster(get_gpu("H100-SXM"), 8)  # one node, when the budget names no GPUs
PLAN_TRAINING = dict(micro_batch=1, precision="bf16", optimizer="adamw", recompute="selective")


@dataclass(frozen=True)
class PlanRow:
    """One law's plan: the allocation, a shape for it, time, cost and memory."""

    allocation: Allocation
    shape: ModelSpec | None  # None when no shape is possible (see ``shape_note``)
    cost: ComputeCost
    strategy: str | None  # least sharding that fits on the cluster; None: none fits
    memory: TrainingMemory | None  # per GPU under ``strategy``
    zero3_gpus_needed: int | None  # when nothing fits: fewest such GPUs for zero3
    shape_note: str | None = None  # why there is no shape (and so no memory figure)

    def to_dict(self) -> dict:
        return {
            **self.allocation.to_dict(),
            "shape": None if self.shape is None else {
                "n_layers": self.shape.n_decoder_layers, "d_model": self.shape.d_model,
                "n_heads": self.shape.n_heads, "d_ff": self.shape.ffn, "context": self.shape.context},
            "shape_note": self.shape_note,
            "cost": self.cost.to_dict(),
            "strategy": self.strategy,
            "memory_per_gpu_bytes": None if self.memory is None else self.memory.total,
            "zero3_gpus_needed": self.zero3_gpus_needed,
        }


@dataclass(frozen=True)
class Plan:
    budget: Budget
    cluster: Cluster
    cluster_assumed: bool
    mfu: float
    price_per_hour: float | None
    rows: tuple[PlanRow, ...]

    def to_dict(self) -> dict:
        return {
            "budget": self.budget.to_dict(),
            "cluster": {**self.cluster.to_dict(), "assumed": self.cluster_assumed},
            "mfu": self.mfu,
            "training": PLAN_TRAINING,
            "laws": [row.to_dict() for row in self.rows],
        }


def _row(allocation: Allocation, cluster: Cluster, mfu: float, price: float | None) -> PlanRow:
    cost = pretraining_cost(allocation.flops, cluster, mfu, price)
    try:
        shape = shape_for_params(allocation.n_params)
    except UserError as exc:  # e.g. fewer parameters than a 32k-token vocabulary needs
        return PlanRow(allocation, None, cost, None, None, None, shape_note=str(exc))
    capacity = cluster.gpu.memory_bytes
    strategy = least_sharding(shape, capacity, n_gpus=cluster.count, **PLAN_TRAINING)
    memory = needed = None
    if strategy is not None:
        memory = training_memory(shape, strategy=strategy.split("+")[0], n_gpus=cluster.count,
                                 offload_optimizer=strategy.endswith("offload"), **PLAN_TRAINING)
    else:
        needed = zero3_gpus_needed(shape, capacity, **PLAN_TRAINING)
    return PlanRow(allocation, shape, cost, strategy, memory, needed)


def make_plan(budget: Budget, laws: list[str] | None = None, *, extra_laws: Sequence[ScalingLaw] = ()) -> Plan:
    """The plan for ``budget`` under ``laws`` (default: every law in ``laws.LAWS``), then
    under each of ``extra_laws`` (e.g. the user's ``FittedLaw`` from ``law.json``).

    Time, cost and memory use the budget's cluster, or one node of 8 H100-SXM when the
    budget names none (``cluster_assumed``). Memory assumes a micro-batch of one
    sequence of 2,048 tokens, bf16 mixed precision, AdamW and selective recomputation.
    """
    cluster = budget.cluster or DEFAULT_CLUSTER
    rows = tuple(_row(a, cluster, budget.mfu, budget.price_per_hour)
                 for a in allocate(budget, laws, extra_laws=extra_laws))
    return Plan(budget, cluster, budget.cluster is None, budget.mfu, budget.price_per_hour, rows)

