"""What compute costs: pretraining, fine-tuning (full or LoRA), inference and hosting.

Prices come from the GPU catalog (``lmforge.plan.hardware``) and are EXAMPLES (rough
on-demand rates); every result carries ``price_per_hour`` and ``price_is_example``,
which is False only when the caller passed ``price_per_hour``.

Formulas and their sources:

- training compute C = 6 N D (Kaplan et al. 2020, Sec. 2.1, Eq. 2.1-2.2); the time it
  takes is C / (peak x MFU) GPU-seconds, MFU as in Chowdhery et al. 2022 (PaLM), App. B;
- LoRA fine-tuning ~ 4 N + 6 N_adapter FLOPs per token (see ``lora_flops_per_token``);
- inference forward ~ 2 N + 2 n_layer n_ctx d_attn FLOPs per token (Kaplan et al. 2020,
  Sec. 2.1, Table 1); prefill is compute-bound, decode at small batch is bound by
  reading the weights and KV cache from memory each step (Pope et al. 2022, "Efficiently
  Scaling Transformer Inference", Sec. 2-3);
- mixed-precision Adam keeps 16 bytes per trainable parameter (Rajbhandari et al. 2020,
  ZeRO, Sec. 3.1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from lmforge.errors import UserError, check_fraction, check_positive, unknown_name
from lmforge.plan.flops import matmul_params, training_flops
from lmforge.plan.hardware import GPU, Cluster, get_gpu, parse_cluster
from lmforge.plan.memory import PRECISION_BYTES, kv_cache_bytes, weight_bytes, weight_bytes_for_params
from lmforge.plan.specs import GATED_MLPS, ModelSpec, param_counts

MAX_FLOPS = 1e35
MAX_PARAMS = 1e15
MAX_TOKENS = 1e16  # training tokens
MAX_PRICE = 1e4  # USD per GPU-hour
MAX_BATCH = 10**6
MAX_SEQ = 10**8  # tokens in one sequence
HOURS_PER_MONTH = 730.0  # 365 x 24 / 12
ADAM_BYTES_PER_PARAM = 16  # bf16 weight + bf16 grad + fp32 master, m, v (ZeRO, Sec. 3.1)
FROZEN_BYTES_PER_PARAM = 2  # a frozen bf16 weight: no gradient, no optimizer state
MEMORY_OVERHEAD = 0.2  # margin on weights + KV for activations, CUDA context, fragmentation
ASPECT_RATIO = 128  # d_model / n_layer assumed when only N is known (GPT-3 175B, Llama-2-7B)
LORA_TARGETS: tuple[str, ...] = ("qv", "all-linear")


# ---- shared pieces ---------------------------------------------------------------------


def _price(gpu: GPU, price_per_hour: float | None) -> tuple[float, bool, str]:
    """(USD per GPU-hour, is it an example, a note saying which)."""
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


def _as_gpu(gpu: GPU | str) -> GPU:
    if isinstance(gpu, GPU):
        return gpu
    if isinstance(gpu, str):
        return get_gpu(gpu)
    raise UserError("cannot read the GPU", gpu, "pass a GPU name like H100")


def _check_precision(precision: str, name: str = "precision") -> str:
    if precision not in PRECISION_BYTES:
        raise unknown_name(name, str(precision), PRECISION_BYTES)
    return precision


def _check_int(name: str, value: int, upper: int, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be a whole number", value, f"pass an integer for {name}")
    check_positive(name, value, allow_zero=allow_zero, upper=upper)
    return value


def _model(model: ModelSpec | float) -> tuple[ModelSpec | None, float]:
    """(spec or None, total parameters) from a spec or a parameter count."""
    if isinstance(model, ModelSpec):
        return model, float(param_counts(model).total)
    return None, float(check_positive("parameters", model, upper=MAX_PARAMS))


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
    price, example, note = _price(c.gpu, price_per_hour)
    gpu_seconds = flops / (c.gpu.bf16_flops * mfu)
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


def lora_params(spec: ModelSpec, rank: int, targets: str = "qv") -> int:
    """Trainable LoRA parameters: rank x (d_in + d_out) per adapted matrix (Hu et al. 2021, Sec. 4.1).

    ``targets="qv"`` adapts the query and value projections of every attention block
    (self- and cross-attention), the choice of Hu et al. 2021 (Sec. 4.2, 7.1);
    ``"all-linear"`` adapts q, k, v, out and every MLP matrix. Embeddings, norms and the
    output head are never adapted.
    """
    _check_int("LoRA rank", rank, upper=10**6)
    if targets not in LORA_TARGETS:
        raise unknown_name("LoRA targets", targets, LORA_TARGETS)
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
    _check_int("LoRA rank", rank, upper=10**6)
    if targets not in LORA_TARGETS:
        raise unknown_name("LoRA targets", targets, LORA_TARGETS)
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


# ---- inference -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """What inference needs to know about a model (from a spec or from N alone)."""

    prefill_params: float  # parameters each prompt token passes through
    decode_params: float  # parameters each generated token passes through
    weight_bytes: int  # all weights, at the precision
    decode_weight_bytes: float  # weights read per decode step
    kv_bytes_per_token: float  # per sequence, per cached self-attention position
    prefill_layers: int  # layers the prompt attends in (for the attention FLOPs)
    decode_layers: int
    d_attn: int
    decodes: bool  # False for an encoder-only model
    cross_kv_bytes: float = 0.0  # per sequence: cross-attention K and V of the prompt


def _shape(spec: ModelSpec | None, n_params: float, precision: str, kv_precision: str, prompt: int) -> _Shape:
    """Matmul parameters per token (``flops.matmul_params``: non-embedding plus the output
    projection, Kaplan et al. 2020, Table 1), weight and KV-cache bytes (``memory``)."""
    if spec is None:
        w = weight_bytes_for_params(n_params, precision)
        return _Shape(n_params, n_params, w, float(w), 0.0, 0, 0, 0, True)
    matmul = float(matmul_params(spec))
    w = weight_bytes(spec, precision)
    if spec.family == "encoder":
        return _Shape(matmul, 0.0, w, 0.0, 0.0, spec.n_encoder_layers, 0, spec.d_attn, False)
    if spec.family == "decoder":
        per_pos = float(kv_cache_bytes(spec, 1, 1, kv_precision))
        layers = spec.n_decoder_layers
        return _Shape(matmul, matmul, w, float(w), per_pos, layers, layers, spec.d_attn, True)
    # Encoder-decoder: the prompt runs once through the encoder; each new token through
    # the decoder stack and the output projection, reading only those weights. The KV
    # cache holds self-attention K/V per generated position plus the cross-attention K/V
    # of the prompt, computed once per sequence (both from memory.kv_cache_bytes).
    counts = param_counts(spec)
    enc = float(counts.encoder_layers)
    dec_share = (counts.total - counts.encoder_layers) / counts.total
    one = kv_cache_bytes(spec, 1, 1, kv_precision, source_len=1)  # 1 self + 1 cross position
    per_pos = float(kv_cache_bytes(spec, 1, 2, kv_precision, source_len=1) - one)
    cross = float(kv_cache_bytes(spec, 1, 1, kv_precision, source_len=prompt)) - per_pos
    layers = (spec.n_encoder_layers, spec.n_decoder_layers)
    return _Shape(enc, matmul - enc, w, w * dec_share, per_pos, *layers, spec.d_attn, True, cross)


@dataclass(frozen=True)
class InferenceCost:
    """Throughput and price of serving a model on one kind of GPU.

    Prefill (the prompt) is compute-bound: FLOPs / (peak x MFU). Each decode step takes
    max(memory time, compute time): memory time = bytes read (weights + KV cache) /
    (bandwidth x efficiency), compute time = FLOPs / (peak x MFU) (Pope et al. 2022,
    Sec. 2-3). ``decode_bound`` says which: "memory", "compute" or "mixed" when the
    growing KV cache switches the bound partway. Several GPUs (``n_gpus``) are modeled as
    ideal tensor parallelism: peak and bandwidth add up, no communication cost.
    Dollars per million tokens charge prefill time to input and decode time to output.
    """

    n_params: float
    gpu: str
    n_gpus: int
    batch: int
    prompt_tokens: int
    new_tokens: int
    precision: str
    kv_precision: str
    mfu: float
    bandwidth_efficiency: float
    weight_bytes: int
    kv_cache_bytes: int  # at the end of decoding, whole batch
    prefill_flops: float
    prefill_seconds: float
    decode_seconds: float
    decode_step_memory_seconds: float  # first step
    decode_step_compute_seconds: float  # first step
    decode_bound: str  # memory | compute | mixed | none
    input_tokens_per_second_per_gpu: float
    output_tokens_per_second_per_gpu: float | None
    price_per_hour: float
    price_is_example: bool
    dollars_per_million_input: float
    dollars_per_million_output: float | None
    note: str

    @property
    def latency_seconds(self) -> float:
        """Prefill plus all decode steps for one batch."""
        return self.prefill_seconds + self.decode_seconds

    @property
    def decode_step_seconds(self) -> float:
        """Mean time per decode step (one token for every sequence of the batch)."""
        return self.decode_seconds / self.new_tokens if self.new_tokens else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(latency_seconds=self.latency_seconds, decode_step_seconds=self.decode_step_seconds)
        return out


def _linear_sum(a0: float, a1: float, lo: int, hi: int) -> float:
    """Sum of a0 + a1 t for integer t in [lo, hi)."""
    n = hi - lo
    return n * a0 + a1 * n * (lo + hi - 1) / 2 if n > 0 else 0.0


def sum_of_max(m0: float, m1: float, c0: float, c1: float, n: int) -> tuple[float, int]:
    """(sum over t = 0..n-1 of max(m0 + m1 t, c0 + c1 t), steps where the first is the max).

    Closed form: two straight lines cross at most once, so the steps where the first
    dominates form a prefix or a suffix of 0..n-1.
    """
    d0, d1 = m0 - c0, m1 - c1  # first minus second: d0 + d1 t
    if d1 == 0:
        first = range(0, n) if d0 >= 0 else range(0, 0)
    else:
        t_star = min(max(-d0 / d1, -1.0), n + 1.0)  # where the lines cross, clamped
        if d1 > 0:  # first dominates from t_star on
            start = min(n, max(0, math.ceil(t_star)))
            first = range(start, n)
        else:  # first dominates up to t_star
            stop = min(n, max(0, math.floor(t_star) + 1))
            first = range(0, stop)
    total = 0.0
    lo, hi = first.start, first.stop
    total += _linear_sum(m0, m1, lo, hi)
    total += _linear_sum(c0, c1, 0, lo) + _linear_sum(c0, c1, hi, n)
    return total, hi - lo


def _min_gpus(needed_bytes: float, gpu: GPU) -> int:
    return max(1, math.ceil(needed_bytes / gpu.memory_bytes))


def inference_cost(
    model: ModelSpec | float,
    gpu: GPU | str,
    *,
    batch: int = 1,
    prompt_tokens: int = 512,
    new_tokens: int | None = None,
    precision: str = "bf16",
    kv_precision: str = "bf16",
    mfu: float = 0.4,
    bandwidth_efficiency: float = 0.8,
    n_gpus: int | None = None,
    overhead: float = MEMORY_OVERHEAD,
    price_per_hour: float | None = None,
) -> InferenceCost:
    """Prefill and decode time, tokens/s per GPU and dollars per million tokens.

    FLOPs per token: 2 N + 2 n_layer n_ctx d_attn forward (Kaplan et al. 2020, Sec. 2.1,
    Table 1); only 2 N when the model is given as a parameter count (no shapes, and then
    no KV cache either). Decode reads every weight once per step, whatever the batch, and
    each sequence's KV cache (Pope et al. 2022, Sec. 2-3): at batch 1 a 7B model in bf16
    on an H100 needs ~13.5 GB / 3.35 TB/s ~ 4 ms per token.

    ``new_tokens`` defaults to 256 (0 for an encoder, which does not generate).
    ``n_gpus`` defaults to the fewest GPUs holding weights + final KV cache x (1 +
    overhead). The compute peak is dense bf16 at every precision: int8/int4 are taken as
    weight-only quantization, dequantized to bf16 for the matmuls.
    """
    g = _as_gpu(gpu)
    spec, n_params = _model(model)
    _check_int("batch size", batch, MAX_BATCH)
    _check_int("prompt tokens", prompt_tokens, MAX_SEQ)
    _check_precision(precision)
    _check_precision(kv_precision, "KV-cache precision")
    check_fraction("MFU", mfu)
    check_fraction("bandwidth efficiency", bandwidth_efficiency)
    check_positive("memory overhead", overhead, allow_zero=True, upper=10)
    shape = _shape(spec, n_params, precision, kv_precision, prompt_tokens)
    if new_tokens is None:
        new_tokens = 256 if shape.decodes else 0
    _check_int("new tokens", new_tokens, MAX_SEQ, allow_zero=True)
    if new_tokens and not shape.decodes:
        raise UserError("an encoder model does not generate tokens", new_tokens, "pass new_tokens=0")
    if spec is not None:
        # An encoder-decoder's prompt and output live in separate stacks.
        longest = prompt_tokens + new_tokens if spec.family == "decoder" else max(prompt_tokens, new_tokens)
        if longest > spec.context:
            raise UserError(
                "the sequence is longer than the model's context",
                f"{longest} tokens > {spec.context}",
                "shorten prompt_tokens or new_tokens",
            )
    decoder_only = spec is None or spec.family == "decoder"
    cached_at_end = (prompt_tokens if decoder_only else 0) + new_tokens
    kv_final = batch * (shape.kv_bytes_per_token * cached_at_end + shape.cross_kv_bytes)
    if n_gpus is None:
        n_gpus = _min_gpus((shape.weight_bytes + kv_final) * (1 + overhead), g)
    _check_int("GPU count", n_gpus, 10**6)

    flops_per_s = g.bf16_flops * mfu * n_gpus
    bytes_per_s = g.bandwidth_bytes * bandwidth_efficiency * n_gpus

    # Prefill: every prompt token attends over the prompt (n_ctx = prompt, Kaplan Table 1).
    attn_prefill = 2 * shape.prefill_layers * prompt_tokens * shape.d_attn
    prefill_flops = batch * prompt_tokens * (2 * shape.prefill_params + attn_prefill)
    prefill_seconds = prefill_flops / flops_per_s

    # Decode step t (t = 0..new-1) reads the weights and the KV cache of the positions
    # before it, and computes 2N + 2 L n_ctx d_attn per sequence (self + cross context).
    cached0 = prompt_tokens if decoder_only else 0
    cross_ctx = 0 if decoder_only else prompt_tokens
    m0 = (shape.decode_weight_bytes + batch * (shape.kv_bytes_per_token * cached0 + shape.cross_kv_bytes)) / bytes_per_s
    m1 = batch * shape.kv_bytes_per_token / bytes_per_s
    attn = 2 * shape.decode_layers * shape.d_attn
    c0 = batch * (2 * shape.decode_params + attn * (cached0 + cross_ctx + 1)) / flops_per_s
    c1 = batch * attn / flops_per_s
    decode_seconds, memory_steps = sum_of_max(m0, m1, c0, c1, new_tokens)
    if new_tokens == 0:
        bound = "none"
    elif memory_steps == new_tokens:
        bound = "memory"
    elif memory_steps == 0:
        bound = "compute"
    else:
        bound = "mixed"

    price, example, price_note = _price(g, price_per_hour)
    dollars_per_second = price * n_gpus / 3600
    n_in, n_out = batch * prompt_tokens, batch * new_tokens
    notes = []
    if spec is None:
        notes.append("model given as a parameter count: 2N FLOPs per token, KV cache and attention FLOPs left out")
    if n_gpus > 1:
        notes.append(f"{n_gpus} GPUs as ideal tensor parallelism (no communication cost)")
    notes.append(price_note)
    return InferenceCost(
        n_params=n_params,
        gpu=g.name,
        n_gpus=n_gpus,
        batch=batch,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        precision=precision,
        kv_precision=kv_precision,
        mfu=float(mfu),
        bandwidth_efficiency=float(bandwidth_efficiency),
        weight_bytes=int(shape.weight_bytes),
        kv_cache_bytes=math.ceil(kv_final),
        prefill_flops=prefill_flops,
        prefill_seconds=prefill_seconds,
        decode_seconds=decode_seconds,
        decode_step_memory_seconds=m0 if new_tokens else 0.0,
        decode_step_compute_seconds=c0 if new_tokens else 0.0,
        decode_bound=bound,
        input_tokens_per_second_per_gpu=n_in / prefill_seconds / n_gpus,
        output_tokens_per_second_per_gpu=n_out / decode_seconds / n_gpus if new_tokens else None,
        price_per_hour=price,
        price_is_example=example,
        dollars_per_million_input=dollars_per_second * prefill_seconds / n_in * 1e6,
        dollars_per_million_output=dollars_per_second * decode_seconds / n_out * 1e6 if new_tokens else None,
        note="; ".join(notes),
    )


# ---- hosting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HostingCost:
    """GPUs to keep a model loaded and their monthly bill.

    needed = (weights + KV cache for ``batch`` sequences of ``context`` tokens) x (1 +
    overhead); GPUs per replica = ceil(needed / GPU memory); the bill counts every GPU
    for ``hours_per_month`` (730 = 24 x 365 / 12 for always on).
    """

    n_params: float
    gpu: str
    precision: str
    kv_precision: str
    batch: int
    context: int
    weight_bytes: int
    kv_cache_bytes: int
    overhead: float
    needed_bytes: int
    gpu_memory_bytes: int
    gpus_per_replica: int
    replicas: int
    n_gpus: int
    hours_per_month: float
    price_per_hour: float
    price_is_example: bool
    dollars_per_month: float
    note: str

    @property
    def dollars_per_year(self) -> float:
        return self.dollars_per_month * 12

    def to_dict(self) -> dict:
        out = asdict(self)
        out["dollars_per_year"] = self.dollars_per_year
        return out


def hosting_cost(
    model: ModelSpec | float,
    gpu: GPU | str,
    *,
    precision: str = "bf16",
    kv_precision: str = "bf16",
    batch: int = 1,
    context: int | None = None,
    replicas: int = 1,
    hours_per_month: float = HOURS_PER_MONTH,
    overhead: float = MEMORY_OVERHEAD,
    price_per_hour: float | None = None,
) -> HostingCost:
    """GPUs needed to hold the weights and KV cache at ``precision``, and the cost per month.

    Weights from ``memory.weight_bytes`` (4/2/1/0.5 bytes per parameter plus quantization
    scales); KV cache 2 x n_layers x n_kv_heads x head_dim x bytes x context x batch
    (``memory.kv_cache_bytes``). ``context`` defaults to the spec's context (2048 tokens
    for a bare parameter count, whose KV cache is then unknown and left out). The
    ``overhead`` margin (default 20%) covers activations, the CUDA context and allocator
    fragmentation: a rule of thumb, not a measurement.
    """
    g = _as_gpu(gpu)
    spec, n_params = _model(model)
    _check_precision(precision)
    _check_precision(kv_precision, "KV-cache precision")
    _check_int("batch size", batch, MAX_BATCH)
    _check_int("replicas", replicas, 10**6)
    check_positive("hours per month", hours_per_month, upper=31 * 24)
    check_positive("memory overhead", overhead, allow_zero=True, upper=10)
    if context is None:
        context = spec.context if spec is not None else 2048
    _check_int("context", context, MAX_SEQ)
    notes = []
    if spec is None:
        weights = weight_bytes_for_params(n_params, precision)
        kv = 0
        notes.append("model given as a parameter count: KV cache left out")
    else:
        weights = weight_bytes(spec, precision)
        if spec.family == "encoder":
            kv = 0
        elif spec.family == "encoder-decoder":
            kv = kv_cache_bytes(spec, batch, context, kv_precision, source_len=context)
        else:
            kv = kv_cache_bytes(spec, batch, context, kv_precision)
    needed = math.ceil((weights + kv) * (1 + overhead))
    per_replica = _min_gpus(needed, g)
    total = per_replica * replicas
    price, example, price_note = _price(g, price_per_hour)
    notes.append(f"{overhead:.0%} margin on weights + KV cache for activations and runtime")
    notes.append(price_note)
    return HostingCost(
        n_params=n_params,
        gpu=g.name,
        precision=precision,
        kv_precision=kv_precision,
        batch=batch,
        context=context,
        weight_bytes=int(weights),
        kv_cache_bytes=int(kv),
        overhead=float(overhead),
        needed_bytes=needed,
        gpu_memory_bytes=g.memory_bytes,
        gpus_per_replica=per_replica,
        replicas=replicas,
        n_gpus=total,
        hours_per_month=float(hours_per_month),
        price_per_hour=price,
        price_is_example=example,
        dollars_per_month=total * price * hours_per_month,
        note="; ".join(notes),
    )
