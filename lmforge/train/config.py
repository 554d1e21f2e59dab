"""Run configuration: the dataclasses that are the schema of ``config.yaml`` and of
``lmforge train``'s dotted overrides.

    lmforge train --config run.yaml --train.lr 3e-4 --model.d-model=256

The YAML file has the same nesting as `RunConfig` (``model:``, ``data:``, ``train:`` ...).
Reading, checking, overriding, writing and the ``--help`` listing are lmforge's one config
mechanism, `lmforge.configs` (its docstring says why it is lmforge's own): the comment
beside each field below is that key's help text, and its default is the default. The
resolved config is written into the run directory as ``config.yaml`` and a resumed run
reads it back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmforge import configs


@dataclass
class ModelConfig:
    """The model: a planner preset, with any ModelSpec field overridden.

    ``vocab_size`` defaults to the tokenizer's; setting it to anything else is refused.
    """

    preset: str = "tiny-gpt2"  # a planner preset (lmforge plan): gpt2, tiny-llama, bert-base, t5-small ...
    n_layers: int | None = None  # decoder layers (an encoder-only model's encoder layers)
    n_encoder_layers: int | None = None  # an encoder-decoder's encoder layers
    d_model: int | None = None  # hidden width; None: the preset's (so for every key of this section)
    n_heads: int | None = None  # attention heads
    n_kv_heads: int | None = None  # key/value heads: fewer than n_heads is grouped-query attention
    d_ff: int | None = None  # MLP hidden width
    context: int | None = None  # positions the model can attend over
    vocab_size: int | None = None  # must equal the tokenizer's (the default)
    mlp: Literal["gelu", "relu", "swiglu", "geglu"] | None = None  # MLP kind (swiglu, geglu: gated)
    norm: Literal["layernorm", "rmsnorm"] | None = None  # normalisation layer
    positions: Literal["learned", "rotary", "relative"] | None = None  # position encoding (relative: T5's buckets)
    bias: bool | None = None  # biases in linear layers
    tied_embeddings: bool | None = None  # the output head shares the token embedding
    head_dim: int | None = None  # None: d_model / n_heads
    norm_eps: float | None = None  # the norm's epsilon
    rotary_base: float | None = None  # rotary base theta (10,000 in Su et al. 2021; 500,000 in Llama 3)
    n_token_types: int | None = None  # encoders: token-type (segment) embeddings
    relative_buckets: int | None = None  # T5 relative attention buckets


@dataclass
class DataConfig:
    """Corpora, tokenizer and token shards.

    ``sources``: ``PATH``, ``name=PATH`` or ``name=PATH:weight`` (weights are mixture
    shares), ``builtin:pydocs``, ``builtin:markov``, ``hf:NAME``.
    """

    # PATH, name=PATH or name=PATH:weight (weights are mixture shares), builtin:pydocs, builtin:markov, hf:NAME
    sources: list[str] = field(default_factory=lambda: ["builtin:pydocs"])
    tokenizer: str | None = None  # a tokenizer.json; None: train one on the sources
    vocab_size: int = 8192  # when training the tokenizer
    tokenizer_sample_bytes: int = 50_000_000  # text the tokenizer is trained on, at most
    shards: str | None = None  # shard directory; None: RUN_DIR/data
    val_fraction: float = 0.05  # share of each source held out for validation
    seq_len: int = 256  # tokens per training sequence
    max_epochs: float = 4.0  # warn when a source repeats more often than this


@dataclass
class ObjectiveConfig:
    """The pretraining objective and its rates.

    ``name``: causal (decoders), mlm (encoders; Devlin et al. 2019), span (T5 span
    corruption; Raffel et al. 2020) or infill (BART text infilling; Lewis et al. 2020).
    None picks the family's: causal, mlm, and span for T5-style (relative positions) or
    infill for BART-style encoder-decoders.
    """

    name: Literal["causal", "mlm", "span", "infill"] | None = None  # None: the model family's
    mask_rate: float = 0.15  # mlm: share of tokens chosen
    mask_token_frac: float = 0.8  # mlm: of the chosen, replaced by the mask token
    random_token_frac: float = 0.1  # mlm: of the chosen, replaced by a random token
    whole_word: bool = False  # mlm: choose whole words
    noise_density: float = 0.15  # span: share of tokens corrupted
    mean_span_length: float = 3.0  # span: mean length of a corrupted span
    infill_ratio: float = 0.3  # infill: share of tokens masked
    poisson_lambda: float = 3.0  # infill: mean span length


@dataclass
class TrainConfig:
    """Optimisation, precision, stopping, evaluation and checkpoints."""

    lr: float = 1e-3  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of lr
    warmup_steps: int = 50  # linear warmup from 0 to lr
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"  # after warmup; wsd: warmup-stable-decay
    decay_fraction: float = 0.2  # wsd: the share of steps spent decaying at the end
    weight_decay: float = 0.1  # AdamW's decoupled weight decay (not on norms, biases, embeddings)
    beta1: float = 0.9  # AdamW
    beta2: float = 0.95  # AdamW
    eps: float = 1e-8  # AdamW
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0: no clipping
    batch_tokens: int = 16384  # global batch, tokens per optimizer step
    micro_batch: int = 8  # sequences per forward pass (per process)
    max_steps: int | None = None  # optimizer steps; None: from max_tokens or the budget
    max_tokens: str | None = None  # a count like 20M, or "auto": 20 tokens per parameter
    # a time (5min, 90s) or FLOPs (3e13): the planner picks the compute-optimal shape and tokens for it
    # on this machine (lmforge.train.budget); the resolved run is what config.yaml records
    budget: str | None = None
    law: str | None = None  # law.json from lmforge scaling fit, or a published law's name; None: lmforge's default
    max_time: float | None = None  # seconds of training
    stop_at_step: int | None = None  # pause here (checkpoint, schedule unchanged); resume later
    # auto: bf16 on GPUs that have it (else fp16 + loss scaling); on a CPU bf16 only where
    # a probe finds it fast, else fp32 (lmforge.train.precision; LMFORGE_CPU_BF16=0|1 forces it)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # torch.compile the model; auto: where a timing of the compiled model here says it repays its
    # compilation over the planned run (lmforge.train.compile_choice; LMFORGE_COMPILE=0|1 forces it)
    compile: bool | Literal["auto"] = "auto"
    activation_checkpointing: bool = False  # recompute each layer's activations in the backward pass
    seed: int = 0  # initialisation, data order and masking seed
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    eval_every: int = 100  # steps between validations
    eval_tokens: int = 65536  # validation tokens per source at each evaluation
    ckpt_every: int = 500  # steps between checkpoints
    keep_last: int = 3  # checkpoints kept
    log_every: int = 10  # steps between metrics.jsonl lines
    peak_tflops: float | None = None  # for MFU; None: the GPU catalog's, or measured on CPU
    # plan.json's predicted speed: None times a few steps of this model here (lmforge.train.calibrate);
    # a fraction (0.4) predicts peak x that MFU instead
    expected_mfu: float | None = None


@dataclass
class ParallelConfig:
    """How the run is spread over processes (launched with torchrun).

    ``strategy``: auto (``single`` outside torchrun, ``ddp`` under it), single, ddp,
    zero1 (DDP + ZeroRedundancyOptimizer), zero2 (FSDP2, gradients and optimizer states
    sharded) or zero3 (FSDP2, parameters too); Rajbhandari et al. 2020 (ZeRO), Sec. 5.
    ``backend``: auto picks nccl on GPUs, gloo on CPUs.
    """

    # auto: ddp under torchrun, else single
    strategy: Literal["auto", "single", "ddp", "zero1", "zero2", "zero3"] = "auto"
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # torch.distributed backend; auto: nccl on GPUs, else gloo
    timeout: float = 300.0  # seconds a collective may wait for a missing rank before the job stops
    device_memory: str | None = None  # capacity the preflight checks against (e.g. 80GB); None: the device's


@dataclass
class QATConfig:
    """Quantization-aware training: fake-quantize every quantized linear's weight in the
    forward pass, straight-through gradients (Jacob et al. 2018; Bengio et al. 2013).

    ``lmforge train --init-from RUN --qat int4 --qat.group_size 32``.
    """

    precision: Literal["none", "int8", "int4"] = "none"  # the weights' precision to train for; none: off
    group_size: int = 32  # int4: input features per scale/zero group
    keep_embeddings: bool = True  # embeddings and output head stay in 16 bits (as lmforge quantize does)


@dataclass
class LogConfig:
    """Where training metrics go besides ``metrics.jsonl`` (always written); rank 0 only.

    ``lmforge train --log.tensorboard true --log.wandb PROJECT``: the same metric names in
    every sink (``lmforge.train.loggers``).
    """

    tensorboard: bool = False  # TensorBoard event files under RUN_DIR/tensorboard (extra: lmforge[tensorboard])
    wandb: str | None = None  # a Weights & Biases project (extra: lmforge[wandb]); WANDB_MODE=offline without a network
    wandb_entity: str | None = None  # the W&B team or user; None: the account's default
    wandb_name: str | None = None  # the W&B run's name; None: the run's name


@dataclass
class RunConfig:
    name: str = "run"  # the run's directory name
    out_dir: str = "runs"  # where run directories go: RUN_DIR = out_dir/name
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


KEYS: dict[str, Any] = configs.keys(RunConfig)
# A section name given a value stands for one of its keys: --qat int4 is --qat.precision int4.
SHORTHANDS = {"qat": "qat.precision", "parallel": "parallel.strategy"}
parse_overrides = configs.parse_overrides


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML file at ``path``, then ``overrides`` (dotted keys)."""
    return configs.load(RunConfig, path, overrides, shorthands=SHORTHANDS)


def build_config(values: dict[str, Any]) -> RunConfig:
    """A RunConfig from already-typed dotted values over the defaults."""
    return configs.build(RunConfig, values)


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of ``config`` with dotted ``overrides`` applied (each key checked and coerced)."""
    return configs.with_overrides(config, overrides)


def save_config(config: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    configs.save_yaml(config, path)
