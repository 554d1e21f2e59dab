"""What training compute costs: pretraining and fine-tuning (full or LoRA).

Inference and hosting are ``lmforge.plan.serving``. Prices come from the GPU catalog
(``lmforge.plan.hardware``) and are EXAMPLES (rough on-demand rates); every result
carries ``price_per_hour`` and ``price_is_example``, which is False only when the caller
passed ``price_per_hour`` (``hourly_price``).

Formulas and their sources:

- training compute C = 6 N D (Kaplan et al. 2020, Sec. 2.1, Eq. 2.1-2.2); the time it
  takes is C / (peak x MFU) GPU-seconds, MFU as in Chowdhery et al. 2022 (PaLM), App. B;
- LoRA fine-tuning ~ 4 N + 6 N_adapter FLOPs per token (see ``lora_flops_per_token``);
- mixed-precision Adam keeps 16 bytes per trainable parameter (Rajbhandari et al. 2020,
  ZeRO, Sec. 3.1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from lmforge.errors import UserError, check_fraction, check_positive, check_whole, unknown_name
from lmforge.plan.flops import training_flops
from lmforge.plan.hardware import GPU, Cluster, parse_cluster
from lmforge.plan.laws import MAX_FLOPS
from lmforge.plan.specs import GATED_MLPS, ModelSpec, param_counts

MAX_PARAMS = 1e15
MAX_TOKENS = 1e16  # training tokens
MAX_PRICE = 1e4  # USD per GPU-hour
ADAM_BYTES_PER_PARAM = 16  # bf16 weight + bf16 grad + fp32 master, m, v (ZeRO, Sec. 3.1)
FROZEN_BYTES_PER_PARAM = 2  # a frozen bf16 weight: no gradient, no optimizer state
ASPECT_RATIO = 128  # d_model / n_layer assumed when only N is known (GPT-3 175B, Llama-2-7B)
LORA_TARGETS: tuple[str, ...] = ("qv", "all-linear")


# ---- shared pieces (serving.py uses them too) ------------------------------------------


def hourly_price(gpu: GPU, price_per_hour: float | None) -> tuple[float, bool, str]:
    """(USD per GPU-hour, is it an example, a note saying which).

    ``price_per_hour=None`` takes the GPU's example rate from the catalog (flagged as an
    example); otherwise the given price, validated.
    """
    if price_per_hour is None:
        price = gpu.example_price_per_hour
        note = (
            f"${price:.2f}/GPU-hour for {gpu.name} is an EXAMPLE on-demand rate, not a quote; "
            "pass price_per_hour (--price) for your own"
        )
        return price, True, note
    check_positive("price per GPU-hour", price_per_hour, upper=MAX_PRICE)
    return float(price_per_hour), False, f"price ${price_per_hour:.2f}/GPU-hour as given"


def _as_cluster(cluster: Cluster | GPU | str) -> Cluster:
    if isinstance(cluster, Cluster):
        return cluster
    if isinstance(cluster, GPU):
        return Cluster(cluster, 1)
    if isinstance(cluster, str):
        return parse_cluster(cluster)
    raise UserError("cannot read the GPUs", cluster, "pass a cluster like 64xH100")


# ---- pretraining -----------------------------------------------------------------------


@dataclass(frozen=True)
class ComputeCost:
    """Time and money to spend ``flops`` on ``n_gpus`` GPUs at a given MFU.

    ``gpu_hours = flops / (peak_bf16 x mfu) / 3600``; wall time = GPU-hours / n_gpus
    (perfect scaling across the cluster); dollars = GPU-hours x price_per_hour.
    """

    flops: float
    gpu: str
    n_gpus: int
    mfu: float
    peak_flops_per_gpu: float  # dense bf16 FLOP/s from the data sheet
    gpu_hours: float
    wall_seconds: float
    price_per_hour: float  # USD per GPU-hour
    price_is_example: bool
    dollars: float
    note: str
    n_params: float | None = None  # when built from 6 N D
    n_tokens: float | None = None

    @property
    def achieved_flops_per_gpu(self) -> float:
        return self.peak_flops_per_gpu * self.mfu

    @property
    def wall_days(self) -> float:
        return self.wall_seconds / 86400

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(achieved_flops_per_gpu=self.achieved_flops_per_gpu, wall_days=self.wall_days)
        return out


def pretraining_cost(
    flops: float, cluster: Cluster | GPU | str, mfu: float = 0.4, price_per_hour: float | None = None
) -> ComputeCost:
    """Cost of ``flops`` training FLOPs on ``cluster`` at model FLOPs utilization ``mfu``.

    GPU-seconds = flops / (peak dense bf16 FLOP/s x MFU); MFU is achieved model FLOP/s
    over peak (Chowdhery et al. 2022, PaLM, App. B). Wall time assumes the work divides
    evenly over the cluster's GPUs.
    """
    check_positive("compute (FLOPs)", flops, upper=MAX_FLOPS)
    check_fraction("MFU", mfu)
    c = _as_cluster(cluster)
    price, example, note = hourly_price(c.gpu, price_per_hour)
    gpu_seconds = flops / (c.gpu.bf16_flops * mfu)
    if not math.isfinite(gpu_seconds):
        raise UserError("training time overflows", flops, "use a smaller compute budget or a larger MFU")
    gpu_hours = gpu_seconds / 3600
    return ComputeCost(
        flops=float(flops),
        gpu=c.gpu.name,
        n_gpus=c.count,
        mfu=float(mfu),
        peak_flops_per_gpu=c.gpu.bf16_flops,
        gpu_hours=gpu_hours,
        wall_seconds=gpu_seconds / c.count,
        price_per_hour=price,
        price_is_example=example,
        dollars=gpu_hours * price,
        note=note,
    )


def pretraining_cost_for(
    n_params: float,
    n_tokens: float,
    cluster: Cluster | GPU | str,
    mfu: float = 0.4,
    price_per_hour: float | None = None,
) -> ComputeCost:
    """Cost of pretraining ``n_params`` on ``n_tokens``: C = 6 N D (Kaplan et al. 2020, Eq. 2.1)."""
    check_positive("parameters", n_params, upper=MAX_PARAMS)
    check_positive("training tokens", n_tokens, upper=MAX_TOKENS)
    cost = pretraining_cost(training_flops(n_params, n_tokens), cluster, mfu, price_per_hour)
    return replace(cost, n_params=float(n_params), n_tokens=float(n_tokens))


# ---- fine-tuning -----------------------------------------------------------------------


def _check_lora(rank: int, targets: str) -> None:
    check_whole("LoRA rank", rank, upper=10**6)
    if targets not in LORA_TARGETS:
        raise unknown_name("LoRA targets", targets, LORA_TARGETS)


def lora_params(spec: ModelSpec, rank: int, targets: str = "qv") -> int:
    """Trainable LoRA parameters: rank x (d_in + d_out) per adapted matrix (Hu et al. 2021, Sec. 4.1).

    ``targets="qv"`` adapts the query and value projections of every attention block
    (self- and cross-attention), the choice of Hu et al. 2021 (Sec. 4.2, 7.1);
    ``"all-linear"`` adapts q, k, v, out and every MLP matrix. Embeddings, norms and the
    output head are never adapted.
    """
    _check_lora(rank, targets)
    d, q_out, kv_out, f = spec.d_model, spec.d_attn, spec.kv_heads * spec.d_head, spec.ffn
    if targets == "qv":
        per_attention = (d + q_out) + (d + kv_out)
        per_mlp = 0
    else:
        per_attention = (d + q_out) + 2 * (d + kv_out) + (q_out + d)
        per_mlp = (3 if spec.mlp in GATED_MLPS else 2) * (d + f)
    n_attention = spec.n_encoder_layers + spec.n_decoder_layers * (2 if spec.family == "encoder-decoder" else 1)
    return rank * (n_attention * per_attention + spec.n_layers * per_mlp)


def lora_params_estimate(n_params: float, rank: int, targets: str = "qv") -> int:
    """LoRA parameters for a model known only by its size N.

    Assumes N ~ 12 n_layer d_model^2 (Kaplan et al. 2020, Eq. 2.1, ungated MLP with
    d_ff = 4 d_model, embeddings ignored) and d_model / n_layer = 128 (GPT-3 175B:
    12288 / 96; Llama-2-7B: 4096 / 32), so d_model = (128 N / 12)^(1/3). Per layer: qv
    adapts 2 matrices of d x d (4 r d), all-linear 4 attention matrices and the d x 4d
    MLP pair (8 r d + 10 r d).
    """
    check_positive("parameters", n_params, upper=MAX_PARAMS)
    _check_lora(rank, targets)
    d = (ASPECT_RATIO * n_params / 12) ** (1 / 3)
    n_layer = max(1.0, d / ASPECT_RATIO)
    per_layer = 4 * d if targets == "qv" else 18 * d
    return round(rank * per_layer * n_layer)


def lora_flops_per_token(n_params: float, n_adapter: float) -> float:
    """Training FLOPs per token with frozen base weights: 4 N + 6 N_adapter.

    From first principles (the 6N of Kaplan et al. 2020, Sec. 2.1, split as forward 2N,
    backward 4N): the forward pass is 2N; the backward pass of a linear layer costs 2N
    for the gradients with respect to its input and 2N for those with respect to its
    weights. Frozen weights need no weight gradients, but every layer above the lowest
    adapter must still pass activation gradients down, so the base model costs
    2N + 2N = 4N, two thirds of full fine-tuning. The adapters themselves cost the full
    6 per parameter. Hu et al. (2021, Sec. 4.2) measured a 25% training speedup on GPT-3
    175B, below the ideal 1.5x since memory traffic and the adapters' small matmuls do
    not shrink with the FLOPs.
    """
    return 4.0 * n_params + 6.0 * n_adapter


@dataclass(frozen=True)
class TuningCost:
    """Cost of fine-tuning, full or LoRA, and the memory for its training state.

    ``state_bytes`` = weights + gradients + Adam states (activations not included):
    16 bytes per trainable parameter (ZeRO, Sec. 3.1) plus, for LoRA, 2 bytes per frozen
    bf16 base weight. ``full_state_bytes`` is the same for full fine-tuning, to compare.
    """

    method: str  # full | lora
    n_params: float
    n_tokens: float
    trainable_params: float
    trainable_params_estimated: bool  # True when LoRA params come from N alone
    lora_rank: int | None
    lora_targets: str | None
    flops_per_token: float
    state_bytes: int
    full_state_bytes: int
    compute: ComputeCost
    note: str

    @property
    def flops(self) -> float:
        return self.compute.flops

    @property
    def dollars(self) -> float:
        return self.compute.dollars

    @property
    def memory_saving(self) -> float:
        """How many times smaller the training state is than full fine-tuning's."""
        return self.full_state_bytes / self.state_bytes

    def to_dict(self) -> dict:
        out = asdict(self)
        out["compute"] = self.compute.to_dict()
        out.update(flops=self.flops, dollars=self.dollars, memory_saving=self.memory_saving)
        return out


