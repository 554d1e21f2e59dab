"""One validation pass over a resolved run config, before anything is printed, built or written.

Every numeric key has a stated range (``RULES``); a run name is a plain directory name;
``out_dir`` must not be a file. Errors name the key as the user gave it: ``names`` maps
a dotted key to the flag it came from (``train.max_tokens`` -> ``--tokens``); keys from a
YAML file or the defaults keep their dotted name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from lmforge.data.tokenizer import min_vocab_size
from lmforge.errors import UserError
from lmforge.plan.units import parse_bytes, parse_count
from lmforge.train.config import KEYS, RunConfig
from lmforge.train.loggers import check_log_config

# a check: (predicate on the value, what the value must be, an example fix)
Rule = tuple[Callable[[float], bool], str, str]


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive(example: str) -> Rule:
    return (lambda v: _finite(v) and v > 0, "greater than zero", example)


def at_least(low: float, example: str) -> Rule:
    return (lambda v: _finite(v) and v >= low, f"at least {low:g}", example)


def fraction(low_open: bool, high_open: bool, example: str) -> Rule:
    def inside(v) -> bool:
        return _finite(v) and (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)

    interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
    return (inside, f"in {interval}", example)


RULES: dict[str, Rule] = {
    "train.lr": positive("3e-4"),
    "train.min_lr_ratio": fraction(False, False, "0.1"),
    "train.warmup_steps": at_least(0, "100"),
    "train.decay_fraction": fraction(True, False, "0.2"),
    "train.weight_decay": at_least(0, "0.1"),
    "train.beta1": fraction(False, True, "0.9"),
    "train.beta2": fraction(False, True, "0.95"),
    "train.eps": positive("1e-8"),
    "train.grad_clip": at_least(0, "1.0 (0: no clipping)"),
    "train.batch_tokens": positive("16384"),
    "train.micro_batch": positive("8"),
    "train.max_steps": positive("1000"),
    "train.max_time": positive("3600 (seconds)"),
    "train.stop_at_step": positive("500"),
    "train.eval_every": positive("100"),
    "train.eval_tokens": positive("65536"),
    "train.ckpt_every": positive("500"),
    "train.keep_last": positive("3"),
    "train.log_every": positive("10"),
    "train.peak_tflops": positive("312"),
    "train.expected_mfu": fraction(True, False, "0.4"),
    "train.seed": at_least(0, "0"),
    "data.vocab_size": at_least(min_vocab_size(), f"8192 (at least {min_vocab_size()}: 256 bytes and the "
                                                  "special tokens)"),
    "data.tokenizer_sample_bytes": positive("50000000"),
    "data.val_fraction": fraction(False, True, "0.05"),
    "data.seq_len": positive("256"),
    "data.max_epochs": positive("4"),
    "objective.mask_rate": fraction(True, False, "0.15"),
    "objective.mask_token_frac": fraction(False, False, "0.8"),
    "objective.random_token_frac": fraction(False, False, "0.1"),
    "objective.noise_density": fraction(True, True, "0.15"),
    "objective.mean_span_length": at_least(1, "3"),
    "objective.infill_ratio": fraction(True, True, "0.3"),
    "objective.poisson_lambda": positive("3"),
    "parallel.timeout": positive("300 (seconds)"),
    "qat.group_size": positive("32"),
    **{f"model.{name}": positive("a positive integer")
       for name in ("n_layers", "n_encoder_layers", "d_model", "n_heads", "n_kv_heads", "d_ff", "context",
                    "vocab_size")},
}


def _value(config: RunConfig, key: str):
    target = config
    for part in key.split("."):
        target = getattr(target, part)
    return target


def validate_config(config: RunConfig, names: dict[str, str] | None = None) -> RunConfig:
    """Raise a one-line UserError for the first value out of its range; return ``config``."""
    names = names or {}

    def flag(key: str) -> str:
        return names.get(key, key)

    for key, (ok, must, example) in RULES.items():
        value = _value(config, key)
        if value is not None and not ok(value):
            raise UserError(f"{flag(key)} must be {must}", value, f"pass e.g. {flag(key)} {example}")
    o = config.objective
    if o.mask_token_frac + o.random_token_frac > 1:
        raise UserError(f"{flag('objective.mask_token_frac')} + {flag('objective.random_token_frac')} must be "
                        "at most 1", o.mask_token_frac + o.random_token_frac, "e.g. 0.8 and 0.1 (BERT's)")
    max_tokens = config.train.max_tokens
    if max_tokens is not None and str(max_tokens).lower() != "auto":
        parse_count(max_tokens, flag("train.max_tokens"), upper=1e16)
    if config.train.budget is not None:
        from lmforge.train.budget import check_budget_config

        check_budget_config(config, flag)
    if config.parallel.device_memory is not None:
        parse_bytes(config.parallel.device_memory, flag("parallel.device_memory"))
    _check_sources(config, flag)
    check_log_config(config.log)
    _check_name(config.name, flag("name"))
    if not str(config.out_dir).strip():
        raise UserError(f"{flag('out_dir')} is empty", config.out_dir, "pass a directory, e.g. --out-dir runs")
    for parent in [Path(config.out_dir), *Path(config.out_dir).parents]:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{flag('out_dir')} names a file, not a directory", str(parent),
                            "pass a directory for the runs (--out-dir runs)")
    return config


def _check_sources(config: RunConfig, flag: Callable[[str], str]) -> None:
    """Each source parses, their weights do not sum to zero, and a ``model.vocab_size`` agrees
    with the tokenizer the run will train (``data.vocab_size``)."""
    from lmforge.data.sources import parse_source

    specs = [parse_source(text) for text in config.data.sources]
    if not specs:
        raise UserError(f"{flag('data.sources')} names no source", config.data.sources, "pass --data PATH")
    if sum(spec.weight for spec in specs) <= 0:
        raise UserError("the mixture weights sum to zero", {s.name: s.weight for s in specs},
                        "give at least one source a weight > 0")
    vocab = config.model.vocab_size
    if vocab is not None and config.data.tokenizer is None and vocab != config.data.vocab_size:
        raise UserError("tokenizer and model vocabulary sizes differ",
                        f"{flag('model.vocab_size')}={vocab}, {flag('data.vocab_size')}={config.data.vocab_size}",
                        "drop model.vocab_size (it follows the tokenizer) or set the same data.vocab_size")


def _check_name(name: str, flag: str) -> None:
    """A run name is one plain directory name: not empty, no path separators, not . or .."""
    if not name or not name.strip():
        raise UserError(f"{flag} is empty", name, "pass a run name, e.g. --name books")
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise UserError(f"{flag} must be a plain name, not a path", name,
                        "pass a name without / (put the runs elsewhere with --out-dir)")


def flag_names(overrides: dict[str, object], aliases: dict[str, str]) -> dict[str, str]:
    """dotted key -> the flag the user typed: ``--train.lr`` for overrides, the CLI's
    aliases (``--tokens``) for the keys they set."""
    names = {key.replace("-", "_"): f"--{key}" for key in overrides if key.replace("-", "_") in KEYS}
    names.update(aliases)
    return names
