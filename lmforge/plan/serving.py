"""What serving a model costs: inference throughput and price, and hosting per month.

Prices as in ``lmforge.plan.cost`` (``hourly_price``: EXAMPLE rates unless the caller
passes ``price_per_hour``). Formulas and their sources:

- inference forward ~ 2 N + 2 n_layer n_ctx d_attn FLOPs per token (Kaplan et al. 2020,
  Sec. 2.1, Table 1); prefill is compute-bound, decode at small batch is bound by
  reading the weights and KV cache from memory each step (Pope et al. 2022, "Efficiently
  Scaling Transformer Inference", Sec. 2-3);
- weights and KV cache from ``lmforge.plan.storage``; hosting adds a rule-of-thumb
  margin (``MEMORY_OVERHEAD``) for activations, the CUDA context and fragmentation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from lmforge.errors import UserError, check_fraction, check_positive, check_whole
from lmforge.plan.cost import MAX_PARAMS, hourly_price
from lmforge.plan.flops import matmul_params
from lmforge.plan.hardware import GPU, get_gpu
from lmforge.plan.specs import ModelSpec, param_counts
from lmforge.plan.storage import check_precision, kv_cache_bytes, weight_bytes, weight_bytes_for_params

MAX_BATCH = 10**6
MAX_SEQ = 10**8  # tokens in one sequence
HOURS_PER_MONTH = 730.0  # 365 x 24 / 12
MEMORY_OVERHEAD = 0.2  # margin on weights + KV for activations, CUDA context, fragmentation


def _as_gpu(gpu: GPU | str) -> GPU:
    if isinstance(gpu, GPU):
        return gpu
    if isinstance(gpu, str):
        return get_gpu(gpu)
    raise UserError("cannot read the GPU", gpu, "pass a GPU name like H100")


def _model(model: ModelSpec | float) -> tuple[ModelSpec | None, float]:
    """(spec or None, total parameters) from a spec or a parameter count."""
    if isinstance(model, ModelSpec):
        return model, float(param_counts(model).total)
    return None, float(check_positive("parameters", model, upper=MAX_PARAMS))


def _min_gpus(needed_bytes: float, gpu: GPU) -> int:
    return max(1, math.ceil(needed_bytes / gpu.memory_bytes))


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
    projection, Kaplan et al. 2020, Table 1), weight and KV-cache bytes (``storage``)."""
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
    # of the prompt, computed once per sequence (both from storage.kv_cache_bytes).
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
    check_whole("batch size", batch, MAX_BATCH)
    check_whole("prompt tokens", prompt_tokens, MAX_SEQ)
    check_precision(precision)
    check_precision(kv_precision, "KV-cache precision")
    check_fraction("MFU", mfu)
    check_fraction("bandwidth efficiency", bandwidth_efficiency)
    check_positive("memory overhead", overhead, allow_zero=True, upper=10)
    shape = _shape(spec, n_params, precision, kv_precision, prompt_tokens)
    if new_tokens is None:
        new_tokens = 256 if shape.decodes else 0
    check_whole("new tokens", new_tokens, MAX_SEQ, allow_zero=True)
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
    check_whole("GPU count", n_gpus, 10**6)

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

    price, example, price_note = hourly_price(g, price_per_hour)
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

    Weights from ``storage.weight_bytes`` (4/2/1/0.5 bytes per parameter plus quantization
    scales); KV cache 2 x n_layers x n_kv_heads x head_dim x bytes x context x batch
    (``storage.kv_cache_bytes``). ``context`` defaults to the spec's context (2048 tokens
    for a bare parameter count, whose KV cache is then unknown and left out). The
    ``overhead`` margin (default 20%) covers activations, the CUDA context and allocator
    fragmentation: a rule of thumb, not a measurement.
    """
    g = _as_gpu(gpu)
    spec, n_params = _model(model)
    check_precision(precision)
    check_precision(kv_precision, "KV-cache precision")
    check_whole("batch size", batch, MAX_BATCH)
    check_whole("replicas", replicas, 10**6)
    check_positive("hours per month", hours_per_month, upper=31 * 24)
    check_positive("memory overhead", overhead, allow_zero=True, upper=10)
    if context is None:
        context = spec.context if spec is not None else 2048
    check_whole("context", context, MAX_SEQ)
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
    price, example, price_note = hourly_price(g, price_per_hour)
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
