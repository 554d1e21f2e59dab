"""Run configuration: typed dataclasses, read from YAML, with dotted overrides.

    lmforge train --config run.yaml --train.lr 3e-4 --model.d_model=256

The YAML file has the same nesting as `RunConfig` (``model:``, ``data:``, ``train:``).
Every key is checked against the dataclasses: an unknown key is refused with the
closest valid names, a value of the wrong type with the expected type, all as one-line
``UserError``s. The resolved config is written into the run directory as
``config.yaml`` and a resumed run reads it back.

Why not jsonargparse: it does all of this too, but its errors span several lines and
name parser internals; the CLI promises one line naming the key and the fix. This file
is the small part of it lmforge needs (about 150 lines, standard library + PyYAML).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import UserError, unknown_name
from lmforge.plan.units import parse_count


@dataclass
class ModelConfig:
    """The model: a planner preset, with any ModelSpec field overridden.

    ``vocab_size`` defaults to the tokenizer's; setting it to anything else is refused.
    """

    preset: str = "tiny-gpt2"
    n_layers: int | None = None  # decoder layers (an encoder-only model's encoder layers)
    n_encoder_layers: int | None = None  # an encoder-decoder's encoder layers
    d_model: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    d_ff: int | None = None
    context: int | None = None
    vocab_size: int | None = None
    mlp: Literal["gelu", "relu", "swiglu", "geglu"] | None = None
    norm: Literal["layernorm", "rmsnorm"] | None = None
    positions: Literal["learned", "rotary", "relative"] | None = None
    bias: bool | None = None
    tied_embeddings: bool | None = None
    head_dim: int | None = None  # None: d_model / n_heads
    norm_eps: float | None = None
    rotary_base: float | None = None
    n_token_types: int | None = None  # encoders: token-type (segment) embeddings
    relative_buckets: int | None = None  # T5 relative attention buckets


@dataclass
class DataConfig:
    """Corpora, tokenizer and token shards.

    ``sources``: ``PATH``, ``name=PATH`` or ``name=PATH:weight`` (weights are mixture
    shares), ``builtin:pydocs``, ``builtin:markov``, ``hf:NAME``.
    """

    sources: list[str] = field(default_factory=lambda: ["builtin:pydocs"])
    tokenizer: str | None = None  # a tokenizer.json; None: train one on the sources
    vocab_size: int = 8192  # when training the tokenizer
    tokenizer_sample_bytes: int = 50_000_000  # text the tokenizer is trained on, at most
    shards: str | None = None  # shard directory; None: RUN_DIR/data
    val_fraction: float = 0.05
    seq_len: int = 256
    max_epochs: float = 4.0  # warn when a source repeats more often than this


@dataclass
class ObjectiveConfig:
    """The pretraining objective and its rates.

    ``name``: causal (decoders), mlm (encoders; Devlin et al. 2019), span (T5 span
    corruption; Raffel et al. 2020) or infill (BART text infilling; Lewis et al. 2020).
    None picks the family's: causal, mlm, and span for T5-style (relative positions) or
    infill for BART-style encoder-decoders.
    """

    name: Literal["causal", "mlm", "span", "infill"] | None = None
    mask_rate: float = 0.15  # mlm: share of tokens chosen
    mask_token_frac: float = 0.8  # mlm: of the chosen, replaced by the mask token
    random_token_frac: float = 0.1  # mlm: of the chosen, replaced by a random token
    whole_word: bool = False  # mlm: choose whole words
    noise_density: float = 0.15  # span
    mean_span_length: float = 3.0  # span
    infill_ratio: float = 0.3  # infill: share of tokens masked
    poisson_lambda: float = 3.0  # infill: mean span length


@dataclass
class TrainConfig:
    """Optimisation, precision, stopping, evaluation and checkpoints."""

    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of lr
    warmup_steps: int = 50
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    decay_fraction: float = 0.2  # wsd: the share of steps spent decaying at the end
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    batch_tokens: int = 16384  # global batch, tokens per optimizer step
    micro_batch: int = 8  # sequences per forward pass (per process)
    max_steps: int | None = None
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
    compile: bool = False
    activation_checkpointing: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    eval_every: int = 100
    eval_tokens: int = 65536  # validation tokens per source at each evaluation
    ckpt_every: int = 500
    keep_last: int = 3
    log_every: int = 10
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

    strategy: Literal["auto", "single", "ddp", "zero1", "zero2", "zero3"] = "auto"
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    timeout: float = 300.0  # seconds a collective may wait for a missing rank before the job stops
    device_memory: str | None = None  # capacity the preflight checks against (e.g. 80GB); None: the device's


@dataclass
class QATConfig:
    """Quantization-aware training: fake-quantize every quantized linear's weight in the
    forward pass, straight-through gradients (Jacob et al. 2018; Bengio et al. 2013).

    ``lmforge train --init-from RUN --qat int4 --qat.group_size 32``.
    """

    precision: Literal["none", "int8", "int4"] = "none"
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
    name: str = "run"
    out_dir: str = "runs"
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


# ---- keys and types -------------------------------------------------------------------


def _fields(cls: type) -> dict[str, Any]:
    """Dotted key -> type for every leaf field of ``cls`` (nested dataclasses flattened)."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.update({f"{f.name}.{k}": v for k, v in _fields(kind).items()})
        else:
            out[f.name] = kind
    return out


