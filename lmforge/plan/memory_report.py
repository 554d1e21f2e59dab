"""Everything `lmforge memory` answers, gathered in one result.

Storing (weights at each precision and the KV cache, ``storage``), training per GPU
under every strategy (``memory.compare_strategies``), whether it fits the GPU, the
least sharding that fits (``memory.least_sharding``), how many GPUs zero3 would need
otherwise, and the rule of thumb beside the accounted figure (``memory.rule_of_thumb``).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.plan.memory import (
    RuleOfThumb,
    TrainingMemory,
    compare_strategies,
    least_sharding,
    rule_of_thumb,
    training_memory,
    zero3_gpus_needed,
)
from lmforge.plan.resolve import ResolvedGPUs, ResolvedModel
from lmforge.plan.specs import ParamCounts, param_counts
from lmforge.plan.storage import PRECISION_BYTES, kv_cache_bytes, weight_bytes


@dataclass(frozen=True)
class StorageRow:
    precision: str
    bytes: int
    bytes_per_param: float


@dataclass(frozen=True)
class MemoryReport:
    """The answer of `lmforge memory` (bytes are integers)."""

    model: str
    note: str | None
    counts: ParamCounts
    storage: tuple[StorageRow, ...]
    group_size: int
    kv_cache_per_token: int  # one sequence, one token, at kv precision
    kv_cache: int  # kv_batch sequences of kv_context tokens
    kv_batch: int
    kv_context: int
    strategies: tuple[TrainingMemory, ...]
    gpus: str
    n_gpus: int
    capacity_bytes: int | None
    least_sharding: str | None  # None: nothing fits on n_gpus (or no capacity given)
    least_sharding_memory: TrainingMemory | None
    zero3_gpus_needed: int | None  # fewest GPUs of this capacity for zero3, when it does not fit
    # When nothing fits and recompute is not already "full": the same two answers with
    # full activation recomputation, the usual remedy when activations overflow a GPU.
    least_sharding_full_recompute: str | None
    zero3_gpus_needed_full_recompute: int | None
    rule: RuleOfThumb

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "note": self.note,
            "params": self.counts.to_dict(),
            "storage": [{"precision": r.precision, "bytes": r.bytes, "bytes_per_param": r.bytes_per_param}
                        for r in self.storage],
            "group_size": self.group_size,
            "kv_cache": {"per_token_bytes": self.kv_cache_per_token, "bytes": self.kv_cache,
                         "batch": self.kv_batch, "context": self.kv_context},
            "training_per_gpu": [m.to_dict() for m in self.strategies],
            "gpus": self.gpus,
            "n_gpus": self.n_gpus,
            "capacity_bytes": self.capacity_bytes,
            "fits": {m.strategy: m.fits(self.capacity_bytes) for m in self.strategies} if self.capacity_bytes else None,
            "least_sharding": self.least_sharding,
            "zero3_gpus_needed": self.zero3_gpus_needed,
            "least_sharding_full_recompute": self.least_sharding_full_recompute,
            "zero3_gpus_needed_full_recompute": self.zero3_gpus_needed_full_recompute,
            "rule_of_thumb": self.rule.to_dict(),
        }


def _fit(spec, gpus: ResolvedGPUs, offload: bool, train_kwargs: dict) -> tuple[str | None, int | None]:
    """(least sharding that fits on the GPUs, or None; if None, the GPUs zero3 needs)."""
    least = least_sharding(spec, gpus.capacity_bytes, n_gpus=gpus.count, **train_kwargs)
    if least is not None:
        return least, None
    return None, zero3_gpus_needed(spec, gpus.capacity_bytes, offload_optimizer=offload, **train_kwargs)


def memory_report(
    model: ResolvedModel,
    gpus: ResolvedGPUs,
    *,
    micro_batch: int = 1,
    seq_len: int | None = None,
    precision: str = "bf16",
    optimizer: str = "adamw",
    recompute: str = "selective",
    offload_optimizer: bool = False,
    recipe: str = "master",
    group_size: int = 128,
    kv_batch: int = 1,
    kv_context: int | None = None,
) -> MemoryReport:
    """Build the full memory answer for ``model`` on ``gpus``."""
    spec = model.spec
    counts = param_counts(spec)
    storage = tuple(
        StorageRow(p, b := weight_bytes(spec, p, group_size=group_size), b / counts.total) for p in PRECISION_BYTES
    )
    kv_context = spec.context if kv_context is None else kv_context
    has_cache = spec.has_decoder
    per_token = kv_cache_bytes(spec, 1, 1, "bf16", source_len=1) if has_cache else 0
    kv_total = kv_cache_bytes(spec, kv_batch, kv_context, "bf16", source_len=kv_context) if has_cache else 0
    train_kwargs = dict(micro_batch=micro_batch, seq_len=seq_len, precision=precision, optimizer=optimizer,
                        recompute=recompute, recipe=recipe)
    strategies = tuple(compare_strategies(spec, n_gpus=gpus.count, offload_optimizer=offload_optimizer,
                                          **train_kwargs))
    least = least_mem = needed = least_full = needed_full = None
    if gpus.capacity_bytes is not None:
        least, needed = _fit(spec, gpus, offload_optimizer, train_kwargs)
        if least is not None:
            strategy, offload = least.split("+")[0], least.endswith("offload")
            least_mem = training_memory(spec, strategy=strategy, n_gpus=gpus.count, offload_optimizer=offload,
                                        **train_kwargs)
        elif recompute != "full":
            least_full, needed_full = _fit(spec, gpus, offload_optimizer, {**train_kwargs, "recompute": "full"})
    return MemoryReport(
        model=model.name,
        note=model.note,
        counts=counts,
        storage=storage,
        group_size=group_size,
        kv_cache_per_token=per_token,
        kv_cache=kv_total,
        kv_batch=kv_batch,
        kv_context=kv_context,
        strategies=strategies,
        gpus=gpus.label,
        n_gpus=gpus.count,
        capacity_bytes=gpus.capacity_bytes,
        least_sharding=least,
        least_sharding_memory=least_mem,
        zero3_gpus_needed=needed,
        least_sharding_full_recompute=least_full,
        zero3_gpus_needed_full_recompute=needed_full,
        rule=rule_of_thumb(counts.total, strategies[0]),
    )
