"""`build_model(spec)`: the torch module for a `ModelSpec`, or a UserError saying why not yet.

Buildable now (issue 3): decoder-only models with learned or rotary positions. The
planner (``lmforge plan / memory / cost``) handles every spec; only building waits.
"""

from __future__ import annotations

from torch import nn

from lmforge.errors import UserError
from lmforge.models.decoder import DecoderLM
from lmforge.plan.specs import ModelSpec, check_spec

_NEXT = "planning it (lmforge plan / memory / cost) already works"

# positions -> why a decoder with it cannot be built yet, and what to use instead
_POSITIONS_NOT_YET = {
    "alibi": "ALiBi attention biases (BLOOM) are not implemented yet",
    "xl-relative": "Transformer-XL relative positions (Gopher, Chinchilla) are not implemented yet",
    "relative": "T5 relative-position buckets arrive with encoder-decoder models in the next issue",
}


def _name(spec: ModelSpec) -> str:
    return "" if spec.name == "custom" else f"{spec.name}: "


def check_buildable(spec: ModelSpec) -> None:
    """Raise UserError when ``spec`` describes something `build_model` cannot build yet."""
    check_spec(spec)
    if spec.family != "decoder":
        raise UserError(
            "model family not buildable yet",
            f"{_name(spec)}family={spec.family}",
            f"encoder and encoder-decoder models arrive in the next issue; {_NEXT}; "
            "to train now use a decoder spec (e.g. tiny-gpt2 or tiny-llama)",
        )
    if spec.positions in _POSITIONS_NOT_YET:
        raise UserError(
            "positions not buildable yet",
            f"{_name(spec)}positions={spec.positions}",
            f"{_POSITIONS_NOT_YET[spec.positions]}; {_NEXT}; to train now set positions to 'learned' or 'rotary'",
        )
    if spec.n_token_types or spec.pooler:
        raise UserError(
            "token-type embeddings and a pooler belong to encoders, not buildable in a decoder",
            f"{_name(spec)}n_token_types={spec.n_token_types}, pooler={spec.pooler}",
            "set n_token_types=0 and pooler=False for a decoder",
        )
    if spec.positions == "rotary" and spec.d_head % 2:
        raise UserError(
            "rotary positions need an even head dimension",
            f"{_name(spec)}head_dim={spec.d_head}",
            "pick n_heads (or head_dim) so that d_model / n_heads is even",
        )


def build_model(spec: ModelSpec) -> nn.Module:
    """The torch module for ``spec``, initialised (GPT-2 init), in the default dtype/device.

    Holds exactly ``param_counts(spec).total`` parameters. Works under
    ``with torch.device("meta"):`` to size full-scale presets without memory. Raises
    UserError for specs not buildable yet (see `check_buildable`).
    """
    check_buildable(spec)
    return DecoderLM(spec)
