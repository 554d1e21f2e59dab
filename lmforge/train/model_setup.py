"""The run's ModelSpec: a planner preset with the config's overrides and the tokenizer's
vocabulary."""

from __future__ import annotations

from dataclasses import fields

from lmforge.errors import UserError
from lmforge.plan.presets import get_preset
from lmforge.plan.specs import ModelSpec
from lmforge.train.config import ModelConfig

# ModelConfig field -> ModelSpec field, where the names differ (by family).
_RENAMED = {"n_layers": "n_decoder_layers"}
_RENAMED_ENCODER = {"n_layers": "n_encoder_layers"}


def model_spec(config: ModelConfig, vocab_size: int, seq_len: int) -> ModelSpec:
    """``config.preset`` with every non-null override applied.

    The vocabulary is the tokenizer's: a ``model.vocab_size`` that differs is refused,
    as is a ``data.seq_len`` longer than the model's context.
    """
    base = get_preset(config.preset).spec
    renamed = _RENAMED_ENCODER if base.family == "encoder" else _RENAMED
    changes = {}
    for f in fields(ModelConfig):
        value = getattr(config, f.name)
        if f.name != "preset" and value is not None:
            changes[renamed.get(f.name, f.name)] = value
    if changes.get("vocab_size", vocab_size) != vocab_size:
        raise UserError(
            "tokenizer and model vocabulary sizes differ",
            f"model.vocab_size={changes['vocab_size']}, tokenizer={vocab_size}",
            "drop model.vocab_size (it follows the tokenizer) or use a matching tokenizer",
        )
    changes["vocab_size"] = vocab_size
    spec = base.with_(name=config.preset, **changes)
    if seq_len > spec.context:
        raise UserError(
            "the sequence is longer than the model's context",
            f"data.seq_len={seq_len}, context={spec.context}",
            f"set data.seq_len <= {spec.context} or model.context >= {seq_len}",
        )
    return spec
