"""`build_model(spec)`: the torch module for a `ModelSpec`, or a UserError saying why not yet.

Buildable: decoder-only models with learned or rotary positions (`DecoderLM`); encoders
(`EncoderLM`, BERT-style) and encoder-decoders (`EncoderDecoderLM`, T5 / BART style) with
learned, rotary or T5 relative positions. The planner (``lmforge plan / memory / cost``)
handles every spec; only building waits for ALiBi and Transformer-XL positions.
"""

from __future__ import annotations

from torch import nn

from lmforge.errors import UserError
from lmforge.models.decoder import DecoderLM
from lmforge.models.encoder import EncoderLM
from lmforge.models.encoder_decoder import EncoderDecoderLM
from lmforge.plan.specs import ModelSpec, check_spec

_NEXT = "planning it (lmforge plan / memory / cost) already works"

# positions -> why a model with it cannot be built yet
_POSITIONS_NOT_YET = {
    "alibi": "ALiBi attention biases (BLOOM) are not implemented yet",
    "xl-relative": "Transformer-XL relative positions (Gopher, Chinchilla) are not implemented yet",
}

_MODELS = {"decoder": DecoderLM, "encoder": EncoderLM, "encoder-decoder": EncoderDecoderLM}


def _name(spec: ModelSpec) -> str:
    return "" if spec.name == "custom" else f"{spec.name}: "


def check_buildable(spec: ModelSpec) -> None:
    """Raise UserError when ``spec`` describes something `build_model` cannot build yet."""
    check_spec(spec)
    if spec.positions in _POSITIONS_NOT_YET:
        raise UserError(
            "positions not buildable yet",
            f"{_name(spec)}positions={spec.positions}",
            f"{_POSITIONS_NOT_YET[spec.positions]}; {_NEXT}; to train now set positions to 'learned' or 'rotary'",
        )
    if spec.family == "decoder" and spec.positions == "relative":
        raise UserError(
            "positions not buildable yet in a decoder-only model",
            f"{_name(spec)}positions=relative",
            "T5 relative-position buckets are built for encoder and encoder-decoder models only; "
            f"{_NEXT}; set positions to 'learned' or 'rotary' for a decoder",
        )
    if spec.family != "encoder" and (spec.n_token_types or spec.pooler):
        raise UserError(
            f"token-type embeddings and a pooler belong to encoders, not buildable in a {spec.family}",
            f"{_name(spec)}n_token_types={spec.n_token_types}, pooler={spec.pooler}",
            f"set n_token_types=0 and pooler=False for a {spec.family}",
        )
    if spec.family == "encoder" and not spec.mlm_head and not spec.tied_embeddings:
        raise UserError(
            "an encoder without an MLM head and with untied embeddings has no output layer",
            f"{_name(spec)}mlm_head=False, tied_embeddings=False",
            "set mlm_head=True (BERT) or tied_embeddings=True",
        )
    if spec.positions == "rotary" and spec.d_head % 2:
        raise UserError(
            "rotary positions need an even head dimension",
            f"{_name(spec)}head_dim={spec.d_head}",
            "pick n_heads (or head_dim) so that d_model / n_heads is even",
        )


def build_model(spec: ModelSpec) -> nn.Module:
    """The torch module for ``spec``, initialised, in the default dtype/device.

    ``family`` picks `DecoderLM` (GPT-2 init), `EncoderLM` (BERT init) or
    `EncoderDecoderLM` (T5 init for relative positions, else BART's). Holds exactly
    ``param_counts(spec).total`` parameters. Works under ``with torch.device("meta"):`` to
    size full-scale presets without memory (then ``to_empty`` + ``init_weights()``).
    Raises UserError for specs not buildable yet (see `check_buildable`).
    """
    check_buildable(spec)
    return _MODELS[spec.family](spec)