def tuning_cost(
    n_params: float | ModelSpec | None,
    n_tokens: float,
    cluster: Cluster | GPU | str,
    *,
    method: str = "full",
    lora_rank: int = 16,
    lora_targets: str = "qv",
    spec: ModelSpec | None = None,
    mfu: float = 0.4,
    price_per_hour: float | None = None,
) -> TuningCost:
    """Cost of fine-tuning on ``n_tokens`` tokens, all weights or LoRA adapters.

    Full: 6 N FLOPs per token (Kaplan et al. 2020, Eq. 2.1). LoRA: 4 N + 6 N_adapter
    (``lora_flops_per_token``), N_adapter from ``spec`` when given (``lora_params``),
    otherwise estimated from N (``lora_params_estimate``). ``n_params`` may be a spec;
    with both a number and ``spec``, the number sets the FLOPs and the spec the shapes.
    """
    if isinstance(n_params, ModelSpec):
        spec = n_params if spec is None else spec
        n_params = param_counts(n_params).total
    if n_params is None:
        if spec is None:
            raise UserError("the model size is missing", None, "pass n_params or spec")
        n_params = param_counts(spec).total
    check_positive("parameters", n_params, upper=MAX_PARAMS)
    check_positive("fine-tuning tokens", n_tokens, upper=MAX_TOKENS)
    check_fraction("MFU", mfu)
    if method not in ("full", "lora"):
        raise unknown_name("fine-tuning method", str(method), ("full", "lora"))
    n_params = float(n_params)
    full_state = math.ceil(ADAM_BYTES_PER_PARAM * n_params)
    if method == "full":
        trainable, estimated, per_token = n_params, False, 6.0 * n_params
        rank = targets = None
        state = full_state
        note = "full fine-tuning: 6N FLOPs per token, 16 bytes per parameter of training state"
    else:
        if spec is not None:
            trainable, estimated = float(lora_params(spec, lora_rank, lora_targets)), False
        else:
            trainable, estimated = float(lora_params_estimate(n_params, lora_rank, lora_targets)), True
        per_token = lora_flops_per_token(n_params, trainable)
        rank, targets = lora_rank, lora_targets
        state = math.ceil(FROZEN_BYTES_PER_PARAM * n_params + ADAM_BYTES_PER_PARAM * trainable)
        note = (
            f"LoRA rank {lora_rank} on {'query and value projections' if lora_targets == 'qv' else 'all linears'}: "
            "4N + 6N_adapter FLOPs per token (no weight gradients for frozen weights)"
        )
        if estimated:
            note += "; adapter size estimated from N assuming d_model/n_layer = 128 (pass a spec for exact)"
    compute = pretraining_cost(per_token * n_tokens, cluster, mfu, price_per_hour)
    return TuningCost(
        method=method,
        n_params=n_params,
        n_tokens=float(n_tokens),
        trainable_params=trainable,
        trainable_params_estimated=estimated,
        lora_rank=rank,
        lora_targets=targets,
        flops_per_token=per_token,
        state_bytes=state,
        full_state_bytes=full_state,
        compute=compute,
        note=note + "; " + compute.note,
    )
