"""Memory to train a model, per GPU under each sharding strategy.

Bytes are integers for a ``ModelSpec`` (exact counts of its tensors) and floats for a
bare parameter count (approximate; linear in the count). Storing a model (weights at a
precision, KV cache) is ``lmforge.plan.storage``. Sources:

- model states: mixed-precision Adam 2 + 2 + K = 16 bytes/param with K = 12 (fp32
  master weights, momentum, variance) (Rajbhandari et al. 2020, ZeRO, Sec. 3.1), and
  their sharding over N_d GPUs (ZeRO Sec. 5 and Figure 1): DDP 16P, stage 1 4P + 12P/N_d,
  stage 2 2P + 14P/N_d, stage 3 16P/N_d;
- activations: Korthikanti et al. 2022, Table 2 (``lmforge.plan.activations``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from lmforge.errors import UserError, check_choice, check_positive, check_whole
from lmforge.plan.activations import ACTIVATION_BYTES, RECOMPUTE, ActivationBytes, activation_bytes
from lmforge.plan.specs import ModelSpec, layer_params, param_counts
from lmforge.plan.storage import MAX_PARAMS, weight_bytes_for_params

TRAIN_PRECISIONS: tuple[str, ...] = tuple(ACTIVATION_BYTES)  # fp32, bf16, fp16
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd", "adam8bit")
STRATEGIES: tuple[str, ...] = ("single", "ddp", "zero1", "zero2", "zero3")
ZERO3_OFFLOAD = "zero3+offload"  # the last resort least_sharding names
ADAM8BIT_BLOCK = 2048  # bitsandbytes block size for 8-bit optimizer states (Dettmers et al. 2022)
ZERO3_GATHERED_UNITS = 2  # layers whose full weights zero3 holds at once (current + prefetched)
MARGIN_FRACTION = 0.10
MARGIN_FIXED_BYTES = 2**30  # CUDA context (~0.3-0.6 GB), cuBLAS workspaces, NCCL buffers
_MAX_GPUS = 10**7
_STATES = ("weights", "gradients", "optimizer_states", "master_weights")
# What each strategy shards over the data-parallel GPUs (ZeRO Sec. 5.1-5.3).
_SHARDED: dict[str, tuple[str, ...]] = {
    "single": (),
    "ddp": (),
    "zero1": ("optimizer_states", "master_weights"),
    "zero2": ("optimizer_states", "master_weights", "gradients"),
    "zero3": ("optimizer_states", "master_weights", "gradients", "weights"),
}
# Two ways to train in mixed precision (``recipe``):
#  master:   16-bit weights and gradients plus an fp32 master copy (ZeRO Sec. 3.1; DeepSpeed, Megatron);
#  autocast: fp32 weights (they are the master) and fp32 gradients, 16-bit copies made for compute
#            (torch.autocast; FSDP2's MixedPrecisionPolicy with reduce_dtype fp32): what lmforge train does.
RECIPES: tuple[str, ...] = ("master", "autocast")
# What FSDP2 / ZeroRedundancyOptimizer shard under the autocast recipe: FSDP2 shards the
# fp32 parameters at rest in both zero2 (reshard_after_forward=False) and zero3.
_SHARDED_AUTOCAST: dict[str, tuple[str, ...]] = {
    "single": (),
    "ddp": (),
    "zero1": ("optimizer_states",),
    "zero2": ("optimizer_states", "gradients", "weights"),
    "zero3": ("optimizer_states", "gradients", "weights"),
}


# ---- training: bytes per parameter ----------------------------------------------------


@dataclass(frozen=True)
class BytesPerParam:
    """Bytes per parameter of each model state, before any sharding."""

    precision: str
    optimizer: str
    weights: float
    gradients: float
    optimizer_states: float
    master_weights: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer_states + self.master_weights

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def training_bytes_per_param(precision: str = "bf16", optimizer: str = "adamw") -> BytesPerParam:
    """Bytes per parameter for weights, gradients, optimizer states and master weights.

    precision "fp32": 4-byte weights and gradients, no master copy. "bf16"/"fp16" (mixed
    precision, ZeRO Sec. 3.1): 2-byte weights and gradients plus a 4-byte fp32 master copy.
    Optimizer states (fp32 unless said): "adamw" momentum + variance 8; "sgd" (with
    momentum) 4; "adam8bit" (bitsandbytes, Dettmers et al. 2022, "8-bit Optimizers via
    Block-wise Quantization") 1 + 1 for the int8 momentum and variance plus one fp32
    absmax per block of 2048 values for each: 2 + 8/2048 bytes. bitsandbytes keeps 32-bit
    states for tensors under 4096 elements (norms, biases; well under 1% of a model) and
    a 256-entry quantile map per state; both are neglected.

    Mixed AdamW: 2 + 2 + (4 + 8) = 16 bytes/param, K = 12 (ZeRO Sec. 3.1).
    """
    check_choice("training precision", precision, TRAIN_PRECISIONS)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    mixed = precision != "fp32"
    states = {"adamw": 8.0, "sgd": 4.0, "adam8bit": 2.0 + 8.0 / ADAM8BIT_BLOCK}[optimizer]
    width = 2.0 if mixed else 4.0
    return BytesPerParam(precision, optimizer, width, width, states, 4.0 if mixed else 0.0)


def _full_state_bytes(n_params: int, precision: str, optimizer: str, recipe: str = "master") -> dict[str, int]:
    """Exact unsharded bytes of each model state for an integer parameter count (the
    autocast recipe keeps fp32 weights and gradients and no master copy)."""
    per = training_bytes_per_param(precision if recipe == "master" else "fp32", optimizer)
    states = (
        2 * n_params + 8 * -(-n_params // ADAM8BIT_BLOCK)
        if optimizer == "adam8bit"
        else int(per.optimizer_states) * n_params
    )
    return {
        "weights": int(per.weights) * n_params,
        "gradients": int(per.gradients) * n_params,
        "optimizer_states": states,
        "master_weights": int(per.master_weights) * n_params,
    }


def _check_strategy(strategy: str, n_gpus: int, offload_optimizer: bool) -> None:
    check_choice("strategy", strategy, STRATEGIES)
    check_whole("n_gpus", n_gpus, upper=_MAX_GPUS)
    if not isinstance(offload_optimizer, bool):
        raise UserError("offload_optimizer must be true or false", offload_optimizer, "pass True or False")
    if strategy == "single" and n_gpus != 1:
        raise UserError("strategy single runs on one GPU", n_gpus, "use ddp or zero1/zero2/zero3 for several GPUs")
    if offload_optimizer and strategy in ("single", "ddp"):
        raise UserError(
            "optimizer offload is part of ZeRO (ZeRO-Offload)",
            strategy,
            "use zero1, zero2 or zero3 (one GPU works too)",
        )


def _place(full: dict[str, Any], strategy: str, n_gpus: int, offload: bool, exact: bool,
           recipe: str = "master") -> tuple[dict, Any]:
    """Per-GPU bytes of each state and the CPU bytes per GPU process (ZeRO Sec. 5: a
    sharded state is split into N equal partitions, padded; ZeRO-Offload, Ren et al.
    2021: optimizer states and fp32 master weights live in CPU memory, still sharded)."""
    sharded = (_SHARDED if recipe == "master" else _SHARDED_AUTOCAST)[strategy]
    gpu = {}
    for name in _STATES:
        value = full[name]
        if name in sharded:
            value = -(-value // n_gpus) if exact else value / n_gpus
        gpu[name] = value
    cpu = 0 if exact else 0.0
    if offload:
        for name in ("optimizer_states", "master_weights") if recipe == "master" else ("optimizer_states",):
            cpu += gpu[name]
            gpu[name] = 0 if exact else 0.0
    return gpu, cpu


def reduction_limit(strategy: str, precision: str = "bf16", optimizer: str = "adamw",
                    recipe: str = "master") -> float | None:
    """DDP model-state bytes over this strategy's per-GPU bytes as N_d grows without
    bound (ZeRO Sec. 5, Figure 1): stage 1 -> total / (weights + gradients), 4x for mixed
    AdamW; stage 2 -> total / weights, 8x; stage 3 -> None (unbounded: N_d x, linear).
    single/ddp: 1. Offloading the optimizer does not change these limits. The autocast
    recipe: stage 1 -> 16 / (4 + 4) = 2x; stages 2 and 3 shard everything (None).
    """
    check_choice("strategy", strategy, STRATEGIES)
    per = training_bytes_per_param(precision if recipe == "master" else "fp32", optimizer)
    if strategy in ("single", "ddp"):
        return 1.0
    if recipe == "autocast":
        return per.total / (per.weights + per.gradients) if strategy == "zero1" else None
    if strategy == "zero1":
        return per.total / (per.weights + per.gradients)
    if strategy == "zero2":
        return per.total / per.weights
    return None


@dataclass(frozen=True)
class ModelStateBytes:
    """Model-state bytes per GPU for a bare parameter count (floats; ZeRO Figure 1)."""

    n_params: float
    strategy: str
    n_gpus: int
    precision: str
    optimizer: str
    offload_optimizer: bool
    weights: float
    gradients: float
    optimizer_states: float
    master_weights: float
    total: float  # on each GPU
    cpu_offload: float  # in CPU memory, per GPU process
    reduction_vs_ddp: float
    reduction_limit: float | None  # None: grows linearly with n_gpus (zero3)

    def to_dict(self) -> dict:
        return asdict(self)


def model_state_bytes_per_gpu(
    n_params: float,
    strategy: str,
    n_gpus: int,
    precision: str = "bf16",
    optimizer: str = "adamw",
    offload_optimizer: bool = False,
) -> ModelStateBytes:
    """Per-GPU bytes of weights, gradients, optimizer states and master weights for
    ``n_params`` parameters (Rajbhandari et al. 2020, ZeRO, Sec. 5 and Figure 1).

    Stage 1 shards the optimizer states (fp32 master weights included), stage 2 also the
    gradients, stage 3 also the 16-bit weights; with mixed AdamW (K = 12) that is DDP 16P,
    stage 1 4P + 12P/N, stage 2 2P + 14P/N, stage 3 16P/N. Figure 1 (P = 7.5B, N = 64):
    120, 31.4, 16.6, 1.9 GB. Linear in ``n_params``.
    """
    check_positive("parameter count", n_params, upper=MAX_PARAMS)
    _check_strategy(strategy, n_gpus, offload_optimizer)
    per = training_bytes_per_param(precision, optimizer)
    full = {name: getattr(per, name) * n_params for name in _STATES}
    gpu, cpu = _place(full, strategy, n_gpus, offload_optimizer, exact=False)
    total = sum(gpu.values())
    return ModelStateBytes(
        n_params=float(n_params),
        strategy=strategy,
        n_gpus=n_gpus,
        precision=precision,
        optimizer=optimizer,
        offload_optimizer=offload_optimizer,
        **gpu,
        total=total,
        cpu_offload=cpu,
        reduction_vs_ddp=sum(full.values()) / total,
        reduction_limit=reduction_limit(strategy, precision, optimizer),
    )


# ---- training a spec ------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes (integers) on each GPU for one training step of a spec, and its inputs.

    ``total`` = weights + gradients + optimizer_states + master_weights + activations +
    gathered_params + margin, all on one GPU; ``cpu_offload`` is host memory per GPU
    process. ``reduction_vs_ddp`` is DDP's model-state bytes over this strategy's.
    """

    n_params: int
    strategy: str
    n_gpus: int
    precision: str
    optimizer: str
    recompute: str
    micro_batch: int
    seq_len: int
    source_len: int
    offload_optimizer: bool
    margin_fraction: float
    margin_fixed_bytes: int
    weights: int
    gradients: int
    optimizer_states: int
    master_weights: int
    activations: int
    gathered_params: int  # zero3: full weights of the largest units being gathered
    margin: int
    total: int
    cpu_offload: int
    reduction_vs_ddp: float
    reduction_limit: float | None  # None: grows linearly with n_gpus (zero3)
    activation_detail: ActivationBytes
    recipe: str = "master"  # "autocast": fp32 weights and gradients, no master copy (lmforge train)

    @property
    def model_states(self) -> int:
        """Weights + gradients + optimizer states + master weights on this GPU."""
        return self.weights + self.gradients + self.optimizer_states + self.master_weights

    def fits(self, capacity_bytes: int) -> bool:
        return self.total <= capacity_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "model_states": self.model_states}