KEYS: dict[str, Any] = _fields(RunConfig)
# A section name given a value stands for one of its keys: --qat int4 is --qat.precision int4.
SHORTHANDS = {"qat": "qat.precision", "parallel": "parallel.strategy"}


def _type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(kind)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(kind))
    if origin is list:
        return "a list"
    return {int: "an integer", float: "a number", str: "text", bool: "true or false", type(None): "null"}.get(
        kind, str(kind)
    )


def coerce(key: str, value: Any, kind: Any) -> Any:
    """``value`` (from YAML or the command line) as ``kind``; UserError if it cannot be."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            if type(None) in options:
                return None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(key, value, option)
            except UserError:
                continue
        raise UserError(f"config key {key} must be {_type_name(kind)}", value, f"fix the value of {key}")
    if origin is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise UserError(f"config key {key} must be {_type_name(kind)}", value, f"fix the value of {key}")
        return value
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [coerce(key, item, typing.get_args(kind)[0]) for item in items]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                number = parse_count(value, key) if value[-1:].isalpha() else None
                if number is not None and number == int(number):
                    return int(number)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise UserError(f"config key {key} must be {_type_name(kind)}", value, f"fix the value of {key}")


# ---- reading --------------------------------------------------------------------------


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def parse_overrides(args: list[str]) -> dict[str, str | bool]:
    """['--train.lr', '3e-4', '--model.d_model=256', '--train.compile'] -> {key: raw value}.

    A key with no value (next item is another flag, or the end) means true.
    """
    out: dict[str, str | bool] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError("unexpected argument", arg, "overrides look like --train.lr 3e-4")
        key, eq, value = arg[2:].partition("=")
        if eq:
            out[key] = value
        elif index + 1 < len(args) and not args[index + 1].startswith("--"):
            out[key] = args[index + 1]
            index += 1
        else:
            out[key] = True
        index += 1
    return out


def _check_key(key: str) -> None:
    if key not in KEYS:
        raise unknown_name("config key", key, KEYS)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML file at ``path``, then ``overrides`` (dotted keys)."""
    values: dict[str, Any] = {}
    given = dict(_read_yaml(Path(path))) if path is not None else {}
    given.update(overrides or {})
    for key, value in given.items():
        key = key.replace("-", "_")
        values[SHORTHANDS.get(key, key)] = value
    for key in values:
        _check_key(key)
    return build_config({key: coerce(key, value, KEYS[key]) for key, value in values.items()})


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise UserError("config file not found", str(path), "check the path given to --config")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError("cannot read the config file", str(path), f"it must be YAML ({type(exc).__name__})") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise UserError("the config file must hold a mapping", str(path), "write keys like train: {lr: 3e-4}")
    return _flatten(tree)


def build_config(values: dict[str, Any]) -> RunConfig:
    """A RunConfig from already-typed dotted values over the defaults."""
    config = RunConfig()
    for key, value in values.items():
        target: Any = config
        *parents, leaf = key.split(".")
        for part in parents:
            target = getattr(target, part)
        setattr(target, leaf, value)
    return config


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of ``config`` with dotted ``overrides`` applied (each key checked and coerced)."""
    import copy

    out = copy.deepcopy(config)
    for key, value in overrides.items():
        _check_key(key)
        target: Any = out
        *parents, leaf = key.split(".")
        for part in parents:
            target = getattr(target, part)
        setattr(target, leaf, coerce(key, value, KEYS[key]))
    return out


def save_config(config: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    import yaml

    from lmforge.fileio import write_atomic

    write_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
