"""Torch modules built from a `ModelSpec` (DESIGN.md: models sit just above plan).

``build_model(spec)`` returns a module with exactly ``param_counts(spec).total``
parameters: `DecoderLM` (decoder), `EncoderLM` (encoder, BERT-style MLM) or
`EncoderDecoderLM` (encoder-decoder, T5 / BART style).
"""

from lmforge.models.build import build_model, check_buildable
from lmforge.models.decoder import DecoderLM
from lmforge.models.encoder import EncoderLM
from lmforge.models.encoder_decoder import EncoderDecoderLM

__all__ = ["DecoderLM", "EncoderDecoderLM", "EncoderLM", "build_model", "check_buildable"]