def _gathered_bytes(spec: ModelSpec, weight_width: int) -> int:
    """zero3's transient buffer: the 16-bit (or fp32) weights of the
    ``ZERO3_GATHERED_UNITS`` largest units (a layer, the token embedding, an untied
    output head) all-gathered at once: the one computing and the one prefetched
    (DeepSpeed's prefetch bucket, FSDP's forward/backward prefetch)."""
    counts = param_counts(spec)
    cross = spec.family == "encoder-decoder"
    units = [layer_params(spec)] * spec.n_encoder_layers
    units += [layer_params(spec, cross_attention=cross)] * spec.n_decoder_layers
    units += [counts.token_embedding, counts.output_head]
    return weight_width * sum(sorted(units, reverse=True)[:ZERO3_GATHERED_UNITS])


def training_memory(
    spec: ModelSpec,
    *,
    micro_batch: int = 1,
    seq_len: int | None = None,
    precision: str = "bf16",
    optimizer: str = "adamw",
    recompute: str = "none",
    strategy: str = "ddp",
    n_gpus: int = 1,
    offload_optimizer: bool = False,
    margin_fraction: float = MARGIN_FRACTION,
    source_len: int | None = None,
    margin_fixed_bytes: int = MARGIN_FIXED_BYTES,
    recipe: str = "master",
) -> TrainingMemory:
    """Bytes on each GPU to train ``spec`` with a per-GPU ``micro_batch`` of ``seq_len``.

    Model states: ``training_bytes_per_param`` x the exact parameter count, sharded as
    in ZeRO Sec. 5 (``model_state_bytes_per_gpu``); ``offload_optimizer`` moves the
    optimizer states and master weights to CPU (ZeRO-Offload, Ren et al. 2021; real
    ZeRO-Offload also moves the gradient partition to the CPU under stages 2 and 3: we
    keep it on the GPU, an upper bound). Activations are not sharded
    (``lmforge.plan.activations``, Korthikanti et al. 2022, Table 2). zero3 on several
    GPUs adds the gathered weights of the two largest units (``_gathered_bytes``).
    The margin is ``margin_fraction`` of all that plus ``margin_fixed_bytes`` (default
    10% + 1 GiB) for temporary buffers (gradient buckets, the loss's backward copy),
    the CUDA context and allocator fragmentation: an estimate, not a measurement.
    ``seq_len`` (default: the context) is the decoder length; ``source_len`` the
    encoder length of an encoder-decoder (default: seq_len).

    ``recipe="autocast"`` is lmforge's own training (``lmforge train``, FSDP2): fp32
    weights 4 + fp32 gradients 4 + AdamW 8 = 16 bytes/param, no master copy; zero1 shards
    the optimizer states, zero2 and zero3 also the weights and gradients (FSDP2 keeps
    the fp32 parameters sharded at rest), and on several GPUs the 16-bit (fp32 when
    ``precision="fp32"``) gathered weights are added: all of them under zero2 (kept from
    forward to backward), the two largest units under zero3. Sharded bytes are
    ceil(total / N); FSDP2 pads each tensor's first dimension to a multiple of N, so a
    rank may hold up to one row per tensor more.
    """
    check_choice("recipe", recipe, RECIPES)
    _check_strategy(strategy, n_gpus, offload_optimizer)
    check_choice("training precision", precision, TRAIN_PRECISIONS)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("recompute", recompute, RECOMPUTE)
    check_positive("margin_fraction", margin_fraction, allow_zero=True, upper=1.0)
    check_positive("margin_fixed_bytes", margin_fixed_bytes, allow_zero=True, upper=1e13)
    act = activation_bytes(
        spec, micro_batch=micro_batch, seq_len=seq_len, precision=precision, recompute=recompute, source_len=source_len
    )
    n_params = param_counts(spec).total
    full = _full_state_bytes(n_params, precision, optimizer, recipe)
    gpu, cpu = _place(full, strategy, n_gpus, offload_optimizer, exact=True, recipe=recipe)
    width = int(training_bytes_per_param(precision, optimizer).weights)
    gathered = _gathered_bytes(spec, width) if strategy == "zero3" and n_gpus > 1 else 0
    if recipe == "autocast" and strategy == "zero2" and n_gpus > 1:
        gathered = width * n_params
    subtotal = sum(gpu.values()) + act.total + gathered
    margin = math.ceil(margin_fraction * subtotal) + int(margin_fixed_bytes)
    return TrainingMemory(
        n_params=n_params,
        strategy=strategy,
        n_gpus=n_gpus,
        precision=precision,
        optimizer=optimizer,
        recompute=recompute,
        micro_batch=act.micro_batch,
        seq_len=act.seq_len,
        source_len=act.source_len,
        offload_optimizer=offload_optimizer,
        margin_fraction=float(margin_fraction),
        margin_fixed_bytes=int(margin_fixed_bytes),
        **gpu,
        activations=act.total,
        gathered_params=gathered,
        margin=margin,
        total=subtotal + margin,
        cpu_offload=cpu,
        reduction_vs_ddp=sum(full.values()) / sum(gpu.values()),
        reduction_limit=reduction_limit(strategy, precision, optimizer, recipe),
        activation_detail=act,
        recipe=recipe,
    )


def _no_strategy(kwargs: dict) -> None:
    for key in ("strategy", "offload_optimizer"):
        if key in kwargs:
            raise TypeError(f"{key} is chosen by this function; do not pass it")


def compare_strategies(
    spec: ModelSpec, *, n_gpus: int, offload_optimizer: bool = False, **kwargs: Any
) -> list[TrainingMemory]:
    """``training_memory`` under each strategy on ``n_gpus`` GPUs: ddp (``single`` when
    n_gpus == 1), zero1, zero2, zero3. ``offload_optimizer`` applies to the ZeRO stages
    only (ddp cannot offload). ``kwargs``: the other ``training_memory`` arguments.
    Each result carries ``reduction_vs_ddp`` and its limit as N grows (ZeRO Figure 1:
    up to 4x for stage 1, 8x for stage 2, linear in N for stage 3, mixed AdamW).
    """
    _no_strategy(kwargs)
    first = "single" if n_gpus == 1 else "ddp"
    out = [training_memory(spec, strategy=first, n_gpus=n_gpus, **kwargs)]
    for strategy in ("zero1", "zero2", "zero3"):
        out.append(
            training_memory(spec, strategy=strategy, n_gpus=n_gpus, offload_optimizer=offload_optimizer, **kwargs)
        )
    return out


def _check_capacity(capacity_bytes: int) -> int:
    return int(check_positive("GPU memory", capacity_bytes, upper=1e15))


def least_sharding(spec: ModelSpec, capacity_bytes: int, **kwargs: Any) -> str | None:
    """The first of ddp (``single`` on one GPU), zero1, zero2, zero3 and
    ``"zero3+offload"`` whose per-GPU ``training_memory`` fits in ``capacity_bytes``;
    None if none does (see ``zero3_gpus_needed``). ``kwargs``: ``training_memory``'s
    arguments other than strategy and offload_optimizer (n_gpus defaults to 1).
    """
    _no_strategy(kwargs)
    capacity = _check_capacity(capacity_bytes)
    n_gpus = kwargs.pop("n_gpus", 1)
    first = "single" if n_gpus == 1 else "ddp"
    for strategy in (first, "zero1", "zero2", "zero3"):
        if training_memory(spec, strategy=strategy, n_gpus=n_gpus, **kwargs).fits(capacity):
            return strategy
    if training_memory(spec, strategy="zero3", n_gpus=n_gpus, offload_optimizer=True, **kwargs).fits(capacity):
        return ZERO3_OFFLOAD
    return None


def zero3_gpus_needed(
    spec: ModelSpec, capacity_bytes: int, *, offload_optimizer: bool = False, max_gpus: int = 100_000, **kwargs: Any
) -> int | None:
    """The fewest GPUs of ``capacity_bytes`` each on which zero3 fits (per-GPU memory
    never grows with N); None if not even ``max_gpus`` suffice, as when activations
    alone overflow a GPU (lower micro_batch or seq_len, or recompute).
    """
    _no_strategy(kwargs)
    kwargs.pop("n_gpus", None)
    capacity = _check_capacity(capacity_bytes)
    check_whole("max_gpus", max_gpus, upper=_MAX_GPUS)

    def fits(n: int) -> bool:
        memory = training_memory(spec, strategy="zero3", n_gpus=n, offload_optimizer=offload_optimizer, **kwargs)
        return memory.fits(capacity)

    if not fits(max_gpus):
        return None
    low, high = 1, max_gpus
    while low < high:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid + 1
    return low


# ---- the rule of thumb ----------------------------------------------------------------


@dataclass(frozen=True)
class RuleOfThumb:
    """The folklore rule beside the accounted figures, bytes as floats."""

    n_params: float
    rule_store_bytes: float  # 4 bytes/param
    rule_train_bytes: float  # 80 bytes/param (20 x storing)
    store_fp32_bytes: float  # accounted: weight_bytes_for_params(n, "fp32")
    model_state_bytes: float  # accounted: mixed AdamW on one GPU, 16 bytes/param
    accounted_train_bytes: float | None  # a TrainingMemory's total, when given
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


def rule_of_thumb(n_params: float, accounted: TrainingMemory | None = None) -> RuleOfThumb:
    """ "Storing 1B parameters takes 4 GB in fp32; training takes about 20 times that
    (80 GB)": 4 bytes/param to store, 80 bytes/param to train. Folklore, not a result
    of any paper. Where the 20x comes from: mixed-precision Adam holds 16 bytes/param of
    model states (ZeRO Sec. 3.1), 4x the fp32 weights; the other ~64 bytes/param stand
    for activations, the logits, temporary buffers and fragmentation at a typical
    micro-batch and context. Those do not scale with the parameter count but with
    batch x sequence x width x layers, and recomputation cuts them by an order of
    magnitude, so the rule is only a first guess: ``training_memory`` accounts them.
    """
    check_positive("parameter count", n_params, upper=MAX_PARAMS)
    return RuleOfThumb(
        n_params=float(n_params),
        rule_store_bytes=4.0 * n_params,
        rule_train_bytes=80.0 * n_params,
        store_fp32_bytes=weight_bytes_for_params(n_params, "fp32"),
        model_state_bytes=model_state_bytes_per_gpu(n_params, "single", 1).total,
        accounted_train_bytes=None if accounted is None else float(accounted.total),
        note="folklore: 4 B/param to store, ~20x (80 B/param) to train; 16 B/param are mixed-Adam model states, "
        "the rest activations and buffers that depend on batch, sequence and recomputation",
    )
